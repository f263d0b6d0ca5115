// Tensor codecs and protocol documents of the KServe v2 protocol.
#include "protocol.hpp"

#include <Eigen/Core>
#include <cstring>
#include <limits>

#include "pyflame_rt/version.hpp"

namespace pyflame_rt::serving::protocol {

namespace {

[[noreturn]] void invalid(const std::string& message) { throw ServingError(ServingErrorCode::InvalidRequest, message); }

constexpr int64_t kMaxElements = int64_t{1} << 40;

int64_t checked_elements(const std::vector<int64_t>& shape, const std::string& name) {
    int64_t count = 1;
    for (int64_t dim : shape) {
        if (dim < 0) invalid("input '" + name + "': negative dimension in shape " + shape_to_string(shape));
        if (dim != 0 && count > kMaxElements / dim) invalid("input '" + name + "': shape " + shape_to_string(shape) + " is too large");
        count *= dim;
    }
    return count;
}

void flatten(const json& data, std::vector<const json*>& out, int depth) {
    if (depth > 64) invalid("tensor data nested too deeply");
    if (data.is_array()) {
        for (const auto& item : data) flatten(item, out, depth + 1);
    } else {
        out.push_back(&data);
    }
}

template <typename T>
void fill_numbers(Tensor& tensor, const std::vector<const json*>& values, const std::string& name) {
    T* out = tensor.data_ptr<T>();
    for (size_t i = 0; i < values.size(); ++i) {
        const json& v = *values[i];
        if constexpr (std::is_same_v<T, bool>) {
            if (v.is_boolean()) out[i] = v.get<bool>();
            else if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1)) out[i] = v.get<int64_t>() != 0;
            else invalid("input '" + name + "': BOOL data must be true or false");
        } else if constexpr (std::is_integral_v<T>) {
            if (v.is_number_unsigned()) {
                const auto value = v.get<uint64_t>();
                if (value > static_cast<uint64_t>(std::numeric_limits<T>::max()))
                    invalid("input '" + name + "': value " + v.dump() + " out of range for its datatype");
                out[i] = static_cast<T>(value);
            } else if (v.is_number_integer()) {
                const auto value = v.get<int64_t>();
                if ((std::is_unsigned_v<T> && value < 0) ||
                    (std::is_signed_v<T> && (value < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
                                             value > static_cast<int64_t>(std::numeric_limits<T>::max()))))
                    invalid("input '" + name + "': value " + v.dump() + " out of range for its datatype");
                out[i] = static_cast<T>(value);
            } else {
                invalid("input '" + name + "': integer datatype needs integer data, got " + v.dump().substr(0, 40));
            }
        } else {
            if (!v.is_number()) invalid("input '" + name + "': expected numbers, got " + v.dump().substr(0, 40));
            out[i] = static_cast<T>(v.get<double>());
        }
    }
}

template <typename T>
void append_numbers(json& out, const Tensor& tensor) {
    const T* data = tensor.data_ptr<T>();
    const int64_t n = tensor.num_elements();
    for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) out.push_back(static_cast<float>(data[i]));
        else out.push_back(data[i]);
    }
}

template <typename Fn>
auto dispatch_numeric(DType dtype, Fn&& fn) {
    switch (dtype) {
        case DType::Bool: return fn(bool{});
        case DType::UInt8: return fn(uint8_t{});
        case DType::UInt16: return fn(uint16_t{});
        case DType::UInt32: return fn(uint32_t{});
        case DType::UInt64: return fn(uint64_t{});
        case DType::Int8: return fn(int8_t{});
        case DType::Int16: return fn(int16_t{});
        case DType::Int32: return fn(int32_t{});
        case DType::Int64: return fn(int64_t{});
        case DType::Float16: return fn(Eigen::half{});
        case DType::BFloat16: return fn(Eigen::bfloat16{});
        case DType::Float32: return fn(float{});
        case DType::Float64: return fn(double{});
        default: invalid("datatype " + dtype_to_string(dtype) + " is not supported by the protocol");
    }
}

}  // namespace

std::vector<int64_t> parse_shape(const json& shape, const std::string& name) {
    if (!shape.is_array()) invalid("input '" + name + "': 'shape' must be a list of integers");
    std::vector<int64_t> dims;
    for (const auto& dim : shape) {
        if (!dim.is_number_integer()) invalid("input '" + name + "': 'shape' must be a list of integers");
        dims.push_back(dim.get<int64_t>());
    }
    if (dims.size() > 32) invalid("input '" + name + "': rank " + std::to_string(dims.size()) + " is too large");
    checked_elements(dims, name);
    return dims;
}

Tensor tensor_from_json(const json& data, DType dtype, const std::vector<int64_t>& shape, const std::string& name) {
    const int64_t count = checked_elements(shape, name);
    std::vector<const json*> values;
    values.reserve(static_cast<size_t>(std::min<int64_t>(count, 1 << 20)));
    flatten(data, values, 0);
    if (static_cast<int64_t>(values.size()) != count)
        invalid("input '" + name + "': shape " + shape_to_string(shape) + " needs " + std::to_string(count) +
                " elements, 'data' has " + std::to_string(values.size()));
    Tensor tensor(shape, dtype);
    if (dtype == DType::String) {
        auto* out = tensor.data_ptr<std::string>();
        for (size_t i = 0; i < values.size(); ++i) {
            if (!values[i]->is_string()) invalid("input '" + name + "': BYTES data must be strings");
            out[i] = values[i]->get<std::string>();
        }
        return tensor;
    }
    if (dtype == DType::Float16 || dtype == DType::BFloat16) {
        for (const auto* v : values)
            if (!v->is_number()) invalid("input '" + name + "': expected numbers");
        if (dtype == DType::Float16) {
            auto* out = tensor.data_ptr<Eigen::half>();
            for (size_t i = 0; i < values.size(); ++i) out[i] = Eigen::half(values[i]->get<float>());
        } else {
            auto* out = tensor.data_ptr<Eigen::bfloat16>();
            for (size_t i = 0; i < values.size(); ++i) out[i] = Eigen::bfloat16(values[i]->get<float>());
        }
        return tensor;
    }
    dispatch_numeric(dtype, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, Eigen::half> && !std::is_same_v<T, Eigen::bfloat16>) fill_numbers<T>(tensor, values, name);
        return 0;
    });
    return tensor;
}

Tensor tensor_from_raw(const char* bytes, size_t size, DType dtype, const std::vector<int64_t>& shape, const std::string& name) {
    const int64_t count = checked_elements(shape, name);
    if (dtype == DType::String) {
        // Every element carries a 4-byte length: refuse impossible counts before allocating.
        if (static_cast<uint64_t>(count) > size / 4)
            invalid("input '" + name + "': " + std::to_string(size) + " bytes cannot hold " + std::to_string(count) +
                    " BYTES elements");
        Tensor tensor(shape, dtype);
        auto* out = tensor.data_ptr<std::string>();
        size_t offset = 0;
        for (int64_t i = 0; i < count; ++i) {
            if (offset + 4 > size) invalid("input '" + name + "': BYTES data ends inside element " + std::to_string(i));
            uint32_t length;
            std::memcpy(&length, bytes + offset, 4);  // little-endian on the hosts we build for
            offset += 4;
            if (length > size - offset) invalid("input '" + name + "': BYTES element " + std::to_string(i) + " overruns the data");
            out[i].assign(bytes + offset, length);
            offset += length;
        }
        if (offset != size) invalid("input '" + name + "': " + std::to_string(size - offset) + " bytes beyond the BYTES elements");
        return tensor;
    }
    const size_t expected = static_cast<size_t>(count) * dtype_size(dtype);
    if (size != expected)
        invalid("input '" + name + "': shape " + shape_to_string(shape) + " of " + kserve_datatype(dtype) + " needs " +
                std::to_string(expected) + " bytes, got " + std::to_string(size));
    Tensor tensor(shape, dtype);
    if (expected) std::memcpy(tensor.data(), bytes, expected);
    if (dtype == DType::Bool) {
        auto* values = tensor.data_ptr<uint8_t>();
        for (int64_t i = 0; i < count; ++i) values[i] = values[i] != 0;
    }
    return tensor;
}

json tensor_to_json(const Tensor& tensor) {
    json out = json::array();
    if (tensor.dtype() == DType::String) {
        const auto* data = tensor.data_ptr<std::string>();
        for (int64_t i = 0; i < tensor.num_elements(); ++i) {
            // JSON strings must be UTF-8; arbitrary bytes need the binary extension.
            try {
                json value = data[i];
                (void)value.dump();  // throws for invalid UTF-8
                out.push_back(std::move(value));
            } catch (const json::exception&) {
                invalid("a BYTES output is not UTF-8; request it with binary_data");
            }
        }
        return out;
    }
    dispatch_numeric(tensor.dtype(), [&](auto tag) {
        append_numbers<decltype(tag)>(out, tensor);
        return 0;
    });
    return out;
}

std::string tensor_to_raw(const Tensor& tensor) {
    if (tensor.dtype() == DType::String) {
        std::string out;
        const auto* data = tensor.data_ptr<std::string>();
        for (int64_t i = 0; i < tensor.num_elements(); ++i) {
            const auto length = static_cast<uint32_t>(data[i].size());
            out.append(reinterpret_cast<const char*>(&length), 4);
            out += data[i];
        }
        return out;
    }
    return std::string(static_cast<const char*>(tensor.data()), tensor.size_bytes());
}

std::vector<std::string> server_extensions() {
    return {"binary_tensor_data", "model_repository", "model_configuration", "statistics", "schedule_policy"};
}

json server_metadata_json() {
    return json{{"name", "pyflame-serve"}, {"version", PYFLAME_RT_VERSION}, {"extensions", server_extensions()}};
}

json model_metadata_json(const ModelInstance& instance, const std::vector<std::string>& versions) {
    const auto metadata = instance.get_serving_metadata();
    auto specs = [](const std::vector<IOSpec>& list) {
        json out = json::array();
        for (const auto& spec : list) out.push_back({{"name", spec.name}, {"datatype", spec.dtype}, {"shape", spec.shape}});
        return out;
    };
    return json{{"name", metadata.name}, {"versions", versions}, {"platform", metadata.platform},
                {"inputs", specs(metadata.inputs)}, {"outputs", specs(metadata.outputs)}};
}

json model_config_json(const ModelInstance& instance) {
    const auto metadata = instance.get_serving_metadata();
    const auto config = instance.config();
    const bool batching = instance.batching_active();
    // Triton's convention: with max_batch_size > 0 the dims leave out the batch dimension.
    auto tensors = [&](const std::vector<IOSpec>& list) {
        json out = json::array();
        for (const auto& spec : list) {
            std::vector<int64_t> dims = spec.shape;
            if (batching && !dims.empty()) dims.erase(dims.begin());
            out.push_back({{"name", spec.name}, {"data_type", triton_config_type(dtype_from_kserve(spec.dtype))}, {"dims", dims}});
        }
        return out;
    };
    json j{{"name", metadata.name},
           {"platform", metadata.platform},
           {"backend", "pyflame_rt"},
           {"version_policy", {{"all", json::object()}}},
           {"max_batch_size", batching ? config.max_batch_size : 0},
           {"input", tensors(metadata.inputs)},
           {"output", tensors(metadata.outputs)},
           {"instance_group", json::array({{{"name", metadata.name}, {"kind", "KIND_CPU"}, {"count", config.instance_count}}})},
           {"default_model_filename", config.model_path.substr(config.model_path.find_last_of('/') + 1)},
           {"parameters", {{"model_version", {{"string_value", metadata.version}}},
                           {"warmup_requests", {{"string_value", std::to_string(config.warmup_requests)}}},
                           {"max_queue_size", {{"string_value", std::to_string(config.max_queue_size)}}}}}};
    if (batching)
        j["dynamic_batching"] = {{"preferred_batch_size", config.preferred_batch_sizes},
                                 {"max_queue_delay_microseconds", config.batch_timeout_us},
                                 {"default_queue_policy", {{"max_queue_size", config.max_queue_size},
                                                           {"default_timeout_microseconds", config.default_timeout_us}}}};
    return j;
}

json model_stats_json(const ModelInstance& instance) {
    const ModelStats stats = instance.get_stats();
    auto duration = [](uint64_t count, uint64_t ns) { return json{{"count", count}, {"ns", ns}}; };
    return json{{"name", instance.name()},
                {"version", instance.version()},
                {"last_inference", stats.last_inference_ms},
                {"inference_count", stats.inference_count},
                {"execution_count", stats.execution_count},
                {"inference_stats",
                 {{"success", duration(stats.successful_requests, stats.success_ns)},
                  {"fail", duration(stats.failed_requests, stats.fail_ns)},
                  {"queue", duration(stats.successful_requests, stats.queue_ns)},
                  // perf_analyzer requires equal compute_input/infer/output counts (input and
                  // output copies are timed as part of compute_infer).
                  {"compute_input", duration(stats.execution_count, 0)},
                  {"compute_infer", duration(stats.execution_count, stats.compute_ns)},
                  {"compute_output", duration(stats.execution_count, 0)},
                  {"cache_hit", duration(0, 0)},
                  {"cache_miss", duration(0, 0)}}},
                {"batch_stats", json::array()},
                // pyflame-serve's ModelStats (the reference's fields).
                {"total_requests", stats.total_requests},
                {"successful_requests", stats.successful_requests},
                {"failed_requests", stats.failed_requests},
                {"avg_latency_ms", stats.avg_latency_ms},
                {"p50_latency_ms", stats.p50_latency_ms},
                {"p95_latency_ms", stats.p95_latency_ms},
                {"p99_latency_ms", stats.p99_latency_ms}};
}

namespace {
// Triton's JSON writes 64-bit integers as strings ("500"); accept both forms.
json integer_value(const json& value, const char* key) {
    if (value.is_number_integer()) return value;
    if (value.is_string()) {
        const std::string text = value.get<std::string>();
        if (!text.empty() && text.size() < 20 && text.find_first_not_of("0123456789") == std::string::npos)
            return json(std::stoull(text));
    }
    invalid(std::string("'") + key + "' must be an integer");
}
}  // namespace

std::string load_config_override(const std::string& config_json) {
    json config;
    try {
        config = json::parse(config_json);
    } catch (const json::exception& error) {
        invalid(std::string("parameter 'config' is not valid JSON: ") + error.what());
    }
    if (!config.is_object()) invalid("parameter 'config' must be a JSON object");
    json out = json::object();
    for (const auto& [key, value] : config.items()) {
        if (key == "name" || key == "platform" || key == "backend" || key == "input" || key == "output" ||
            key == "version_policy" || key == "default_model_filename" || key == "parameters")
            continue;  // descriptive in Triton's config; the model file defines them here
        if (key == "max_batch_size" && value.is_number_integer() && value.get<int64_t>() == 0) {
            out["enable_batching"] = false;  // Triton: 0 means no batching
        } else if (key == "dynamic_batching") {
            if (!value.is_object()) invalid("'dynamic_batching' must be an object");
            out["enable_batching"] = true;
            if (value.contains("preferred_batch_size")) out["preferred_batch_sizes"] = value["preferred_batch_size"];
            if (value.contains("max_queue_delay_microseconds"))
                out["batch_timeout_us"] = integer_value(value["max_queue_delay_microseconds"], "max_queue_delay_microseconds");
            if (value.contains("default_queue_policy") && value["default_queue_policy"].is_object()) {
                const json& policy = value["default_queue_policy"];
                if (policy.contains("max_queue_size"))
                    out["max_queue_size"] = integer_value(policy["max_queue_size"], "max_queue_size");
                if (policy.contains("default_timeout_microseconds"))
                    out["default_timeout_us"] = integer_value(policy["default_timeout_microseconds"], "default_timeout_microseconds");
            }
        } else if (key == "instance_group") {
            if (!value.is_array() || value.empty() || !value[0].is_object() || !value[0].contains("count"))
                invalid("'instance_group' must be a list of objects with a count");
            out["instance_count"] = integer_value(value[0]["count"], "count");
        } else {
            out[key] = value;
        }
    }
    return out.dump();
}

json repository_index_json(const std::vector<RepositoryModelState>& index) {
    json out = json::array();
    for (const auto& entry : index) {
        json item{{"name", entry.name}, {"version", entry.version}, {"state", entry.state}};
        if (!entry.reason.empty()) item["reason"] = entry.reason;
        out.push_back(item);
    }
    return out;
}

}  // namespace pyflame_rt::serving::protocol
