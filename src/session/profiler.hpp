#pragma once
// Records runs and nodes as Chrome trace events ("X" complete events) for chrome://tracing
// and Perfetto.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace pyflame_rt {

class Profiler {
public:
    using Clock = std::chrono::steady_clock;

    Profiler();
    int64_t start_time_ns() const { return start_wall_ns_; }
    bool active() const;
    void record(const std::string& name, const std::string& category, Clock::time_point start, Clock::time_point end,
                const std::vector<std::pair<std::string, std::string>>& args);
    // Writes PREFIX_<date-time>.json, stops recording and returns the path.
    std::string finish(const std::string& prefix);

private:
    struct Event {
        std::string name, category;
        int64_t ts_us, dur_us;
        uint64_t thread;
        std::vector<std::pair<std::string, std::string>> args;
    };
    mutable std::mutex mutex_;
    bool active_ = true;
    Clock::time_point start_;
    int64_t start_wall_ns_;
    std::vector<Event> events_;
};

}  // namespace pyflame_rt
