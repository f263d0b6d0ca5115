#pragma once
// The listeners: HTTP/REST (cpp-httplib), gRPC (grpc++), and the Prometheus metrics port.
#include <cstdint>
#include <memory>

#include "server_core.hpp"

namespace pyflame_rt::serving {

class HttpFrontend {
public:
    explicit HttpFrontend(ServerCore& core);
    ~HttpFrontend();
    void start();  // binds (throws PyFlameRTError on failure) and serves on a thread
    void stop();   // stops accepting; returns once in-flight requests are answered
    uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class GrpcFrontend {
public:
    explicit GrpcFrontend(ServerCore& core);
    ~GrpcFrontend();
    void start();
    void stop();
    uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pyflame_rt::serving
