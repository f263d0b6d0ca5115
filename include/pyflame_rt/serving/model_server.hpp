#pragma once
// ModelServer: the HTTP/REST and gRPC front ends of the KServe v2 protocol, the model registry
// and Prometheus metrics, in one object. See serving/README.md for the endpoints.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "pyflame_rt/serving/config.hpp"
#include "pyflame_rt/serving/metrics.hpp"
#include "pyflame_rt/serving/model_registry.hpp"
#include "pyflame_rt/serving/types.hpp"

namespace pyflame_rt::serving {

class ModelServer {
public:
    explicit ModelServer(const ServerConfig& config);
    ~ModelServer();  // stop()
    ModelServer(const ModelServer&) = delete;
    ModelServer& operator=(const ModelServer&) = delete;

    // Loads config.models and config.model_dir, binds the listeners and returns once they
    // accept connections. Throws PyFlameRTError when a port cannot be bound or TLS files fail.
    void start();
    // Graceful: readiness goes false, listeners stop accepting, in-flight requests finish.
    // Safe to call from any thread (and more than once).
    void stop();
    bool is_running() const;
    ModelRegistry& registry();
    void load_model(const ModelConfig& config);
    void unload_model(const std::string& name, const std::string& version);
    ServerStats get_stats() const;
    // Blocks until stop() has completed.
    void wait();
    uint16_t http_port() const;   // the bound port (useful with port 0)
    void on_ready(std::function<void()> callback);
    void on_error(std::function<void(const std::string&)> callback);

    // Extensions.
    uint16_t grpc_port() const;     // 0 when gRPC is off
    uint16_t metrics_port() const;  // 0 when the metrics listener is off
    const ServerConfig& config() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class ModelServerBuilder {
public:
    ModelServerBuilder& host(const std::string& host);
    ModelServerBuilder& port(uint16_t port);
    ModelServerBuilder& grpc_port(uint16_t port);      // 0: no gRPC
    ModelServerBuilder& metrics_port(uint16_t port);   // 0: no metrics listener
    ModelServerBuilder& workers(size_t num_workers);
    ModelServerBuilder& enable_metrics(bool enable = true);
    ModelServerBuilder& enable_cors(bool enable = true);
    ModelServerBuilder& model_dir(const std::string& dir);
    ModelServerBuilder& max_memory(size_t bytes);
    ModelServerBuilder& admin_token(const std::string& token);
    ModelServerBuilder& tls(const std::string& cert_path, const std::string& key_path);
    ModelServerBuilder& rate_limit(double requests_per_second, size_t burst_size);
    ModelServerBuilder& add_model(const std::string& name, const std::string& path, const std::string& version = "1");
    // Applies to the models added so far and later.
    ModelServerBuilder& enable_batching(size_t max_batch_size, size_t batch_timeout_us);
    ModelServerBuilder& config(const ServerConfig& config);
    std::unique_ptr<ModelServer> build();

private:
    ServerConfig config_;
    bool batching_ = false;
    size_t max_batch_size_ = 32;
    size_t batch_timeout_us_ = 5000;
};

}  // namespace pyflame_rt::serving
