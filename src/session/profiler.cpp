#include "session/profiler.hpp"

#include <unistd.h>

#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {

Profiler::Profiler()
    : start_(Clock::now()),
      start_wall_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count()) {}

bool Profiler::active() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_;
}

void Profiler::record(const std::string& name, const std::string& category, Clock::time_point start,
                      Clock::time_point end, const std::vector<std::pair<std::string, std::string>>& args) {
    using std::chrono::duration_cast;
    using std::chrono::microseconds;
    Event e{name, category, duration_cast<microseconds>(start - start_).count(),
            duration_cast<microseconds>(end - start).count(),
            std::hash<std::thread::id>{}(std::this_thread::get_id()) % 100000, args};
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_) events_.push_back(std::move(e));
}

std::string Profiler::finish(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
    nlohmann::json events = nlohmann::json::array();
    for (const auto& e : events_) {
        nlohmann::json args = nlohmann::json::object();
        for (const auto& [k, v] : e.args) args[k] = v;
        events.push_back({{"name", e.name}, {"cat", e.category}, {"ph", "X"}, {"ts", e.ts_us}, {"dur", e.dur_us},
                          {"pid", static_cast<int64_t>(::getpid())}, {"tid", e.thread}, {"args", args}});
    }
    nlohmann::json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"},
                          {"otherData", {{"profiling_start_time_ns", start_wall_ns_}}}};
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%d_%H-%M-%S", &tm);
    const std::string path = prefix + "_" + stamp + "_" + std::to_string(start_wall_ns_ % 1000000) + ".json";
    std::ofstream out(path);
    if (!out) throw PyFlameRTError("cannot write profile '" + path + "'");
    out << doc.dump(1);
    events_.clear();
    return path;
}

}  // namespace pyflame_rt
