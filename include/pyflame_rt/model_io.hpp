#pragma once
// The .pfm model format: save and load Graphs.
#include <cstdint>
#include <memory>
#include <string>

#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

inline constexpr uint32_t kPfmFormatVersion = 1;

struct SaveOptions {
    // Initializers of at least this many bytes go to the external data file PATH.data when
    // the model's weights total more than `external_data_total_threshold` bytes. The
    // defaults keep models inline until protobuf's 2 GB limit comes near.
    int64_t external_data_min_tensor_bytes = 1024;
    int64_t external_data_total_threshold = int64_t{1} << 30;
};

// Atomic: written to a temporary file, fsynced, then renamed over `path`.
void save_model(const Graph& graph, const std::string& path, const SaveOptions& options = {});
// InvalidModelError for a truncated, corrupt or foreign file; FileNotFoundError if missing.
std::shared_ptr<Graph> load_model(const std::string& path);
// True when the file starts with the .pfm magic.
bool is_pfm_file(const std::string& path);

}  // namespace pyflame_rt
