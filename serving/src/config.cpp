// ServerConfig / ModelConfig from JSON or YAML. YAML is converted to JSON first so both
// formats go through one parser with one set of error messages.
#include "pyflame_rt/serving/config.hpp"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::serving {

using nlohmann::json;

size_t parse_byte_size(const std::string& text) {
    size_t pos = 0;
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    size_t digits_end = pos;
    while (digits_end < text.size() && std::isdigit(static_cast<unsigned char>(text[digits_end]))) ++digits_end;
    if (digits_end == pos) throw ValidationError("not a byte size: '" + text + "' (e.g. 1024, 64KB, 512MB, 2GB)");
    unsigned long long value = std::stoull(text.substr(pos, digits_end - pos));
    std::string unit;
    for (size_t i = digits_end; i < text.size(); ++i)
        if (!std::isspace(static_cast<unsigned char>(text[i])))
            unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
    unsigned long long scale = 1;
    if (unit.empty() || unit == "B") scale = 1;
    else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1ULL << 10;
    else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1ULL << 20;
    else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1ULL << 30;
    else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1ULL << 40;
    else throw ValidationError("unknown size unit '" + unit + "' in '" + text + "' (B, KB, MB, GB, TB)");
    if (value > std::numeric_limits<unsigned long long>::max() / scale)
        throw ValidationError("byte size too large: '" + text + "'");
    return static_cast<size_t>(value * scale);
}

namespace {

json yaml_to_json(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Null:
        case YAML::NodeType::Undefined: return nullptr;
        case YAML::NodeType::Sequence: {
            json array = json::array();
            for (const auto& item : node) array.push_back(yaml_to_json(item));
            return array;
        }
        case YAML::NodeType::Map: {
            json object = json::object();
            for (const auto& item : node) object[item.first.as<std::string>()] = yaml_to_json(item.second);
            return object;
        }
        case YAML::NodeType::Scalar: {
            const std::string text = node.Scalar();
            if (node.Tag() == "!") return text;  // quoted: always a string
            if (text == "true" || text == "True" || text == "yes") return true;
            if (text == "false" || text == "False" || text == "no") return false;
            if (text == "null" || text == "~") return nullptr;
            try {
                size_t used = 0;
                long long integer = std::stoll(text, &used);
                if (used == text.size()) return integer;
                double real = std::stod(text, &used);
                if (used == text.size()) return real;
            } catch (const std::exception&) {
            }
            return text;
        }
    }
    return nullptr;
}

json parse_document(const std::string& text, bool yaml) {
    if (yaml) {
        try {
            return yaml_to_json(YAML::Load(text));
        } catch (const YAML::Exception& error) {
            throw ValidationError(std::string("invalid YAML config: ") + error.what());
        }
    }
    try {
        return json::parse(text);
    } catch (const json::exception& error) {
        throw ValidationError(std::string("invalid JSON config: ") + error.what());
    }
}

// Reads the keys of one JSON object into a struct, rejecting unknown keys.
class ObjectReader {
public:
    ObjectReader(const json& object, std::string where) : object_(object), where_(std::move(where)) {
        if (!object_.is_object()) throw ValidationError(where_ + ": expected an object");
    }
    ~ObjectReader() noexcept(false) {
        if (std::uncaught_exceptions() > 0) return;
        for (const auto& item : object_.items())
            if (!seen_.count(item.key()))
                throw ValidationError(where_ + ": unknown key '" + item.key() + "'");
    }
    const json* find(const std::string& key) {
        seen_.insert(key);
        auto it = object_.find(key);
        return it == object_.end() || it->is_null() ? nullptr : &*it;
    }
    void read(const std::string& key, std::string& out) {
        if (auto* v = find(key)) {
            if (!v->is_string()) fail(key, "a string");
            out = v->get<std::string>();
        }
    }
    void read(const std::string& key, bool& out) {
        if (auto* v = find(key)) {
            if (!v->is_boolean()) fail(key, "true or false");
            out = v->get<bool>();
        }
    }
    void read(const std::string& key, double& out) {
        if (auto* v = find(key)) {
            if (!v->is_number()) fail(key, "a number");
            out = v->get<double>();
        }
    }
    template <typename Int>
    void read_int(const std::string& key, Int& out, bool byte_size = false) {
        if (auto* v = find(key)) out = to_int<Int>(*v, key, byte_size);
    }
    void read(const std::string& key, std::vector<size_t>& out) {
        if (auto* v = find(key)) {
            if (!v->is_array()) fail(key, "a list of integers");
            out.clear();
            for (const auto& item : *v) out.push_back(to_int<size_t>(item, key, false));
        }
    }
    [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
        throw ValidationError(where_ + "." + key + ": expected " + expected);
    }
    const std::string& where() const { return where_; }

private:
    template <typename Int>
    Int to_int(const json& v, const std::string& key, bool byte_size) const {
        long double value;
        if (v.is_number_integer() || v.is_number_unsigned()) value = v.is_number_unsigned()
            ? static_cast<long double>(v.get<unsigned long long>()) : static_cast<long double>(v.get<long long>());
        else if (byte_size && v.is_string()) value = static_cast<long double>(parse_byte_size(v.get<std::string>()));
        else fail(key, byte_size ? "a byte size (integer or \"512MB\")" : "an integer");
        if (value < static_cast<long double>(std::numeric_limits<Int>::min()) ||
            value > static_cast<long double>(std::numeric_limits<Int>::max()))
            fail(key, "an integer in range");
        return static_cast<Int>(value);
    }
    const json& object_;
    std::string where_;
    std::set<std::string> seen_;
};

ModelConfig model_config_from_json(const json& j, const std::string& where, ModelConfig config = {}) {
    ObjectReader r(j, where);
    r.read("name", config.name);
    r.read("model_path", config.model_path);
    if (auto* v = r.find("version")) {
        if (v->is_string()) config.version = v->get<std::string>();
        else if (v->is_number_integer()) config.version = std::to_string(v->get<long long>());
        else r.fail("version", "a string or an integer");
    }
    r.read_int("max_batch_size", config.max_batch_size);
    r.read("preferred_batch_sizes", config.preferred_batch_sizes);
    r.read_int("batch_timeout_us", config.batch_timeout_us);
    r.read("enable_batching", config.enable_batching);
    r.read_int("warmup_requests", config.warmup_requests);
    r.read_int("max_queue_size", config.max_queue_size);
    r.read_int("default_priority", config.default_priority);
    r.read_int("default_timeout_us", config.default_timeout_us);
    r.read_int("instance_count", config.instance_count);
    r.read_int("num_threads", config.num_threads);
    if (config.max_batch_size == 0) r.fail("max_batch_size", "at least 1");
    if (config.instance_count == 0) r.fail("instance_count", "at least 1");
    for (size_t size : config.preferred_batch_sizes)
        if (size == 0 || size > config.max_batch_size)
            r.fail("preferred_batch_sizes", "sizes between 1 and max_batch_size");
    return config;
}

ServerConfig server_config_from_json(const json& j) {
    ServerConfig config;
    ObjectReader r(j, "config");
    if (auto* v = r.find("http")) {
        ObjectReader h(*v, "config.http");
        h.read("host", config.http.host);
        h.read_int("port", config.http.port);
        h.read_int("num_workers", config.http.num_workers);
        h.read_int("max_request_size", config.http.max_request_size, true);
        h.read_int("request_timeout_ms", config.http.request_timeout_ms);
        h.read_int("keep_alive_timeout_ms", config.http.keep_alive_timeout_ms);
        h.read("enable_cors", config.http.enable_cors);
        h.read("cors_origin", config.http.cors_origin);
    }
    if (auto* v = r.find("grpc")) {
        ObjectReader g(*v, "config.grpc");
        g.read("host", config.grpc.host);
        g.read_int("port", config.grpc.port);
        g.read_int("max_message_size", config.grpc.max_message_size, true);
        g.read_int("num_completion_queues", config.grpc.num_completion_queues);
        g.read("enabled", config.grpc.enabled);
    }
    if (auto* v = r.find("tls")) {
        ObjectReader t(*v, "config.tls");
        t.read("enabled", config.tls.enabled);
        t.read("cert_path", config.tls.cert_path);
        t.read("key_path", config.tls.key_path);
        t.read("ca_path", config.tls.ca_path);
    }
    if (auto* v = r.find("rate_limit")) {
        ObjectReader l(*v, "config.rate_limit");
        l.read("enabled", config.rate_limit.enabled);
        l.read("requests_per_second", config.rate_limit.requests_per_second);
        l.read_int("burst_size", config.rate_limit.burst_size);
        if (config.rate_limit.requests_per_second <= 0) l.fail("requests_per_second", "a positive number");
    }
    if (auto* v = r.find("models")) {
        if (!v->is_array()) r.fail("models", "a list of model configs");
        for (size_t i = 0; i < v->size(); ++i)
            config.models.push_back(model_config_from_json((*v)[i], "config.models[" + std::to_string(i) + "]"));
    }
    r.read("model_dir", config.model_dir);
    r.read("enable_metrics", config.enable_metrics);
    r.read_int("metrics_port", config.metrics_port);
    r.read_int("max_memory", config.max_memory, true);
    r.read("admin_token", config.admin_token);
    r.read_int("poll_interval_ms", config.poll_interval_ms);
    r.read("strict_readiness", config.strict_readiness);
    return config;
}

bool is_yaml_path(const std::string& path) {
    auto ends_with = [&](const std::string& suffix) {
        return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    return ends_with(".yaml") || ends_with(".yml");
}

std::string read_text_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw FileNotFoundError(path);
    std::stringstream buffer;
    buffer << file.rdbuf();
    return buffer.str();
}

json model_config_json(const ModelConfig& c) {
    return json{{"name", c.name}, {"model_path", c.model_path}, {"version", c.version},
                {"max_batch_size", c.max_batch_size}, {"preferred_batch_sizes", c.preferred_batch_sizes},
                {"batch_timeout_us", c.batch_timeout_us}, {"enable_batching", c.enable_batching},
                {"warmup_requests", c.warmup_requests}, {"max_queue_size", c.max_queue_size},
                {"default_priority", c.default_priority}, {"default_timeout_us", c.default_timeout_us},
                {"instance_count", c.instance_count}, {"num_threads", c.num_threads}};
}

}  // namespace

ServerConfig parse_server_config(const std::string& text, bool yaml) {
    return server_config_from_json(parse_document(text, yaml));
}

ServerConfig load_server_config(const std::string& path) {
    try {
        return parse_server_config(read_text_file(path), is_yaml_path(path));
    } catch (const ValidationError& error) {
        throw ValidationError(path + ": " + error.what());
    }
}

ModelConfig parse_model_config(const std::string& text, bool yaml) {
    return model_config_from_json(parse_document(text, yaml), "model config");
}

ModelConfig load_model_config(const std::string& path) {
    try {
        return parse_model_config(read_text_file(path), is_yaml_path(path));
    } catch (const ValidationError& error) {
        throw ValidationError(path + ": " + error.what());
    }
}

ModelConfig merge_model_config(const ModelConfig& base, const std::string& overrides_json) {
    return model_config_from_json(parse_document(overrides_json, false), "model config", base);
}

std::string model_config_to_json(const ModelConfig& config) { return model_config_json(config).dump(); }

std::string server_config_to_json(const ServerConfig& c) {
    json models = json::array();
    for (const auto& m : c.models) models.push_back(model_config_json(m));
    json j{{"http", {{"host", c.http.host}, {"port", c.http.port}, {"num_workers", c.http.num_workers},
                     {"max_request_size", c.http.max_request_size}, {"request_timeout_ms", c.http.request_timeout_ms},
                     {"keep_alive_timeout_ms", c.http.keep_alive_timeout_ms}, {"enable_cors", c.http.enable_cors},
                     {"cors_origin", c.http.cors_origin}}},
           {"grpc", {{"host", c.grpc.host}, {"port", c.grpc.port}, {"max_message_size", c.grpc.max_message_size},
                     {"num_completion_queues", c.grpc.num_completion_queues}, {"enabled", c.grpc.enabled}}},
           {"tls", {{"enabled", c.tls.enabled}, {"cert_path", c.tls.cert_path}, {"key_path", c.tls.key_path},
                    {"ca_path", c.tls.ca_path}}},
           {"rate_limit", {{"enabled", c.rate_limit.enabled}, {"requests_per_second", c.rate_limit.requests_per_second},
                           {"burst_size", c.rate_limit.burst_size}}},
           {"models", models}, {"model_dir", c.model_dir}, {"enable_metrics", c.enable_metrics},
           {"metrics_port", c.metrics_port}, {"max_memory", c.max_memory}, {"admin_token", c.admin_token},
           {"poll_interval_ms", c.poll_interval_ms}, {"strict_readiness", c.strict_readiness}};
    return j.dump(2);
}

}  // namespace pyflame_rt::serving
