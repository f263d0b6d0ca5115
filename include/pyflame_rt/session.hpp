#pragma once
// InferenceSession: plans a graph once at creation; run() executes the plan.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/dtype.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/options.hpp"
#include "pyflame_rt/quantization/report.hpp"
#include "pyflame_rt/tensor.hpp"
#include "pyflame_rt/value.hpp"

namespace pyflame_rt {

// The session's memory: what its plan reserved at creation and what runs took from the heap.
struct SessionMemoryStats {
    int64_t weights_bytes = 0;      // initializers of the optimized graph
    int64_t planned_bytes = 0;      // arena buffers reserved at creation (tensors of known shape)
    int64_t arena_bytes = 0;        // arena buffers owned now (in use + free)
    int64_t peak_in_use_bytes = 0;  // most arena bytes in use at once
    int64_t heap_allocations = 0;   // arena buffers ever taken from the heap: constant across
                                    // steady-state runs of a static-shape model
};

class InferenceSession {
public:
    // `model_path`: a .pfm file, or any format the ImporterRegistry knows (.onnx).
    explicit InferenceSession(const std::string& model_path, SessionOptions options = {},
                              std::vector<std::string> providers = {});
    explicit InferenceSession(std::shared_ptr<Graph> graph, SessionOptions options = {},
                              std::vector<std::string> providers = {});
    ~InferenceSession();
    InferenceSession(const InferenceSession&) = delete;
    InferenceSession& operator=(const InferenceSession&) = delete;

    // Empty `output_names` returns all outputs. Feeds are checked before anything runs.
    // Safe to call from several threads at once.
    std::vector<Tensor> run(const std::vector<std::string>& output_names,
                            const std::unordered_map<std::string, Tensor>& input_feed,
                            const RunOptions& run_options = {});
    // The same for models whose inputs or outputs are sequences or optionals.
    std::vector<Value> run_values(const std::vector<std::string>& output_names,
                                  const std::unordered_map<std::string, Value>& input_feed,
                                  const RunOptions& run_options = {});

    std::vector<NodeArg> get_inputs() const;
    std::vector<NodeArg> get_outputs() const;
    ModelMetadata get_modelmeta() const;
    std::vector<std::string> get_providers() const;
    const SessionOptions& options() const;
    // The optimized graph the session runs. Weights a kernel packed at creation are held in that
    // packed form (Tensor::layout() set; Tensor::plain() gives the row-major values).
    std::shared_ptr<const Graph> graph() const;
    // How the model is quantized (mode None for a float model).
    quantization::QuantizationReport quantization_report() const;
    SessionMemoryStats memory_stats() const;

    int64_t get_profiling_start_time_ns() const;
    // Writes the Chrome trace-event JSON and returns its path; profiling stops.
    std::string end_profiling();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pyflame_rt
