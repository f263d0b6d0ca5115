#pragma once
// ExecutionPlan: everything decided once per graph — node order, kernels (attributes parsed),
// value slots and when each intermediate can be released. run() only executes.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/kernel_provider.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

// Per-run hooks; all optional.
struct RunHooks {
    std::optional<std::chrono::steady_clock::time_point> deadline;
    int64_t timeout_ms = 0;  // for the message
    // Called after each node with its start/end times (profiling).
    std::function<void(const Node&, std::chrono::steady_clock::time_point, std::chrono::steady_clock::time_point)> on_node;
};

class ExecutionPlan {
public:
    ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads);

    // `graph_inputs[i]` feeds graph.inputs()[i]; nullptr uses the input's initializer default.
    // Returns the graph outputs at `output_indices`. Thread-safe (no mutable state).
    std::vector<Tensor> run(const std::vector<const Tensor*>& graph_inputs, const std::vector<size_t>& output_indices,
                            const RunHooks& hooks) const;

    size_t num_nodes() const { return steps_.size(); }

private:
    struct Step {
        const Node* node;
        std::unique_ptr<ops::OpKernel> kernel;
        std::vector<int> inputs;        // slot per node input, -1 when omitted
        std::vector<int> outputs;       // slot per node output, -1 when unused
        std::vector<int> release_after; // slots whose last reader is this step
    };

    std::vector<Step> steps_;
    size_t num_slots_ = 0;
    std::vector<int> input_slots_;                 // per graph input
    std::vector<const Tensor*> input_defaults_;    // initializer default per graph input, or nullptr
    std::vector<std::pair<int, const Tensor*>> constant_slots_;  // initializers not shadowed by inputs
    std::vector<int> output_slots_;                // per graph output
    std::vector<std::string> output_names_;
    int num_threads_ = 1;
};

}  // namespace pyflame_rt
