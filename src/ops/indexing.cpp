// Indexing and data-movement ops: the helpers of indexing_common.hpp and the registration of
// every indexing_*.cpp family.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {

std::vector<int64_t> int_values(const Tensor& t, const Node& node, const std::string& what) {
    const int64_t n = t.num_elements();
    if (t.dtype() == DType::Int64) return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
    if (t.dtype() == DType::Int32) return std::vector<int64_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + n);
    fail_node(node, what + " is " + dtype_to_string(t.dtype()) + "; expected Int32 or Int64");
}

int64_t int_scalar(const Tensor& t, const Node& node, const std::string& what) {
    if (t.num_elements() != 1)
        fail_node(node, what + " must hold exactly one value; got shape " + shape_to_string(t.shape()));
    return int_values(t, node, what)[0];
}

std::vector<int64_t> values_as_int64(const Tensor& t, const Node& node, const std::string& what) {
    std::vector<int64_t> out(static_cast<size_t>(t.num_elements()));
    dispatch_numeric(
        t.dtype(), node,
        [&](auto tag) {
            using T = decltype(tag);
            const T* p = t.data_ptr<T>();
            for (size_t i = 0; i < out.size(); ++i) {
                if constexpr (std::is_integral_v<T>) {
                    if constexpr (std::is_same_v<T, uint64_t>) {
                        if (p[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                            fail_node(node, what + " holds " + std::to_string(p[i]) + ", beyond Int64");
                    }
                    out[i] = static_cast<int64_t>(p[i]);
                } else {
                    double d;
                    if constexpr (std::is_same_v<T, double>) d = p[i];
                    else d = static_cast<float>(p[i]);
                    // 2^63 is exactly representable; anything at or beyond it does not fit.
                    if (!(std::abs(d) < 9.2233720368547758e18))
                        fail_node(node, what + " holds " + std::to_string(d) + ", which is not a usable integer");
                    out[i] = static_cast<int64_t>(d);
                }
            }
        },
        /*with_bool=*/true);
    return out;
}

namespace {

// Attribute before `since`, input from then on; a node written for the other form is rejected
// rather than half-read.
void check_form(const Node& node, int64_t opset, int64_t since, const std::string& attr, size_t input) {
    if (opset >= since && node.has_attribute(attr))
        fail_node(node, "attribute '" + attr + "' is an input since opset " + std::to_string(since) +
                            " (the model uses opset " + std::to_string(opset) + ")");
    if (opset < since && node.has_input(input))
        fail_node(node, "'" + attr + "' is an attribute before opset " + std::to_string(since) +
                            " (the model uses opset " + std::to_string(opset) + "), not input " +
                            std::to_string(input));
}

}  // namespace

IntsSource::IntsSource(const Node& node, int64_t opset, int64_t input_since, const std::string& attr, size_t input)
    : from_input_(opset >= input_since), name_(attr), input_(input) {
    check_form(node, opset, input_since, attr, input);
    if (!from_input_ && node.has_attribute(attr)) attr_value_ = node.get_attribute<std::vector<int64_t>>(attr);
}

std::optional<std::vector<int64_t>> IntsSource::get(const KernelContext& ctx, const Node& node) const {
    if (!from_input_) return attr_value_;
    if (!ctx.has_input(input_)) return std::nullopt;
    return int_values(ctx.input(input_), node, "input '" + name_ + "'");
}

MaybeInts ints_attr_or_input(const InferenceContext& ctx, int64_t input_since, const std::string& attr, size_t input) {
    check_form(ctx.node, ctx.opset, input_since, attr, input);
    if (ctx.opset < input_since) {
        if (!ctx.node.has_attribute(attr)) return {};
        return {true, ctx.node.get_attribute<std::vector<int64_t>>(attr)};
    }
    if (!ctx.node.has_input(input)) return {};
    auto values = constant_ints(ctx, input, "input '" + attr + "'");
    return {values.has_value(), std::move(values)};
}

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const Node& node) {
    std::vector<int64_t> out;
    for (int64_t a : axes) {
        const int64_t n = normalize_axis(a, rank, node);
        if (std::find(out.begin(), out.end(), n) != out.end())
            fail_node(node, "axes " + shape_to_string(axes) + " name axis " + std::to_string(n) + " twice");
        out.push_back(n);
    }
    return out;
}

void check_output_size(const std::vector<int64_t>& dims, const Node& node) {
    constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 16;  // 16: the widest element
    int64_t n = 1;
    for (int64_t d : dims) {
        if (d < 0) fail_node(node, "output shape " + shape_to_string(dims) + " has a negative dimension");
        if (d == 0) return;
    }
    for (int64_t d : dims) {
        if (n > kMaxElements / d) fail_node(node, "output shape " + shape_to_string(dims) + " is too large");
        n *= d;
    }
}

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& dims) {
    std::vector<int64_t> strides(dims.size());
    int64_t s = 1;
    for (size_t i = dims.size(); i-- > 0;) {
        strides[i] = s;
        s *= dims[i];
    }
    return strides;
}

void set_output_unknown_rank(InferenceContext& ctx, size_t i, DType dtype) {
    ctx.set_output(i, dtype, {});
    ctx.outputs[i]->rank_known = false;
}

std::optional<std::vector<int64_t>> constant_ints(const InferenceContext& ctx, size_t i, const std::string& what) {
    if (!ctx.node.has_input(i)) return std::nullopt;
    const Tensor* t = ctx.constant(i);
    if (!t) return std::nullopt;
    return int_values(*t, ctx.node, what);
}

std::optional<int64_t> known_length(const InferenceContext& ctx, size_t i) {
    if (!ctx.has_input(i)) return std::nullopt;
    const Shape& s = ctx.input(i).shape;
    if (s.size() != 1) return std::nullopt;
    return s[0];
}

int threads_for_copy(int64_t elements, int num_threads) {
    return threads_for_work(static_cast<double>(elements), num_threads);
}

namespace {

template <typename T>
void copy_rows(const T* in, T* out, const std::vector<int64_t>& dims, const AxisMaps& maps, const T& fill,
               int num_threads) {
    const size_t rank = dims.size();
    const int64_t total = num_elements_of(dims);
    if (total == 0) return;
    if (rank == 0) {
        *out = *in;
        return;
    }
    const int64_t inner = dims.back();
    const std::vector<int64_t>& inner_map = maps.back();
    bool contiguous = true;  // inner_map is start, start+1, ...: the row is one block of the input
    for (int64_t j = 0; j < inner && contiguous; ++j)
        contiguous = inner_map[j] != kPadding && inner_map[j] == inner_map[0] + j;
    const int64_t rows = total / inner;
    parallel_for(rows, threads_for_copy(total, num_threads), [&](int64_t begin, int64_t end) {
        std::vector<int64_t> index(rank - 1, 0);  // the row's index over the outer output dims
        for (size_t d = rank - 1, r = static_cast<size_t>(begin); d-- > 0;) {
            index[d] = static_cast<int64_t>(r % static_cast<size_t>(dims[d]));
            r /= static_cast<size_t>(dims[d]);
        }
        for (int64_t row = begin; row < end; ++row) {
            int64_t base = 0;
            bool padding = false;
            for (size_t d = 0; d + 1 < rank && !padding; ++d) {
                const int64_t m = maps[d][index[d]];
                padding = m == kPadding;
                base += m;
            }
            T* o = out + row * inner;
            if (padding) {
                std::fill(o, o + inner, fill);
            } else if (contiguous) {
                std::copy(in + base + inner_map[0], in + base + inner_map[0] + inner, o);
            } else {
                for (int64_t j = 0; j < inner; ++j) o[j] = inner_map[j] == kPadding ? fill : in[base + inner_map[j]];
            }
            for (size_t d = rank - 1; d-- > 0;) {
                if (++index[d] < dims[d]) break;
                index[d] = 0;
            }
        }
    });
}

}  // namespace

Tensor copy_by_axis_maps(const Tensor& in, const std::vector<int64_t>& out_dims, const AxisMaps& maps,
                         const void* fill, int num_threads) {
    Tensor out(out_dims, in.dtype());
    dispatch_by_width(in.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T fill_value = fill ? *static_cast<const T*>(fill) : T{};
        copy_rows(in.data_ptr<T>(), out.data_ptr<T>(), out_dims, maps, fill_value, num_threads);
    });
    return out;
}

std::vector<int64_t> identity_map(int64_t dim, int64_t stride) {
    std::vector<int64_t> map(static_cast<size_t>(dim));
    for (int64_t j = 0; j < dim; ++j) map[j] = j * stride;
    return map;
}

Tensor permute_axes(const Tensor& in, const std::vector<int64_t>& dims, const std::vector<int64_t>& perm,
                    int num_threads) {
    const std::vector<int64_t> strides = row_major_strides(dims);
    std::vector<int64_t> out_dims(perm.size());
    AxisMaps maps(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) {
        out_dims[i] = dims[perm[i]];
        maps[i] = identity_map(dims[perm[i]], strides[perm[i]]);
    }
    return copy_by_axis_maps(in, out_dims, maps, nullptr, num_threads);
}

Tensor take_along_axis(const Tensor& in, size_t axis, const std::vector<int64_t>& indices, int num_threads) {
    const std::vector<int64_t>& dims = in.shape();
    const std::vector<int64_t> strides = row_major_strides(dims);
    std::vector<int64_t> out_dims = dims;
    out_dims[axis] = static_cast<int64_t>(indices.size());
    AxisMaps maps(dims.size());
    for (size_t d = 0; d < dims.size(); ++d) {
        if (d != axis) {
            maps[d] = identity_map(dims[d], strides[d]);
            continue;
        }
        maps[d].resize(indices.size());
        for (size_t j = 0; j < indices.size(); ++j) maps[d][j] = indices[j] * strides[d];
    }
    return copy_by_axis_maps(in, out_dims, maps, nullptr, num_threads);
}

void register_indexing_ops(OpTable& table) {
    register_indexing_gather_ops(table);
    register_indexing_slice_ops(table);
    register_indexing_layout_ops(table);
    register_indexing_generate_ops(table);
    register_indexing_sort_ops(table);
}

}  // namespace pyflame_rt::ops
