// MetricsRegistry over prometheus-cpp: families by name, created on first use.
#include "pyflame_rt/serving/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>
#include <unordered_map>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::serving {

namespace {
const std::unordered_map<std::string, std::string>& help_texts() {
    static const std::unordered_map<std::string, std::string> texts = {
        {"pyflame_request_total", "Total inference requests, by model and status (success or an error code)"},
        {"pyflame_request_latency_seconds", "End-to-end inference latency in seconds"},
        {"pyflame_requests_active", "Inference requests being served now"},
        {"pyflame_model_loaded", "1 while a version of the model is loaded, else 0"},
        {"pyflame_batch_size", "Rows per executed batch"},
        {"pyflame_queue_size", "Requests waiting in the model's batch queue"},
        {"pyflame_inference_errors_total", "Failed inference requests, by model and error code"},
    };
    return texts;
}

prometheus::Histogram::BucketBoundaries buckets_for(const std::string& name) {
    if (name == "pyflame_batch_size") return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    // Latencies: 100 us .. 10 s.
    return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}
}  // namespace

struct MetricsRegistry::Impl {
    std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
    std::mutex mutex;
    std::unordered_map<std::string, prometheus::Family<prometheus::Counter>*> counters;
    std::unordered_map<std::string, prometheus::Family<prometheus::Gauge>*> gauges;
    std::unordered_map<std::string, prometheus::Family<prometheus::Histogram>*> histograms;

    static std::string help(const std::string& name) {
        auto it = help_texts().find(name);
        return it == help_texts().end() ? name : it->second;
    }
    void check_unused(const std::string& name, const char* kind) {
        bool clash = (counters.count(name) && std::string(kind) != "counter") ||
                     (gauges.count(name) && std::string(kind) != "gauge") ||
                     (histograms.count(name) && std::string(kind) != "histogram");
        if (clash) throw ValidationError("metric '" + name + "' already exists with another type than " + kind);
    }
    prometheus::Family<prometheus::Counter>& counter(const std::string& name) {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = counters.find(name);
        if (it != counters.end()) return *it->second;
        check_unused(name, "counter");
        auto& family = prometheus::BuildCounter().Name(name).Help(help(name)).Register(*registry);
        counters[name] = &family;
        return family;
    }
    prometheus::Family<prometheus::Gauge>& gauge(const std::string& name) {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = gauges.find(name);
        if (it != gauges.end()) return *it->second;
        check_unused(name, "gauge");
        auto& family = prometheus::BuildGauge().Name(name).Help(help(name)).Register(*registry);
        gauges[name] = &family;
        return family;
    }
    prometheus::Family<prometheus::Histogram>& histogram(const std::string& name) {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = histograms.find(name);
        if (it != histograms.end()) return *it->second;
        check_unused(name, "histogram");
        auto& family = prometheus::BuildHistogram().Name(name).Help(help(name)).Register(*registry);
        histograms[name] = &family;
        return family;
    }
};

MetricsRegistry::MetricsRegistry() : impl_(std::make_unique<Impl>()) {}
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry& MetricsRegistry::instance() {
    // Never destroyed: metrics may be touched by threads still running at exit.
    static MetricsRegistry* registry = new MetricsRegistry();
    return *registry;
}

void MetricsRegistry::counter_inc(const std::string& name, const MetricLabels& labels, double value) {
    impl_->counter(name).Add(prometheus::Labels(labels.begin(), labels.end())).Increment(value);
}

void MetricsRegistry::gauge_set(const std::string& name, double value, const MetricLabels& labels) {
    impl_->gauge(name).Add(prometheus::Labels(labels.begin(), labels.end())).Set(value);
}

void MetricsRegistry::gauge_add(const std::string& name, double delta, const MetricLabels& labels) {
    impl_->gauge(name).Add(prometheus::Labels(labels.begin(), labels.end())).Increment(delta);
}

void MetricsRegistry::histogram_observe(const std::string& name, double value, const MetricLabels& labels) {
    impl_->histogram(name).Add(prometheus::Labels(labels.begin(), labels.end()), buckets_for(name)).Observe(value);
}

std::string MetricsRegistry::export_prometheus() const {
    prometheus::TextSerializer serializer;
    std::ostringstream out;
    serializer.Serialize(out, impl_->registry->Collect());
    return out.str();
}

void MetricsRegistry::reset() {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    for (auto& [name, family] : impl_->counters) impl_->registry->Remove(*family);
    for (auto& [name, family] : impl_->gauges) impl_->registry->Remove(*family);
    for (auto& [name, family] : impl_->histograms) impl_->registry->Remove(*family);
    impl_->counters.clear();
    impl_->gauges.clear();
    impl_->histograms.clear();
}

std::shared_ptr<prometheus::Registry> MetricsRegistry::prometheus_registry() const { return impl_->registry; }

namespace metrics {
void request_total(const std::string& model, const std::string& status) {
    MetricsRegistry::instance().counter_inc("pyflame_request_total", {{"model", model}, {"status", status}});
}
void request_latency(const std::string& model, double seconds) {
    MetricsRegistry::instance().histogram_observe("pyflame_request_latency_seconds", seconds, {{"model", model}});
}
void inference_error(const std::string& model, const std::string& error_type) {
    MetricsRegistry::instance().counter_inc("pyflame_inference_errors_total", {{"model", model}, {"error", error_type}});
}
void model_loaded(const std::string& model, bool loaded) {
    MetricsRegistry::instance().gauge_set("pyflame_model_loaded", loaded ? 1.0 : 0.0, {{"model", model}});
}
void batch_size(const std::string& model, size_t size) {
    MetricsRegistry::instance().histogram_observe("pyflame_batch_size", static_cast<double>(size), {{"model", model}});
}
void queue_size(const std::string& model, size_t size) {
    MetricsRegistry::instance().gauge_set("pyflame_queue_size", static_cast<double>(size), {{"model", model}});
}
void request_active_inc(const std::string& model) {
    MetricsRegistry::instance().gauge_add("pyflame_requests_active", 1.0, {{"model", model}});
}
void request_active_dec(const std::string& model) {
    MetricsRegistry::instance().gauge_add("pyflame_requests_active", -1.0, {{"model", model}});
}
}  // namespace metrics

}  // namespace pyflame_rt::serving
