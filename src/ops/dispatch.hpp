#pragma once
// Runtime dtype -> C++ type dispatch for kernels: fn(T{}) is called with a value of the
// element type. Float16/BFloat16 use Eigen's half types (they convert to and from float and
// support arithmetic); Float8/Float4 types have no C++ arithmetic type here: convert them
// to float first (see cast.cpp) or refuse them.
#include <complex>
#include <string>
#include <unsupported/Eigen/CXX11/Tensor>  // Eigen::half, Eigen::bfloat16

#include "ops/op.hpp"

namespace pyflame_rt::ops {

// Calls fn(T{}) for T in float, double, Eigen::half, Eigen::bfloat16, int8..int64,
// uint8..uint64 (and bool when `with_bool`). Other dtypes: ValidationError naming the node.
template <typename F>
void dispatch_numeric(DType dtype, const Node& node, F&& fn, bool with_bool = false) {
    switch (dtype) {
        case DType::Float32: return fn(float{});
        case DType::Float64: return fn(double{});
        case DType::Float16: return fn(Eigen::half{});
        case DType::BFloat16: return fn(Eigen::bfloat16{});
        case DType::Int8: return fn(int8_t{});
        case DType::Int16: return fn(int16_t{});
        case DType::Int32: return fn(int32_t{});
        case DType::Int64: return fn(int64_t{});
        case DType::UInt8: return fn(uint8_t{});
        case DType::UInt16: return fn(uint16_t{});
        case DType::UInt32: return fn(uint32_t{});
        case DType::UInt64: return fn(uint64_t{});
        case DType::Bool:
            if (with_bool) return fn(bool{});
            break;
        default:
            break;
    }
    fail_node(node, "dtype " + dtype_to_string(dtype) + " is not supported");
}

// Floating types only: float, double, Eigen::half, Eigen::bfloat16.
template <typename F>
void dispatch_float_types(DType dtype, const Node& node, F&& fn) {
    switch (dtype) {
        case DType::Float32: return fn(float{});
        case DType::Float64: return fn(double{});
        case DType::Float16: return fn(Eigen::half{});
        case DType::BFloat16: return fn(Eigen::bfloat16{});
        default: fail_node(node, "dtype " + dtype_to_string(dtype) + " is not supported (floating types only)");
    }
}

// Any dtype by element width, for ops that only move elements (gather, slice, tile, ...).
// Strings dispatch to std::string (copy by assignment), 16-byte types to a trivially
// copyable pair.
struct Bytes16 {
    uint64_t lo, hi;
};
template <typename F>
void dispatch_by_width(DType dtype, F&& fn) {
    if (dtype == DType::String) return fn(std::string{});
    switch (dtype_size(dtype)) {
        case 1: return fn(uint8_t{});
        case 2: return fn(uint16_t{});
        case 4: return fn(uint32_t{});
        case 8: return fn(uint64_t{});
        case 16: return fn(Bytes16{});
        default: throw ValidationError("unsupported element width for " + dtype_to_string(dtype));
    }
}

}  // namespace pyflame_rt::ops
