#pragma once
#include "ops/op.hpp"

namespace pyflame_rt::ops {
// A kernel calling the OperatorRegistry function registered for node.op_type().
std::unique_ptr<OpKernel> make_custom_op_kernel(const KernelInfo& info);
}
