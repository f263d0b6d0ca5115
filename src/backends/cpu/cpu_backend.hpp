#pragma once
// The CPU backend: reference kernels of the op table, overridden by fast kernels where
// registered, plus ops of the public OperatorRegistry.
#include <map>

#include "backends/execution_plan.hpp"
#include "backends/kernel_provider.hpp"
#include "pyflame_rt/backend.hpp"

namespace pyflame_rt {

class CpuBackend : public Backend, public KernelProvider {
public:
    static constexpr const char* kProviderName = "CPUExecutionProvider";

    CpuBackend();
    std::string name() const override { return kProviderName; }
    std::string device_type() const override { return "cpu"; }
    bool initialize(const SessionOptions& options) override;
    void shutdown() override;

    std::vector<Tensor> execute(const Graph& graph, const std::unordered_map<std::string, Tensor>& inputs) override;
    Tensor allocate(const std::vector<int64_t>& shape, DType dtype) override;
    void deallocate(Tensor& tensor) override;

    bool supports_op(const std::string& op_type) const override;
    std::vector<std::string> supported_ops() const override;

    std::unique_ptr<ops::OpKernel> create_kernel(const ops::KernelInfo& info) const override;
    int num_threads() const { return num_threads_; }

private:
    // One table: (domain::op_type) -> kernel factory. supports_op answers from it.
    std::map<std::string, ops::KernelFactory> kernels_;
    int num_threads_ = 1;
};

}  // namespace pyflame_rt
