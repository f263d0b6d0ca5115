#include "backends/execution_plan.hpp"

#include <unordered_set>

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

ExecutionPlan::ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads, int64_t opset)
    : num_threads_(num_threads < 1 ? 1 : num_threads) {
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
    // Slots a step must keep alive beyond its own inputs: what its subgraphs read from here.
    std::vector<std::vector<int>> scope_reads;
    for (const auto& node : graph.topological_sort()) {
        ops::KernelInfo info{*node, opset, {}, {}};
        for (const auto& in : node->inputs())
            info.constant_inputs.push_back(!in.empty() && graph.has_initializer(in) && !input_names.count(in)
                                               ? &graph.get_initializer(in)
                                               : nullptr);
        std::vector<int> reads;
        info.compile_subgraph = [&](const Graph& sub) -> std::unique_ptr<ops::SubgraphRunner> {
            auto runner = std::make_unique<PlanRunner>(sub, provider, num_threads_, opset);
            for (const auto& name : runner->plan().outer_names()) {
                note_outer(name);
                reads.push_back(slot(name));
            }
            return runner;
        };
        Step step{node.get(), provider.create_kernel(info), {}, {}, {}, false};
        for (const auto& in : node->inputs()) {
            note_outer(in);
            step.inputs.push_back(in.empty() ? -1 : slot(in));
        }
        for (const auto& out : node->outputs()) step.outputs.push_back(out.empty() ? -1 : slot(out));
        for (const auto& [name, value] : node->attributes())
            if (std::holds_alternative<std::shared_ptr<Graph>>(value)) step.reads_scope = true;
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
}

std::vector<Value> ExecutionPlan::run(std::vector<Value> inputs, const std::vector<size_t>& output_indices,
                                      const ops::RunControl& control, const ops::ScopeLookup* outer) const {
    std::vector<Value> values(num_slots_);
    for (size_t i = 0; i < input_slots_.size(); ++i) {
        if (i < inputs.size() && !inputs[i].is_none()) values[input_slots_[i]] = std::move(inputs[i]);
        else if (input_defaults_[i]) values[input_slots_[i]] = Value(*input_defaults_[i]);
    }
    for (const auto& [s, t] : constant_slots_) values[s] = Value(*t);
    for (const auto& [s, name] : outer_slots_) {
        const Value* v = outer ? (*outer)(name) : nullptr;
        if (!v) throw ValidationError("value '" + name + "' is not defined in this graph or an enclosing one");
        values[s] = *v;
    }

    // Subgraphs see this graph's values, then the enclosing scopes.
    const ops::ScopeLookup scope = [&](const std::string& name) -> const Value* {
        auto it = slot_of_.find(name);
        if (it != slot_of_.end()) return &values[it->second];
        return outer ? (*outer)(name) : nullptr;
    };

    ops::KernelContext ctx;
    ctx.num_threads = num_threads_;
    ctx.control = &control;
    for (const Step& step : steps_) {
        if (control.deadline && std::chrono::steady_clock::now() > *control.deadline)
            throw RunTimeoutError("run exceeded timeout_ms=" + std::to_string(control.timeout_ms) + " before node " +
                                  ops::node_label(*step.node));
        ctx.inputs.clear();
        ctx.input_values.clear();
        for (int s : step.inputs) {
            const Value* v = s >= 0 ? &values[s] : nullptr;
            ctx.input_values.push_back(v);
            ctx.inputs.push_back(v && v->is_tensor() ? &v->tensor() : nullptr);
        }
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
        for (int s : step.release_after) values[s] = Value();
    }

    std::vector<Value> results;
    results.reserve(output_indices.size());
    for (size_t idx : output_indices) results.push_back(values[output_slots_.at(idx)]);
    return results;
}

}  // namespace pyflame_rt
