#include "backends/execution_plan.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <thread>
#include <unordered_set>

#include "ops/shape_inference.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt {
namespace {

// A subgraph compiled by the same backend as its parent.
class PlanRunner : public ops::SubgraphRunner {
public:
    PlanRunner(const Graph& graph, const KernelProvider& provider, int num_threads, int64_t opset)
        : graph_(graph), plan_(graph, provider, num_threads, opset) {
        all_outputs_.resize(graph.outputs().size());
        for (size_t i = 0; i < all_outputs_.size(); ++i) all_outputs_[i] = i;
    }
    std::vector<Value> run(std::vector<Value> inputs, const ops::ScopeLookup& outer,
                           const ops::RunControl& control) const override {
        return plan_.run(std::move(inputs), all_outputs_, control, &outer);
    }
    const Graph& graph() const override { return graph_; }
    const ExecutionPlan& plan() const { return plan_; }

private:
    const Graph& graph_;
    ExecutionPlan plan_;
    std::vector<size_t> all_outputs_;
};

}  // namespace

ExecutionPlan::ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads, int64_t opset,
                             std::shared_ptr<TensorArena> arena, bool parallel, const PrepackedHook& on_prepacked)
    : num_threads_(num_threads < 1 ? 1 : num_threads), arena_(std::move(arena)), parallel_(parallel) {
    auto slot = [&](const std::string& name) {
        auto [it, inserted] = slot_of_.emplace(name, static_cast<int>(num_slots_));
        if (inserted) ++num_slots_;
        return it->second;
    };

    std::unordered_set<std::string> defined;  // names this graph itself provides
    for (const auto& in : graph.inputs()) {
        input_slots_.push_back(slot(in.name));
        input_defaults_.push_back(graph.has_initializer(in.name) ? &graph.get_initializer(in.name) : nullptr);
        defined.insert(in.name);
    }
    for (const auto& name : graph.initializer_names()) {
        if (!defined.count(name)) constant_slots_.emplace_back(slot(name), &graph.get_initializer(name));
        defined.insert(name);
    }
    for (const auto& node : graph.nodes())
        for (const auto& out : node->outputs()) defined.insert(out);

    std::unordered_set<std::string> outer_seen;
    auto note_outer = [&](const std::string& name) {
        if (!name.empty() && !defined.count(name) && outer_seen.insert(name).second) {
            outer_slots_.emplace_back(slot(name), name);
            outer_names_.push_back(name);
        }
    };

    std::unordered_set<std::string> input_names;
    for (const auto& in : graph.inputs()) input_names.insert(in.name);
    const optimize::GraphUses uses(graph);
    // Slots a step must keep alive beyond its own inputs: what its subgraphs read from here.
    std::vector<std::vector<int>> scope_reads;
    for (const auto& node : graph.topological_sort()) {
        ops::KernelInfo info{*node, opset, {}, {}, {}, {}};
        info.num_threads = parallel_ ? threads_per_parallel_kernel() : num_threads_;
        for (const auto& in : node->inputs()) {
            info.constant_inputs.push_back(!in.empty() && graph.has_initializer(in) && !input_names.count(in)
                                               ? &graph.get_initializer(in)
                                               : nullptr);
            std::vector<int64_t>& dims = info.input_shapes.emplace_back();
            if (const std::optional<TensorInfo> known = optimize::info_of(graph, in); known && known->rank_known)
                for (const auto& d : known->shape) dims.push_back(d ? *d : -1);
        }
        std::vector<int> reads;
        info.compile_subgraph = [&](const Graph& sub) -> std::unique_ptr<ops::SubgraphRunner> {
            auto runner = std::make_unique<PlanRunner>(sub, provider, num_threads_, opset);
            for (const auto& name : runner->plan().outer_names()) {
                note_outer(name);
                reads.push_back(slot(name));
            }
            return runner;
        };
        Step step{node.get(), provider.create_kernel(info), {}, {}, {}, false, {}, {}};
        // An initializer whose only reader keeps a prepacked copy: handed over at once, so the
        // row-major copy can go before the next kernel packs its own.
        for (size_t k = 0; k < node->inputs().size(); ++k) {
            const std::string& name = node->inputs()[k];
            if (!uses.is_constant(name) || uses.uses(name) != 1 || !uses.is_internal(name)) continue;
            if (const Tensor* packed = step.kernel->prepacked_input(k)) {
                prepacked_.emplace_back(name, packed);
                if (on_prepacked) on_prepacked(name, *packed);
            }
        }
        for (const auto& in : node->inputs()) {
            note_outer(in);
            step.inputs.push_back(in.empty() ? -1 : slot(in));
            step.reads_layout.push_back(step.kernel->reads_layout(step.reads_layout.size()));
        }
        for (const auto& out : node->outputs()) step.outputs.push_back(out.empty() ? -1 : slot(out));
        step.layout_outputs.assign(step.outputs.size(), 0);
        for (const auto& [name, value] : node->attributes())
            if (std::holds_alternative<std::shared_ptr<Graph>>(value)) step.reads_scope = true;
        step.reads = reads;
        for (int s : step.inputs)
            if (s >= 0) step.reads.push_back(s);
        std::sort(step.reads.begin(), step.reads.end());
        step.reads.erase(std::unique(step.reads.begin(), step.reads.end()), step.reads.end());
        steps_.push_back(std::move(step));
        scope_reads.push_back(std::move(reads));
    }
    for (const auto& out : graph.outputs()) {
        note_outer(out.name);
        output_slots_.push_back(slot(out.name));
        output_names_.push_back(out.name);
    }


    // Release each intermediate after its last reader, unless it is a graph output, an input,
    // a constant (shared with the graph; costs nothing to keep) or from an enclosing scope.
    std::unordered_set<int> keep(output_slots_.begin(), output_slots_.end());
    for (const auto& [s, t] : constant_slots_) keep.insert(s);
    for (int s : input_slots_) keep.insert(s);
    for (const auto& [s, name] : outer_slots_) keep.insert(s);
    std::vector<int> last_reader(num_slots_, -1);
    for (size_t i = 0; i < steps_.size(); ++i) {
        for (int s : steps_[i].inputs)
            if (s >= 0) last_reader[s] = static_cast<int>(i);
        for (int s : scope_reads[i]) last_reader[s] = static_cast<int>(i);
    }
    for (size_t s = 0; s < num_slots_; ++s)
        if (last_reader[s] >= 0 && !keep.count(static_cast<int>(s)))
            steps_[last_reader[s]].release_after.push_back(static_cast<int>(s));

    plan_layouts(scope_reads, std::vector<int>(keep.begin(), keep.end()));
    plan_dependencies(std::vector<int>(keep.begin(), keep.end()));
    graph_ = &graph;
    for (const auto& in : graph.inputs())
        if (!in.rank_known || !is_static(in.shape)) static_inputs_ = false;
    if (arena_) planned_bytes_ = plan_memory(graph);
    // Made once, after the kernels packed what they pack: a run reads them in place (copying a
    // Value per initializer into each run's slots cost ~20 µs on MobileNetV2).
    constants_.resize(num_slots_);
    for (const auto& [slot, tensor] : constant_slots_) constants_[slot] = Value(*tensor);
}

// A value may stay in its producer's backend layout when the producer can write one and every
// step reading it takes one; graph outputs, inputs and what subgraphs read stay row-major.
void ExecutionPlan::plan_layouts(const std::vector<std::vector<int>>& scope_reads, const std::vector<int>& kept) {
    std::vector<char> readers_take_layout(num_slots_, 1), has_reader(num_slots_, 0);
    for (int s : kept) readers_take_layout[s] = 0;
    for (size_t i = 0; i < steps_.size(); ++i) {
        for (size_t k = 0; k < steps_[i].inputs.size(); ++k) {
            const int s = steps_[i].inputs[k];
            if (s < 0) continue;
            has_reader[s] = 1;
            if (!steps_[i].reads_layout[k]) readers_take_layout[s] = 0;
        }
        for (int s : scope_reads[i]) readers_take_layout[s] = 0;
    }
    for (Step& step : steps_)
        for (size_t o = 0; o < step.outputs.size(); ++o) {
            const int s = step.outputs[o];
            if (s >= 0 && has_reader[s] && readers_take_layout[s] && step.kernel->writes_layout(o)) {
                step.layout_outputs[o] = 1;
                ++num_layout_values_;
            }
        }
}

// For the parallel schedule: which steps wait for which, and who reads each slot.
void ExecutionPlan::plan_dependencies(const std::vector<int>& kept) {
    std::vector<int> producer(num_slots_, -1);
    for (size_t i = 0; i < steps_.size(); ++i)
        for (int s : steps_[i].outputs)
            if (s >= 0) producer[s] = static_cast<int>(i);
    readers_of_.assign(num_slots_, 0);
    releasable_.assign(num_slots_, 1);
    for (int s : kept) releasable_[s] = 0;
    for (size_t i = 0; i < steps_.size(); ++i) {
        std::vector<int> waits_for;
        for (int s : steps_[i].reads) {
            ++readers_of_[s];
            if (producer[s] >= 0) waits_for.push_back(producer[s]);
        }
        std::sort(waits_for.begin(), waits_for.end());
        waits_for.erase(std::unique(waits_for.begin(), waits_for.end()), waits_for.end());
        steps_[i].num_predecessors = static_cast<int>(waits_for.size());
        for (int p : waits_for) steps_[p].successors.push_back(static_cast<int>(i));
    }
}

// Reserves the buffers the tensors of known static shape need, each alive from the step that
// makes it to its last reader (graph outputs to the end), under the arena's own reuse policy.
size_t ExecutionPlan::plan_memory(const Graph& graph) const {
    std::vector<size_t> bytes_of(num_slots_, 0);
    for (const auto& [name, info] : graph.value_infos()) {
        auto it = slot_of_.find(name);
        if (it == slot_of_.end() || info.kind != ValueKind::Tensor || !info.rank_known || !is_static(info.shape) ||
            info.dtype == DType::String)
            continue;
        size_t elements = 1;
        for (const auto& d : info.shape) elements *= static_cast<size_t>(*d);
        bytes_of[it->second] = elements * dtype_size(info.dtype);
    }
    for (const auto& out : graph.outputs())
        if (out.kind == ValueKind::Tensor && out.rank_known && is_static(out.shape) && out.dtype != DType::String) {
            size_t elements = 1;
            for (const auto& d : out.shape) elements *= static_cast<size_t>(*d);
            bytes_of[slot_of_.at(out.name)] = elements * dtype_size(out.dtype);
        }
    std::vector<std::pair<size_t, bool>> events;  // the run's allocations and releases, in order
    std::vector<size_t> allocation_of(num_slots_, 0);
    size_t allocations = 0;
    for (const Step& step : steps_) {
        for (int s : step.outputs)
            if (s >= 0 && bytes_of[s]) {
                allocation_of[s] = allocations++;
                events.emplace_back(bytes_of[s], true);
            }
        for (int s : step.release_after)
            if (bytes_of[s]) events.emplace_back(allocation_of[s], false);
    }
    const std::vector<size_t> buffers = TensorArena::plan(events);
    arena_->reserve(buffers);
    size_t planned = 0;
    for (size_t size : buffers) planned += size;
    return planned;
}

std::shared_ptr<const ExecutionPlan::SignaturePlan> ExecutionPlan::plan_for_signature(
    const std::vector<Value>& inputs) const {
    std::vector<int64_t> signature;
    for (const Value& v : inputs) {
        if (!v.is_tensor()) return nullptr;  // sequences and optionals: the arena serves them as they come
        signature.push_back(-1);
        signature.insert(signature.end(), v.tensor().shape().begin(), v.tensor().shape().end());
    }
    // Planning runs under the lock: concurrent first runs of one signature plan it once.
    std::lock_guard<std::mutex> lock(signatures_mutex_);
    for (const auto& plan : signature_plans_)
        if (plan->signature == signature) return plan;
    constexpr size_t kMaxSignatures = 8;  // ever-new shapes are served by the arena as they come
    if (signature_plans_.size() >= kMaxSignatures) return nullptr;
    auto plan = std::make_shared<SignaturePlan>();
    plan->signature = std::move(signature);
    plan->skip.assign(steps_.size(), 0);
    signature_plans_.push_back(plan);

    Graph concrete = *graph_;
    std::vector<TensorInfo> infos = graph_->inputs();
    for (size_t i = 0; i < infos.size() && i < inputs.size(); ++i) {
        if (inputs[i].is_none()) continue;
        infos[i].shape.clear();
        for (int64_t d : inputs[i].tensor().shape()) infos[i].shape.push_back(d);
        infos[i].rank_known = true;
    }
    concrete.set_inputs(std::move(infos));
    std::unordered_map<std::string, Tensor> static_values;
    try {
        ops::infer_shapes(concrete, &static_values);
    } catch (const ValidationError&) {
        return plan;  // the run reports bad inputs itself
    }
    plan_memory(concrete);
    for (size_t i = 0; i < steps_.size(); ++i) {
        const Step& step = steps_[i];
        if (step.outputs.size() != 1 || step.outputs[0] < 0) continue;
        auto it = static_values.find(step.node->outputs()[0]);
        if (it == static_values.end()) continue;
        plan->precomputed.emplace_back(step.outputs[0], it->second);
        plan->skip[i] = 1;
    }
    return plan;
}

std::vector<Value> ExecutionPlan::run(std::vector<Value> inputs, const std::vector<size_t>& output_indices,
                                      const ops::RunControl& control, const ops::ScopeLookup* outer) const {
    const std::shared_ptr<const SignaturePlan> shape_plan = arena_ && !static_inputs_ ? plan_for_signature(inputs) : nullptr;
    const TensorArena::Scope arena_scope(arena_.get());
    std::vector<Value> values(num_slots_);
    for (size_t i = 0; i < input_slots_.size(); ++i) {
        if (i < inputs.size() && !inputs[i].is_none()) values[input_slots_[i]] = std::move(inputs[i]);
        else if (input_defaults_[i]) values[input_slots_[i]] = Value(*input_defaults_[i]);
    }
    for (const auto& [s, name] : outer_slots_) {
        const Value* v = outer ? (*outer)(name) : nullptr;
        if (!v) throw ValidationError("value '" + name + "' is not defined in this graph or an enclosing one");
        values[s] = *v;
    }

    // Subgraphs see this graph's values, then the enclosing scopes.
    const ops::ScopeLookup scope = [&](const std::string& name) -> const Value* {
        auto it = slot_of_.find(name);
        if (it != slot_of_.end()) return &value_at(values, it->second);
        return outer ? (*outer)(name) : nullptr;
    };

    const std::vector<char>* skip = nullptr;
    if (shape_plan && !shape_plan->precomputed.empty()) {
        for (const auto& [s, t] : shape_plan->precomputed) values[s] = Value(t);
        skip = &shape_plan->skip;
    }
    if (parallel_) run_parallel(values, scope, control, skip);
    else run_sequential(values, scope, control, skip);

    std::vector<Value> results;
    results.reserve(output_indices.size());
    for (size_t idx : output_indices) {
        const Value& v = value_at(values, output_slots_.at(idx));
        results.push_back(v.is_tensor() && !v.tensor().is_plain() ? Value(v.tensor().plain()) : v);
    }
    return results;
}

void ExecutionPlan::run_step(const Step& step, std::vector<Value>& values, const ops::ScopeLookup& scope,
                             const ops::RunControl& control, ops::KernelContext& ctx,
                             std::vector<Tensor>& row_major) const {
    if (control.deadline && std::chrono::steady_clock::now() > *control.deadline)
        throw RunTimeoutError("run exceeded timeout_ms=" + std::to_string(control.timeout_ms) + " before node " +
                              ops::node_label(*step.node));
    ctx.inputs.clear();
    ctx.input_values.clear();
    row_major.clear();
    row_major.reserve(step.inputs.size());
    for (size_t k = 0; k < step.inputs.size(); ++k) {
        const int s = step.inputs[k];
        const Value* v = s >= 0 ? &value_at(values, s) : nullptr;
        ctx.input_values.push_back(v);
        const Tensor* t = v && v->is_tensor() ? &v->tensor() : nullptr;
        if (t && !t->is_plain() && !step.reads_layout[k]) t = &row_major.emplace_back(t->plain());
        ctx.inputs.push_back(t);
    }
    ctx.layout_outputs = &step.layout_outputs;
    ctx.outputs.assign(step.outputs.size(), Tensor());
    ctx.output_values.assign(step.outputs.size(), std::nullopt);
    ctx.scope = step.reads_scope ? &scope : nullptr;
    const auto start = std::chrono::steady_clock::now();
    try {
        step.kernel->compute(ctx);
    } catch (const ValidationError& e) {
        const std::string what = e.what();
        // Name the node unless the kernel already did.
        if (what.find("'" + step.node->name() + "'") != std::string::npos) throw;
        throw ValidationError("node " + ops::node_label(*step.node) + ": " + what);
    }
    if (control.on_node) control.on_node(*step.node, start, std::chrono::steady_clock::now());
    for (size_t o = 0; o < step.outputs.size(); ++o) {
        if (step.outputs[o] < 0) continue;
        Value& dst = values[step.outputs[o]];
        if (ctx.output_values[o]) dst = std::move(*ctx.output_values[o]);
        else if (!ctx.outputs[o].empty()) dst = Value(std::move(ctx.outputs[o]));
        else dst = Value();
    }
}

void ExecutionPlan::run_sequential(std::vector<Value>& values, const ops::ScopeLookup& scope,
                                   const ops::RunControl& control, const std::vector<char>* skip) const {
    ops::KernelContext ctx;
    ctx.num_threads = num_threads_;
    ctx.control = &control;
    std::vector<Tensor> row_major;  // inputs converted for a reader that takes no backend layout
    for (size_t i = 0; i < steps_.size(); ++i) {
        const Step& step = steps_[i];
        if (!skip || !(*skip)[i]) run_step(step, values, scope, control, ctx, row_major);
        for (int s : step.release_after) values[s] = Value();
    }
}

// Workers take ready steps from one queue; a step becomes ready when the last step it waits for
// finishes, and a slot is dropped when its last reader finishes. The first error stops the run.
void ExecutionPlan::run_parallel(std::vector<Value>& values, const ops::ScopeLookup& scope,
                                 const ops::RunControl& control, const std::vector<char>* skip) const {
    const int workers = std::max(2, num_threads_);
    const int threads_per_kernel = threads_per_parallel_kernel();
    std::vector<int> waiting(steps_.size());
    std::vector<std::atomic<int>> readers_left(num_slots_);
    for (size_t s = 0; s < num_slots_; ++s) readers_left[s] = readers_of_[s];
    std::deque<int> ready;
    for (size_t i = 0; i < steps_.size(); ++i) {
        waiting[i] = steps_[i].num_predecessors;
        if (waiting[i] == 0) ready.push_back(static_cast<int>(i));
    }
    std::mutex mutex;
    std::condition_variable wake;
    size_t finished = 0;
    std::exception_ptr error;

    auto work = [&] {
        const TensorArena::Scope arena_scope(arena_.get());  // workers allocate from the run's arena too
        ops::KernelContext ctx;
        ctx.num_threads = threads_per_kernel;
        ctx.control = &control;
        std::vector<Tensor> row_major;
        for (;;) {
            int i;
            {
                std::unique_lock<std::mutex> lock(mutex);
                wake.wait(lock, [&] { return !ready.empty() || finished == steps_.size() || error; });
                if (error || finished == steps_.size()) return;
                i = ready.front();
                ready.pop_front();
            }
            const Step& step = steps_[i];
            try {
                if (!skip || !(*skip)[i]) run_step(step, values, scope, control, ctx, row_major);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex);
                if (!error) error = std::current_exception();
                wake.notify_all();
                return;
            }
            for (int s : step.reads)
                if (releasable_[s] && --readers_left[s] == 0) values[s] = Value();
            {
                std::lock_guard<std::mutex> lock(mutex);
                ++finished;
                for (int j : step.successors)
                    if (--waiting[j] == 0) ready.push_back(j);
            }
            wake.notify_all();
        }
    };
    std::vector<std::thread> helpers;
    for (int w = 1; w < workers; ++w) helpers.emplace_back(work);
    work();
    for (std::thread& t : helpers) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace pyflame_rt
