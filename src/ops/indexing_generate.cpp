// Ops that build a tensor from a shape or a pattern: ConstantOfShape, Range, OneHot, EyeLike,
// Trilu, Col2Im.
#include <algorithm>
#include <cmath>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

// Conversions through double that also work for Eigen's half types (they convert via float).
template <typename T>
double as_double(const T& v) {
    if constexpr (std::is_arithmetic_v<T>) return static_cast<double>(v);
    else return static_cast<double>(static_cast<float>(v));
}
template <typename T>
T from_double(double v) {
    if constexpr (std::is_arithmetic_v<T>) return static_cast<T>(v);
    else return T(static_cast<float>(v));
}

// Output dims from a shape tensor (1-D Int64, no negative dims).
std::vector<int64_t> dims_from_shape_input(const Tensor& shape, const Node& node) {
    if (shape.ndim() != 1) fail_node(node, "shape input must be 1-D; got " + shape_to_string(shape.shape()));
    std::vector<int64_t> dims = int_values(shape, node, "shape input");
    for (int64_t d : dims)
        if (d < 0) fail_node(node, "shape " + shape_to_string(dims) + " has a negative dimension");
    check_output_size(dims, node);
    return dims;
}

// ---------------------------------------------------------------------------------------------
// ConstantOfShape: the shape input filled with the one element of attribute `value`
// (default: Float32 zero). Any dtype.

Tensor constant_of_shape_value(const Node& node) {
    if (!node.has_attribute("value")) {
        Tensor zero = Tensor::zeros({1}, DType::Float32);
        return zero;
    }
    Tensor v = node.get_attribute<Tensor>("value");
    if (v.num_elements() != 1 || v.empty())
        fail_node(node, "attribute 'value' must hold exactly one element; got shape " + shape_to_string(v.shape()));
    return v;
}

class ConstantOfShapeKernel final : public NodeKernel {
public:
    explicit ConstantOfShapeKernel(const Node& node) : NodeKernel(node), value_(constant_of_shape_value(node)) {}

    void compute(KernelContext& ctx) const override {
        const std::vector<int64_t> dims = dims_from_shape_input(ctx.input(0), node_);
        Tensor out(dims, value_.dtype());
        dispatch_by_width(value_.dtype(), [&](auto tag) {
            using T = decltype(tag);
            std::fill(out.data_ptr<T>(), out.data_ptr<T>() + out.num_elements(), *value_.data_ptr<T>());
        });
        ctx.outputs[0] = std::move(out);
    }

private:
    Tensor value_;
};

void infer_constant_of_shape(InferenceContext& ctx) {
    const DType dtype = constant_of_shape_value(ctx.node).dtype();
    if (const Tensor* shape = ctx.constant(0)) return ctx.set_output(0, dtype, to_shape(dims_from_shape_input(*shape, ctx.node)));
    if (const auto n = known_length(ctx, 0)) return ctx.set_output(0, dtype, unknown_dims(static_cast<size_t>(*n)));
    set_output_unknown_rank(ctx, 0, dtype);
}

// ---------------------------------------------------------------------------------------------
// Range: max(ceil((limit - start) / delta), 0) elements start + i * delta. Integers are exact;
// floating types are computed in double and rounded once (float16/bfloat16 thereby get the
// precision opset 27's stash_type asks for).

constexpr int64_t kMaxRangeElements = int64_t{1} << 40;  // beyond any memory: a wrong input

template <typename T>
int64_t range_count(T start, T limit, T delta, const Node& node) {
    if constexpr (std::is_integral_v<T>) {
        if (delta == 0) fail_node(node, "delta must not be 0");
        const __int128 span = static_cast<__int128>(limit) - start;
        __int128 n = span / delta;
        if (n * delta != span) ++n;  // ceil: span and delta share a sign whenever n > 0
        if (n <= 0) return 0;
        if (n > kMaxRangeElements) fail_node(node, "range has " + std::to_string(static_cast<int64_t>(n)) + " elements");
        return static_cast<int64_t>(n);
    } else {
        const double s = as_double(start), l = as_double(limit), d = as_double(delta);
        if (!std::isfinite(s) || !std::isfinite(l) || !std::isfinite(d) || d == 0)
            fail_node(node, "start, limit and delta must be finite and delta non-zero");
        const double n = std::ceil((l - s) / d);
        if (n <= 0) return 0;
        if (n > static_cast<double>(kMaxRangeElements)) fail_node(node, "range has " + std::to_string(n) + " elements");
        return static_cast<int64_t>(n);
    }
}

void check_range_inputs(const Node& node, const std::vector<const Tensor*>& in) {
    for (size_t i = 0; i < 3; ++i) {
        if (in[i]->num_elements() != 1)
            fail_node(node, "input " + std::to_string(i) + " must be a scalar; got shape " + shape_to_string(in[i]->shape()));
        if (in[i]->dtype() != in[0]->dtype())
            fail_node(node, "start, limit and delta must share a dtype; got " + dtype_to_string(in[0]->dtype()) +
                                " and " + dtype_to_string(in[i]->dtype()));
    }
}

template <typename F>
void dispatch_range_types(DType dtype, const Node& node, F&& fn) {
    switch (dtype) {
        case DType::Float32: case DType::Float64: case DType::Float16: case DType::BFloat16:
        case DType::Int16: case DType::Int32: case DType::Int64:
            return dispatch_numeric(dtype, node, fn);
        default:
            fail_node(node, "dtype " + dtype_to_string(dtype) + " is not supported (Range takes float, double, "
                            "float16, bfloat16, int16, int32 or int64)");
    }
}

class RangeKernel final : public NodeKernel {
public:
    explicit RangeKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const std::vector<const Tensor*> in = {&ctx.input(0), &ctx.input(1), &ctx.input(2)};
        check_range_inputs(node_, in);
        dispatch_range_types(in[0]->dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            const T start = *in[0]->data_ptr<T>(), limit = *in[1]->data_ptr<T>(), delta = *in[2]->data_ptr<T>();
            const int64_t n = range_count(start, limit, delta, node_);
            Tensor out({n}, in[0]->dtype());
            T* y = out.data_ptr<T>();
            for (int64_t i = 0; i < n; ++i) {
                // In 128 bits: i * delta alone may overflow even though the sum is in range.
                if constexpr (std::is_integral_v<T>) y[i] = static_cast<T>(start + static_cast<__int128>(i) * delta);
                else y[i] = from_double<T>(as_double(start) + static_cast<double>(i) * as_double(delta));
            }
            ctx.outputs[0] = std::move(out);
        });
    }
};

void infer_range(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const DType dtype = ctx.input(0).dtype;
    std::optional<int64_t> n;
    if (ctx.constant(0) && ctx.constant(1) && ctx.constant(2)) {
        const std::vector<const Tensor*> in = {ctx.constant(0), ctx.constant(1), ctx.constant(2)};
        check_range_inputs(ctx.node, in);
        dispatch_range_types(dtype, ctx.node, [&](auto tag) {
            using T = decltype(tag);
            n = range_count(*in[0]->data_ptr<T>(), *in[1]->data_ptr<T>(), *in[2]->data_ptr<T>(), ctx.node);
        });
    }
    ctx.set_output(0, dtype, {n});
}

// ---------------------------------------------------------------------------------------------
// OneHot: a new axis of length depth holding values[1] where it equals the index, values[0]
// elsewhere. Indices outside [-depth, depth-1] give a row of values[0]; negative ones count
// from the end since opset 11.

int64_t one_hot_depth(const Tensor& depth, const Node& node) {
    if (depth.num_elements() != 1)
        fail_node(node, "depth must hold one value; got shape " + shape_to_string(depth.shape()));
    const int64_t d = values_as_int64(depth, node, "depth")[0];
    if (d < 1) fail_node(node, "depth must be positive; got " + std::to_string(d));
    return d;
}

class OneHotKernel final : public NodeKernel {
public:
    OneHotKernel(const Node& node, int64_t opset)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", -1)), wrap_negative_(opset >= 11) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& indices = ctx.input(0);
        const Tensor& values = ctx.input(2);
        const int64_t depth = one_hot_depth(ctx.input(1), node_);
        if (values.num_elements() != 2)
            fail("values must hold [off_value, on_value]; got shape " + shape_to_string(values.shape()));
        const auto axis = static_cast<size_t>(normalize_axis(axis_, static_cast<int64_t>(indices.ndim()) + 1, node_));
        const std::vector<int64_t> idx = values_as_int64(indices, node_, "indices");
        std::vector<int64_t> out_dims = indices.shape();
        out_dims.insert(out_dims.begin() + static_cast<std::ptrdiff_t>(axis), depth);
        check_output_size(out_dims, node_);
        const int64_t inner =
            num_elements_of(std::vector<int64_t>(indices.shape().begin() + static_cast<std::ptrdiff_t>(axis), indices.shape().end()));
        Tensor out(out_dims, values.dtype());
        dispatch_by_width(values.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T off = values.data_ptr<T>()[0], on = values.data_ptr<T>()[1];
            T* y = out.data_ptr<T>();
            std::fill(y, y + out.num_elements(), off);
            for (size_t i = 0; i < idx.size(); ++i) {
                int64_t v = idx[i];
                if (v < 0 && wrap_negative_) v += depth;
                if (v < 0 || v >= depth) continue;
                const int64_t o = static_cast<int64_t>(i) / inner, r = static_cast<int64_t>(i) % inner;
                y[(o * depth + v) * inner + r] = on;
            }
        });
        ctx.outputs[0] = std::move(out);
    }

private:
    int64_t axis_;
    bool wrap_negative_;
};

void infer_one_hot(InferenceContext& ctx) {
    if (!ctx.has_input(2)) return;
    const DType dtype = ctx.input(2).dtype;
    if (!ctx.has_input(0)) return set_output_unknown_rank(ctx, 0, dtype);
    const Shape& ishape = ctx.input(0).shape;
    const auto axis = static_cast<size_t>(
        normalize_axis(ctx.node.get_attribute<int64_t>("axis", -1), static_cast<int64_t>(ishape.size()) + 1, ctx.node));
    std::optional<int64_t> depth;
    if (const Tensor* d = ctx.constant(1)) depth = one_hot_depth(*d, ctx.node);
    Shape out = ishape;
    out.insert(out.begin() + static_cast<std::ptrdiff_t>(axis), depth);
    ctx.set_output(0, dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// EyeLike: a 2-D tensor of the input's shape with ones on diagonal k (column - row == k).

// The `dtype` attribute (an ONNX type code), nullopt when absent (then the input's dtype).
std::optional<DType> eye_like_dtype(const Node& node) {
    if (!node.has_attribute("dtype")) return std::nullopt;
    try {
        return dtype_from_onnx(static_cast<int>(node.get_attribute<int64_t>("dtype")));
    } catch (const ValidationError& e) {
        fail_node(node, std::string("attribute 'dtype': ") + e.what());
    }
}

class EyeLikeKernel final : public NodeKernel {
public:
    explicit EyeLikeKernel(const Node& node)
        : NodeKernel(node), dtype_(eye_like_dtype(node)), k_(node.get_attribute<int64_t>("k", 0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 2) fail("input must be 2-D; got " + shape_to_string(x.shape()));
        const DType dtype = dtype_.value_or(x.dtype());
        const int64_t rows = x.shape()[0], cols = x.shape()[1];
        Tensor out = Tensor::zeros(x.shape(), dtype);
        dispatch_numeric(
            dtype, node_,
            [&](auto tag) {
                using T = decltype(tag);
                T* y = out.data_ptr<T>();
                for (int64_t i = std::max<int64_t>(0, -k_); i < rows && i + k_ < cols; ++i)
                    y[i * cols + i + k_] = static_cast<T>(1.0f);
            },
            /*with_bool=*/true);
        ctx.outputs[0] = std::move(out);
    }

private:
    std::optional<DType> dtype_;
    int64_t k_;
};

void infer_eye_like(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 2) fail_node(ctx.node, "input must be 2-D; got " + shape_to_string(x.shape));
    ctx.set_output(0, eye_like_dtype(ctx.node).value_or(x.dtype), x.shape);
}

// ---------------------------------------------------------------------------------------------
// Trilu: keeps, in each matrix of the last two dims, the elements on and above (upper=1) or on
// and below (upper=0) diagonal k; the rest become zero (empty strings). Any dtype.

class TriluKernel final : public NodeKernel {
public:
    explicit TriluKernel(const Node& node) : NodeKernel(node), upper_(node.get_attribute<int64_t>("upper", 1) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() < 2) fail("input must have rank >= 2; got " + shape_to_string(x.shape()));
        const int64_t k = ctx.has_input(1) ? int_scalar(ctx.input(1), node_, "k") : 0;
        const int64_t rows = x.shape()[x.ndim() - 2], cols = x.shape()[x.ndim() - 1];
        const int64_t matrices = rows > 0 && cols > 0 ? x.num_elements() / (rows * cols) : 0;
        Tensor y(x.shape(), x.dtype());
        dispatch_by_width(x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = x.data_ptr<T>();
            T* dst = y.data_ptr<T>();
            for (int64_t m = 0; m < matrices; ++m)
                for (int64_t i = 0; i < rows; ++i)
                    for (int64_t j = 0; j < cols; ++j) {
                        const int64_t at = (m * rows + i) * cols + j;
                        // j - i is small, k may be anything: compare without overflow.
                        const bool keep = upper_ ? j - i >= k : j - i <= k;
                        dst[at] = keep ? src[at] : T{};
                    }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    bool upper_;
};

void infer_trilu(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() < 2) fail_node(ctx.node, "input must have rank >= 2; got " + shape_to_string(x.shape));
    ctx.set_output(0, x.dtype, x.shape);
}

// ---------------------------------------------------------------------------------------------
// Col2Im: the inverse of im2col. Input [N, C * prod(block), L] holds, for each of the L
// sliding-block positions, a block of each channel; blocks are summed into an image
// [N, C, image_shape...]. Numeric dtypes.

struct Col2ImAttributes {
    std::vector<int64_t> strides, dilations, pads;  // empty when absent; pads: begins then ends

    explicit Col2ImAttributes(const Node& node)
        : strides(node.get_attribute<std::vector<int64_t>>("strides", {})),
          dilations(node.get_attribute<std::vector<int64_t>>("dilations", {})),
          pads(node.get_attribute<std::vector<int64_t>>("pads", {})) {}
};

struct Col2ImGeometry {
    std::vector<int64_t> image, block, strides, dilations, pads, cols;
    int64_t block_size = 1, col_size = 1;
};

Col2ImGeometry col2im_geometry(const Node& node, const Col2ImAttributes& attrs, const std::vector<int64_t>& image,
                               const std::vector<int64_t>& block) {
    Col2ImGeometry g;
    const size_t n = image.size();
    if (n == 0 || block.size() != n)
        fail_node(node, "image_shape " + shape_to_string(image) + " and block_shape " + shape_to_string(block) +
                            " must be non-empty and of the same length");
    g.image = image;
    g.block = block;
    g.strides = attrs.strides.empty() ? std::vector<int64_t>(n, 1) : attrs.strides;
    g.dilations = attrs.dilations.empty() ? std::vector<int64_t>(n, 1) : attrs.dilations;
    g.pads = attrs.pads.empty() ? std::vector<int64_t>(2 * n, 0) : attrs.pads;
    if (g.strides.size() != n || g.dilations.size() != n || g.pads.size() != 2 * n)
        fail_node(node, "strides, dilations and pads must have " + std::to_string(n) + ", " + std::to_string(n) +
                            " and " + std::to_string(2 * n) + " values");
    for (size_t d = 0; d < n; ++d) {
        if (g.block[d] < 1 || g.strides[d] < 1 || g.dilations[d] < 1 || g.image[d] < 0 || g.pads[d] < 0 ||
            g.pads[d + n] < 0)
            fail_node(node, "block_shape, strides and dilations must be positive; image_shape and pads non-negative");
        const int64_t span = g.image[d] + g.pads[d] + g.pads[d + n] - (g.dilations[d] * (g.block[d] - 1) + 1);
        if (span < 0) fail_node(node, "the block does not fit the padded image on axis " + std::to_string(d));
        g.cols.push_back(span / g.strides[d] + 1);
        g.block_size *= g.block[d];
        g.col_size *= g.cols.back();
    }
    return g;
}

class Col2ImKernel final : public NodeKernel {
public:
    explicit Col2ImKernel(const Node& node) : NodeKernel(node), attrs_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Col2ImGeometry g = col2im_geometry(node_, attrs_, dims_from_shape_input(ctx.input(1), node_),
                                                 dims_from_shape_input(ctx.input(2), node_));
        if (x.ndim() != 3) fail("input must be 3-D [N, C * prod(block_shape), L]; got " + shape_to_string(x.shape()));
        const int64_t batch = x.shape()[0];
        if (x.shape()[1] % g.block_size != 0 || x.shape()[2] != g.col_size)
            fail("input " + shape_to_string(x.shape()) + " does not match block_shape " + shape_to_string(g.block) +
                 " (dim 1 a multiple of " + std::to_string(g.block_size) + ") and " + std::to_string(g.col_size) +
                 " block positions (dim 2)");
        const int64_t channels = x.shape()[1] / g.block_size;
        std::vector<int64_t> out_dims = {batch, channels};
        out_dims.insert(out_dims.end(), g.image.begin(), g.image.end());
        check_output_size(out_dims, node_);
        const int64_t image_size = num_elements_of(g.image);
        const size_t n = g.image.size();
        const std::vector<int64_t> image_strides = row_major_strides(g.image);

        // For each (block offset, block position) pair: the image offset it lands on, or -1.
        std::vector<int64_t> target;
        target.reserve(static_cast<size_t>(g.block_size * g.col_size));
        for_each_index(g.block, [&](const std::vector<int64_t>& k) {
            for_each_index(g.cols, [&](const std::vector<int64_t>& l) {
                int64_t off = 0;
                for (size_t d = 0; d < n && off >= 0; ++d) {
                    const int64_t p = l[d] * g.strides[d] - g.pads[d] + k[d] * g.dilations[d];
                    off = p >= 0 && p < g.image[d] ? off + p * image_strides[d] : -1;
                }
                target.push_back(off);
            });
        });

        Tensor out(out_dims, x.dtype());
        dispatch_numeric(x.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
            const T* src = x.data_ptr<T>();
            T* dst = out.data_ptr<T>();
            std::vector<Acc> acc(static_cast<size_t>(image_size));
            for (int64_t plane = 0; plane < batch * channels; ++plane) {
                std::fill(acc.begin(), acc.end(), Acc(0));
                const T* col = src + plane * g.block_size * g.col_size;
                for (size_t t = 0; t < target.size(); ++t) {
                    if (target[t] < 0) continue;
                    if constexpr (std::is_integral_v<T>) acc[target[t]] += col[t];
                    else acc[target[t]] += as_double(col[t]);
                }
                for (int64_t i = 0; i < image_size; ++i) {
                    if constexpr (std::is_integral_v<T>) dst[plane * image_size + i] = static_cast<T>(acc[i]);
                    else dst[plane * image_size + i] = from_double<T>(acc[i]);
                }
            }
        });
        ctx.outputs[0] = std::move(out);
    }

private:
    Col2ImAttributes attrs_;
};

void infer_col2im(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 3) fail_node(ctx.node, "input must be 3-D; got " + shape_to_string(x.shape));
    const Tensor* image = ctx.constant(1);
    const Tensor* block = ctx.constant(2);
    std::optional<int64_t> channels;
    if (block && x.shape[1]) {
        const int64_t size = num_elements_of(dims_from_shape_input(*block, ctx.node));
        if (size > 0 && *x.shape[1] % size == 0) channels = *x.shape[1] / size;
    }
    Shape out = {x.shape[0], channels};
    if (image) {
        for (int64_t d : dims_from_shape_input(*image, ctx.node)) out.push_back(d);
    } else if (const auto n = known_length(ctx, 1)) {
        out.resize(2 + static_cast<size_t>(*n));
    } else {
        return set_output_unknown_rank(ctx, 0, x.dtype);
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_indexing_generate_ops(OpTable& table) {
    table.add(OpSchema{"ConstantOfShape", "", 9, 1, 1, 1, 1, infer_constant_of_shape,
                       [](const KernelInfo& info) { return std::make_unique<ConstantOfShapeKernel>(info.node); }});
    table.add(OpSchema{"Range", "", 11, 3, 3, 1, 1, infer_range,
                       [](const KernelInfo& info) { return std::make_unique<RangeKernel>(info.node); }});
    table.add(OpSchema{"OneHot", "", 11, 3, 3, 1, 1, infer_one_hot,
                       [](const KernelInfo& info) { return std::make_unique<OneHotKernel>(info.node, info.opset); }});
    table.add(OpSchema{"EyeLike", "", 9, 1, 1, 1, 1, infer_eye_like,
                       [](const KernelInfo& info) { return std::make_unique<EyeLikeKernel>(info.node); }});
    table.add(OpSchema{"Trilu", "", 14, 1, 2, 1, 1, infer_trilu,
                       [](const KernelInfo& info) { return std::make_unique<TriluKernel>(info.node); }});
    table.add(OpSchema{"Col2Im", "", 18, 3, 3, 1, 1, infer_col2im,
                       [](const KernelInfo& info) { return std::make_unique<Col2ImKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
