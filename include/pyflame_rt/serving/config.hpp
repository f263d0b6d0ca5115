#pragma once
// Server and model configuration. Config files hold the same fields as these structs, in JSON
// or YAML (keys are the member names; sizes may be written "512MB"). Unknown keys are errors.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pyflame_rt::serving {

struct HTTPServerConfig {
    std::string host = "0.0.0.0";
    uint16_t port = 8080;
    size_t num_workers = 0;                       // 0: max(8, 2 x cores)
    size_t max_request_size = 100 * 1024 * 1024;  // bytes; larger bodies get 413
    size_t request_timeout_ms = 30000;            // socket read/write timeout, default infer timeout
    size_t keep_alive_timeout_ms = 5000;
    bool enable_cors = false;
    std::string cors_origin = "*";                // Access-Control-Allow-Origin when CORS is on
};

struct GRPCServerConfig {
    std::string host = "0.0.0.0";
    uint16_t port = 9090;                         // 0: no gRPC listener
    size_t max_message_size = 100 * 1024 * 1024;
    size_t num_completion_queues = 0;             // 0: gRPC's default
    bool enabled = true;
};

struct TLSConfig {
    bool enabled = false;     // also switched on by setting cert_path and key_path
    std::string cert_path;
    std::string key_path;
    std::string ca_path;      // when set, clients must present a certificate it signed
};

struct RateLimitConfig {
    bool enabled = false;
    double requests_per_second = 100.0;  // token bucket refill rate, over all clients
    size_t burst_size = 50;              // bucket capacity
};

struct ModelConfig {
    std::string name;
    std::string model_path;               // a .pfm or .onnx file
    std::string version = "1";
    size_t max_batch_size = 32;
    std::vector<size_t> preferred_batch_sizes;
    size_t batch_timeout_us = 5000;       // longest wait for a batch to fill
    bool enable_batching = false;
    size_t warmup_requests = 3;           // run on zero inputs before the model is ready
    // Extensions.
    size_t max_queue_size = 1024;         // queued requests beyond this get QueueFull
    int default_priority = 0;             // for requests that give none
    int64_t default_timeout_us = 0;       // 0: no per-request timeout unless the request sets one
    size_t instance_count = 1;            // batch executor threads
    int num_threads = 0;                  // the session's intra-op threads (0: all cores)
};

struct ServerConfig {
    HTTPServerConfig http;
    GRPCServerConfig grpc;
    TLSConfig tls;
    RateLimitConfig rate_limit;
    std::vector<ModelConfig> models;
    std::string model_dir;                // the model repository ("" = none)
    bool enable_metrics = true;
    uint16_t metrics_port = 9091;         // 0: no separate metrics listener (/metrics stays on HTTP)
    size_t max_memory = 0;                // bytes of loaded models; 0 = unlimited
    // Extensions.
    std::string admin_token;              // required (Bearer) by repository load/unload when set
    size_t poll_interval_ms = 0;          // hot reload: repository polling period (0 = off)
    bool strict_readiness = true;         // /v2/health/ready only when every model is ready
};

// Parsing: ValidationError (pyflame_rt/errors.hpp) naming the key for bad values or unknown keys.
ServerConfig load_server_config(const std::string& path);          // .json, .yaml or .yml
ServerConfig parse_server_config(const std::string& text, bool yaml);
ModelConfig load_model_config(const std::string& path);            // a repository config.json
ModelConfig parse_model_config(const std::string& text, bool yaml);
// Merges `overrides_json` (a JSON object of ModelConfig keys) into `base`.
ModelConfig merge_model_config(const ModelConfig& base, const std::string& overrides_json);
std::string server_config_to_json(const ServerConfig& config);
std::string model_config_to_json(const ModelConfig& config);
// "1024", "64KB", "512MB", "2GB" (powers of 1024) -> bytes.
size_t parse_byte_size(const std::string& text);

}  // namespace pyflame_rt::serving
