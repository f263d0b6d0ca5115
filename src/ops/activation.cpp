// Activations: Relu, Sigmoid, Tanh, Elu, Celu, Selu, LeakyRelu, HardSigmoid, HardSwish,
// Softplus, Softsign, Mish, Gelu, Swish, ThresholdedRelu, Shrink (unary, elementwise.hpp's
// UnaryKernel), PRelu (broadcast slope) and Clip. (Softmax, LogSoftmax and Hardmax: normalization.cpp.)
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/elementwise.hpp"

namespace pyflame_rt::ops {

namespace {

// Relu also takes signed integers (opset 14).
struct ReluFn {
    static constexpr const char* name = "Relu";
    static constexpr int since = 6;
    static constexpr bool bool_output = false;
    using Types = SignedTypes;
    explicit ReluFn(const KernelInfo&) {}
    template <typename T> T operator()(T x) const { return x < T(0) ? T(0) : x; }  // NaN passes through
};

// Float activations without attributes: f(x) computed in Compute<T>.
#define PYFLAME_FLOAT_ACTIVATION(NAME, OP, SINCE, BODY)       \
    struct NAME : FloatUnary<NAME> {                          \
        static constexpr const char* name = OP;               \
        static constexpr int since = SINCE;                   \
        explicit NAME(const KernelInfo&) {}                   \
        template <typename C> C f(C x) const BODY             \
    };

template <typename C>
C sigmoid(C x) {
    // Written so exp() never overflows: exp of a non-positive number only.
    if (x >= C(0)) return C(1) / (C(1) + std::exp(-x));
    const C e = std::exp(x);
    return e / (C(1) + e);
}

template <typename C>
C softplus(C x) {
    // log(1 + exp(x)) without overflow for large x.
    return x > C(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

PYFLAME_FLOAT_ACTIVATION(SigmoidFn, "Sigmoid", 6, { return sigmoid(x); })
PYFLAME_FLOAT_ACTIVATION(TanhFn, "Tanh", 6, { return std::tanh(x); })
PYFLAME_FLOAT_ACTIVATION(SoftplusFn, "Softplus", 1, { return softplus(x); })
PYFLAME_FLOAT_ACTIVATION(SoftsignFn, "Softsign", 1, { return x / (C(1) + std::abs(x)); })
PYFLAME_FLOAT_ACTIVATION(MishFn, "Mish", 18, { return x * std::tanh(softplus(x)); })
PYFLAME_FLOAT_ACTIVATION(HardSwishFn, "HardSwish", 14,
                         { return x * std::max(C(0), std::min(C(1), C(1.0 / 6.0) * x + C(0.5))); })
#undef PYFLAME_FLOAT_ACTIVATION

// Float activations with float attributes (read once, as the float32 ONNX stores).
struct EluFn : FloatUnary<EluFn> {
    static constexpr const char* name = "Elu";
    static constexpr int since = 6;
    explicit EluFn(const KernelInfo& info) : alpha(float_attribute(info.node, "alpha", 1.0f)) {}
    template <typename C> C f(C x) const { return x < C(0) ? C(alpha) * (std::exp(x) - C(1)) : x; }
    float alpha;
};

struct CeluFn : FloatUnary<CeluFn> {
    static constexpr const char* name = "Celu";
    static constexpr int since = 12;
    explicit CeluFn(const KernelInfo& info) : alpha(float_attribute(info.node, "alpha", 1.0f)) {
        if (alpha == 0.0f) fail_node(info.node, "attribute alpha must not be 0");
    }
    template <typename C> C f(C x) const {
        const C a = C(alpha);
        return std::max(C(0), x) + std::min(C(0), a * (std::exp(x / a) - C(1)));
    }
    float alpha;
};

struct SeluFn : FloatUnary<SeluFn> {
    static constexpr const char* name = "Selu";
    static constexpr int since = 6;
    explicit SeluFn(const KernelInfo& info)
        : alpha(float_attribute(info.node, "alpha", 1.67326319217681884765625f)),
          gamma(float_attribute(info.node, "gamma", 1.05070102214813232421875f)) {}
    template <typename C> C f(C x) const {
        return x > C(0) ? C(gamma) * x : C(gamma) * (C(alpha) * std::exp(x) - C(alpha));
    }
    float alpha, gamma;
};

struct LeakyReluFn : FloatUnary<LeakyReluFn> {
    static constexpr const char* name = "LeakyRelu";
    static constexpr int since = 6;
    explicit LeakyReluFn(const KernelInfo& info) : alpha(float_attribute(info.node, "alpha", 0.01f)) {}
    template <typename C> C f(C x) const { return x < C(0) ? C(alpha) * x : x; }
    float alpha;
};

struct HardSigmoidFn : FloatUnary<HardSigmoidFn> {
    static constexpr const char* name = "HardSigmoid";
    static constexpr int since = 6;
    explicit HardSigmoidFn(const KernelInfo& info)
        : alpha(float_attribute(info.node, "alpha", 0.2f)), beta(float_attribute(info.node, "beta", 0.5f)) {}
    template <typename C> C f(C x) const { return std::max(C(0), std::min(C(1), C(alpha) * x + C(beta))); }
    float alpha, beta;
};

struct ThresholdedReluFn : FloatUnary<ThresholdedReluFn> {
    static constexpr const char* name = "ThresholdedRelu";
    static constexpr int since = 10;
    explicit ThresholdedReluFn(const KernelInfo& info) : alpha(float_attribute(info.node, "alpha", 1.0f)) {}
    template <typename C> C f(C x) const { return x > C(alpha) ? x : C(0); }
    float alpha;
};

struct SwishFn : FloatUnary<SwishFn> {
    static constexpr const char* name = "Swish";
    static constexpr int since = 24;
    explicit SwishFn(const KernelInfo& info) : alpha(float_attribute(info.node, "alpha", 1.0f)) {}
    template <typename C> C f(C x) const { return x * sigmoid(C(alpha) * x); }
    float alpha;
};

struct GeluFn : FloatUnary<GeluFn> {
    static constexpr const char* name = "Gelu";
    static constexpr int since = 20;
    explicit GeluFn(const KernelInfo& info) {
        const std::string approximate = info.node.get_attribute<std::string>("approximate", "none");
        if (approximate != "none" && approximate != "tanh")
            fail_node(info.node, "attribute approximate must be \"none\" or \"tanh\", got \"" + approximate + "\"");
        tanh_ = approximate == "tanh";
    }
    template <typename C> C f(C x) const {
        if (tanh_) {
            const C k = C(0.7978845608028654);  // sqrt(2 / pi)
            return C(0.5) * x * (C(1) + std::tanh(k * (x + C(0.044715) * x * x * x)));
        }
        return C(0.5) * x * (C(1) + std::erf(x * C(0.7071067811865476)));  // x / sqrt(2)
    }
    bool tanh_ = false;
};

// Shrink takes every numeric type; integers are computed in double and truncated back.
struct ShrinkFn {
    static constexpr const char* name = "Shrink";
    static constexpr int since = 9;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit ShrinkFn(const KernelInfo& info)
        : bias(float_attribute(info.node, "bias", 0.0f)), lambd(float_attribute(info.node, "lambd", 0.5f)) {}
    template <typename T> T operator()(T x) const {
        if constexpr (std::is_integral_v<T>) return truncate_to_int<T>(shrink(static_cast<double>(x)));
        else return T(shrink(static_cast<Compute<T>>(x)));
    }
    template <typename C> C shrink(C v) const {
        return v < -C(lambd) ? v + C(bias) : v > C(lambd) ? v - C(bias) : C(0);
    }
    float bias, lambd;
};

// ---- PRelu: slope broadcasts to X (unidirectionally) ----

using PReluTypes = Concat<FloatTypes, TypeList<int32_t, int64_t, uint32_t, uint64_t>>;

struct PReluOp {
    template <typename T> T operator()(T x, T slope) const {
        if constexpr (std::is_integral_v<T>)
            return x < T(0) ? static_cast<T>(WrapType<T>(x) * WrapType<T>(slope)) : x;
        else
            return x < T(0) ? T(Compute<T>(x) * Compute<T>(slope)) : x;
    }
};

// Before opset 7 a 1-D slope of X's channel count applied per channel (axis 1), as exporters
// of that era wrote it; from 7 on, slope broadcasts numpy-style (unidirectionally).
template <typename ShapeT>
ShapeT prelu_slope_shape(const ShapeT& x, const ShapeT& slope, int64_t opset) {
    if (opset > 0 && opset < 7 && slope.size() == 1 && x.size() >= 2 && slope[0] == x[1] && x.size() > 2) {
        ShapeT s(x.size() - 1, typename ShapeT::value_type(1));
        s[0] = slope[0];
        return s;
    }
    return slope;
}

class PReluKernel final : public NodeKernel {
public:
    PReluKernel(const Node& node, int64_t opset) : NodeKernel(node), opset_(opset) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& slope = ctx.input(1);
        if (x.dtype() != slope.dtype())
            fail("X is " + dtype_to_string(x.dtype()) + " but slope is " + dtype_to_string(slope.dtype()));
        const std::vector<int64_t> slope_shape = prelu_slope_shape(x.shape(), slope.shape(), opset_);
        if (broadcast_all(node_, {&x.shape(), &slope_shape}) != x.shape())
            fail("slope " + shape_to_string(slope.shape()) + " does not broadcast to X " + shape_to_string(x.shape()));
        dispatch_list(PReluTypes{}, x.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            Tensor y(x.shape(), x.dtype());
            broadcast_apply(plan_broadcast<2>(x.shape(), {&x.shape(), &slope_shape}), ctx.num_threads, PReluOp{},
                            y.data_ptr<T>(), x.data_ptr<T>(), slope.data_ptr<T>());
            ctx.outputs[0] = std::move(y);
        });
    }

private:
    int64_t opset_;
};

void infer_prelu(InferenceContext& ctx) {
    const std::optional<DType> dtype = common_input_dtype(ctx, {0, 1});
    if (dtype) check_dtype_in(PReluTypes{}, *dtype, ctx.node);
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (ctx.has_input(1)) {
        const Shape slope = prelu_slope_shape(x.shape, ctx.input(1).shape, ctx.opset);
        const Shape both = [&] {
            try {
                return broadcast_shapes(x.shape, slope);
            } catch (const ValidationError&) {
                fail_node(ctx.node, "slope " + shape_to_string(ctx.input(1).shape) + " does not broadcast to X " +
                                        shape_to_string(x.shape));
            }
        }();
        if (both.size() != x.shape.size())
            fail_node(ctx.node, "slope " + shape_to_string(ctx.input(1).shape) + " has a higher rank than X " +
                                    shape_to_string(x.shape));
    }
    ctx.set_output(0, x.dtype, x.shape);
}

// ---- Clip: bounds as attributes before opset 11, as optional scalar inputs from 11 ----

class ClipKernel final : public NodeKernel {
public:
    explicit ClipKernel(const KernelInfo& info)
        : NodeKernel(info.node),
          legacy_(info.opset > 0 && info.opset < 11),
          min_(info.node.get_attribute<double>("min", std::numeric_limits<float>::lowest())),
          max_(info.node.get_attribute<double>("max", std::numeric_limits<float>::max())) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        dispatch_list(NumericTypes{}, x.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            if (legacy_ && !is_floating_v<T>) fail("opset < 11 takes floating-point inputs only");
            const T lo = legacy_ ? T(static_cast<Compute<T>>(min_)) : bound<T>(ctx, 1, std::numeric_limits<T>::lowest());
            const T hi = legacy_ ? T(static_cast<Compute<T>>(max_)) : bound<T>(ctx, 2, std::numeric_limits<T>::max());
            Tensor y(x.shape(), x.dtype());
            // min > max gives max everywhere, as the spec says; NaN passes through.
            map_elements(x.num_elements(), ctx.num_threads,
                         [lo, hi](T v) {
                             if (is_nan(v)) return v;
                             const T low = v < lo ? lo : v;
                             return low > hi ? hi : low;
                         },
                         y.data_ptr<T>(), x.data_ptr<T>());
            ctx.outputs[0] = std::move(y);
        });
    }

private:
    template <typename T>
    T bound(const KernelContext& ctx, size_t i, T default_value) const {
        if (!ctx.has_input(i)) return default_value;
        const Tensor& b = ctx.input(i);
        const char* what = i == 1 ? "min" : "max";
        if (b.dtype() != ctx.input(0).dtype())
            fail(std::string(what) + " is " + dtype_to_string(b.dtype()) + " but input is " +
                 dtype_to_string(ctx.input(0).dtype()));
        if (b.num_elements() != 1)
            fail(std::string(what) + " must be a scalar, got shape " + shape_to_string(b.shape()));
        return b.data_ptr<T>()[0];
    }

    bool legacy_;
    double min_, max_;
};

void infer_clip(InferenceContext& ctx) {
    const bool legacy = ctx.opset > 0 && ctx.opset < 11;
    const std::optional<DType> dtype = common_input_dtype(ctx, {0, 1, 2});
    if (dtype && legacy) check_dtype_in(FloatTypes{}, *dtype, ctx.node);
    if (dtype && !legacy) check_dtype_in(NumericTypes{}, *dtype, ctx.node);
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

}  // namespace

void register_activation_ops(OpTable& table) {
    table.add(unary_schema<ReluFn>());
    table.add(unary_schema<SigmoidFn>());
    table.add(unary_schema<TanhFn>());
    table.add(unary_schema<EluFn>());
    table.add(unary_schema<CeluFn>());
    table.add(unary_schema<SeluFn>());
    table.add(unary_schema<LeakyReluFn>());
    table.add(unary_schema<HardSigmoidFn>());
    table.add(unary_schema<HardSwishFn>());
    table.add(unary_schema<SoftplusFn>());
    table.add(unary_schema<SoftsignFn>());
    table.add(unary_schema<MishFn>());
    table.add(unary_schema<GeluFn>());
    table.add(unary_schema<SwishFn>());
    table.add(unary_schema<ThresholdedReluFn>());
    table.add(unary_schema<ShrinkFn>());
    table.add(OpSchema{"PRelu", "", 7, 2, 2, 1, 1, infer_prelu,
                       [](const KernelInfo& info) { return std::make_unique<PReluKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Clip", "", 6, 1, 3, 1, 1, infer_clip,
                       [](const KernelInfo& info) { return std::make_unique<ClipKernel>(info); }});
}

}  // namespace pyflame_rt::ops
