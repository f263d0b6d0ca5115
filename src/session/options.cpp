#include <algorithm>

#include "pyflame_rt/options.hpp"

namespace pyflame_rt {

bool is_valid_log_level(const std::string& level) {
    static const char* const kLevels[] = {"verbose", "info", "warning", "error", "fatal"};
    return std::find(std::begin(kLevels), std::end(kLevels), level) != std::end(kLevels);
}

std::vector<std::string> SessionOptions::validate() const {
    std::vector<std::string> problems;
    if (device != "cpu" && device != "wse")
        problems.push_back("unknown device '" + device + "' (expected 'cpu' or 'wse')");
    if (num_threads < 0)
        problems.push_back("num_threads must be >= 0 (0 = all cores), got " + std::to_string(num_threads));
    if (execution_mode != "sequential" && execution_mode != "parallel")
        problems.push_back("unknown execution_mode '" + execution_mode + "' (expected 'sequential' or 'parallel')");
    if (!is_valid_log_level(log_level))
        problems.push_back("unknown log_level '" + log_level + "' (expected verbose, info, warning, error or fatal)");
    if (memory_limit < 0)
        problems.push_back("memory_limit must be >= 0 bytes (0 = unlimited), got " + std::to_string(memory_limit));
    if (optimization_level < 0 || optimization_level > 3)
        problems.push_back("optimization_level must be in 0..3, got " + std::to_string(optimization_level));
    if (profile_file_prefix.empty()) problems.push_back("profile_file_prefix must not be empty");
    return problems;
}

}  // namespace pyflame_rt
