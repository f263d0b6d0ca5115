// Relu, Sigmoid, Tanh (float32, float64) and Softmax (float32).
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/op.hpp"

namespace pyflame_rt::ops {

namespace {

struct ReluFn {
    static constexpr const char* name = "Relu";
    template <typename T> T operator()(T x) const { return x < T(0) ? T(0) : x; }  // NaN passes through
};

struct SigmoidFn {
    static constexpr const char* name = "Sigmoid";
    // Written so exp() never overflows: exp of a non-positive number only.
    template <typename T> T operator()(T x) const {
        if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
        const T e = std::exp(x);
        return e / (T(1) + e);
    }
};

struct TanhFn {
    static constexpr const char* name = "Tanh";
    template <typename T> T operator()(T x) const { return std::tanh(x); }
};

template <typename Fn>
class UnaryFloatKernel final : public NodeKernel {
public:
    explicit UnaryFloatKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        Tensor y(x.shape(), x.dtype());
        switch (x.dtype()) {
            case DType::Float32: apply<float>(x, y); break;
            case DType::Float64: apply<double>(x, y); break;
            default: fail("input is " + dtype_to_string(x.dtype()) + "; this kernel takes Float32 or Float64");
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    template <typename T>
    static void apply(const Tensor& x, Tensor& y) {
        std::transform(x.data_ptr<T>(), x.data_ptr<T>() + x.num_elements(), y.data_ptr<T>(), Fn{});
    }
};

void infer_same_as_input(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

template <typename Fn>
OpSchema unary_schema() {
    return OpSchema{Fn::name, "", 6, 1, 1, 1, 1, infer_same_as_input,
                    [](const KernelInfo& info) { return std::make_unique<UnaryFloatKernel<Fn>>(info.node); }};
}

// Softmax over `n` values `stride` apart, for each of outer x stride such groups.
void softmax(const float* x, float* y, int64_t outer, int64_t n, int64_t stride) {
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < stride; ++i) {
            const float* xs = x + o * n * stride + i;
            float* ys = y + o * n * stride + i;
            float max = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < n; ++j) max = std::max(max, xs[j * stride]);
            double sum = 0;  // subtracting the max keeps exp() <= 1: no overflow
            for (int64_t j = 0; j < n; ++j) sum += ys[j * stride] = std::exp(xs[j * stride] - max);
            const float scale = static_cast<float>(1.0 / sum);
            for (int64_t j = 0; j < n; ++j) ys[j * stride] *= scale;
        }
    }
}

// Opset >= 13: softmax along `axis` (default -1). Before 13: the input is seen as a matrix
// (prod(dims[:axis]), prod(dims[axis:])) and each row is one softmax (axis default 1).
class SoftmaxKernel final : public NodeKernel {
public:
    SoftmaxKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          legacy_(opset > 0 && opset < 13),
          axis_(node.get_attribute<int64_t>("axis", legacy_ ? 1 : -1)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_dtype(node_, x, DType::Float32, "input");
        const auto& dims = x.shape();
        const int64_t rank = static_cast<int64_t>(dims.size());
        if (rank == 0) fail("input is a scalar; Softmax needs rank >= 1");
        const int64_t axis = normalize_axis(axis_, rank, node_);
        auto product = [&](int64_t from, int64_t to) {
            int64_t p = 1;
            for (int64_t d = from; d < to; ++d) p *= dims[d];
            return p;
        };
        const int64_t outer = product(0, axis);
        const int64_t n = legacy_ ? product(axis, rank) : dims[axis];
        const int64_t stride = legacy_ ? 1 : product(axis + 1, rank);
        Tensor y(dims, DType::Float32);
        softmax(x.data_ptr<float>(), y.data_ptr<float>(), outer, n, stride);
        ctx.outputs[0] = std::move(y);
    }

private:
    bool legacy_;
    int64_t axis_;
};

void infer_softmax(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank > 0) {  // empty shape: rank unknown
        const bool legacy = ctx.opset > 0 && ctx.opset < 13;
        normalize_axis(ctx.node.get_attribute<int64_t>("axis", legacy ? 1 : -1), rank, ctx.node);
    }
    ctx.set_output(0, x.dtype, x.shape);
}

}  // namespace

void register_activation_ops(OpTable& table) {
    table.add(unary_schema<ReluFn>());
    table.add(unary_schema<SigmoidFn>());
    table.add(unary_schema<TanhFn>());
    table.add(OpSchema{"Softmax", "", 1, 1, 1, 1, 1, infer_softmax,
                       [](const KernelInfo& info) { return std::make_unique<SoftmaxKernel>(info.node, info.opset); }});
}

}  // namespace pyflame_rt::ops
