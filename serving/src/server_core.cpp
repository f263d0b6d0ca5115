// ServerCore: state shared by the front ends.
#include "server_core.hpp"

#include <algorithm>
#include <iostream>

#include "pyflame_rt/serving/metrics.hpp"

namespace pyflame_rt::serving {

TokenBucket::TokenBucket(double rate, double burst)
    : rate_(rate), burst_(std::max(1.0, burst)), tokens_(std::max(1.0, burst)), last_(std::chrono::steady_clock::now()) {}

bool TokenBucket::try_acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    last_ = now;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
}

ServerCore::ServerCore(const ServerConfig& server_config)
    : config(server_config),
      registry(server_config.max_memory),
      rate_limiter(server_config.rate_limit.requests_per_second, static_cast<double>(server_config.rate_limit.burst_size)) {}

bool ServerCore::ready() const { return accepting && (!config.strict_readiness || registry.all_ready()); }

bool ServerCore::admit() { return !config.rate_limit.enabled || rate_limiter.try_acquire(); }

AdminCheck ServerCore::check_admin(const std::string& authorization) const {
    if (config.admin_token.empty()) return AdminCheck::Allowed;
    std::string token = authorization;
    const std::string bearer = "Bearer ";
    if (token.compare(0, bearer.size(), bearer) == 0) token = token.substr(bearer.size());
    if (token.empty()) return AdminCheck::Missing;
    // Constant time in the token's content.
    const std::string& expected = config.admin_token;
    unsigned char diff = token.size() == expected.size() ? 0 : 1;
    for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(token[i] ^ expected[i % expected.size()]);
    return diff == 0 ? AdminCheck::Allowed : AdminCheck::Wrong;
}

InferResponse ServerCore::infer(InferRequest& request) {
    ++total_requests;
    std::shared_ptr<ModelInstance> instance;
    try {
        instance = registry.get(request.model_name, request.model_version);
    } catch (const ServingError& error) {
        // Names the server does not serve get one label, so clients cannot grow the metrics.
        const std::string label = registry.has(request.model_name) ? request.model_name : "_unknown";
        metrics::request_total(label, error_code_name(error.code()));
        metrics::inference_error(label, error_code_name(error.code()));
        ++failed_requests;
        return InferResponse::failure(request, error.code(), error.what());
    }
    ++active_requests;
    metrics::request_active_inc(request.model_name);
    InferResponse response;
    try {
        response = instance->infer(request);
    } catch (const std::exception& error) {
        response = InferResponse::failure(request, ServingErrorCode::InternalError, error.what());
        report_error(error.what());
    }
    if (!response.success) ++failed_requests;
    --active_requests;
    metrics::request_active_dec(request.model_name);
    return response;
}

void ServerCore::report_error(const std::string& message) const {
    std::cerr << "[pyflame-serve] error: " << message << std::endl;
    if (on_error) on_error(message);
}

}  // namespace pyflame_rt::serving
