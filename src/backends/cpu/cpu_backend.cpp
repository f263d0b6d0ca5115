#include "backends/cpu/cpu_backend.hpp"

#include <algorithm>
#include <thread>

#include "backends/cpu/onednn_kernels.hpp"
#include "ops/custom_op_kernel.hpp"
#include "pyflame_rt/registry.hpp"

namespace pyflame_rt {
namespace {

std::string key_of(const std::string& domain, const std::string& op_type) {
    return (domain == "ai.onnx" ? std::string() : domain) + "::" + op_type;
}

}  // namespace

CpuBackend::CpuBackend() {
    for (const ops::OpSchema* schema : ops::OpTable::instance().all())
        if (schema->reference_kernel) kernels_[key_of(schema->domain, schema->op_type)] = schema->reference_kernel;
    register_onednn_kernels(kernels_);
}

bool CpuBackend::initialize(const SessionOptions& options) {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    num_threads_ = options.num_threads > 0 ? options.num_threads : static_cast<int>(hw);
    return true;
}

void CpuBackend::shutdown() {}

std::unique_ptr<ops::OpKernel> CpuBackend::create_kernel(const ops::KernelInfo& info) const {
    const Node& node = info.node;
    const int64_t opset = info.opset;
    auto it = kernels_.find(key_of(node.domain(), node.op_type()));
    if (it != kernels_.end()) {
        if (const ops::OpSchema* schema = ops::OpTable::instance().find(node.op_type(), node.domain()))
            ops::check_arity(*schema, node);
        return it->second(info);
    }
    if (node.domain().empty() && OperatorRegistry::instance().has_op(node.op_type())) return ops::make_custom_op_kernel(info);
    const std::string domain = node.domain().empty() ? "ai.onnx" : node.domain();
    throw UnsupportedOperatorError(node.op_type(), "operator " + node.op_type() + " (domain " + domain + ", opset " +
                                                       std::to_string(opset) + ") used by node '" + node.name() +
                                                       "' has no kernel on " + kProviderName);
}

std::vector<Tensor> CpuBackend::execute(const Graph& graph, const std::unordered_map<std::string, Tensor>& inputs) {
    // Planned per call: a Graph has no identity a cache could trust. InferenceSession is the
    // way to plan once and run many times.
    const ExecutionPlan plan(graph, *this, num_threads_, graph.opset_version(""));
    std::vector<Value> feeds;
    for (const auto& in : graph.inputs()) {
        auto it = inputs.find(in.name);
        if (it == inputs.end() && !graph.has_initializer(in.name))
            throw ValidationError("missing input '" + in.name + "'");
        feeds.push_back(it == inputs.end() ? Value() : Value(it->second));
    }
    std::vector<size_t> all(graph.outputs().size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    std::vector<Tensor> outputs;
    for (auto& v : plan.run(std::move(feeds), all, {})) outputs.push_back(v.tensor());
    return outputs;
}

Tensor CpuBackend::allocate(const std::vector<int64_t>& shape, DType dtype) { return Tensor(shape, dtype); }
void CpuBackend::deallocate(Tensor& tensor) { tensor = Tensor(); }

bool CpuBackend::supports_op(const std::string& op_type) const {
    return kernels_.count(key_of("", op_type)) != 0 || OperatorRegistry::instance().has_op(op_type);
}

std::vector<std::string> CpuBackend::supported_ops() const {
    std::vector<std::string> names;
    for (const auto& [key, factory] : kernels_)
        if (key.rfind("::", 0) == 0) names.push_back(key.substr(2));
    for (const auto& op : OperatorRegistry::instance().registered_ops()) names.push_back(op);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
}

// ---- provider discovery ----

std::vector<std::string> get_available_providers() { return {CpuBackend::kProviderName}; }

int get_device_count(const std::string& device_type) {
    if (device_type == "cpu") return 1;
    if (device_type == "wse") return 0;  // the WSE simulator backend is not built yet
    throw ValidationError("unknown device type '" + device_type + "' (known: cpu, wse)");
}

std::unique_ptr<Backend> create_backend(const std::string& provider_or_device, const SessionOptions& options) {
    std::unique_ptr<Backend> backend;
    if (provider_or_device == "cpu" || provider_or_device == CpuBackend::kProviderName) {
        backend = std::make_unique<CpuBackend>();
    } else if (provider_or_device == "wse" || provider_or_device == "WSEExecutionProvider") {
        throw PyFlameRTError("device 'wse': the WSE simulator backend is not built yet; use device 'cpu'");
    } else {
        throw ValidationError("unknown execution provider '" + provider_or_device + "' (available: CPUExecutionProvider)");
    }
    backend->initialize(options);
    return backend;
}

}  // namespace pyflame_rt
