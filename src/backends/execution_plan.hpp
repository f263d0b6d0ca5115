#pragma once
// ExecutionPlan: everything decided once per graph — node order, kernels (attributes parsed),
// value slots, when each intermediate can be released, which values pass between kernels in a
// backend layout, and the memory plan (buffers reserved in the arena). run() only executes.
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/kernel_provider.hpp"
#include "core/tensor_arena.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

class ExecutionPlan {
public:
    // `opset`: the ai.onnx opset the graph's nodes follow (subgraphs inherit their parent's).
    // With an `arena`, tensors made during run() come from it and the memory plan's buffers are
    // reserved in it now (subgraphs pass none: they allocate from their caller's arena).
    // `parallel`: independent nodes run at once on up to num_threads threads (inter-op), each
    // kernel with its share of the threads; results equal the sequential order's.
    // `on_prepacked(name, packed)`: called as each initializer whose only reader keeps a
    // prepacked copy (OpKernel::prepacked_input) is found, while the plan is made: the owner of
    // the graph may then hold `packed` in place of the original (same shape, a backend layout),
    // freeing the original's storage. The plan reads constants through the graph.
    using PrepackedHook = std::function<void(const std::string& name, const Tensor& packed)>;
    ExecutionPlan(const Graph& graph, const KernelProvider& provider, int num_threads, int64_t opset,
                  std::shared_ptr<TensorArena> arena = nullptr, bool parallel = false,
                  const PrepackedHook& on_prepacked = nullptr);

    // `inputs[i]` feeds graph.inputs()[i]; a none value uses the input's initializer default.
    // Names the graph reads from enclosing graphs resolve through `outer` (subgraphs).
    // Returns the graph outputs at `output_indices`. Thread-safe (no mutable state).
    std::vector<Value> run(std::vector<Value> inputs, const std::vector<size_t>& output_indices,
                           const ops::RunControl& control, const ops::ScopeLookup* outer = nullptr) const;

    size_t num_nodes() const { return steps_.size(); }
    // Bytes the memory plan reserved for the tensors whose shapes are known at creation.
    size_t planned_bytes() const { return planned_bytes_; }
    // How many values pass between kernels in a backend layout (no reorder between them).
    size_t num_layout_values() const { return num_layout_values_; }
    // The initializers handed to `on_prepacked`, with their packed copies.
    const std::vector<std::pair<std::string, const Tensor*>>& prepacked_constants() const { return prepacked_; }
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
        std::vector<char> reads_layout;   // per input: the kernel takes a backend layout
        std::vector<char> layout_outputs; // per output: may be written in a backend layout
        std::vector<int> reads;           // distinct slots read (inputs and subgraphs' reads)
        std::vector<int> successors;      // steps reading what this one writes
        int num_predecessors = 0;
    };

    // Runs one step whose inputs are ready and stores its outputs in `values`.
    void run_step(const Step& step, std::vector<Value>& values, const ops::ScopeLookup& scope,
                  const ops::RunControl& control, ops::KernelContext& ctx, std::vector<Tensor>& row_major) const;
    // `skip`: per step, whether its outputs are already in `values` (nullptr: run every step).
    void run_sequential(std::vector<Value>& values, const ops::ScopeLookup& scope, const ops::RunControl& control,
                        const std::vector<char>* skip) const;
    void run_parallel(std::vector<Value>& values, const ops::ScopeLookup& scope, const ops::RunControl& control,
                      const std::vector<char>* skip) const;
    void plan_dependencies(const std::vector<int>& kept);

    // What one input-shape signature decides beyond the static plan: the values shape
    // arithmetic computes from it (Shape -> Gather -> Concat ... feeding Reshape targets, about
    // 400 nodes in a BERT encoder with a dynamic batch), whose steps its runs skip.
    struct SignaturePlan {
        std::vector<int64_t> signature;
        std::vector<std::pair<int, Tensor>> precomputed;  // slot and its value
        std::vector<char> skip;                            // per step: its outputs are precomputed
    };

    void plan_layouts(const std::vector<std::vector<int>>& scope_reads, const std::vector<int>& kept);
    // Reserves the arena buffers for the shapes annotated on `graph`; returns their bytes.
    size_t plan_memory(const Graph& graph) const;
    // With dynamic input shapes: the plan of the inputs' shape signature, made (memory plan
    // and precomputed shape values) when a signature is first seen; nullptr beyond a few.
    std::shared_ptr<const SignaturePlan> plan_for_signature(const std::vector<Value>& inputs) const;

    std::vector<Step> steps_;
    size_t num_slots_ = 0;
    std::unordered_map<std::string, int> slot_of_;
    std::vector<int> input_slots_;                 // per graph input
    std::vector<const Tensor*> input_defaults_;    // initializer default per graph input, or nullptr
    std::vector<std::pair<int, const Tensor*>> constant_slots_;  // initializers not shadowed by inputs
    std::vector<Value> constants_;  // per slot: the initializer's value (none for other slots)
    // Slot `s` of a run: a constant from the plan, anything else from the run's own slots.
    const Value& value_at(const std::vector<Value>& values, int s) const {
        return constants_[s].is_none() ? values[s] : constants_[s];
    }
    std::vector<std::pair<int, std::string>> outer_slots_;       // filled from the enclosing scope
    std::vector<std::string> outer_names_;
    std::vector<int> output_slots_;                // per graph output
    std::vector<std::string> output_names_;
    int num_threads_ = 1;
    // Each kernel's intra-op threads when `parallel` runs up to max(2, num_threads) at once.
    int threads_per_parallel_kernel() const { return std::max(1, num_threads_ / std::max(2, num_threads_)); }
    std::shared_ptr<TensorArena> arena_;
    const Graph* graph_ = nullptr;  // outlives the plan (the session owns both)
    bool static_inputs_ = true;
    bool parallel_ = false;
    std::vector<int> readers_of_;      // per slot: how many steps read it (parallel release)
    std::vector<char> releasable_;     // per slot: an intermediate, dropped after its last reader
    size_t planned_bytes_ = 0;
    mutable std::mutex signatures_mutex_;
    mutable std::vector<std::shared_ptr<const SignaturePlan>> signature_plans_;
    size_t num_layout_values_ = 0;
    std::vector<std::pair<std::string, const Tensor*>> prepacked_;
};

}  // namespace pyflame_rt
