// Embedding pyflame-serve in a C++ program: a ModelServer built with ModelServerBuilder.
//
//   cpp_server_example MODEL.onnx            serve MODEL as "model" on :8080 (gRPC :9090) until Ctrl-C
//   cpp_server_example --self-test MODEL     serve on a free port, send one v2 infer request over
//                                            HTTP, compare it with InferenceSession::run, stop
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "pyflame_rt/serving/model_server.hpp"
#include "pyflame_rt/session.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::serving;

namespace {

// A minimal HTTP/1.1 exchange over a loopback socket (the example needs no HTTP client library).
std::string http_request(uint16_t port, const std::string& method, const std::string& path, const std::string& body) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot connect to port " + std::to_string(port));
    }
    std::ostringstream request;
    request << method << " " << path << " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            << "Content-Type: application/json\r\nContent-Length: " << body.size() << "\r\n\r\n" << body;
    const std::string text = request.str();
    ::send(fd, text.data(), text.size(), 0);
    std::string response;
    char buffer[65536];
    ssize_t n;
    while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) response.append(buffer, static_cast<size_t>(n));
    ::close(fd);
    return response;
}

}  // namespace

int main(int argc, char** argv) {
    const bool self_test = argc == 3 && std::string(argv[1]) == "--self-test";
    if (argc != 2 && !self_test) {
        std::cerr << "usage: cpp_server_example [--self-test] MODEL.onnx" << std::endl;
        return 2;
    }
    const std::string model_path = argv[argc - 1];
    auto server = ModelServerBuilder()
                      .host("127.0.0.1")
                      .port(self_test ? 0 : 8080)         // 0: any free port
                      .grpc_port(self_test ? 0 : 9090)    // 0: no gRPC listener
                      .metrics_port(0)                    // /metrics stays on the HTTP port
                      .add_model("model", model_path, "1")
                      .enable_batching(8, 2000)
                      .build();
    server->on_ready([&] { std::cout << "ready on port " << server->http_port() << std::endl; });
    server->start();

    if (!self_test) {
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        int received;
        sigwait(&signals, &received);
        server->stop();
        return 0;
    }

    // Self-test: the same zero-free input through HTTP and through the library directly.
    auto instance = server->registry().get("model");
    const auto metadata = instance->get_serving_metadata();
    const auto& input = metadata.inputs.at(0);
    std::vector<int64_t> shape;
    for (int64_t dim : input.shape) shape.push_back(dim < 0 ? 1 : dim);
    Tensor x(shape, DType::Float32);
    std::ostringstream data;
    for (int64_t i = 0; i < x.num_elements(); ++i) {
        x.data_ptr<float>()[i] = std::sin(0.01f * static_cast<float>(i));
        data << (i ? "," : "") << x.data_ptr<float>()[i];
    }
    std::ostringstream shape_json;
    for (size_t i = 0; i < shape.size(); ++i) shape_json << (i ? "," : "") << shape[i];
    const std::string body = "{\"inputs\":[{\"name\":\"" + input.name + "\",\"datatype\":\"FP32\",\"shape\":[" +
                             shape_json.str() + "],\"data\":[" + data.str() + "]}]}";
    const std::string response = http_request(server->http_port(), "POST", "/v2/models/model/infer", body);
    InferenceSession session(model_path);
    const Tensor expected = session.run({}, {{input.name, x}}).at(0);

    // Parse the first output's "data" array out of the JSON response.
    const auto data_at = response.find("\"data\":[");
    if (response.find("200 OK") == std::string::npos || data_at == std::string::npos) {
        std::cerr << "unexpected response:\n" << response << std::endl;
        return 1;
    }
    std::istringstream values(response.substr(data_at + 8));
    double max_error = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        double value;
        char separator;
        values >> value >> separator;
        max_error = std::max(max_error, std::abs(value - expected.data_ptr<float>()[i]));
    }
    const ServerStats stats = server->get_stats();
    server->stop();
    std::cout << "output " << shape_to_string(expected.shape()) << " max |http - in-process| = " << max_error
              << ", requests served: " << stats.total_requests << std::endl;
    return max_error < 1e-5 && stats.total_requests == 1 ? 0 : 1;
}
