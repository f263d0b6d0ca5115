// HTTP/REST front end: the KServe v2 endpoints, Triton's extensions, the binary tensor data
// extension, CORS, the rate limit and the admin token.
#include <httplib.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string_view>
#include <regex>
#include <set>
#include <thread>

#include "frontends.hpp"
#include "protocol.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/serving/metrics.hpp"

namespace pyflame_rt::serving {

using nlohmann::json;

namespace {

constexpr const char* kBinaryHeader = "Inference-Header-Content-Length";

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
    send_json(res, status, json{{"error", message}});
}

[[noreturn]] void invalid(const std::string& message) { throw ServingError(ServingErrorCode::InvalidRequest, message); }

// `text` as a JSON object; InvalidRequest naming `what` when it is malformed or not an object.
json parse_object(std::string_view text, const std::string& what) {
    json body;
    try {
        body = json::parse(text);
    } catch (const json::exception& error) {
        invalid(std::string("malformed JSON: ") + error.what());
    }
    if (!body.is_object()) invalid(what + " must be a JSON object");
    return body;
}

const json* find_member(const json& object, const char* key) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

// Reads an integer-valued parameter (Triton sends numbers; some clients send strings).
bool integer_parameter(const json& parameters, const char* key, int64_t& out) {
    const json* value = find_member(parameters, key);
    if (!value) return false;
    if (value->is_number_integer()) out = value->get<int64_t>();
    else if (value->is_number_float() && std::floor(value->get<double>()) == value->get<double>()) out = static_cast<int64_t>(value->get<double>());
    else invalid(std::string("parameter '") + key + "' must be an integer");
    return true;
}

bool bool_parameter(const json& parameters, const char* key, bool fallback) {
    const json* value = find_member(parameters, key);
    if (!value) return fallback;
    if (!value->is_boolean()) invalid(std::string("parameter '") + key + "' must be true or false");
    return value->get<bool>();
}

struct ParsedInfer {
    InferRequest request;
    bool has_id = false;
    std::map<std::string, bool> binary_output;  // requested outputs -> binary?
    bool binary_default = false;
};

ParsedInfer parse_infer_request(const httplib::Request& req, const std::string& model, const std::string& version) {
    ParsedInfer parsed;
    size_t header_length = req.body.size();
    if (req.has_header(kBinaryHeader)) {
        const std::string value = req.get_header_value(kBinaryHeader);
        try {
            size_t used = 0;
            const unsigned long long n = std::stoull(value, &used);
            if (used != value.size()) throw std::invalid_argument(value);
            header_length = static_cast<size_t>(n);
        } catch (const std::exception&) {
            invalid(std::string(kBinaryHeader) + " must be a byte count, got '" + value + "'");
        }
        if (header_length > req.body.size())
            invalid(std::string(kBinaryHeader) + " " + std::to_string(header_length) + " exceeds the body of " +
                    std::to_string(req.body.size()) + " bytes");
    }
    const json body = parse_object(std::string_view(req.body).substr(0, header_length), "the inference request");
    InferRequest& request = parsed.request;
    request.model_name = model;
    request.model_version = version;
    if (const json* id = find_member(body, "id")) {
        if (!id->is_string()) invalid("'id' must be a string");
        request.request_id = id->get<std::string>();
        parsed.has_id = true;
    } else {
        request.request_id = InferRequest::generate_id();
    }
    if (const json* parameters = find_member(body, "parameters")) {
        if (!parameters->is_object()) invalid("'parameters' must be an object");
        int64_t value;
        if (integer_parameter(*parameters, "priority", value)) request.priority = static_cast<int>(value);
        if (integer_parameter(*parameters, "timeout", value)) {
            if (value < 0) invalid("parameter 'timeout' must not be negative");
            request.timeout_us = value;
        }
        parsed.binary_default = bool_parameter(*parameters, "binary_data_output", false);
    }
    const json* inputs = find_member(body, "inputs");
    if (!inputs || !inputs->is_array()) invalid("'inputs' must be a list of tensors");
    size_t binary_offset = header_length;
    for (const auto& input : *inputs) {
        if (!input.is_object()) invalid("each input must be an object");
        const json* name = find_member(input, "name");
        if (!name || !name->is_string()) invalid("each input needs a string 'name'");
        const std::string input_name = name->get<std::string>();
        if (request.inputs.count(input_name)) invalid("input '" + input_name + "' given twice");
        const json* shape = find_member(input, "shape");
        if (!shape) invalid("input '" + input_name + "' has no 'shape'");
        const json* datatype = find_member(input, "datatype");
        if (!datatype || !datatype->is_string()) invalid("input '" + input_name + "' needs a string 'datatype'");
        const auto dims = protocol::parse_shape(*shape, input_name);
        const DType dtype = dtype_from_kserve(datatype->get<std::string>());
        int64_t binary_size = -1;
        if (const json* parameters = find_member(input, "parameters")) {
            if (!parameters->is_object()) invalid("input '" + input_name + "': 'parameters' must be an object");
            integer_parameter(*parameters, "binary_data_size", binary_size);
            if (find_member(*parameters, "binary_data_size") && binary_size < 0)
                invalid("input '" + input_name + "': binary_data_size must not be negative");
        }
        if (binary_size >= 0) {
            if (static_cast<size_t>(binary_size) > req.body.size() - binary_offset)
                invalid("input '" + input_name + "': binary_data_size " + std::to_string(binary_size) +
                        " runs past the end of the body");
            request.inputs[input_name] = protocol::tensor_from_raw(req.body.data() + binary_offset,
                                                                   static_cast<size_t>(binary_size), dtype, dims, input_name);
            binary_offset += static_cast<size_t>(binary_size);
        } else {
            const json* data = find_member(input, "data");
            if (!data) invalid("input '" + input_name + "' has neither 'data' nor a binary_data_size parameter");
            request.inputs[input_name] = protocol::tensor_from_json(*data, dtype, dims, input_name);
        }
    }
    if (binary_offset != req.body.size())
        invalid(std::to_string(req.body.size() - binary_offset) + " bytes of binary data are not claimed by any input");
    if (const json* outputs = find_member(body, "outputs")) {
        if (!outputs->is_array()) invalid("'outputs' must be a list");
        for (const auto& output : *outputs) {
            const json* name = find_member(output, "name");
            if (!name || !name->is_string()) invalid("each requested output needs a string 'name'");
            bool binary = parsed.binary_default;
            if (const json* parameters = find_member(output, "parameters")) {
                if (!parameters->is_object()) invalid("output parameters must be an object");
                binary = bool_parameter(*parameters, "binary_data", binary);
                int64_t classification = 0;
                if (integer_parameter(*parameters, "classification", classification) && classification != 0)
                    invalid("the classification extension is not supported");
            }
            const std::string output_name = name->get<std::string>();
            if (parsed.binary_output.count(output_name)) invalid("output '" + output_name + "' requested twice");
            parsed.binary_output[output_name] = binary;
            request.output_names.push_back(output_name);
        }
    }
    return parsed;
}

void send_infer_response(httplib::Response& res, const ParsedInfer& parsed, const InferResponse& response) {
    json body{{"model_name", response.model_name}, {"model_version", response.model_version}};
    if (parsed.has_id) body["id"] = response.request_id;
    body["parameters"] = {{"latency_us", response.latency_us}, {"queue_time_us", response.queue_time_us}};
    json outputs = json::array();
    std::string binary;
    for (const auto& name : response.output_order) {
        const Tensor& tensor = response.outputs.at(name);
        json output{{"name", name}, {"datatype", kserve_datatype(tensor.dtype())}, {"shape", tensor.shape()}};
        auto it = parsed.binary_output.find(name);
        const bool as_binary = it != parsed.binary_output.end() ? it->second : parsed.binary_default;
        if (as_binary) {
            std::string raw = protocol::tensor_to_raw(tensor);
            output["parameters"] = {{"binary_data_size", raw.size()}};
            binary += raw;
        } else {
            output["data"] = protocol::tensor_to_json(tensor);
        }
        outputs.push_back(std::move(output));
    }
    body["outputs"] = std::move(outputs);
    std::string header = body.dump();
    res.status = 200;
    if (binary.empty()) {
        res.set_content(header, "application/json");
    } else {
        res.set_header(kBinaryHeader, std::to_string(header.size()));
        header += binary;
        res.set_content(header, "application/octet-stream");
    }
}

std::string peer_key(const std::string& address, int port) { return address + "|" + std::to_string(port); }

// After the listening socket is closed, the only connected TCP sockets of this process on
// `port` are the server's connections. Shutting the read side of the idle ones (no request
// in flight) ends their keep-alive waits at once; otherwise a drain would wait for every idle
// client's keep-alive timeout. Connections with a request in flight are left to finish.
void end_idle_connections(int port, const std::function<bool(const std::string&)>& in_flight) {
    DIR* fds = ::opendir("/proc/self/fd");
    if (!fds) return;
    while (dirent* entry = ::readdir(fds)) {
        char* end = nullptr;
        const long fd = std::strtol(entry->d_name, &end, 10);
        if (*end != '\0' || fd == ::dirfd(fds)) continue;
        sockaddr_storage local{}, peer{};
        socklen_t local_size = sizeof local, peer_size = sizeof peer;
        if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_size) != 0) continue;
        int local_port = -1;
        if (local.ss_family == AF_INET) local_port = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
        else if (local.ss_family == AF_INET6) local_port = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
        if (local_port != port) continue;
        if (::getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0) continue;
        char host[NI_MAXHOST];
        if (::getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_size, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
            continue;
        int peer_port = peer.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&peer)->sin_port)
                                                  : ntohs(reinterpret_cast<sockaddr_in6*>(&peer)->sin6_port);
        if (!in_flight(peer_key(host, peer_port))) ::shutdown(static_cast<int>(fd), SHUT_RD);
    }
    ::closedir(fds);
}

// The methods a known endpoint takes, for 405 answers ("" for unknown paths).
std::string allowed_methods(const std::string& path) {
    static const std::regex get_only(
        R"(/v2|/v2/health/(live|ready)|/metrics|/v2/models/stats|/v2/models/[^/]+(/versions/[^/]+)?(/ready|/config|/stats)?)");
    static const std::regex post_only(
        R"(/v2/models/[^/]+(/versions/[^/]+)?/infer|/v2/repository/index|/v2/repository/models/[^/]+/(load|unload))");
    if (std::regex_match(path, get_only)) return "GET";
    if (std::regex_match(path, post_only)) return "POST";
    return "";
}

std::string match(const httplib::Request& req, size_t index) {
    return index < req.matches.size() ? req.matches[index].str() : std::string();
}

}  // namespace

struct HttpFrontend::Impl {
    ServerCore& core;
    std::unique_ptr<httplib::Server> server;
    std::thread listener;
    int bound_port = 0;
    int listen_fd = -1;  // the listening socket, seen by the socket-options hook before bind
    // Peers ("address|port") with a request between routing and the end of its response.
    std::mutex in_flight_mutex;
    std::multiset<std::string> in_flight;

    explicit Impl(ServerCore& c) : core(c) {}

    std::shared_ptr<ModelInstance> lookup(const std::string& name, const std::string& version) {
        if (!is_safe_model_name(name)) invalid("invalid model name '" + name + "'");
        if (!version.empty() && !is_safe_model_name(version)) invalid("invalid model version '" + version + "'");
        return core.registry.get(name, version);
    }

    // Runs a handler body, turning exceptions into error JSON.
    template <typename Fn>
    void guarded(httplib::Response& res, Fn&& fn) {
        try {
            fn();
        } catch (const ServingError& error) {
            send_error(res, http_status_of(error.code()), error.what());
        } catch (const ValidationError& error) {
            send_error(res, 400, error.what());
        } catch (const std::exception& error) {
            core.report_error(error.what());
            send_error(res, 500, std::string("internal error: ") + error.what());
        }
    }

    bool admin_allowed(const httplib::Request& req, httplib::Response& res) {
        std::string authorization = req.get_header_value("Authorization");
        switch (core.check_admin(authorization)) {
            case AdminCheck::Allowed: return true;
            case AdminCheck::Missing:
                res.set_header("WWW-Authenticate", "Bearer");
                send_error(res, 401, "this endpoint needs the admin token: Authorization: Bearer <token>");
                return false;
            case AdminCheck::Wrong: send_error(res, 403, "wrong admin token"); return false;
        }
        return false;
    }

    void routes() {
        httplib::Server& s = *server;
        const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

        s.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"live", true}}); });
        s.Get("/v2/health/ready", [this](const httplib::Request&, httplib::Response& res) {
            const bool ready = core.ready();
            send_json(res, ready ? 200 : 503, {{"ready", ready}});
        });
        s.Get("/v2", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, protocol::server_metadata_json()); });
        s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            if (!core.config.enable_metrics) return send_error(res, 404, "metrics are disabled");
            res.set_content(MetricsRegistry::instance().export_prometheus(), "text/plain; version=0.0.4; charset=utf-8");
        });
        s.Get("/v2/models/stats", [this](const httplib::Request&, httplib::Response& res) {
            guarded(res, [&] {
                json stats = json::array();
                for (const auto& name : core.registry.list_models())
                    for (const auto& version : core.registry.loaded_versions(name))
                        if (core.registry.has(name, version)) stats.push_back(protocol::model_stats_json(*core.registry.get(name, version)));
                send_json(res, 200, {{"model_stats", stats}});
            });
        });
        s.Get(model, [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] {
                auto instance = lookup(match(req, 1), match(req, 2));
                send_json(res, 200, protocol::model_metadata_json(*instance, core.registry.loaded_versions(instance->name())));
            });
        });
        s.Get(model + "/ready", [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] {
                auto instance = lookup(match(req, 1), match(req, 2));
                const bool ready = instance->is_ready() && core.accepting;
                send_json(res, ready ? 200 : 503, {{"name", instance->name()}, {"ready", ready}});
            });
        });
        s.Get(model + "/config", [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] { send_json(res, 200, protocol::model_config_json(*lookup(match(req, 1), match(req, 2)))); });
        });
        s.Get(model + "/stats", [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] {
                const std::string name = match(req, 1), version = match(req, 2);
                lookup(name, version);
                json stats = json::array();
                if (!version.empty()) {
                    stats.push_back(protocol::model_stats_json(*core.registry.get(name, version)));
                } else {
                    for (const auto& v : core.registry.loaded_versions(name))
                        if (core.registry.has(name, v)) stats.push_back(protocol::model_stats_json(*core.registry.get(name, v)));
                }
                send_json(res, 200, {{"model_stats", stats}});
            });
        });
        s.Post(model + "/infer", [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] {
                const std::string name = match(req, 1), version = match(req, 2);
                if (!is_safe_model_name(name)) invalid("invalid model name '" + name + "'");
                if (!version.empty() && !is_safe_model_name(version)) invalid("invalid model version '" + version + "'");
                ParsedInfer parsed = parse_infer_request(req, name, version);
                InferResponse response = core.infer(parsed.request);
                if (!response.success)
                    return send_error(res, http_status_of(response.error_code), response.error_message);
                send_infer_response(res, parsed, response);
            });
        });
        s.Post("/v2/repository/index", [this](const httplib::Request& req, httplib::Response& res) {
            guarded(res, [&] {
                bool ready_only = false;
                if (!req.body.empty()) {
                    const json body = parse_object(req.body, "the index request");
                    ready_only = bool_parameter(body, "ready", false);
                }
                json index = json::array();
                for (auto& entry : protocol::repository_index_json(core.registry.repository_index()))
                    if (!ready_only || entry["state"] == "READY") index.push_back(entry);
                send_json(res, 200, index);
            });
        });
        s.Post(R"(/v2/repository/models/([^/]+)/(load|unload))", [this](const httplib::Request& req, httplib::Response& res) {
            if (!admin_allowed(req, res)) return;
            guarded(res, [&] {
                const std::string name = match(req, 1);
                if (!is_safe_model_name(name)) invalid("invalid model name '" + name + "'");
                std::string override_json;
                if (!req.body.empty()) {
                    const json body = parse_object(req.body, "the request");
                    if (const json* parameters = find_member(body, "parameters")) {
                        if (!parameters->is_object()) invalid("'parameters' must be an object");
                        if (const json* config = find_member(*parameters, "config")) {
                            if (!config->is_string()) invalid("parameter 'config' must be a JSON string");
                            override_json = protocol::load_config_override(config->get<std::string>());
                        }
                    }
                }
                if (match(req, 2) == "load") core.registry.load_repository_model(name, override_json);
                else core.registry.unload_repository_model(name);
                send_json(res, 200, json::object());
            });
        });
    }

    void configure() {
        const auto& http = core.config.http;
        httplib::Server& s = *server;
        const size_t workers = http.num_workers ? http.num_workers : 64;
        s.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
        s.set_payload_max_length(http.max_request_size);
        // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second
        // server bind a port already in use instead of failing.
        s.set_socket_options([this](socket_t sock) {
            int yes = 1;
            ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
            listen_fd = static_cast<int>(sock);
        });
        const auto timeout = std::chrono::milliseconds(std::max<size_t>(1, http.request_timeout_ms));
        s.set_read_timeout(timeout);
        s.set_write_timeout(timeout);
        s.set_keep_alive_timeout(static_cast<time_t>(std::max<size_t>(1, (http.keep_alive_timeout_ms + 999) / 1000)));
        s.set_keep_alive_max_count(1000);
        // Responses go out as several writes (headers, body): with Nagle on, each small answer
        // waits for the client's delayed ACK (~40 ms on Linux).
        s.set_tcp_nodelay(true);
        // The logger runs once the response is written: the request is no longer in flight.
        s.set_logger([this](const httplib::Request& req, const httplib::Response&) {
            std::lock_guard<std::mutex> lock(in_flight_mutex);
            auto it = in_flight.find(peer_key(req.remote_addr, req.remote_port));
            if (it != in_flight.end()) in_flight.erase(it);
        });
        s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            {
                std::lock_guard<std::mutex> lock(in_flight_mutex);
                in_flight.insert(peer_key(req.remote_addr, req.remote_port));
            }
            if (core.config.http.enable_cors) {
                res.set_header("Access-Control-Allow-Origin", core.config.http.cors_origin);
                res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
                res.set_header("Access-Control-Allow-Headers", "Content-Type, Authorization, Inference-Header-Content-Length");
                res.set_header("Access-Control-Expose-Headers", "Inference-Header-Content-Length");
                res.set_header("Access-Control-Max-Age", "600");
                if (req.method == "OPTIONS") {
                    res.status = 204;
                    return httplib::Server::HandlerResponse::Handled;
                }
            }
            // Health probes and scrapes are never throttled.
            const bool exempt = req.path.rfind("/v2/health/", 0) == 0 || req.path == "/metrics";
            if (!exempt && !core.admit()) {
                res.set_header("Retry-After", "1");
                send_error(res, 429, "rate limit exceeded (" + std::to_string(core.config.rate_limit.requests_per_second) +
                                         " requests/s, burst " + std::to_string(core.config.rate_limit.burst_size) + ")");
                return httplib::Server::HandlerResponse::Handled;
            }
            return httplib::Server::HandlerResponse::Unhandled;
        });
        s.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;
            if (res.status == 413)
                send_error(res, 413, "request body exceeds max_request_size (" + std::to_string(core.config.http.max_request_size) + " bytes)");
            else if (res.status == 404 && !allowed_methods(req.path).empty()) {
                res.set_header("Allow", allowed_methods(req.path));
                send_error(res, 405, "method " + req.method + " not allowed on " + req.path + " (allowed: " +
                                         allowed_methods(req.path) + ")");
            } else if (res.status == 404)
                send_error(res, 404, "no endpoint " + req.method + " " + req.path);
            else if (res.status == 405)
                send_error(res, 405, "method " + req.method + " not allowed on " + req.path);
            else
                send_error(res, res.status, "HTTP error " + std::to_string(res.status));
        });
        s.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
            std::string message = "unknown error";
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& e) {
                message = e.what();
            } catch (...) {
            }
            core.report_error(message);
            send_error(res, 500, "internal error: " + message);
        });
        routes();
    }
};

HttpFrontend::HttpFrontend(ServerCore& core) : impl_(std::make_unique<Impl>(core)) {}
HttpFrontend::~HttpFrontend() { stop(); }

void HttpFrontend::start() {
    const auto& config = impl_->core.config;
    const bool tls = config.tls.enabled || (!config.tls.cert_path.empty() && !config.tls.key_path.empty());
    if (tls) {
        if (config.tls.cert_path.empty() || config.tls.key_path.empty())
            throw ValidationError("TLS needs both tls.cert_path and tls.key_path");
        auto server = std::make_unique<httplib::SSLServer>(config.tls.cert_path.c_str(), config.tls.key_path.c_str(),
                                                           config.tls.ca_path.empty() ? nullptr : config.tls.ca_path.c_str());
        if (!server->is_valid())
            throw ValidationError("cannot set up TLS with certificate '" + config.tls.cert_path + "' and key '" +
                                  config.tls.key_path + "' (missing, unreadable or not matching)");
        impl_->server = std::move(server);
    } else {
        impl_->server = std::make_unique<httplib::Server>();
    }
    impl_->configure();
    const std::string& host = config.http.host;
    if (config.http.port == 0) {
        impl_->bound_port = impl_->server->bind_to_any_port(host);
        if (impl_->bound_port <= 0) throw PyFlameRTError("cannot bind HTTP to " + host + " (any port)");
    } else {
        if (!impl_->server->bind_to_port(host, config.http.port))
            throw PyFlameRTError("cannot bind HTTP to " + host + ":" + std::to_string(config.http.port) +
                                 " (in use, or no permission)");
        impl_->bound_port = config.http.port;
    }
    // Debian's compiled httplib listens with a backlog of 5: 32 clients connecting at once
    // overflow it and some connections are reset after the client sent its request. listen()
    // again on the bound socket raises the backlog.
    if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
    httplib::Server* server = impl_->server.get();
    impl_->listener = std::thread([server] { server->listen_after_bind(); });
    // httplib's stop() is a no-op until the listen loop runs: wait for it, so that a stop()
    // right after start() (a model failing to load) cannot leave the loop running forever.
    for (int waited_ms = 0; !server->is_running() && waited_ms < 10000; ++waited_ms)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::cout << "[pyflame-serve] HTTP" << (tls ? "S" : "") << " listening on " << host << ":" << impl_->bound_port << std::endl;
}

void HttpFrontend::stop() {
    if (!impl_->server) return;
    impl_->server->stop();
    end_idle_connections(impl_->bound_port, [this](const std::string& peer) {
        std::lock_guard<std::mutex> lock(impl_->in_flight_mutex);
        return impl_->in_flight.count(peer) > 0;
    });
    if (impl_->listener.joinable()) impl_->listener.join();
}

uint16_t HttpFrontend::port() const { return static_cast<uint16_t>(impl_->bound_port); }

}  // namespace pyflame_rt::serving
