// Internal int8 operators the optimizer's QDQ fusion produces (domain com.pyflame, like ONNX
// Runtime's com.microsoft QLinearAdd and DynamicQuantizeMatMul):
//   FusedQLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [B]) with attribute
//     activation (Relu, or Clip with activation_params [min, max]) = QuantizeLinear(act(v)),
//     where v is what QLinearConv requantizes. Quantization is monotonic and maps 0 to y_zp,
//     so the activation is a clamp of QLinearConv's integer output.
//   QLinearConvAdd(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [B], S, S_scale, S_zp) =
//     QuantizeLinear(v + DequantizeLinear(S)), v the real value QLinearConv computes (before it
//     rounds): a residual addition read into the convolution's requantization (one rounding).
//   QLinearAdd(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp) =
//     QuantizeLinear(DequantizeLinear(A) + DequantizeLinear(B)).
//   QGemm(A, a_scale, a_zp, B (K, N), b_scale (per column), b_zp, [C int32], y_scale, y_zp) =
//     QuantizeLinear(DequantizeLinear(A) x DequantizeLinear(B) + C * a_scale * b_scale).
//   MatMulIntegerToFloat(A, B (K, N), a_scale, b_scale (per column), [a_zp], [b_zp], [bias]) =
//     DequantizeLinear(A) x DequantizeLinear(B) + bias, float32 (as com.microsoft's): a quantized
//     MatMul/Gemm whose output no quantized op reads.
//   DynamicQuantizeMatMul(A, B, b_scale, [b_zp], [bias]) = the dynamic-quantization chain
//     DynamicQuantizeLinear(A) -> MatMulInteger -> Cast(float) -> Mul(a_scale * b_scale) -> Add(bias).
// Their reference kernels compose the reference kernels of the parts, so the math is defined
// once; the CPU backend runs each as one oneDNN kernel (onednn_quant.cpp).
#include <algorithm>
#include <cmath>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// One reference kernel of a part, run on the given inputs.
class Part {
public:
    Part(const std::string& op_type, const std::string& name, size_t inputs, size_t outputs,
         const std::vector<std::pair<std::string, int64_t>>& attributes = {}) {
        std::vector<std::string> in, out;
        for (size_t i = 0; i < inputs; ++i) in.push_back("in" + std::to_string(i));
        for (size_t i = 0; i < outputs; ++i) out.push_back("out" + std::to_string(i));
        Node node(op_type, name, in, out);
        for (const auto& [k, v] : attributes) node.set_attribute(k, v);
        kernel_ = OpTable::instance().find(op_type)->reference_kernel(KernelInfo{node, 21, {}, {}});
        outputs_ = outputs;
    }

    // The part `op_type` with `attributes` (a node's, e.g. a convolution's window).
    Part(const std::string& op_type, const std::string& name, size_t inputs,
         const std::map<std::string, AttributeValue>& attributes) {
        std::vector<std::string> in;
        for (size_t i = 0; i < inputs; ++i) in.push_back("in" + std::to_string(i));
        Node node(op_type, name, in, {"out0"});
        for (const auto& [k, v] : attributes) node.set_attribute(k, v);
        kernel_ = OpTable::instance().find(op_type)->reference_kernel(KernelInfo{node, 21, {}, {}});
    }

    std::vector<Tensor> run(std::vector<const Tensor*> inputs, int num_threads) const {
        KernelContext ctx;
        ctx.num_threads = num_threads;
        ctx.inputs = std::move(inputs);
        ctx.outputs.resize(outputs_);
        kernel_->compute(ctx);
        return std::move(ctx.outputs);
    }

private:
    std::unique_ptr<OpKernel> kernel_;
    size_t outputs_ = 1;
};

const Tensor* optional_input(const KernelContext& ctx, size_t i) { return ctx.has_input(i) ? &ctx.input(i) : nullptr; }

// ---- FusedQLinearConv ----

class FusedQLinearConvKernel final : public NodeKernel {
public:
    explicit FusedQLinearConvKernel(const KernelInfo& info)
        : NodeKernel(info.node), conv_(OpTable::instance().find("QLinearConv")->reference_kernel(info)) {
        const std::string op = info.node.get_attribute<std::string>("activation", "");
        const auto p = info.node.get_attribute<std::vector<double>>("activation_params", {});
        if (op == "Relu") lo_ = 0.0, hi_ = INFINITY;
        else if (op == "Clip" && p.size() == 2) lo_ = p[0], hi_ = p[1];
        else fail("activation must be Relu, or Clip with activation_params [min, max]; got '" + op + "'");
    }

    void compute(KernelContext& ctx) const override {
        if (ctx.input(6).dtype() != DType::Float32) fail("y_scale must be float32 for a fused activation");
        conv_->compute(ctx);
        Tensor& y = ctx.outputs[0];
        const float scale = ctx.input(6).data_ptr<float>()[0];
        const Tensor& zp = ctx.input(7);
        // The activation's bounds quantized as QuantizeLinear would (monotonic: clamping the
        // integers clamps the values).
        auto apply = [&](auto tag) {
            using T = decltype(tag);
            const double tmin = std::is_same_v<T, int8_t> ? -128 : 0, tmax = std::is_same_v<T, int8_t> ? 127 : 255;
            const double z = zp.data_ptr<T>()[0];
            auto quantize = [&](double v) {
                if (std::isinf(v)) return v > 0 ? tmax : tmin;
                return std::clamp(std::nearbyint(static_cast<float>(v) / scale) + z, tmin, tmax);
            };
            const T lo = static_cast<T>(quantize(lo_)), hi = static_cast<T>(quantize(hi_));
            T* d = y.data_ptr<T>();
            for (int64_t i = 0; i < y.num_elements(); ++i) d[i] = std::clamp(d[i], lo, hi);
        };
        if (zp.dtype() == DType::Int8) apply(int8_t{});
        else if (zp.dtype() == DType::UInt8) apply(uint8_t{});
        else fail("y_zero_point must be int8 or uint8 for a fused activation");
    }

private:
    std::unique_ptr<OpKernel> conv_;
    double lo_ = 0, hi_ = 0;
};

// ---- QLinearConvAdd ----

class QLinearConvAddKernel final : public NodeKernel {
public:
    explicit QLinearConvAddKernel(const KernelInfo& info)
        : NodeKernel(info.node), dequantize_("DequantizeLinear", info.node.name() + "_dq", 3, 1),
          dequantize_weights_("DequantizeLinear", info.node.name() + "_dqw", 3, 1, {{"axis", 0}}),
          dequantize_bias_("DequantizeLinear", info.node.name() + "_dqb", 2, 1, {{"axis", 0}}),
          mul_("Mul", info.node.name() + "_mul", 2, 1), conv_("Conv", info.node.name() + "_conv", 3, info.node.attributes()),
          add_("Add", info.node.name() + "_add", 2, 1), quantize_("QuantizeLinear", info.node.name() + "_q", 3, 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor x = dequantize_.run({&ctx.input(0), &ctx.input(1), optional_input(ctx, 2)}, ctx.num_threads)[0];
        const Tensor w = dequantize_weights_.run({&ctx.input(3), &ctx.input(4), optional_input(ctx, 5)}, ctx.num_threads)[0];
        Tensor bias;
        if (ctx.has_input(8)) {
            const Tensor scale = mul_.run({&ctx.input(1), &ctx.input(4)}, ctx.num_threads)[0];
            bias = dequantize_bias_.run({&ctx.input(8), &scale}, ctx.num_threads)[0];
        }
        const Tensor v = conv_.run({&x, &w, ctx.has_input(8) ? &bias : nullptr}, ctx.num_threads)[0];
        const Tensor s = dequantize_.run({&ctx.input(9), &ctx.input(10), optional_input(ctx, 11)}, ctx.num_threads)[0];
        const Tensor sum = add_.run({&v, &s}, ctx.num_threads)[0];
        ctx.outputs[0] = quantize_.run({&sum, &ctx.input(6), &ctx.input(7)}, ctx.num_threads)[0];
    }

private:
    Part dequantize_, dequantize_weights_, dequantize_bias_, mul_, conv_, add_, quantize_;
};

// ---- QLinearAdd ----

class QLinearAddKernel final : public NodeKernel {
public:
    explicit QLinearAddKernel(const KernelInfo& info)
        : NodeKernel(info.node), dequantize_("DequantizeLinear", info.node.name() + "_dq", 3, 1),
          add_("Add", info.node.name() + "_add", 2, 1), quantize_("QuantizeLinear", info.node.name() + "_q", 3, 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor a = dequantize_.run({&ctx.input(0), &ctx.input(1), optional_input(ctx, 2)}, ctx.num_threads)[0];
        const Tensor b = dequantize_.run({&ctx.input(3), &ctx.input(4), optional_input(ctx, 5)}, ctx.num_threads)[0];
        const Tensor sum = add_.run({&a, &b}, ctx.num_threads)[0];
        ctx.outputs[0] = quantize_.run({&sum, &ctx.input(6), optional_input(ctx, 7)}, ctx.num_threads)[0];
    }

private:
    Part dequantize_, add_, quantize_;
};

void infer_qlinear_add(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(3)) return;
    const DType out = ctx.has_input(7) ? ctx.input(7).dtype : DType::UInt8;
    ctx.set_output(0, out, broadcast_shapes(ctx.input(0).shape, ctx.input(3).shape));
}

// ---- QGemm ----

class QGemmKernel final : public NodeKernel {
public:
    explicit QGemmKernel(const KernelInfo& info)
        : NodeKernel(info.node), dequantize_("DequantizeLinear", info.node.name() + "_dq", 3, 1),
          dequantize_columns_("DequantizeLinear", info.node.name() + "_dqb", 3, 1, {{"axis", 1}}),
          dequantize_bias_("DequantizeLinear", info.node.name() + "_dqc", 2, 1, {{"axis", 0}}),
          matmul_("MatMul", info.node.name() + "_mm", 2, 1), mul_("Mul", info.node.name() + "_mul", 2, 1),
          add_("Add", info.node.name() + "_add", 2, 1), quantize_("QuantizeLinear", info.node.name() + "_q", 3, 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor a = dequantize_.run({&ctx.input(0), &ctx.input(1), optional_input(ctx, 2)}, ctx.num_threads)[0];
        const Tensor b = dequantize_columns_.run({&ctx.input(3), &ctx.input(4), optional_input(ctx, 5)}, ctx.num_threads)[0];
        Tensor y = matmul_.run({&a, &b}, ctx.num_threads)[0];
        if (ctx.has_input(6)) {
            const Tensor scale = mul_.run({&ctx.input(1), &ctx.input(4)}, ctx.num_threads)[0];
            const Tensor c = dequantize_bias_.run({&ctx.input(6), &scale}, ctx.num_threads)[0];
            y = add_.run({&y, &c}, ctx.num_threads)[0];
        }
        ctx.outputs[0] = quantize_.run({&y, &ctx.input(7), optional_input(ctx, 8)}, ctx.num_threads)[0];
    }

private:
    Part dequantize_, dequantize_columns_, dequantize_bias_, matmul_, mul_, add_, quantize_;
};

void infer_qgemm(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(3)) return;
    const Shape& a = ctx.input(0).shape;
    const Shape& b = ctx.input(3).shape;
    if (a.size() != 2 || b.size() != 2) return;
    ctx.set_output(0, ctx.has_input(8) ? ctx.input(8).dtype : DType::UInt8, Shape{a[0], b[1]});
}

// ---- MatMulIntegerToFloat ----

class MatMulIntegerToFloatKernel final : public NodeKernel {
public:
    explicit MatMulIntegerToFloatKernel(const KernelInfo& info)
        : NodeKernel(info.node), dequantize_("DequantizeLinear", info.node.name() + "_dq", 3, 1),
          dequantize_columns_("DequantizeLinear", info.node.name() + "_dqb", 3, 1, {{"axis", 1}}),
          matmul_("MatMul", info.node.name() + "_mm", 2, 1), add_("Add", info.node.name() + "_add", 2, 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor a = dequantize_.run({&ctx.input(0), &ctx.input(2), optional_input(ctx, 4)}, ctx.num_threads)[0];
        const Tensor b = dequantize_columns_.run({&ctx.input(1), &ctx.input(3), optional_input(ctx, 5)}, ctx.num_threads)[0];
        Tensor y = matmul_.run({&a, &b}, ctx.num_threads)[0];
        if (ctx.has_input(6)) y = add_.run({&y, &ctx.input(6)}, ctx.num_threads)[0];
        ctx.outputs[0] = std::move(y);
    }

private:
    Part dequantize_, dequantize_columns_, matmul_, add_;
};

// ---- DynamicQuantizeMatMul ----

class DynamicQuantizeMatMulKernel final : public NodeKernel {
public:
    explicit DynamicQuantizeMatMulKernel(const KernelInfo& info)
        : NodeKernel(info.node), quantize_("DynamicQuantizeLinear", info.node.name() + "_dql", 1, 3),
          matmul_("MatMulInteger", info.node.name() + "_mmi", 4, 1),
          cast_("Cast", info.node.name() + "_cast", 1, 1, {{"to", 1}}),
          mul_("Mul", info.node.name() + "_mul", 2, 1), add_("Add", info.node.name() + "_add", 2, 1) {}

    void compute(KernelContext& ctx) const override {
        const auto q = quantize_.run({&ctx.input(0)}, ctx.num_threads);
        const Tensor acc = matmul_.run({&q[0], &ctx.input(1), &q[2], optional_input(ctx, 3)}, ctx.num_threads)[0];
        const Tensor scale = mul_.run({&q[1], &ctx.input(2)}, ctx.num_threads)[0];
        const Tensor real = cast_.run({&acc}, ctx.num_threads)[0];
        Tensor y = mul_.run({&real, &scale}, ctx.num_threads)[0];
        if (ctx.has_input(4)) y = add_.run({&y, &ctx.input(4)}, ctx.num_threads)[0];
        ctx.outputs[0] = std::move(y);
    }

private:
    Part quantize_, matmul_, cast_, mul_, add_;
};

void infer_dynamic_quantize_matmul(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return;
    const Shape& a = ctx.input(0).shape;
    const Shape& b = ctx.input(1).shape;
    if (a.size() < 2 || b.size() != 2) return;
    Shape out = a;
    out.back() = b.back();
    ctx.set_output(0, DType::Float32, std::move(out));
}

}  // namespace

void register_fused_quant_ops(OpTable& table) {
    const OpSchema* qconv = table.find("QLinearConv");
    table.add(OpSchema{"FusedQLinearConv", "com.pyflame", 1, 8, 9, 1, 1, qconv ? qconv->infer : ShapeInferenceFn{},
                       [](const KernelInfo& info) { return std::make_unique<FusedQLinearConvKernel>(info); }});
    table.add(OpSchema{"QLinearConvAdd", "com.pyflame", 1, 12, 12, 1, 1, qconv ? qconv->infer : ShapeInferenceFn{},
                       [](const KernelInfo& info) { return std::make_unique<QLinearConvAddKernel>(info); }});
    table.add(OpSchema{"QLinearAdd", "com.pyflame", 1, 7, 8, 1, 1, infer_qlinear_add,
                       [](const KernelInfo& info) { return std::make_unique<QLinearAddKernel>(info); }});
    table.add(OpSchema{"QGemm", "com.pyflame", 1, 8, 9, 1, 1, infer_qgemm,
                       [](const KernelInfo& info) { return std::make_unique<QGemmKernel>(info); }});
    table.add(OpSchema{"MatMulIntegerToFloat", "com.pyflame", 1, 4, 7, 1, 1, infer_dynamic_quantize_matmul,
                       [](const KernelInfo& info) { return std::make_unique<MatMulIntegerToFloatKernel>(info); }});
    table.add(OpSchema{"DynamicQuantizeMatMul", "com.pyflame", 1, 3, 5, 1, 1, infer_dynamic_quantize_matmul,
                       [](const KernelInfo& info) { return std::make_unique<DynamicQuantizeMatMulKernel>(info); }});
}

}  // namespace pyflame_rt::ops
