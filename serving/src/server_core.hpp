#pragma once
// What the HTTP and gRPC front ends share: the registry, readiness, the admin token check,
// the rate limiter and the request counters.
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "pyflame_rt/serving/config.hpp"
#include "pyflame_rt/serving/model_registry.hpp"
#include "pyflame_rt/serving/types.hpp"

namespace pyflame_rt::serving {

// A token bucket shared by all clients: `rate` tokens per second, at most `burst` stored.
class TokenBucket {
public:
    TokenBucket(double rate, double burst);
    bool try_acquire();

private:
    std::mutex mutex_;
    double rate_, burst_, tokens_;
    std::chrono::steady_clock::time_point last_;
};

enum class AdminCheck { Allowed, Missing, Wrong };

struct ServerCore {
    explicit ServerCore(const ServerConfig& config);

    ServerConfig config;
    ModelRegistry registry;
    TokenBucket rate_limiter;
    std::atomic<bool> accepting{false};
    std::atomic<uint64_t> total_requests{0}, failed_requests{0}, active_requests{0};
    std::chrono::steady_clock::time_point started_at = std::chrono::steady_clock::now();
    std::function<void(const std::string&)> on_error;

    bool ready() const;
    // True when the request may pass the rate limit.
    bool admit();
    // `authorization`: the Authorization header / metadata value ("Bearer TOKEN").
    AdminCheck check_admin(const std::string& authorization) const;
    // Looks the model up and runs the request; never throws.
    InferResponse infer(InferRequest& request);
    void report_error(const std::string& message) const;
};

}  // namespace pyflame_rt::serving
