#pragma once
// Minimal leveled logging to stderr; the level is per session (and per run override).
#include <string>

namespace pyflame_rt {

enum class LogLevel { Verbose = 0, Info = 1, Warning = 2, Error = 3, Fatal = 4 };

LogLevel parse_log_level(const std::string& level);  // the option strings of SessionOptions
void log_message(LogLevel threshold, LogLevel level, const std::string& message);

}  // namespace pyflame_rt
