#pragma once
// Prometheus metrics (prometheus-cpp). One process-wide registry; families are created on first
// use, with the help texts and histogram buckets of the reference's metric names.
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace prometheus {
class Registry;
}

namespace pyflame_rt::serving {

using MetricLabels = std::map<std::string, std::string>;

class MetricsRegistry {
public:
    static MetricsRegistry& instance();

    void counter_inc(const std::string& name, const MetricLabels& labels = {}, double value = 1.0);
    void gauge_set(const std::string& name, double value, const MetricLabels& labels = {});
    void gauge_add(const std::string& name, double delta, const MetricLabels& labels = {});
    void histogram_observe(const std::string& name, double value, const MetricLabels& labels = {});
    // The Prometheus text exposition format (version 0.0.4).
    std::string export_prometheus() const;
    // Drops every metric (families included).
    void reset();

    // The underlying registry, for an exposer on a separate port.
    std::shared_ptr<prometheus::Registry> prometheus_registry() const;

    MetricsRegistry(const MetricsRegistry&) = delete;
    MetricsRegistry& operator=(const MetricsRegistry&) = delete;

private:
    MetricsRegistry();
    ~MetricsRegistry();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

namespace metrics {
void request_total(const std::string& model, const std::string& status);
void request_latency(const std::string& model, double seconds);
void inference_error(const std::string& model, const std::string& error_type);
void model_loaded(const std::string& model, bool loaded);
void batch_size(const std::string& model, size_t size);
void queue_size(const std::string& model, size_t size);
void request_active_inc(const std::string& model);
void request_active_dec(const std::string& model);
}  // namespace metrics

}  // namespace pyflame_rt::serving
