#pragma once
// KServe v2 / Triton protocol pieces shared by the HTTP and gRPC front ends: tensor codecs
// (JSON data, raw bytes) and the JSON documents for metadata, config and statistics.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pyflame_rt/serving/model_instance.hpp"
#include "pyflame_rt/serving/model_registry.hpp"
#include "pyflame_rt/serving/types.hpp"

namespace pyflame_rt::serving::protocol {

using nlohmann::json;

// Each throws ServingError(InvalidRequest) naming `name` for malformed input.
std::vector<int64_t> parse_shape(const json& shape, const std::string& name);
Tensor tensor_from_json(const json& data, DType dtype, const std::vector<int64_t>& shape, const std::string& name);
Tensor tensor_from_raw(const char* bytes, size_t size, DType dtype, const std::vector<int64_t>& shape,
                       const std::string& name);
json tensor_to_json(const Tensor& tensor);      // a flat array, row-major
std::string tensor_to_raw(const Tensor& tensor);  // BYTES: 4-byte little-endian length + bytes per element

json server_metadata_json();
std::vector<std::string> server_extensions();
json model_metadata_json(const ModelInstance& instance, const std::vector<std::string>& versions);
// Triton's model configuration (tritonclient get_model_config, perf_analyzer).
json model_config_json(const ModelInstance& instance);
// Triton's statistics for one model version, plus the ModelStats fields.
json model_stats_json(const ModelInstance& instance);
// The `config` parameter of a repository load: pyflame ModelConfig keys, or Triton's model
// config keys (max_batch_size, dynamic_batching, instance_group; descriptive keys such as
// name, platform, input and output are ignored), returned as ModelConfig JSON.
std::string load_config_override(const std::string& config_json);

json repository_index_json(const std::vector<RepositoryModelState>& index);

}  // namespace pyflame_rt::serving::protocol
