#pragma once
// oneDNN fast kernels of the CPU backend (Conv, MatMul, Gemm, MaxPool, AveragePool,
// GlobalAveragePool, float32). They override the reference kernels' table entries; each falls
// back to the reference kernel for what it does not handle, and all of them do when oneDNN has
// no usable CPU engine (see onednn_context.hpp).
#include <map>
#include <string>

#include "ops/op.hpp"

namespace pyflame_rt {

// Sets the fast kernels' factories in `kernels` ("domain::op_type" -> factory).
void register_onednn_kernels(std::map<std::string, ops::KernelFactory>& kernels);

// Whether oneDNN has a CPU engine here (else the factories return reference kernels).
bool onednn_available();
// Whether `kernel` is one of the oneDNN kernels (which still fall back per call for inputs
// they do not handle).
bool is_onednn_kernel(const ops::OpKernel& kernel);

}  // namespace pyflame_rt
