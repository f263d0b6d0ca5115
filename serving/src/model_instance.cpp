// ModelInstance: one loaded model version, its dynamic batcher and its statistics.
#include "pyflame_rt/serving/model_instance.hpp"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "ops/tensor_util.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/serving/metrics.hpp"
#include "pyflame_rt/session.hpp"

namespace pyflame_rt::serving {

namespace {

using Clock = std::chrono::steady_clock;

int64_t micros_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

std::vector<int64_t> spec_shape(const NodeArg& arg) {
    std::vector<int64_t> shape;
    for (const auto& dim : arg.shape) shape.push_back(dim ? *dim : -1);
    return shape;
}

// A queued request. Compatible requests (same signature) can share a batch.
struct Pending {
    InferRequest request;
    int64_t rows = 1;
    std::string signature;
    Clock::time_point deadline = Clock::time_point::max();
    uint64_t sequence = 0;
    std::promise<InferResponse> promise;
};

struct QueueOrder {
    bool operator()(const std::shared_ptr<Pending>& a, const std::shared_ptr<Pending>& b) const {
        if (a->request.priority != b->request.priority) return a->request.priority > b->request.priority;
        return a->sequence < b->sequence;
    }
};

constexpr size_t kLatencyWindow = 8192;  // percentiles over the most recent requests

}  // namespace

struct ModelInstance::Impl {
    ModelConfig config;
    std::shared_ptr<InferenceSession> session;
    std::vector<NodeArg> inputs, outputs;
    std::vector<std::string> input_names, output_names;
    bool batching = false;
    size_t memory_bytes = 0;
    std::atomic<bool> ready{false};
    std::atomic<bool> accepting{true};

    // Batch queue.
    mutable std::mutex queue_mutex;
    std::condition_variable queue_cv;
    std::multiset<std::shared_ptr<Pending>, QueueOrder> queue;
    uint64_t next_sequence = 0;
    bool stopping = false;
    std::vector<std::thread> executors;

    // Statistics.
    mutable std::mutex stats_mutex;
    ModelStats stats;
    std::deque<double> recent_latencies_ms;
    double latency_sum_ms = 0.0;

    void validate(const InferRequest& request, int64_t& rows, std::string& signature) const;
    std::vector<Tensor> run(const std::unordered_map<std::string, Tensor>& feeds,
                            const std::vector<std::string>& outputs, Clock::time_point deadline);
    InferResponse run_single(const InferRequest& request, Clock::time_point deadline);
    void execute_batch(std::vector<std::shared_ptr<Pending>>& batch);
    void executor_loop();
    void record(const InferRequest& request, InferResponse& response, Clock::time_point started);
    void complete(Pending& pending, InferResponse response, Clock::time_point started);
    void warm_up();
};

void ModelInstance::Impl::validate(const InferRequest& request, int64_t& rows, std::string& signature) const {
    auto invalid = [&](const std::string& message) {
        throw ServingError(ServingErrorCode::InvalidRequest, message);
    };
    for (const auto& [name, tensor] : request.inputs)
        if (std::find(input_names.begin(), input_names.end(), name) == input_names.end())
            invalid("model '" + config.name + "' has no input '" + name + "'");
    rows = -1;
    signature.clear();
    for (const auto& arg : inputs) {
        auto it = request.inputs.find(arg.name);
        if (it == request.inputs.end()) invalid("missing input '" + arg.name + "'");
        const Tensor& tensor = it->second;
        if (tensor.dtype() != arg.dtype)
            invalid("input '" + arg.name + "' has datatype " + kserve_datatype(tensor.dtype()) + ", the model expects " +
                    kserve_datatype(arg.dtype));
        if (arg.rank_known) {
            if (tensor.ndim() != arg.shape.size())
                invalid("input '" + arg.name + "' has shape " + shape_to_string(tensor.shape()) + ", the model expects " +
                        shape_to_string(arg.shape));
            for (size_t d = 0; d < arg.shape.size(); ++d)
                if (arg.shape[d] && *arg.shape[d] != tensor.shape()[d])
                    invalid("input '" + arg.name + "' has shape " + shape_to_string(tensor.shape()) +
                            ", the model expects " + shape_to_string(arg.shape));
        }
        if (batching) {
            if (rows >= 0 && tensor.shape()[0] != rows)
                invalid("inputs disagree on the batch dimension (dim 0): " + std::to_string(rows) + " vs " +
                        std::to_string(tensor.shape()[0]) + " for '" + arg.name + "'");
            rows = tensor.shape()[0];
            signature += arg.name + ":" + shape_to_string(std::vector<int64_t>(tensor.shape().begin() + 1, tensor.shape().end())) + ";";
        }
    }
    for (const auto& name : request.output_names)
        if (std::find(output_names.begin(), output_names.end(), name) == output_names.end())
            invalid("model '" + config.name + "' has no output '" + name + "'");
    if (batching) {
        if (rows < 1) invalid("the batch dimension (dim 0) must be at least 1");
        if (static_cast<size_t>(rows) > config.max_batch_size)
            invalid("batch of " + std::to_string(rows) + " rows exceeds max_batch_size " +
                    std::to_string(config.max_batch_size) + " of model '" + config.name + "'");
        for (const auto& name : request.output_names) signature += "|" + name;
    }
}

std::vector<Tensor> ModelInstance::Impl::run(const std::unordered_map<std::string, Tensor>& feeds,
                                             const std::vector<std::string>& outputs_wanted,
                                             Clock::time_point deadline) {
    RunOptions options;
    if (deadline != Clock::time_point::max()) {
        int64_t remaining_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (remaining_ms <= 0) throw ServingError(ServingErrorCode::Timeout, "request timed out before it ran");
        options.timeout_ms = remaining_ms;
    }
    return session->run(outputs_wanted, feeds, options);
}

void ModelInstance::Impl::record(const InferRequest& request, InferResponse& response, Clock::time_point started) {
    const auto now = Clock::now();
    response.latency_us = micros_between(request.arrival_time, now);
    response.queue_time_us = micros_between(request.arrival_time, started);
    const double latency_ms = response.latency_us / 1000.0;
    {
        std::lock_guard<std::mutex> lock(stats_mutex);
        ++stats.total_requests;
        (response.success ? stats.successful_requests : stats.failed_requests)++;
        (response.success ? stats.success_ns : stats.fail_ns) += static_cast<uint64_t>(response.latency_us) * 1000;
        stats.queue_ns += static_cast<uint64_t>(std::max<int64_t>(0, response.queue_time_us)) * 1000;
        if (response.success) {
            latency_sum_ms += latency_ms;
            recent_latencies_ms.push_back(latency_ms);
            if (recent_latencies_ms.size() > kLatencyWindow) recent_latencies_ms.pop_front();
            stats.last_inference_ms = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        }
    }
    metrics::request_total(config.name, response.success ? "success" : error_code_name(response.error_code));
    if (response.success) metrics::request_latency(config.name, response.latency_us / 1e6);
    else metrics::inference_error(config.name, error_code_name(response.error_code));
}

void ModelInstance::Impl::complete(Pending& pending, InferResponse response, Clock::time_point started) {
    record(pending.request, response, started);
    pending.promise.set_value(std::move(response));
}

InferResponse ModelInstance::Impl::run_single(const InferRequest& request, Clock::time_point deadline) {
    InferResponse response;
    response.request_id = request.request_id;
    response.model_name = config.name;
    response.model_version = config.version;
    const auto started = Clock::now();
    try {
        std::vector<Tensor> results = run(request.inputs, request.output_names, deadline);
        const auto& names = request.output_names.empty() ? output_names : request.output_names;
        for (size_t i = 0; i < names.size(); ++i) response.outputs[names[i]] = std::move(results[i]);
        response.output_order = names;
        std::lock_guard<std::mutex> lock(stats_mutex);
        ++stats.execution_count;
        stats.inference_count += static_cast<uint64_t>(std::max<int64_t>(1, batching ? request.inputs.begin()->second.shape()[0] : 1));
        stats.compute_ns += static_cast<uint64_t>(micros_between(started, Clock::now())) * 1000;
    } catch (const ServingError& error) {
        response = InferResponse::failure(request, error.code(), error.what());
    } catch (const RunTimeoutError& error) {
        response = InferResponse::failure(request, ServingErrorCode::Timeout, error.what());
    } catch (const ValidationError& error) {
        response = InferResponse::failure(request, ServingErrorCode::InvalidRequest, error.what());
    } catch (const std::exception& error) {
        response = InferResponse::failure(request, ServingErrorCode::InferenceError, error.what());
    }
    response.model_name = config.name;
    response.model_version = config.version;
    return response;
}

void ModelInstance::Impl::execute_batch(std::vector<std::shared_ptr<Pending>>& batch) {
    const auto started = Clock::now();
    int64_t total_rows = 0;
    for (const auto& pending : batch) total_rows += pending->rows;
    metrics::batch_size(config.name, static_cast<size_t>(total_rows));
    if (batch.size() == 1) {
        Pending& pending = *batch.front();
        complete(pending, run_single(pending.request, pending.deadline), started);
        return;
    }
    // Merge along dim 0, run once, split the outputs back by each request's rows.
    Clock::time_point deadline = Clock::time_point::max();
    for (const auto& pending : batch) deadline = std::min(deadline, pending->deadline);
    const auto& wanted = batch.front()->request.output_names;
    const auto& names = wanted.empty() ? output_names : wanted;
    std::vector<Tensor> merged_outputs;
    std::string failure;
    ServingErrorCode failure_code = ServingErrorCode::OK;
    try {
        std::unordered_map<std::string, Tensor> feeds;
        for (const auto& arg : inputs) {
            std::vector<Tensor> parts;
            for (const auto& pending : batch) parts.push_back(pending->request.inputs.at(arg.name));
            feeds[arg.name] = ops::concat_along(parts, 0, false);
        }
        merged_outputs = run(feeds, wanted, deadline);
        for (const auto& output : merged_outputs)
            if (output.ndim() == 0 || output.shape()[0] != total_rows) {
                // An output not laid out by batch row cannot be split: run each request alone.
                for (auto& pending : batch) complete(*pending, run_single(pending->request, pending->deadline), started);
                return;
            }
    } catch (const ServingError& error) {
        failure_code = error.code();
        failure = error.what();
    } catch (const RunTimeoutError& error) {
        failure_code = ServingErrorCode::Timeout;
        failure = error.what();
    } catch (const std::exception& error) {
        failure_code = ServingErrorCode::InferenceError;
        failure = error.what();
    }
    if (failure_code != ServingErrorCode::OK) {
        for (auto& pending : batch)
            complete(*pending, InferResponse::failure(pending->request, failure_code, failure), started);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(stats_mutex);
        ++stats.execution_count;
        stats.inference_count += static_cast<uint64_t>(total_rows);
        stats.compute_ns += static_cast<uint64_t>(micros_between(started, Clock::now())) * 1000;
    }
    int64_t offset = 0;
    for (auto& pending : batch) {
        InferResponse response;
        response.request_id = pending->request.request_id;
        response.model_name = config.name;
        response.model_version = config.version;
        response.output_order = names;
        for (size_t i = 0; i < names.size(); ++i)
            response.outputs[names[i]] = ops::slice_along(merged_outputs[i], 0, offset, pending->rows, true);
        offset += pending->rows;
        complete(*pending, std::move(response), started);
    }
}

void ModelInstance::Impl::executor_loop() {
    std::unique_lock<std::mutex> lock(queue_mutex);
    while (true) {
        if (queue.empty()) {
            if (stopping) return;
            queue_cv.wait(lock);
            continue;
        }
        const auto now = Clock::now();
        // Expired requests are answered first; the earliest remaining deadline bounds the wait.
        Clock::time_point wake = Clock::time_point::max();
        for (auto it = queue.begin(); it != queue.end();) {
            if ((*it)->deadline <= now) {
                auto expired = *it;
                it = queue.erase(it);
                lock.unlock();
                complete(*expired, InferResponse::failure(expired->request, ServingErrorCode::Timeout,
                                                          "request timed out after " +
                                                              std::to_string(micros_between(expired->request.arrival_time, now)) +
                                                              " us in the queue of model '" + config.name + "'"),
                         now);
                lock.lock();
                it = queue.begin();  // the queue may have changed while unlocked
                continue;
            }
            wake = std::min(wake, (*it)->deadline);
            ++it;
        }
        if (queue.empty()) continue;
        metrics::queue_size(config.name, queue.size());

        // The head (highest priority, oldest) decides the signature; gather compatible requests.
        const auto head = *queue.begin();
        std::vector<std::shared_ptr<Pending>> candidates;
        int64_t rows = 0;
        for (const auto& pending : queue) {
            if (pending->signature != head->signature) continue;
            if (rows + pending->rows > static_cast<int64_t>(config.max_batch_size)) continue;
            candidates.push_back(pending);
            rows += pending->rows;
            if (rows == static_cast<int64_t>(config.max_batch_size)) break;
        }
        const auto& preferred = config.preferred_batch_sizes;
        const size_t largest_preferred = preferred.empty() ? 0 : *std::max_element(preferred.begin(), preferred.end());
        const auto batch_due = head->request.arrival_time + std::chrono::microseconds(config.batch_timeout_us);
        const bool full = rows == static_cast<int64_t>(config.max_batch_size);
        const bool preferred_reached = largest_preferred > 0 && rows >= static_cast<int64_t>(largest_preferred);
        if (!full && !preferred_reached && now < batch_due && !stopping) {
            queue_cv.wait_until(lock, std::min(wake, batch_due));
            continue;
        }
        // Dispatch: when not full, the longest prefix whose rows are a preferred size, if any.
        size_t take = candidates.size();
        if (!full && !preferred.empty()) {
            int64_t prefix = 0;
            for (size_t i = 0; i < candidates.size(); ++i) {
                prefix += candidates[i]->rows;
                if (std::find(preferred.begin(), preferred.end(), static_cast<size_t>(prefix)) != preferred.end())
                    take = i + 1;
            }
        }
        candidates.resize(take);
        for (const auto& pending : candidates) queue.erase(queue.find(pending));
        metrics::queue_size(config.name, queue.size());
        lock.unlock();
        execute_batch(candidates);
        lock.lock();
    }
}

void ModelInstance::Impl::warm_up() {
    if (config.warmup_requests == 0) return;
    std::unordered_map<std::string, Tensor> feeds;
    for (const auto& arg : inputs) {
        std::vector<int64_t> shape;
        for (const auto& dim : arg.shape) shape.push_back(dim ? *dim : 1);
        feeds[arg.name] = Tensor::zeros(shape, arg.dtype);
    }
    for (size_t i = 0; i < config.warmup_requests; ++i) {
        try {
            session->run({}, feeds);
        } catch (const std::exception& error) {
            throw ServingError(ServingErrorCode::ModelNotReady,
                               "warm-up of model '" + config.name + "' version " + config.version + " failed on zero inputs: " +
                                   error.what() + " (set warmup_requests to 0 in its config to skip warm-up)");
        }
    }
}

ModelInstance::ModelInstance(const ModelConfig& config) : impl_(std::make_shared<Impl>()) {
    impl_->config = config;
    if (config.max_batch_size == 0) throw ServingError(ServingErrorCode::InvalidRequest, "max_batch_size must be at least 1");
    if (config.instance_count == 0) throw ServingError(ServingErrorCode::InvalidRequest, "instance_count must be at least 1");
    SessionOptions options;
    options.num_threads = config.num_threads;
    impl_->session = std::make_shared<InferenceSession>(config.model_path, options);
    impl_->inputs = impl_->session->get_inputs();
    impl_->outputs = impl_->session->get_outputs();
    for (const auto* group : {&impl_->inputs, &impl_->outputs})
        for (const auto& arg : *group) {
            if (arg.kind != ValueKind::Tensor)
                throw ServingError(ServingErrorCode::InvalidRequest,
                                   "model '" + config.name + "': '" + arg.name + "' is a " + arg.type_str() +
                                       "; the server serves tensor inputs and outputs only");
            kserve_datatype(arg.dtype);  // throws for dtypes the protocol cannot carry
        }
    for (const auto& arg : impl_->inputs) impl_->input_names.push_back(arg.name);
    for (const auto& arg : impl_->outputs) impl_->output_names.push_back(arg.name);
    for (const auto& [name, tensor] : impl_->session->graph()->initializers()) impl_->memory_bytes += tensor.size_bytes();

    // Batching merges along dim 0, so every input needs a dynamic dim 0 (and no strings).
    bool batchable = config.enable_batching && !impl_->inputs.empty();
    for (const auto& arg : impl_->inputs)
        if (!arg.rank_known || arg.shape.empty() || arg.shape[0].has_value() || arg.dtype == DType::String) batchable = false;
    impl_->batching = batchable;

    impl_->warm_up();
    if (impl_->batching)
        for (size_t i = 0; i < config.instance_count; ++i) impl_->executors.emplace_back([impl = impl_.get()] { impl->executor_loop(); });
    impl_->ready = true;
}

ModelInstance::~ModelInstance() {
    impl_->ready = false;
    {
        std::lock_guard<std::mutex> lock(impl_->queue_mutex);
        impl_->accepting = false;
        impl_->stopping = true;
    }
    impl_->queue_cv.notify_all();
    for (auto& thread : impl_->executors) thread.join();
}

bool ModelInstance::is_ready() const { return impl_->ready; }

std::future<InferResponse> ModelInstance::infer_async(InferRequest request) {
    Impl& impl = *impl_;
    if (request.request_id.empty()) request.request_id = InferRequest::generate_id();
    request.model_name = impl.config.name;
    request.model_version = impl.config.version;
    const int64_t timeout_us = request.timeout_us > 0 ? request.timeout_us : impl.config.default_timeout_us;
    const auto deadline = timeout_us > 0 ? request.arrival_time + std::chrono::microseconds(timeout_us) : Clock::time_point::max();

    auto immediate = [&](InferResponse response) {
        impl.record(request, response, Clock::now());
        std::promise<InferResponse> promise;
        promise.set_value(std::move(response));
        return promise.get_future();
    };
    if (!impl.ready || !impl.accepting)
        return immediate(InferResponse::failure(request, ServingErrorCode::ModelNotReady,
                                                "model '" + impl.config.name + "' version " + impl.config.version + " is not ready"));
    auto pending = std::make_shared<Pending>();
    try {
        impl.validate(request, pending->rows, pending->signature);
    } catch (const ServingError& error) {
        return immediate(InferResponse::failure(request, error.code(), error.what()));
    }
    if (!impl.batching) {
        // Runs on the caller's thread for infer(); infer_async gets a thread of its own.
        return std::async(std::launch::async, [keep = impl_, request = std::move(request), deadline]() {
            const auto started = Clock::now();
            InferResponse response = keep->run_single(request, deadline);
            keep->record(request, response, started);
            return response;
        });
    }
    pending->deadline = deadline;
    auto future = pending->promise.get_future();
    {
        std::lock_guard<std::mutex> lock(impl.queue_mutex);
        if (impl.queue.size() >= impl.config.max_queue_size)
            return immediate(InferResponse::failure(request, ServingErrorCode::QueueFull,
                                                    "queue of model '" + impl.config.name + "' is full (" +
                                                        std::to_string(impl.config.max_queue_size) + " requests)"));
        pending->request = std::move(request);
        pending->sequence = impl.next_sequence++;
        impl.queue.insert(pending);
        metrics::queue_size(impl.config.name, impl.queue.size());
    }
    impl.queue_cv.notify_one();
    return future;
}

InferResponse ModelInstance::infer(const InferRequest& request) {
    if (!impl_->batching && impl_->ready && impl_->accepting) {
        // Direct path without a thread hop.
        int64_t rows;
        std::string signature;
        const int64_t timeout_us = request.timeout_us > 0 ? request.timeout_us : impl_->config.default_timeout_us;
        const auto deadline = timeout_us > 0 ? request.arrival_time + std::chrono::microseconds(timeout_us) : Clock::time_point::max();
        InferRequest named = request;
        if (named.request_id.empty()) named.request_id = InferRequest::generate_id();
        named.model_name = impl_->config.name;
        named.model_version = impl_->config.version;
        InferResponse response;
        const auto started = Clock::now();
        try {
            impl_->validate(named, rows, signature);
            response = impl_->run_single(named, deadline);
        } catch (const ServingError& error) {
            response = InferResponse::failure(named, error.code(), error.what());
        }
        impl_->record(named, response, started);
        return response;
    }
    return infer_async(request).get();
}

ModelStats ModelInstance::get_stats() const {
    std::lock_guard<std::mutex> lock(impl_->stats_mutex);
    ModelStats stats = impl_->stats;
    const auto& recent = impl_->recent_latencies_ms;
    if (stats.successful_requests > 0) stats.avg_latency_ms = impl_->latency_sum_ms / static_cast<double>(stats.successful_requests);
    if (!recent.empty()) {
        std::vector<double> sorted(recent.begin(), recent.end());
        std::sort(sorted.begin(), sorted.end());
        auto percentile = [&](double p) {
            // Nearest rank.
            size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
            return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
        };
        stats.p50_latency_ms = percentile(50);
        stats.p95_latency_ms = percentile(95);
        stats.p99_latency_ms = percentile(99);
    }
    return stats;
}

void ModelInstance::reset_stats() {
    std::lock_guard<std::mutex> lock(impl_->stats_mutex);
    impl_->stats = ModelStats{};
    impl_->recent_latencies_ms.clear();
    impl_->latency_sum_ms = 0.0;
}

ServingModelMetadata ModelInstance::get_serving_metadata() const {
    ServingModelMetadata metadata;
    metadata.name = impl_->config.name;
    metadata.version = impl_->config.version;
    metadata.platform = "pyflame_rt";
    for (const auto& arg : impl_->inputs) metadata.inputs.push_back({arg.name, kserve_datatype(arg.dtype), spec_shape(arg)});
    for (const auto& arg : impl_->outputs) metadata.outputs.push_back({arg.name, kserve_datatype(arg.dtype), spec_shape(arg)});
    return metadata;
}

std::vector<std::string> ModelInstance::input_names() const { return impl_->input_names; }
std::vector<std::string> ModelInstance::output_names() const { return impl_->output_names; }
ModelConfig ModelInstance::config() const { return impl_->config; }
const std::string& ModelInstance::name() const { return impl_->config.name; }
const std::string& ModelInstance::version() const { return impl_->config.version; }
bool ModelInstance::batching_active() const { return impl_->batching; }
size_t ModelInstance::memory_bytes() const { return impl_->memory_bytes; }
size_t ModelInstance::queue_size() const {
    std::lock_guard<std::mutex> lock(impl_->queue_mutex);
    return impl_->queue.size();
}
void ModelInstance::drain() { impl_->accepting = false; }
std::shared_ptr<const InferenceSession> ModelInstance::session() const { return impl_->session; }

}  // namespace pyflame_rt::serving
