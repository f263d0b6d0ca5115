#pragma once
// One loaded version of a model: its InferenceSession, the dynamic batcher and statistics.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "pyflame_rt/serving/config.hpp"
#include "pyflame_rt/serving/types.hpp"

namespace pyflame_rt {
class InferenceSession;
}

namespace pyflame_rt::serving {

class ModelInstance {
public:
    // Loads config.model_path (a .pfm, or any format the importer registry knows) and runs
    // config.warmup_requests on zero inputs; throws ServingError(InvalidRequest) or the
    // library's errors when the model cannot be loaded or warmed up.
    explicit ModelInstance(const ModelConfig& config);
    ~ModelInstance();  // runs what is queued, then stops the batcher
    ModelInstance(const ModelInstance&) = delete;
    ModelInstance& operator=(const ModelInstance&) = delete;

    bool is_ready() const;
    // Validates the request against the model's inputs, queues it for the batcher when batching
    // is on, and waits. Never throws: failures come back with success == false.
    InferResponse infer(const InferRequest& request);
    // The future stays valid if the instance is destroyed first.
    std::future<InferResponse> infer_async(InferRequest request);

    ModelStats get_stats() const;
    void reset_stats();
    ServingModelMetadata get_serving_metadata() const;
    std::vector<std::string> input_names() const;
    std::vector<std::string> output_names() const;
    ModelConfig config() const;

    // Extensions.
    const std::string& name() const;
    const std::string& version() const;
    // True when requests are merged along dim 0 (batching on and every input's dim 0 dynamic).
    bool batching_active() const;
    size_t memory_bytes() const;  // model file size(s), as accounted against max_memory
    size_t queue_size() const;
    // Stop taking new requests; queued and running ones still finish. Idempotent.
    void drain();
    std::shared_ptr<const InferenceSession> session() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;  // shared with infer_async's worker
};

}  // namespace pyflame_rt::serving
