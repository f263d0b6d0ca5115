#pragma once
// SessionOptions, RunOptions and CompileOptions of the API reference.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pyflame_rt {

struct SessionOptions {
    std::string device = "cpu";                   // "cpu" or "wse"
    int num_threads = 0;                          // intra-op threads; 0 = all cores
    bool enable_profiling = false;
    std::string execution_mode = "sequential";    // "sequential" or "parallel"
    std::string log_level = "warning";            // verbose, info, warning, error, fatal
    int64_t memory_limit = 0;                     // bytes; 0 = unlimited
    int optimization_level = 2;                   // 0..3
    std::string profile_file_prefix = "pyflame_rt_profile";  // end_profiling() writes PREFIX_<time>.json

    // One message per problem; empty when valid.
    std::vector<std::string> validate() const;
};

struct RunOptions {
    std::optional<std::string> log_level;
    std::optional<std::string> tag;
    std::optional<int64_t> timeout_ms;
};

struct CompileOptions {
    std::optional<std::string> cache_dir;
    bool dynamic_batch = false;
    int optimization_level = 2;
};

bool is_valid_log_level(const std::string& level);

}  // namespace pyflame_rt
