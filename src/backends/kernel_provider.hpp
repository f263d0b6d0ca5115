#pragma once
// What the executor needs from a backend: a kernel for each node.
#include <memory>
#include <string>
#include <vector>

#include "ops/op.hpp"

namespace pyflame_rt {

class KernelProvider {
public:
    virtual ~KernelProvider() = default;
    // UnsupportedOperatorError naming op, domain and opset when the backend has no kernel.
    virtual std::unique_ptr<ops::OpKernel> create_kernel(const ops::KernelInfo& info) const = 0;
};

}  // namespace pyflame_rt
