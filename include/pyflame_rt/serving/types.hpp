#pragma once
// Requests, responses, error codes and statistics of the serving API.
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::serving {

enum class ServingErrorCode {
    OK,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    InferenceError,
    Timeout,
    QueueFull,
    InternalError,
};

// "OK", "InvalidRequest", ... (the metrics' `error` label uses these names).
std::string error_code_name(ServingErrorCode code);
// The HTTP status a code maps to: 200, 400, 404, 503, 500, 504, 503, 500.
int http_status_of(ServingErrorCode code);

// Thrown by the registry and the server for requests that cannot be served.
class ServingError : public std::runtime_error {
public:
    ServingError(ServingErrorCode code, const std::string& message)
        : std::runtime_error(message), code_(code) {}
    ServingErrorCode code() const { return code_; }

private:
    ServingErrorCode code_;
};

struct InferRequest {
    std::string request_id;
    std::string model_name;
    std::string model_version;  // empty: the latest version
    std::unordered_map<std::string, Tensor> inputs;
    std::vector<std::string> output_names;  // empty: all outputs
    int priority = 0;                       // higher is served first
    std::chrono::steady_clock::time_point arrival_time = std::chrono::steady_clock::now();
    // Extension: answer Timeout when not finished this many microseconds after arrival
    // (0: the model's default_timeout_us, and none when that is 0 too).
    int64_t timeout_us = 0;

    static std::string generate_id();
};

struct InferResponse {
    std::string request_id;
    std::string model_name;
    std::string model_version;
    std::unordered_map<std::string, Tensor> outputs;
    // Extension: the output names in the model's (or the request's) order.
    std::vector<std::string> output_order;
    bool success = true;
    ServingErrorCode error_code = ServingErrorCode::OK;
    std::string error_message;
    int64_t latency_us = 0;
    int64_t queue_time_us = 0;

    static InferResponse failure(const InferRequest& request, ServingErrorCode code,
                                 const std::string& message);
};

struct ModelStats {
    uint64_t total_requests = 0;
    uint64_t successful_requests = 0;
    uint64_t failed_requests = 0;
    double avg_latency_ms = 0.0;
    double p50_latency_ms = 0.0;
    double p95_latency_ms = 0.0;
    double p99_latency_ms = 0.0;
    // Extensions (Triton's statistics need them).
    uint64_t execution_count = 0;      // session runs (a batch counts once)
    uint64_t inference_count = 0;      // rows inferred
    uint64_t last_inference_ms = 0;    // wall clock, ms since the epoch; 0 = never
    uint64_t success_ns = 0;           // summed latency of successful requests
    uint64_t fail_ns = 0;
    uint64_t queue_ns = 0;
    uint64_t compute_ns = 0;
};

struct IOSpec {
    std::string name;
    std::string dtype;            // KServe datatype: "FP32", "INT64", "BYTES", ...
    std::vector<int64_t> shape;   // -1 for a dynamic dimension
};

struct ServingModelMetadata {
    std::string name;
    std::string version;
    std::string platform;
    std::vector<IOSpec> inputs;
    std::vector<IOSpec> outputs;
};

struct ModelVersionInfo {
    std::string version;
    std::string path;
    bool is_loaded = false;
};

struct RegistryStats {
    size_t num_models = 0;           // names with at least one loaded version
    size_t num_loaded_versions = 0;
    size_t memory_used = 0;          // bytes, as accounted against max_memory
    size_t max_memory = 0;           // 0 = unlimited
    uint64_t loads = 0;
    uint64_t unloads = 0;
    uint64_t failed_loads = 0;
};

struct ServerStats {
    uint64_t total_requests = 0;       // inference requests on HTTP and gRPC
    uint64_t failed_requests = 0;
    uint64_t active_requests = 0;
    double uptime_seconds = 0.0;
    RegistryStats registry;
};

// KServe datatype names <-> DType. ServingError(InvalidRequest) for an unknown name.
std::string kserve_datatype(DType dtype);
DType dtype_from_kserve(const std::string& datatype);
// Triton model-config type names: "TYPE_FP32", ...
std::string triton_config_type(DType dtype);

}  // namespace pyflame_rt::serving
