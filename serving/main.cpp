// pyflame-serve: serves models over the KServe v2 protocol (HTTP/REST and gRPC).
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/serving/model_server.hpp"
#include "pyflame_rt/version.hpp"

using namespace pyflame_rt::serving;

namespace {

const char* kUsage = R"(usage: pyflame-serve [options]

Serves models over the KServe v2 inference protocol (HTTP/REST and gRPC), as Triton does.
With no arguments it serves the model repository ./models.

Models
  --model-repository DIR    model repository: DIR/NAME/VERSION/model.pfm (or model.onnx), with an
                            optional DIR/NAME/config.json holding that model's ModelConfig
  --model NAME=PATH         serve one model file (repeatable); NAME:VERSION=PATH sets the version
  --config FILE             a ServerConfig in JSON or YAML (.yaml/.yml); flags below override it
  --poll-interval-ms N      hot reload: poll the repository every N ms (0 = off, the default)
  --max-memory SIZE         refuse loads beyond SIZE bytes of model weights ("512MB"; 0 = no limit)
  --enable-batching         dynamic batching for --model models
  --max-batch-size N        their max_batch_size (default 32)
  --batch-timeout-us N      their batch_timeout_us (default 5000)
  --warmup-requests N       their warmup_requests (default 3)

Listeners
  --host ADDR               bind address of all listeners (default 0.0.0.0)
  --http-port N             HTTP/REST port (default 8080; 0 = any free port, printed at start)
  --grpc-port N             gRPC port (default 9090; 0 = no gRPC listener)
  --metrics-port N          Prometheus port (default 9091; 0 = no metrics listener; GET /metrics
                            on the HTTP port works either way)
  --no-metrics              no metrics at all
  --threads N               HTTP worker threads (default 64; one per open connection)

Limits and security
  --max-request-size SIZE   largest HTTP body (default 100MB; larger gets 413)
  --request-timeout-ms N    socket read/write timeout (default 30000)
  --keep-alive-timeout-ms N idle keep-alive timeout (default 5000)
  --rate-limit RPS          token-bucket rate limit over all clients (429 beyond it; health probes
                            and /metrics are exempt)
  --rate-limit-burst N      bucket size (default 50)
  --cors                    answer CORS preflights and add Access-Control-Allow-* headers
  --cors-origin ORIGIN      Access-Control-Allow-Origin value (default *)
  --tls-cert FILE           PEM certificate: serve HTTPS and gRPC over TLS (needs --tls-key)
  --tls-key FILE            PEM private key
  --tls-ca FILE             PEM CA: require client certificates signed by it
  --admin-token TOKEN       repository load/unload need "Authorization: Bearer TOKEN" (401 when
                            missing, 403 when wrong); also read from $PYFLAME_ADMIN_TOKEN
  --no-strict-readiness     /v2/health/ready is 200 even when some repository model failed to load

Other
  --print-config            print the effective ServerConfig as JSON and exit
  --version                 print the version and exit
  --help                    this text

SIGTERM or SIGINT: readiness turns 503, listeners stop accepting, requests in flight are
answered, then the process exits 0.
)";

[[noreturn]] void usage_error(const std::string& message) {
    std::cerr << "pyflame-serve: " << message << "\n(see pyflame-serve --help)" << std::endl;
    std::exit(2);
}

unsigned long parse_unsigned(const std::string& flag, const std::string& value, unsigned long max) {
    try {
        size_t used = 0;
        const unsigned long long n = std::stoull(value, &used);
        if (used != value.size() || value[0] == '-' || n > max) throw std::out_of_range(value);
        return static_cast<unsigned long>(n);
    } catch (const std::exception&) {
        usage_error(flag + " needs an integer between 0 and " + std::to_string(max) + ", got '" + value + "'");
    }
}

}  // namespace

int main(int argc, char** argv) {
    // Split "--flag=value" and collect (flag, value) pairs.
    std::vector<std::pair<std::string, std::string>> options;
    const std::map<std::string, bool> takes_value = {
        {"--model-repository", true}, {"--model-dir", true}, {"--model", true}, {"--config", true},
        {"--poll-interval-ms", true}, {"--max-memory", true}, {"--enable-batching", false},
        {"--max-batch-size", true}, {"--batch-timeout-us", true}, {"--warmup-requests", true},
        {"--host", true}, {"--http-port", true}, {"--grpc-port", true}, {"--metrics-port", true},
        {"--no-metrics", false}, {"--threads", true}, {"--max-request-size", true},
        {"--request-timeout-ms", true}, {"--keep-alive-timeout-ms", true}, {"--rate-limit", true},
        {"--rate-limit-burst", true}, {"--cors", false}, {"--cors-origin", true}, {"--tls-cert", true},
        {"--tls-key", true}, {"--tls-ca", true}, {"--admin-token", true}, {"--no-strict-readiness", false},
        {"--print-config", false}, {"--version", false}, {"--help", false}, {"-h", false}};
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], value;
        const auto eq = arg.find('=');
        bool inline_value = false;
        if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            inline_value = true;
        }
        auto it = takes_value.find(arg);
        if (it == takes_value.end()) usage_error("unknown option '" + arg + "'");
        if (it->second && !inline_value) {
            if (i + 1 >= argc) usage_error(arg + " needs a value");
            value = argv[++i];
        } else if (!it->second && inline_value) {
            usage_error(arg + " takes no value");
        }
        options.emplace_back(arg, value);
    }

    ServerConfig config;
    bool print_config = false;
    try {
        for (const auto& [flag, value] : options) {
            if (flag == "--help" || flag == "-h") {
                std::cout << kUsage;
                return 0;
            }
            if (flag == "--version") {
                std::cout << "pyflame-serve " << PYFLAME_RT_VERSION << std::endl;
                return 0;
            }
            if (flag == "--config") config = load_server_config(value);
        }
        bool batching = false;
        size_t max_batch_size = 32, batch_timeout_us = 5000, warmup_requests = 3;
        bool batching_flags = false;
        std::vector<ModelConfig> flag_models;
        if (const char* token = std::getenv("PYFLAME_ADMIN_TOKEN"); token && *token) config.admin_token = token;
        for (const auto& [flag, value] : options) {
            if (flag == "--model-repository" || flag == "--model-dir") config.model_dir = value;
            else if (flag == "--model") {
                const auto eq = value.find('=');
                if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) usage_error("--model needs NAME=PATH, got '" + value + "'");
                ModelConfig model;
                model.name = value.substr(0, eq);
                model.model_path = value.substr(eq + 1);
                if (const auto colon = model.name.find(':'); colon != std::string::npos) {
                    model.version = model.name.substr(colon + 1);
                    model.name = model.name.substr(0, colon);
                }
                flag_models.push_back(model);
            } else if (flag == "--poll-interval-ms") config.poll_interval_ms = parse_unsigned(flag, value, 86400000);
            else if (flag == "--max-memory") config.max_memory = parse_byte_size(value);
            else if (flag == "--enable-batching") batching = batching_flags = true;
            else if (flag == "--max-batch-size") { max_batch_size = parse_unsigned(flag, value, 1 << 20); batching_flags = true; }
            else if (flag == "--batch-timeout-us") { batch_timeout_us = parse_unsigned(flag, value, 60000000); batching_flags = true; }
            else if (flag == "--warmup-requests") { warmup_requests = parse_unsigned(flag, value, 1000); batching_flags = true; }
            else if (flag == "--host") config.http.host = config.grpc.host = value;
            else if (flag == "--http-port") config.http.port = static_cast<uint16_t>(parse_unsigned(flag, value, 65535));
            else if (flag == "--grpc-port") {
                config.grpc.port = static_cast<uint16_t>(parse_unsigned(flag, value, 65535));
                config.grpc.enabled = config.grpc.port != 0;
            } else if (flag == "--metrics-port") config.metrics_port = static_cast<uint16_t>(parse_unsigned(flag, value, 65535));
            else if (flag == "--no-metrics") config.enable_metrics = false;
            else if (flag == "--threads") config.http.num_workers = parse_unsigned(flag, value, 4096);
            else if (flag == "--max-request-size") config.http.max_request_size = parse_byte_size(value);
            else if (flag == "--request-timeout-ms") config.http.request_timeout_ms = parse_unsigned(flag, value, 86400000);
            else if (flag == "--keep-alive-timeout-ms") config.http.keep_alive_timeout_ms = parse_unsigned(flag, value, 86400000);
            else if (flag == "--rate-limit") {
                try {
                    config.rate_limit.requests_per_second = std::stod(value);
                } catch (const std::exception&) {
                    usage_error("--rate-limit needs requests per second, got '" + value + "'");
                }
                if (!(config.rate_limit.requests_per_second > 0)) usage_error("--rate-limit must be positive");
                config.rate_limit.enabled = true;
            } else if (flag == "--rate-limit-burst") config.rate_limit.burst_size = parse_unsigned(flag, value, 1 << 30);
            else if (flag == "--cors") config.http.enable_cors = true;
            else if (flag == "--cors-origin") { config.http.enable_cors = true; config.http.cors_origin = value; }
            else if (flag == "--tls-cert") { config.tls.cert_path = value; config.tls.enabled = true; }
            else if (flag == "--tls-key") { config.tls.key_path = value; config.tls.enabled = true; }
            else if (flag == "--tls-ca") config.tls.ca_path = value;
            else if (flag == "--admin-token") config.admin_token = value;
            else if (flag == "--no-strict-readiness") config.strict_readiness = false;
            else if (flag == "--print-config") print_config = true;
        }
        for (auto& model : flag_models) {
            model.enable_batching = batching;
            model.max_batch_size = max_batch_size;
            model.batch_timeout_us = batch_timeout_us;
            model.warmup_requests = warmup_requests;
            config.models.push_back(model);
        }
        if (batching_flags && flag_models.empty())
            std::cerr << "pyflame-serve: note: batching flags apply to --model models; repository models take "
                         "theirs from NAME/config.json" << std::endl;
        if (config.model_dir.empty() && config.models.empty()) config.model_dir = "./models";
        if (config.tls.enabled && (config.tls.cert_path.empty() || config.tls.key_path.empty()))
            usage_error("TLS needs both --tls-cert and --tls-key");
    } catch (const pyflame_rt::PyFlameRTError& error) {
        std::cerr << "pyflame-serve: " << error.what() << std::endl;
        return 2;
    }
    if (print_config) {
        std::cout << server_config_to_json(config) << std::endl;
        return 0;
    }

    // Termination signals are taken by sigwait below; every thread inherits this mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    ModelServer server(config);
    try {
        server.start();
    } catch (const std::exception& error) {
        std::cerr << "pyflame-serve: cannot start: " << error.what() << std::endl;
        return 1;
    }
    int received = 0;
    sigwait(&signals, &received);
    std::cout << "[pyflame-serve] " << (received == SIGTERM ? "SIGTERM" : "SIGINT")
              << ": draining in-flight requests" << std::endl;
    server.stop();
    std::cout << "[pyflame-serve] stopped" << std::endl;
    return 0;
}
