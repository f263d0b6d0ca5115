#pragma once
// ExecutionPlan: everything decided once per graph — node order, kernels (attributes parsed),
// value slots and when each intermediate can be released. run() only executes.
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/kernel_provider.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

class ExecutionPlan {
public:
    // `opset`: the ai.onnx opset the graph's nodes follow (subgraphs inherit their parent's).
    ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads, int64_t opset);

    // `inputs[i]` feeds graph.inputs()[i]; a none value uses the input's initializer default.
    // Names the graph reads from enclosing graphs resolve through `outer` (subgraphs).
    // Returns the graph outputs at `output_indices`. Thread-safe (no mutable state).
    std::vector<Value> run(std::vector<Value> inputs, const std::vector<size_t>& output_indices,
                           const ops::RunControl& control, const ops::ScopeLookup* outer = nullptr) const;

    size_t num_nodes() const { return steps_.size(); }
    // Names this graph (or its subgraphs) reads from enclosing scopes.
    const std::vector<std::string>& outer_names() const { return outer_names_; }

private:
    struct Step {
        const Node* node;
        std::unique_ptr<ops::OpKernel> kernel;
        std::vector<int> inputs;        // slot per node input, -1 when omitted
        std::vector<int> outputs;       // slot per node output, -1 when unused
        std::vector<int> release_after; // slots whose last reader is this step
        bool reads_scope = false;       // has subgraphs: give the kernel a scope lookup
    };

    std::vector<Step> steps_;
    size_t num_slots_ = 0;
    std::unordered_map<std::string, int> slot_of_;
    std::vector<int> input_slots_;                 // per graph input
    std::vector<const Tensor*> input_defaults_;    // initializer default per graph input, or nullptr
    std::vector<std::pair<int, const Tensor*>> constant_slots_;  // initializers not shadowed by inputs
    std::vector<std::pair<int, std::string>> outer_slots_;       // filled from the enclosing scope
    std::vector<std::string> outer_names_;
    std::vector<int> output_slots_;                // per graph output
    std::vector<std::string> output_names_;
    int num_threads_ = 1;
};

}  // namespace pyflame_rt
