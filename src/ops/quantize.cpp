// Quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked; integer,
// 4-bit, 2-bit, float8 and float4 quantized types), DynamicQuantizeLinear, MatMulInteger,
// ConvInteger, QLinearMatMul, QLinearConv. Arithmetic follows the ONNX reference
// implementation (numpy promotion included), so results match the conformance data bit for bit.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/dispatch.hpp"
#include "ops/float_formats.hpp"
#include "ops/nn_common.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// Calls fn(T{}) with the storage type of an integer dtype: sub-byte types are held one per byte
// (Int4/Int2 sign-extended in an int8, UInt4/UInt2 in a uint8).
template <typename F>
void dispatch_int_storage(DType dtype, const Node& node, F&& fn) {
    switch (dtype) {
        case DType::Int8: case DType::Int4: case DType::Int2: return fn(int8_t{});
        case DType::UInt8: case DType::UInt4: case DType::UInt2: return fn(uint8_t{});
        case DType::Int16: return fn(int16_t{});
        case DType::UInt16: return fn(uint16_t{});
        case DType::Int32: return fn(int32_t{});
        default: fail_node(node, "dtype " + dtype_to_string(dtype) + " is not a supported integer type here");
    }
}

// The saturation range of an integer quantized type.
std::pair<double, double> int_range(DType dtype) {
    switch (dtype) {
        case DType::Int8: return {-128, 127};
        case DType::UInt8: return {0, 255};
        case DType::Int16: return {-32768, 32767};
        case DType::UInt16: return {0, 65535};
        case DType::Int4: return {-8, 7};
        case DType::UInt4: return {0, 15};
        case DType::Int2: return {-2, 1};
        case DType::UInt2: return {0, 3};
        case DType::Int32: return {-2147483648.0, 2147483647.0};
        default: return {0, 0};
    }
}

bool is_quant_int(DType dt) {
    return dt == DType::Int8 || dt == DType::UInt8 || dt == DType::Int16 || dt == DType::UInt16 ||
           dt == DType::Int4 || dt == DType::UInt4 || dt == DType::Int2 || dt == DType::UInt2;
}

// Any numeric tensor's elements as doubles (exact for every type the ops here read).
std::vector<double> to_doubles(const Tensor& t, const Node& node) {
    const int64_t n = t.num_elements();
    std::vector<double> out(static_cast<size_t>(n));
    if (is_narrow_float_dtype(t.dtype())) {
        const auto* p = t.data_ptr<uint8_t>();
        for (int64_t i = 0; i < n; ++i) out[i] = narrow_to_float(p[i], t.dtype());
        return out;
    }
    if (is_float_type(t.dtype())) return float_values(t, node);
    dispatch_int_storage(t.dtype(), node, [&](auto tag) {
        using T = decltype(tag);
        std::copy(t.data_ptr<T>(), t.data_ptr<T>() + n, out.begin());
    });
    return out;
}

// Rounds v to the nearest value of floating dtype `dt` (ties to even), as numpy computing in
// that dtype would.
double round_to(DType dt, double v) {
    switch (dt) {
        case DType::Float32: return static_cast<float>(v);
        // double -> float -> half/bfloat16 rounds twice; harmless here since every value rounded
        // is a product or quotient of two values of the narrow type (float keeps 2p+2 bits).
        case DType::Float16: return static_cast<float>(Eigen::half(static_cast<float>(v)));
        case DType::BFloat16: return static_cast<float>(Eigen::bfloat16(static_cast<float>(v)));
        default: return v;
    }
}

// Stores integral-valued doubles, already in range, into an integer tensor.
Tensor from_ints(const std::vector<double>& v, const std::vector<int64_t>& shape, DType dt, const Node& node) {
    Tensor out(shape, dt);
    dispatch_int_storage(dt, node, [&](auto tag) {
        using T = decltype(tag);
        T* p = out.data_ptr<T>();
        for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<T>(v[i]);
    });
    return out;
}

// ---------------------------------------------------------------------------------------------
// Quantization granularity: element (o, d, i) of x viewed as (outer, dim, inner) around `axis`
// uses scale element o*so + (d/block)*sd + i*si. Per-tensor: all strides 0; per-axis: sd = 1;
// blocked: the scale has x's shape with dim ceil(dim/block) on the axis.
struct QuantLayout {
    int64_t outer = 1, dim = 1, inner = 1, block = 1;
    int64_t so = 0, sd = 0, si = 0;

    template <typename F>
    void for_each(F&& fn) const {
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t d = 0; d < dim; ++d) {
                const int64_t base = (o * dim + d) * inner, sbase = o * so + (d / block) * sd;
                for (int64_t i = 0; i < inner; ++i) fn(base + i, sbase + i * si);
            }
    }
};

QuantLayout quant_layout(const Node& node, const std::vector<int64_t>& x, const std::vector<int64_t>& scale,
                         int64_t axis_attr, int64_t block_size) {
    QuantLayout l;
    const int64_t n = num_elements_of(x);
    if (num_elements_of(scale) == 1 && scale.size() <= 1) {  // per-tensor (a [1] scale counts too)
        l.inner = n;
        return l;
    }
    const auto rank = static_cast<int64_t>(x.size());
    if (rank == 0) fail_node(node, "scale " + shape_to_string(scale) + " is not a scalar but the input is a scalar");
    const int64_t axis = normalize_axis(axis_attr, rank, node);
    l.dim = x[axis];
    for (int64_t i = 0; i < axis; ++i) l.outer *= x[i];
    for (int64_t i = axis + 1; i < rank; ++i) l.inner *= x[i];
    if (block_size <= 0) {
        if (scale.size() != 1 || scale[0] != l.dim)
            fail_node(node, "scale " + shape_to_string(scale) + " fits neither per-tensor nor per-axis quantization of input " +
                                shape_to_string(x) + " on axis " + std::to_string(axis) + " (blocked needs block_size)");
        l.sd = 1;
        return l;
    }
    bool ok = scale.size() == x.size();
    for (int64_t i = 0; ok && i < rank; ++i)
        ok = i == axis ? scale[i] == (x[i] + block_size - 1) / block_size : scale[i] == x[i];
    if (!ok)
        fail_node(node, "scale " + shape_to_string(scale) + " does not fit blocked quantization of input " +
                            shape_to_string(x) + " with block_size " + std::to_string(block_size) + " on axis " +
                            std::to_string(axis));
    l.block = block_size;
    l.sd = l.inner;
    l.so = scale[axis] * l.inner;
    l.si = 1;
    return l;
}

void check_zero_point(const Node& node, const Tensor* zp, const Tensor& scale) {
    if (zp && zp->shape() != scale.shape() && !(zp->num_elements() == 1 && scale.num_elements() == 1))
        fail_node(node, "zero point " + shape_to_string(zp->shape()) + " must have the scale's shape " +
                            shape_to_string(scale.shape()));
}

DType attr_dtype(const Node& node, const char* name) {
    const int64_t code = node.get_attribute<int64_t>(name);
    try {
        return dtype_from_onnx(static_cast<int>(code));
    } catch (const ValidationError&) {
        fail_node(node, std::string("attribute '") + name + "' is " + std::to_string(code) + ", not a supported type");
    }
}

// ---------------------------------------------------------------------------------------------
// QuantizeLinear: y = saturate(round(x / scale) + zero_point)

// The attribute 'output_dtype' (nullopt when absent or 0).
std::optional<DType> optional_dtype_attr(const Node& node, const char* name) {
    if (node.get_attribute<int64_t>(name, 0) == 0) return std::nullopt;
    return attr_dtype(node, name);
}

DType quantize_output_dtype(const Node& node, std::optional<DType> attr, std::optional<DType> zp_dtype) {
    if (zp_dtype && attr && *attr != *zp_dtype)
        fail_node(node, "output_dtype " + dtype_to_string(*attr) + " differs from the zero point's dtype " +
                            dtype_to_string(*zp_dtype));
    const DType out = zp_dtype ? *zp_dtype : attr ? *attr : DType::UInt8;
    if (!is_quant_int(out) && !(is_narrow_float_dtype(out) && out != DType::Float8E8M0))
        fail_node(node, "output type " + dtype_to_string(out) + " is not a quantized type");
    return out;
}

class QuantizeKernel final : public NodeKernel {
public:
    explicit QuantizeKernel(const Node& node)
        : NodeKernel(node),
          axis_(node.get_attribute<int64_t>("axis", 1)),
          block_(node.get_attribute<int64_t>("block_size", 0)),
          saturate_(node.get_attribute<int64_t>("saturate", 1) != 0),
          output_dtype_(optional_dtype_attr(node, "output_dtype")),
          precision_(optional_dtype_attr(node, "precision")) {
        if (block_ < 0) fail("block_size must be >= 0");
        if (precision_) {
            if (!is_float_dtype(*precision_) || is_narrow_float_dtype(*precision_))
                fail("precision " + dtype_to_string(*precision_) + " is not float, float16, bfloat16 or double");
        }
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& scale = ctx.input(1);
        const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        check_zero_point(node_, zp, scale);
        const DType out_dtype =
            quantize_output_dtype(node_, output_dtype_, zp ? std::optional<DType>(zp->dtype()) : std::nullopt);
        const QuantLayout layout = quant_layout(node_, x.shape(), scale.shape(), axis_, block_);

        // numpy computes x / scale in the promoted type of the two (int32 / float -> double).
        DType p = precision_ ? *precision_
                  : x.dtype() == scale.dtype() ? x.dtype()
                  : x.dtype() == DType::Int32 || x.dtype() == DType::Float64 ? DType::Float64
                                                                              : DType::Float32;
        if (is_narrow_float_dtype(p)) p = DType::Float32;
        const std::vector<double> xv = to_doubles(x, node_), sv = to_doubles(scale, node_);
        const std::vector<double> zv = zp ? to_doubles(*zp, node_) : std::vector<double>(sv.size(), 0.0);

        if (is_quant_int(out_dtype)) {
            const auto [lo, hi] = int_range(out_dtype);
            std::vector<double> q(xv.size());
            layout.for_each([&](int64_t i, int64_t s) {
                const double v = round_to(p, round_to(p, xv[i]) / round_to(p, sv[s]));
                // NaN has no integer: it lands on the low end, like numpy's int cast then clip.
                q[i] = std::isnan(v) ? lo : std::clamp(std::nearbyint(v) + zv[s], lo, hi);
            });
            ctx.outputs[0] = from_ints(q, x.shape(), out_dtype, node_);
            return;
        }
        Tensor y(x.shape(), out_dtype);
        auto* yd = y.data_ptr<uint8_t>();
        layout.for_each([&](int64_t i, int64_t s) {
            const double v = round_to(DType::Float32, round_to(p, round_to(p, xv[i]) / round_to(p, sv[s])) + zv[s]);
            yd[i] = float_to_narrow(v, out_dtype, saturate_);
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t axis_, block_;
    bool saturate_;
    std::optional<DType> output_dtype_, precision_;
};

void check_scale_shapes(InferenceContext& ctx, size_t zp_index) {
    if (ctx.has_input(1) && ctx.has_input(zp_index)) {
        const Shape& s = ctx.input(1).shape;
        const Shape& z = ctx.input(zp_index).shape;
        if (s.size() != z.size() && !(s.size() <= 1 && z.size() <= 1))
            fail_node(ctx.node, "zero point " + shape_to_string(z) + " must have the scale's shape " + shape_to_string(s));
    }
}

void infer_quantize(InferenceContext& ctx) {
    check_scale_shapes(ctx, 2);
    std::optional<DType> zp;
    if (ctx.has_input(2)) zp = ctx.input(2).dtype;
    const DType out = quantize_output_dtype(ctx.node, optional_dtype_attr(ctx.node, "output_dtype"), zp);
    if (ctx.has_input(0)) ctx.set_output(0, out, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// DequantizeLinear: y = (x - zero_point) * scale, computed in float32 like the reference.

class DequantizeKernel final : public NodeKernel {
public:
    explicit DequantizeKernel(const Node& node)
        : NodeKernel(node),
          axis_(node.get_attribute<int64_t>("axis", 1)),
          block_(node.get_attribute<int64_t>("block_size", 0)),
          out_dtype_(optional_dtype_attr(node, "output_dtype")) {
        if (block_ < 0) fail("block_size must be >= 0");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& scale = ctx.input(1);
        const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        check_zero_point(node_, zp, scale);
        if (!is_quant_int(x.dtype()) && x.dtype() != DType::Int32 && !is_narrow_float_dtype(x.dtype()))
            fail("input x is " + dtype_to_string(x.dtype()) + ", not a quantized type");
        if (zp && zp->dtype() != x.dtype())
            fail("zero point is " + dtype_to_string(zp->dtype()) + " but x is " + dtype_to_string(x.dtype()));
        const DType out = out_dtype_ ? *out_dtype_ : scale.dtype();
        if (out != DType::Float32 && out != DType::Float16 && out != DType::BFloat16)
            fail("output type " + dtype_to_string(out) + " is not float, float16 or bfloat16");
        const QuantLayout layout = quant_layout(node_, x.shape(), scale.shape(), axis_, block_);
        const std::vector<double> xv = to_doubles(x, node_), sv = to_doubles(scale, node_);
        const std::vector<double> zv = zp ? to_doubles(*zp, node_) : std::vector<double>(sv.size(), 0.0);
        std::vector<double> y(xv.size());
        layout.for_each([&](int64_t i, int64_t s) {
            const float dx = static_cast<float>(static_cast<float>(xv[i]) - static_cast<float>(zv[s]));
            y[i] = static_cast<float>(dx * static_cast<float>(sv[s]));
        });
        ctx.outputs[0] = float_tensor(x.shape(), out, y, node_);
    }

private:
    int64_t axis_, block_;
    std::optional<DType> out_dtype_;
};

void infer_dequantize(InferenceContext& ctx) {
    check_scale_shapes(ctx, 2);
    if (!ctx.has_input(0)) return;
    std::optional<DType> out = optional_dtype_attr(ctx.node, "output_dtype");
    if (!out && ctx.has_input(1)) out = ctx.input(1).dtype;
    if (out) ctx.set_output(0, *out, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// DynamicQuantizeLinear: uint8 with a scale and zero point covering [min(x, 0), max(x, 0)].

class DynamicQuantizeKernel final : public NodeKernel {
public:
    explicit DynamicQuantizeKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_dtype(node_, x, DType::Float32, "input x");
        const float* xd = x.data_ptr<float>();
        const int64_t n = x.num_elements();
        float lo = 0.0f, hi = 0.0f;
        for (int64_t i = 0; i < n; ++i) {
            lo = std::min(lo, xd[i]);
            hi = std::max(hi, xd[i]);
        }
        const float scale = (hi == lo ? 1.0f : hi - lo) / 255.0f;
        const float zp = std::nearbyint(std::clamp(0.0f - lo / scale, 0.0f, 255.0f));
        Tensor y(x.shape(), DType::UInt8);
        uint8_t* yd = y.data_ptr<uint8_t>();
        for (int64_t i = 0; i < n; ++i) {
            const float v = std::nearbyint(xd[i] / scale) + zp;
            yd[i] = std::isnan(v) ? 0 : static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));  // NaN -> 0, as numpy's cast
        }
        Tensor s({}, DType::Float32), z({}, DType::UInt8);
        *s.data_ptr<float>() = scale;
        *z.data_ptr<uint8_t>() = static_cast<uint8_t>(zp);
        ctx.outputs[0] = std::move(y);
        ctx.outputs[1] = std::move(s);
        ctx.outputs[2] = std::move(z);
    }
};

void infer_dynamic_quantize(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, DType::UInt8, ctx.input(0).shape);
    ctx.set_output(1, DType::Float32, {});
    ctx.set_output(2, DType::UInt8, {});
}

// ---------------------------------------------------------------------------------------------
// Integer matrix products (MatMulInteger, QLinearMatMul): int32 accumulation of
// (a - a_zero_point) x (b - b_zero_point) with numpy matmul broadcasting.

std::vector<int32_t> to_int32(const Tensor& t, const Node& node, const char* what) {
    if (t.dtype() != DType::Int8 && t.dtype() != DType::UInt8)
        fail_node(node, std::string(what) + " is " + dtype_to_string(t.dtype()) + "; expected Int8 or UInt8");
    std::vector<int32_t> out(static_cast<size_t>(t.num_elements()));
    dispatch_int_storage(t.dtype(), node, [&](auto tag) {
        using T = decltype(tag);
        std::copy(t.data_ptr<T>(), t.data_ptr<T>() + t.num_elements(), out.begin());
    });
    return out;
}

// A zero point or scale per tensor (1 element) or per row/column (`count` elements).
void check_per_index(const Node& node, const Tensor& t, int64_t count, const char* what, const char* per) {
    if (t.num_elements() != 1 && !(t.ndim() == 1 && t.num_elements() == count))
        fail_node(node, std::string(what) + " has shape " + shape_to_string(t.shape()) + "; expected a scalar or " +
                            std::to_string(count) + " values (one per " + per + ")");
}

struct MatMulGeometry {
    int64_t m = 0, k = 0, n = 0;
    std::vector<int64_t> a_offsets, b_offsets;  // per output matrix: the first element of A's and B's
    std::vector<int64_t> out_shape;
};

MatMulGeometry matmul_geometry(const Node& node, std::vector<int64_t> a, std::vector<int64_t> b) {
    if (a.empty() || b.empty()) fail_node(node, "matmul inputs must have rank >= 1");
    const bool a_vec = a.size() == 1, b_vec = b.size() == 1;
    if (a_vec) a.insert(a.begin(), 1);
    if (b_vec) b.push_back(1);
    MatMulGeometry g;
    g.m = a[a.size() - 2];
    g.k = a.back();
    g.n = b.back();
    if (b[b.size() - 2] != g.k)
        fail_node(node, "inner dimensions differ: A " + shape_to_string(a) + ", B " + shape_to_string(b));
    const std::vector<int64_t> ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
    std::vector<int64_t> batch;
    try {
        batch = broadcast_shapes(ab, bb);
    } catch (const ValidationError&) {
        fail_node(node, "batch dimensions of A " + shape_to_string(a) + " and B " + shape_to_string(b) + " cannot be broadcast");
    }
    const int64_t count = num_elements_of(batch);
    // Each operand's matrix offset per output batch index (strides 0 on its broadcast dims).
    auto offsets = [&](const std::vector<int64_t>& dims, int64_t matrix) {
        std::vector<int64_t> strides(batch.size(), 0), out;
        int64_t s = matrix;
        for (size_t i = dims.size(); i-- > 0;) {
            if (dims[i] != 1) strides[batch.size() - dims.size() + i] = s;
            s *= dims[i];
        }
        for (int64_t flat = 0; flat < count; ++flat) {
            int64_t off = 0, rem = flat;
            for (size_t d = batch.size(); d-- > 0;) {
                off += (rem % batch[d]) * strides[d];
                rem /= batch[d];
            }
            out.push_back(off);
        }
        return out;
    };
    g.a_offsets = offsets(ab, g.m * g.k);
    g.b_offsets = offsets(bb, g.k * g.n);
    g.out_shape = batch;
    if (!a_vec) g.out_shape.push_back(g.m);
    if (!b_vec) g.out_shape.push_back(g.n);
    return g;
}

// acc[batch][m][n] = sum_k (A - a_zp[m]) (B - b_zp[n]); zero points: 1 value or one per row / column.
std::vector<int32_t> integer_matmul(const MatMulGeometry& g, const std::vector<int32_t>& a, const std::vector<int32_t>& b,
                                    const std::vector<int32_t>& a_zp, const std::vector<int32_t>& b_zp) {
    std::vector<int32_t> out(g.a_offsets.size() * g.m * g.n);
    std::vector<int32_t> bcol(static_cast<size_t>(g.k));
    for (size_t bi = 0; bi < g.a_offsets.size(); ++bi) {
        const int32_t* ad = a.data() + g.a_offsets[bi];
        const int32_t* bd = b.data() + g.b_offsets[bi];
        int32_t* od = out.data() + bi * g.m * g.n;
        for (int64_t j = 0; j < g.n; ++j) {
            const int32_t bz = b_zp.size() == 1 ? b_zp[0] : b_zp[j];
            for (int64_t p = 0; p < g.k; ++p) bcol[p] = bd[p * g.n + j] - bz;
            for (int64_t i = 0; i < g.m; ++i) {
                const int32_t az = a_zp.size() == 1 ? a_zp[0] : a_zp[i];
                int64_t acc = 0;  // wider than the int32 output: signed overflow would be undefined
                for (int64_t p = 0; p < g.k; ++p) acc += int64_t{ad[i * g.k + p] - az} * bcol[p];
                od[i * g.n + j] = static_cast<int32_t>(acc);
            }
        }
    }
    return out;
}

// A zero point input as int32 values (default 0), one per tensor or per row/column.
std::vector<int32_t> zero_points(const KernelContext& ctx, size_t index, const Tensor& of, int64_t count,
                                 const Node& node, const char* what, const char* per) {
    if (!ctx.has_input(index)) return {0};
    const Tensor& zp = ctx.input(index);
    if (zp.dtype() != of.dtype())
        fail_node(node, std::string(what) + " is " + dtype_to_string(zp.dtype()) + " but its input is " +
                            dtype_to_string(of.dtype()));
    check_per_index(node, zp, count, what, per);
    return to_int32(zp, node, what);
}

class MatMulIntegerKernel final : public NodeKernel {
public:
    explicit MatMulIntegerKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        const MatMulGeometry g = matmul_geometry(node_, a.shape(), b.shape());
        const std::vector<int32_t> acc =
            integer_matmul(g, to_int32(a, node_, "A"), to_int32(b, node_, "B"),
                           zero_points(ctx, 2, a, g.m, node_, "a_zero_point", "row of A"),
                           zero_points(ctx, 3, b, g.n, node_, "b_zero_point", "column of B"));
        Tensor y(g.out_shape, DType::Int32);
        std::copy(acc.begin(), acc.end(), y.data_ptr<int32_t>());
        ctx.outputs[0] = std::move(y);
    }
};

// Output shape of a matmul for shape inference (unknown dims stay unknown).
std::optional<Shape> infer_matmul_shape(const Node& node, Shape a, Shape b) {
    if (a.empty() || b.empty()) return std::nullopt;
    const bool a_vec = a.size() == 1, b_vec = b.size() == 1;
    if (a_vec) a.insert(a.begin(), 1);
    if (b_vec) b.push_back(1);
    const auto k1 = a.back(), k2 = b[b.size() - 2];
    if (k1 && k2 && *k1 != *k2)
        fail_node(node, "inner dimensions differ: A " + shape_to_string(a) + ", B " + shape_to_string(b));
    Shape out = broadcast_shapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
    if (!a_vec) out.push_back(a[a.size() - 2]);
    if (!b_vec) out.push_back(b.back());
    return out;
}

void infer_matmul_integer(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return;
    if (auto s = infer_matmul_shape(ctx.node, ctx.input(0).shape, ctx.input(1).shape))
        ctx.set_output(0, DType::Int32, *s);
}

// Requantizes an int32 accumulator: y = saturate(round(acc * multiplier + y_zero_point)).
Tensor requantize(const std::vector<int32_t>& acc, const std::vector<int64_t>& shape, const std::vector<double>& mult,
                  int64_t mult_period, int64_t mult_repeat, const Tensor& y_zp, const Node& node) {
    const auto [lo, hi] = int_range(y_zp.dtype());
    const double zp = to_doubles(y_zp, node)[0];
    std::vector<double> q(acc.size());
    // multiplier index: (i / mult_repeat) % mult_period (per column: repeat 1; per channel: repeat = plane).
    for (size_t i = 0; i < acc.size(); ++i) {
        const double m = mult.size() == 1 ? mult[0] : mult[(i / mult_repeat) % mult_period];
        q[i] = std::clamp(std::nearbyint(acc[i] * m + zp), lo, hi);
    }
    return from_ints(q, shape, y_zp.dtype(), node);
}

// The scale of a real value: x_scale * w_scale / y_scale, rounded in the scales' dtype at
// each step as numpy does (float16 scales give a float16 multiplier).
std::vector<double> multipliers(const Tensor& s1, const Tensor& s2, const Tensor& sy, const Node& node) {
    if (s1.dtype() != s2.dtype() || s1.dtype() != sy.dtype())
        fail_node(node, "the scales must share one dtype; got " + dtype_to_string(s1.dtype()) + ", " +
                            dtype_to_string(s2.dtype()) + " and " + dtype_to_string(sy.dtype()));
    if (sy.num_elements() != 1) fail_node(node, "y_scale must be a scalar; got shape " + shape_to_string(sy.shape()));
    const DType p = s1.dtype();
    const std::vector<double> a = to_doubles(s1, node), b = to_doubles(s2, node);
    const double y = to_doubles(sy, node)[0];
    std::vector<double> out(std::max(a.size(), b.size()));
    for (size_t i = 0; i < out.size(); ++i)
        out[i] = round_to(p, round_to(p, a[a.size() == 1 ? 0 : i] * b[b.size() == 1 ? 0 : i]) / y);
    return out;
}

class QLinearMatMulKernel final : public NodeKernel {
public:
    explicit QLinearMatMulKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(3);
        const Tensor& y_zp = ctx.input(7);
        const MatMulGeometry g = matmul_geometry(node_, a.shape(), b.shape());
        check_per_index(node_, ctx.input(1), g.m, "a_scale", "row of a");
        check_per_index(node_, ctx.input(4), g.n, "b_scale", "column of b");
        if (ctx.input(1).num_elements() != 1 && ctx.input(4).num_elements() != 1)
            fail("per-row a_scale and per-column b_scale together are not supported");
        const std::vector<int32_t> acc =
            integer_matmul(g, to_int32(a, node_, "a"), to_int32(b, node_, "b"),
                           zero_points(ctx, 2, a, g.m, node_, "a_zero_point", "row of a"),
                           zero_points(ctx, 5, b, g.n, node_, "b_zero_point", "column of b"));
        if (y_zp.num_elements() != 1) fail("y_zero_point must be a scalar");
        const std::vector<double> mult = multipliers(ctx.input(1), ctx.input(4), ctx.input(6), node_);
        // Per-row scales repeat over the n columns of a row; per-column ones cycle every n.
        const bool per_row = ctx.input(1).num_elements() != 1;
        ctx.outputs[0] = requantize(acc, g.out_shape, mult, per_row ? g.m : g.n, per_row ? g.n : 1, y_zp, node_);
    }
};

void infer_qlinear_matmul(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(3)) return;
    const DType out = ctx.has_input(7) ? ctx.input(7).dtype : ctx.input(0).dtype;
    if (auto s = infer_matmul_shape(ctx.node, ctx.input(0).shape, ctx.input(3).shape)) ctx.set_output(0, out, *s);
}

// ---------------------------------------------------------------------------------------------
// Integer convolutions (ConvInteger, QLinearConv): int32 accumulation of (x - x_zero_point) *
// (w - w_zero_point[m]); padding reads the zero point (0 after the subtraction).

struct IntConv {
    WindowAttributes window;
    int64_t group = 1;

    IntConv(const Node& node) : window(WindowAttributes::parse(node, false)), group(node.get_attribute<int64_t>("group", 1)) {
        if (group < 1) fail_node(node, "attribute 'group' must be >= 1");
    }

    // x: (N, C, spatial...), w: (M, C/group, kernel...), bias (M) or empty. Returns the int32
    // accumulators and fills out_shape.
    std::vector<int32_t> run(const Node& node, const Tensor& x, int32_t x_zp, const Tensor& w,
                             const std::vector<int32_t>& w_zp, const std::vector<int32_t>& bias,
                             std::vector<int64_t>& out_shape) const {
        const size_t rank = x.ndim();
        if (rank < 3 || rank > 5) fail_node(node, "input x has shape " + shape_to_string(x.shape()) + "; expected rank 3 to 5");
        if (w.ndim() != rank)
            fail_node(node, "weight w " + shape_to_string(w.shape()) + " must have the rank of x " + shape_to_string(x.shape()));
        const int64_t batch = x.shape()[0], channels = x.shape()[1], maps = w.shape()[0], gc = w.shape()[1];
        if (channels != gc * group || maps % group != 0)
            fail_node(node, "weight w " + shape_to_string(w.shape()) + " with group " + std::to_string(group) +
                                " does not fit input x " + shape_to_string(x.shape()));
        if (w_zp.size() != 1 && static_cast<int64_t>(w_zp.size()) != maps)
            fail_node(node, "w_zero_point must be a scalar or hold one value per output channel (" + std::to_string(maps) + ")");
        if (!bias.empty() && static_cast<int64_t>(bias.size()) != maps)
            fail_node(node, "bias B must hold " + std::to_string(maps) + " values");
        const std::vector<int64_t> kernel(w.shape().begin() + 2, w.shape().end());
        if (!window.kernel_shape.empty() && window.kernel_shape != kernel)
            fail_node(node, "kernel_shape " + shape_to_string(window.kernel_shape) + " does not match w " + shape_to_string(w.shape()));
        const std::vector<WindowAxis> axes =
            resolve_window(window, kernel, std::vector<int64_t>(x.shape().begin() + 2, x.shape().end()), node);
        out_shape = {batch, maps};
        for (const auto& a : axes) out_shape.push_back(a.output);
        const auto [d, h, wd] = as_3d(axes);

        const std::vector<int32_t> xv = to_int32(x, node, "x"), wv = to_int32(w, node, "w");
        const int64_t in_plane = d.input * h.input * wd.input, kvol = d.kernel * h.kernel * wd.kernel;
        const int64_t out_plane = d.output * h.output * wd.output, group_maps = maps / group;
        std::vector<int32_t> out(static_cast<size_t>(batch * maps * out_plane));
        for (int64_t n = 0; n < batch; ++n)
            for (int64_t m = 0; m < maps; ++m) {
                const int64_t grp = m / group_maps;
                const int32_t wz = w_zp.size() == 1 ? w_zp[0] : w_zp[m];
                int32_t* o = out.data() + (n * maps + m) * out_plane;
                for (int64_t od = 0; od < d.output; ++od)
                    for (int64_t oh = 0; oh < h.output; ++oh)
                        for (int64_t ow = 0; ow < wd.output; ++ow) {
                            int64_t acc = bias.empty() ? 0 : bias[m];  // see integer_matmul
                            for (int64_t c = 0; c < gc; ++c) {
                                const int32_t* plane = xv.data() + (n * channels + grp * gc + c) * in_plane;
                                const int32_t* kern = wv.data() + (m * gc + c) * kvol;
                                for (int64_t kd = 0; kd < d.kernel; ++kd) {
                                    const int64_t id = od * d.stride - d.pad_begin + kd * d.dilation;
                                    if (id < 0 || id >= d.input) continue;
                                    for (int64_t kh = 0; kh < h.kernel; ++kh) {
                                        const int64_t ih = oh * h.stride - h.pad_begin + kh * h.dilation;
                                        if (ih < 0 || ih >= h.input) continue;
                                        for (int64_t kw = 0; kw < wd.kernel; ++kw) {
                                            const int64_t iw = ow * wd.stride - wd.pad_begin + kw * wd.dilation;
                                            if (iw < 0 || iw >= wd.input) continue;
                                            acc += int64_t{plane[(id * h.input + ih) * wd.input + iw] - x_zp} *
                                                   (kern[(kd * h.kernel + kh) * wd.kernel + kw] - wz);
                                        }
                                    }
                                }
                            }
                            o[(od * h.output + oh) * wd.output + ow] = static_cast<int32_t>(acc);
                        }
            }
        return out;
    }
};

int32_t scalar_zero_point(const KernelContext& ctx, size_t index, const Tensor& of, const Node& node, const char* what) {
    const std::vector<int32_t> zp = zero_points(ctx, index, of, 1, node, what, "tensor");
    return zp[0];
}

class ConvIntegerKernel final : public NodeKernel {
public:
    explicit ConvIntegerKernel(const Node& node) : NodeKernel(node), conv_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(1);
        const int64_t maps = w.ndim() > 0 ? w.shape()[0] : 0;
        std::vector<int64_t> shape;
        const std::vector<int32_t> acc =
            conv_.run(node_, x, scalar_zero_point(ctx, 2, x, node_, "x_zero_point"), w,
                      zero_points(ctx, 3, w, maps, node_, "w_zero_point", "output channel"), {}, shape);
        Tensor y(shape, DType::Int32);
        std::copy(acc.begin(), acc.end(), y.data_ptr<int32_t>());
        ctx.outputs[0] = std::move(y);
    }

private:
    IntConv conv_;
};

class QLinearConvKernel final : public NodeKernel {
public:
    explicit QLinearConvKernel(const Node& node) : NodeKernel(node), conv_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(3);
        const Tensor& y_zp = ctx.input(7);
        const int64_t maps = w.ndim() > 0 ? w.shape()[0] : 0;
        if (y_zp.num_elements() != 1) fail("y_zero_point must be a scalar");
        if (ctx.input(1).num_elements() != 1) fail("x_scale must be a scalar");
        check_per_index(node_, ctx.input(4), maps, "w_scale", "output channel");
        std::vector<int32_t> bias;
        if (ctx.has_input(8)) {
            const Tensor& b = ctx.input(8);
            require_dtype(node_, b, DType::Int32, "bias B");
            bias.assign(b.data_ptr<int32_t>(), b.data_ptr<int32_t>() + b.num_elements());
        }
        std::vector<int64_t> shape;
        const std::vector<int32_t> acc =
            conv_.run(node_, x, scalar_zero_point(ctx, 2, x, node_, "x_zero_point"), w,
                      zero_points(ctx, 5, w, maps, node_, "w_zero_point", "output channel"), bias, shape);
        const std::vector<double> mult = multipliers(ctx.input(1), ctx.input(4), ctx.input(6), node_);
        const int64_t plane = shape.empty() ? 1 : num_elements_of(shape) / std::max<int64_t>(1, shape[0] * shape[1]);
        ctx.outputs[0] = requantize(acc, shape, mult, maps, plane, y_zp, node_);
    }

private:
    IntConv conv_;
};

void infer_int_conv(InferenceContext& ctx, size_t w_index, DType out_dtype) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() < 3) fail_node(ctx.node, "input x has shape " + shape_to_string(x.shape) + "; expected rank 3 to 5");
    const WindowAttributes attrs = WindowAttributes::parse(ctx.node, false);
    Shape kernel(x.shape.size() - 2), out{x.shape[0], std::nullopt};
    if (ctx.has_input(w_index)) {
        const TensorInfo& w = ctx.input(w_index);
        if (w.shape.size() != x.shape.size())
            fail_node(ctx.node, "weight w " + shape_to_string(w.shape) + " must have the rank of x " + shape_to_string(x.shape));
        out[1] = w.shape[0];
        kernel.assign(w.shape.begin() + 2, w.shape.end());
    }
    for (size_t i = 0; i < attrs.kernel_shape.size() && i < kernel.size(); ++i) kernel[i] = attrs.kernel_shape[i];
    const Shape spatial = infer_window_output(attrs, kernel, Shape(x.shape.begin() + 2, x.shape.end()), ctx.node);
    out.insert(out.end(), spatial.begin(), spatial.end());
    ctx.set_output(0, out_dtype, std::move(out));
}

}  // namespace

void register_quantize_ops(OpTable& table) {
    table.add(OpSchema{"QuantizeLinear", "", 10, 2, 3, 1, 1, infer_quantize,
                       [](const KernelInfo& info) { return std::make_unique<QuantizeKernel>(info.node); }});
    table.add(OpSchema{"DequantizeLinear", "", 10, 2, 3, 1, 1, infer_dequantize,
                       [](const KernelInfo& info) { return std::make_unique<DequantizeKernel>(info.node); }});
    table.add(OpSchema{"DynamicQuantizeLinear", "", 11, 1, 1, 3, 3, infer_dynamic_quantize,
                       [](const KernelInfo& info) { return std::make_unique<DynamicQuantizeKernel>(info.node); }});
    table.add(OpSchema{"MatMulInteger", "", 10, 2, 4, 1, 1, infer_matmul_integer,
                       [](const KernelInfo& info) { return std::make_unique<MatMulIntegerKernel>(info.node); }});
    table.add(OpSchema{"QLinearMatMul", "", 10, 8, 8, 1, 1, infer_qlinear_matmul,
                       [](const KernelInfo& info) { return std::make_unique<QLinearMatMulKernel>(info.node); }});
    table.add(OpSchema{"ConvInteger", "", 10, 2, 4, 1, 1,
                       [](InferenceContext& ctx) { infer_int_conv(ctx, 1, DType::Int32); },
                       [](const KernelInfo& info) { return std::make_unique<ConvIntegerKernel>(info.node); }});
    table.add(OpSchema{"QLinearConv", "", 10, 8, 9, 1, 1,
                       [](InferenceContext& ctx) {
                           const DType out = ctx.has_input(7) ? ctx.input(7).dtype
                                             : ctx.has_input(0) ? ctx.input(0).dtype : DType::UInt8;
                           infer_int_conv(ctx, 3, out);
                       },
                       [](const KernelInfo& info) { return std::make_unique<QLinearConvKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
