#pragma once
// Backend: the interface every execution backend (CPU, WSE simulator) implements.
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/options.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt {

class Backend {
public:
    virtual ~Backend() = default;

    virtual std::string name() const = 0;          // provider name, e.g. "CPUExecutionProvider"
    virtual std::string device_type() const = 0;   // "cpu"

    virtual bool initialize(const SessionOptions& options) = 0;
    virtual void shutdown() = 0;

    // Runs `graph` on `inputs` and returns the graph outputs in order. Plans on every call;
    // an InferenceSession plans once and runs many times.
    virtual std::vector<Tensor> execute(const Graph& graph,
                                        const std::unordered_map<std::string, Tensor>& inputs) = 0;

    virtual Tensor allocate(const std::vector<int64_t>& shape, DType dtype) = 0;
    virtual void deallocate(Tensor& tensor) = 0;

    virtual bool supports_op(const std::string& op_type) const = 0;
    virtual std::vector<std::string> supported_ops() const = 0;
};

// Backends this build provides, by provider name.
std::vector<std::string> get_available_providers();
// Number of devices of `device_type` ("cpu": 1; "wse": 0 until the simulator lands).
int get_device_count(const std::string& device_type);
// A new, initialized backend for `provider` ("CPUExecutionProvider") or device ("cpu").
std::unique_ptr<Backend> create_backend(const std::string& provider_or_device, const SessionOptions& options);

}  // namespace pyflame_rt
