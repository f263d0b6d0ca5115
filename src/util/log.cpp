#include "util/log.hpp"

#include <cstdio>
#include <mutex>

namespace pyflame_rt {

LogLevel parse_log_level(const std::string& level) {
    if (level == "verbose") return LogLevel::Verbose;
    if (level == "info") return LogLevel::Info;
    if (level == "error") return LogLevel::Error;
    if (level == "fatal") return LogLevel::Fatal;
    return LogLevel::Warning;
}

void log_message(LogLevel threshold, LogLevel level, const std::string& message) {
    if (level < threshold) return;
    static const char* const kNames[] = {"V", "I", "W", "E", "F"};
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    std::fprintf(stderr, "[pyflame_rt %s] %s\n", kNames[static_cast<int>(level)], message.c_str());
}

}  // namespace pyflame_rt
