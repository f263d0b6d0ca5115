#pragma once
// Small helpers shared by the reduction, normalization, pooling, convolution and nn_extra
// kernels (reduce.cpp, normalization.cpp, norm.cpp, pool.cpp, conv.cpp, nn_extra.cpp).
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/dispatch.hpp"

namespace pyflame_rt::ops {

// float, double, Eigen::half and Eigen::bfloat16.
template <typename T>
constexpr bool is_floating_v =
    std::is_floating_point_v<T> || std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>;

inline bool is_float_type(DType d) {
    return d == DType::Float32 || d == DType::Float64 || d == DType::Float16 || d == DType::BFloat16;
}

// ValidationError naming the node unless `dtype` is float, double, float16 or bfloat16.
inline void require_float_type(const Node& node, DType dtype, const std::string& what) {
    if (!is_float_type(dtype))
        fail_node(node, what + " is " + dtype_to_string(dtype) + "; expected Float32, Float64, Float16 or BFloat16");
}

// A shape seen as (outer, n, inner) around `axis`: the layout of ops working along one axis.
struct AxisSplit {
    int64_t outer = 1, n = 1, inner = 1;
};

inline AxisSplit split_at(const std::vector<int64_t>& dims, int64_t axis) {
    AxisSplit s;
    for (int64_t d = 0; d < static_cast<int64_t>(dims.size()); ++d) {
        if (d < axis) s.outer *= dims[d];
        else if (d == axis) s.n = dims[d];
        else s.inner *= dims[d];
    }
    return s;
}

// Product of dims[from, to).
inline int64_t dims_product(const std::vector<int64_t>& dims, size_t from, size_t to) {
    int64_t p = 1;
    for (size_t d = from; d < to && d < dims.size(); ++d) p *= dims[d];
    return p;
}

// The values of a floating-point tensor as doubles (for parameters and small inputs).
inline std::vector<double> float_values(const Tensor& t, const Node& node) {
    std::vector<double> out(static_cast<size_t>(t.num_elements()));
    dispatch_float_types(t.dtype(), node, [&](auto v) {
        using T = decltype(v);
        std::transform(t.data_ptr<T>(), t.data_ptr<T>() + out.size(), out.begin(),
                       [](T e) { return static_cast<double>(e); });
    });
    return out;
}

// The values of an integer tensor (any integer dtype) as int64.
inline std::vector<int64_t> int_values(const Tensor& t, const Node& node, const std::string& what) {
    if (!is_integer_dtype(t.dtype()) || dtype_size(t.dtype()) > 8)
        fail_node(node, what + " is " + dtype_to_string(t.dtype()) + "; expected an integer type");
    std::vector<int64_t> out(static_cast<size_t>(t.num_elements()));
    dispatch_numeric(t.dtype(), node, [&](auto v) {
        using T = decltype(v);
        if constexpr (std::is_integral_v<T>)
            std::transform(t.data_ptr<T>(), t.data_ptr<T>() + out.size(), out.begin(),
                           [](T e) { return static_cast<int64_t>(e); });
    });
    return out;
}

// A tensor of floating `dtype` and `shape` holding `values` (rounded once).
inline Tensor float_tensor(const std::vector<int64_t>& shape, DType dtype, const std::vector<double>& values,
                           const Node& node) {
    Tensor t(shape, dtype);
    dispatch_float_types(dtype, node, [&](auto v) {
        using T = decltype(v);
        std::transform(values.begin(), values.end(), t.data_ptr<T>(), [](double e) { return static_cast<T>(e); });
    });
    return t;
}

// An output whose dtype is known but not even its rank (shape inference).
inline void set_output_rank_unknown(InferenceContext& ctx, size_t i, DType dtype) {
    if (ctx.outputs.size() <= i) ctx.outputs.resize(i + 1);
    const std::string name = i < ctx.node.outputs().size() ? ctx.node.outputs()[i] : std::string();
    ctx.outputs[i] = TensorInfo{name, dtype, {}, false};
}

// Whether output i of the node is requested (present and named).
inline bool wants_output(const Node& node, size_t i) { return i < node.outputs().size() && !node.outputs()[i].empty(); }

}  // namespace pyflame_rt::ops
