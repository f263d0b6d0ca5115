#include "backends/execution_plan.hpp"

#include <unordered_map>
#include <unordered_set>

namespace pyflame_rt {

ExecutionPlan::ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads)
    : num_threads_(num_threads < 1 ? 1 : num_threads) {
    std::unordered_map<std::string, int> slot_of;
    auto slot = [&](const std::string& name) {
        auto [it, inserted] = slot_of.emplace(name, static_cast<int>(num_slots_));
        if (inserted) ++num_slots_;
        return it->second;
    };

    std::unordered_set<std::string> input_names;
    for (const auto& in : graph.inputs()) {
        input_slots_.push_back(slot(in.name));
        input_defaults_.push_back(graph.has_initializer(in.name) ? &graph.get_initializer(in.name) : nullptr);
        input_names.insert(in.name);
    }
    for (const auto& name : graph.initializer_names())
        if (!input_names.count(name)) constant_slots_.emplace_back(slot(name), &graph.get_initializer(name));

    const int64_t opset = graph.opset_version("");
    for (const auto& node : graph.topological_sort()) {
        ops::KernelInfo info{*node, opset, {}};
        for (const auto& in : node->inputs())
            info.constant_inputs.push_back(!in.empty() && graph.has_initializer(in) && !input_names.count(in)
                                               ? &graph.get_initializer(in)
                                               : nullptr);
        Step step{node.get(), provider.create_kernel(info), {}, {}, {}};
        for (const auto& in : node->inputs()) step.inputs.push_back(in.empty() ? -1 : slot(in));
        for (const auto& out : node->outputs()) step.outputs.push_back(out.empty() ? -1 : slot(out));
        steps_.push_back(std::move(step));
    }
    for (const auto& out : graph.outputs()) {
        output_slots_.push_back(slot(out.name));
        output_names_.push_back(out.name);
    }

    // Release each intermediate after its last reader, unless it is a graph output or a
    // constant (constants are shared with the graph and cost nothing to keep).
    std::unordered_set<int> keep(output_slots_.begin(), output_slots_.end());
    for (const auto& [s, t] : constant_slots_) keep.insert(s);
    for (int s : input_slots_) keep.insert(s);
    std::vector<int> last_reader(num_slots_, -1);
    for (size_t i = 0; i < steps_.size(); ++i)
        for (int s : steps_[i].inputs)
            if (s >= 0) last_reader[s] = static_cast<int>(i);
    for (size_t s = 0; s < num_slots_; ++s)
        if (last_reader[s] >= 0 && !keep.count(static_cast<int>(s)))
            steps_[last_reader[s]].release_after.push_back(static_cast<int>(s));
}

std::vector<Tensor> ExecutionPlan::run(const std::vector<const Tensor*>& graph_inputs,
                                       const std::vector<size_t>& output_indices, const RunHooks& hooks) const {
    std::vector<Tensor> values(num_slots_);
    for (size_t i = 0; i < input_slots_.size(); ++i) {
        const Tensor* t = i < graph_inputs.size() && graph_inputs[i] ? graph_inputs[i] : input_defaults_[i];
        if (t) values[input_slots_[i]] = *t;
    }
    for (const auto& [s, t] : constant_slots_) values[s] = *t;

    ops::KernelContext ctx;
    ctx.num_threads = num_threads_;
    for (const Step& step : steps_) {
        if (hooks.deadline && std::chrono::steady_clock::now() > *hooks.deadline)
            throw RunTimeoutError("run exceeded timeout_ms=" + std::to_string(hooks.timeout_ms) + " before node " +
                                  ops::node_label(*step.node));
        ctx.inputs.clear();
        for (int s : step.inputs) {
            if (s >= 0 && values[s].empty())
                throw ValidationError("node " + ops::node_label(*step.node) + ": input has no value at run time");
            ctx.inputs.push_back(s >= 0 ? &values[s] : nullptr);
        }
        ctx.outputs.assign(step.outputs.size(), Tensor());
        const auto start = std::chrono::steady_clock::now();
        try {
            step.kernel->compute(ctx);
        } catch (const ValidationError& e) {
            const std::string what = e.what();
            // Name the node unless the kernel already did.
            if (what.find("'" + step.node->name() + "'") != std::string::npos) throw;
            throw ValidationError("node " + ops::node_label(*step.node) + ": " + what);
        }
        if (hooks.on_node) hooks.on_node(*step.node, start, std::chrono::steady_clock::now());
        for (size_t o = 0; o < step.outputs.size(); ++o)
            if (step.outputs[o] >= 0) values[step.outputs[o]] = std::move(ctx.outputs[o]);
        for (int s : step.release_after) values[s] = Tensor();
    }

    std::vector<Tensor> results;
    for (size_t idx : output_indices) {
        const Tensor& t = values[output_slots_.at(idx)];
        if (t.empty()) throw ValidationError("graph output '" + output_names_[idx] + "' was not computed");
        results.push_back(t);
    }
    return results;
}

}  // namespace pyflame_rt
