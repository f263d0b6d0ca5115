// ModelServer: wires the registry, the HTTP and gRPC front ends and the metrics exposer.
#include "pyflame_rt/serving/model_server.hpp"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <iostream>
#include <mutex>

#include "frontends.hpp"
#include "pyflame_rt/errors.hpp"
#include "server_core.hpp"

namespace pyflame_rt::serving {

struct ModelServer::Impl {
    ServerCore core;
    HttpFrontend http{core};
    std::unique_ptr<GrpcFrontend> grpc;
    std::unique_ptr<prometheus::Exposer> exposer;
    uint16_t metrics_port = 0;
    std::function<void()> ready_callback;

    std::mutex state_mutex;
    std::condition_variable state_cv;
    bool running = false;
    bool stopped = false;
    bool stopping = false;

    explicit Impl(const ServerConfig& config) : core(config) {}
};

ModelServer::ModelServer(const ServerConfig& config) : impl_(std::make_unique<Impl>(config)) {}

ModelServer::~ModelServer() { stop(); }

void ModelServer::start() {
    {
        std::lock_guard<std::mutex> lock(impl_->state_mutex);
        if (impl_->running || impl_->stopping) throw PyFlameRTError("ModelServer::start: the server was already started");
        impl_->running = true;
    }
    ServerCore& core = impl_->core;
    const ServerConfig& config = core.config;
    try {
        // Listeners first, so liveness answers while models load (readiness says 503 until then).
        impl_->http.start();
        if (config.grpc.enabled && config.grpc.port != 0) {
            impl_->grpc = std::make_unique<GrpcFrontend>(core);
            impl_->grpc->start();
        }
        if (config.enable_metrics && config.metrics_port != 0) {
            const std::string address = config.http.host + ":" + std::to_string(config.metrics_port);
            try {
                impl_->exposer = std::make_unique<prometheus::Exposer>(address);
            } catch (const std::exception& error) {
                throw PyFlameRTError("cannot bind the metrics port " + address + ": " + error.what());
            }
            impl_->exposer->RegisterCollectable(MetricsRegistry::instance().prometheus_registry());
            const auto ports = impl_->exposer->GetListeningPorts();
            impl_->metrics_port = ports.empty() ? config.metrics_port : static_cast<uint16_t>(ports.front());
            std::cout << "[pyflame-serve] metrics listening on " << config.http.host << ":" << impl_->metrics_port
                      << "/metrics" << std::endl;
        }
        for (const auto& model : config.models) core.registry.register_model(model);
        if (!config.model_dir.empty()) core.registry.load_from_directory(config.model_dir);
        if (config.poll_interval_ms > 0 && !config.model_dir.empty())
            core.registry.enable_hot_reload(true, config.poll_interval_ms);
    } catch (...) {
        stop();
        throw;
    }
    core.accepting = true;
    std::cout << "[pyflame-serve] ready: " << core.registry.list_models().size() << " model(s) loaded" << std::endl;
    if (impl_->ready_callback) impl_->ready_callback();
}

void ModelServer::stop() {
    {
        std::unique_lock<std::mutex> lock(impl_->state_mutex);
        if (!impl_->running || impl_->stopped) return;
        if (impl_->stopping) {
            impl_->state_cv.wait(lock, [&] { return impl_->stopped; });
            return;
        }
        impl_->stopping = true;
    }
    impl_->core.accepting = false;
    impl_->core.registry.enable_hot_reload(false);
    // Each front end answers its in-flight requests before returning.
    impl_->http.stop();
    if (impl_->grpc) impl_->grpc->stop();
    impl_->exposer.reset();
    {
        std::lock_guard<std::mutex> lock(impl_->state_mutex);
        impl_->stopped = true;
    }
    impl_->state_cv.notify_all();
}

bool ModelServer::is_running() const {
    std::lock_guard<std::mutex> lock(impl_->state_mutex);
    return impl_->running && !impl_->stopped;
}

ModelRegistry& ModelServer::registry() { return impl_->core.registry; }
void ModelServer::load_model(const ModelConfig& config) { impl_->core.registry.register_model(config); }
void ModelServer::unload_model(const std::string& name, const std::string& version) {
    if (version.empty()) impl_->core.registry.unload_all(name);
    else impl_->core.registry.unload(name, version);
}

ServerStats ModelServer::get_stats() const {
    ServerStats stats;
    stats.total_requests = impl_->core.total_requests;
    stats.failed_requests = impl_->core.failed_requests;
    stats.active_requests = impl_->core.active_requests;
    stats.uptime_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - impl_->core.started_at).count();
    stats.registry = impl_->core.registry.get_stats();
    return stats;
}

void ModelServer::wait() {
    std::unique_lock<std::mutex> lock(impl_->state_mutex);
    impl_->state_cv.wait(lock, [&] { return impl_->stopped; });
}

uint16_t ModelServer::http_port() const { return impl_->http.port(); }
uint16_t ModelServer::grpc_port() const { return impl_->grpc ? impl_->grpc->port() : 0; }
uint16_t ModelServer::metrics_port() const { return impl_->metrics_port; }
const ServerConfig& ModelServer::config() const { return impl_->core.config; }
void ModelServer::on_ready(std::function<void()> callback) { impl_->ready_callback = std::move(callback); }
void ModelServer::on_error(std::function<void(const std::string&)> callback) { impl_->core.on_error = std::move(callback); }

// ---- builder ----

ModelServerBuilder& ModelServerBuilder::host(const std::string& host) {
    config_.http.host = host;
    config_.grpc.host = host;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::port(uint16_t port) {
    config_.http.port = port;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::grpc_port(uint16_t port) {
    config_.grpc.port = port;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::metrics_port(uint16_t port) {
    config_.metrics_port = port;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::workers(size_t num_workers) {
    config_.http.num_workers = num_workers;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::enable_metrics(bool enable) {
    config_.enable_metrics = enable;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::enable_cors(bool enable) {
    config_.http.enable_cors = enable;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::model_dir(const std::string& dir) {
    config_.model_dir = dir;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::max_memory(size_t bytes) {
    config_.max_memory = bytes;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::admin_token(const std::string& token) {
    config_.admin_token = token;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::tls(const std::string& cert_path, const std::string& key_path) {
    config_.tls.enabled = true;
    config_.tls.cert_path = cert_path;
    config_.tls.key_path = key_path;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::rate_limit(double requests_per_second, size_t burst_size) {
    config_.rate_limit.enabled = true;
    config_.rate_limit.requests_per_second = requests_per_second;
    config_.rate_limit.burst_size = burst_size;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::add_model(const std::string& name, const std::string& path, const std::string& version) {
    ModelConfig model;
    model.name = name;
    model.model_path = path;
    model.version = version;
    config_.models.push_back(model);
    return *this;
}
ModelServerBuilder& ModelServerBuilder::enable_batching(size_t max_batch_size, size_t batch_timeout_us) {
    batching_ = true;
    max_batch_size_ = max_batch_size;
    batch_timeout_us_ = batch_timeout_us;
    return *this;
}
ModelServerBuilder& ModelServerBuilder::config(const ServerConfig& config) {
    config_ = config;
    return *this;
}
std::unique_ptr<ModelServer> ModelServerBuilder::build() {
    ServerConfig config = config_;
    if (batching_)
        for (auto& model : config.models) {
            model.enable_batching = true;
            model.max_batch_size = max_batch_size_;
            model.batch_timeout_us = batch_timeout_us_;
        }
    return std::make_unique<ModelServer>(config);
}

}  // namespace pyflame_rt::serving
