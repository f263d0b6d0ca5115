// BatchNormalization, inference mode only (float32):
//   y = (x - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1).
#include <cmath>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

const char* const kParamNames[] = {"scale", "B", "input_mean", "input_var"};

class BatchNormKernel final : public NodeKernel {
public:
    explicit BatchNormKernel(const Node& node)
        : NodeKernel(node), epsilon_(node.get_attribute<double>("epsilon", 1e-5)) {
        if (node.get_attribute<int64_t>("training_mode", 0) != 0) fail("training mode not supported");
        // Before opset 14 the running statistics were optional outputs, computed in training only.
        for (size_t i = 1; i < node.outputs().size(); ++i)
            if (!node.outputs()[i].empty())
                fail("output " + std::to_string(i) + " ('" + node.outputs()[i] +
                     "') is a training statistic; training mode not supported");
        if (node.get_attribute<int64_t>("spatial", 1) != 1)
            fail("spatial=0 (per-activation statistics, opset < 9) is not supported");
        if (!(epsilon_ >= 0)) fail("attribute 'epsilon' is " + std::to_string(epsilon_) + "; expected >= 0");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_dtype(node_, x, DType::Float32, "input X");
        if (x.ndim() < 2) fail("input X has shape " + shape_to_string(x.shape()) + "; expected (N, C, ...)");
        const int64_t batch = x.shape()[0], channels = x.shape()[1];
        const float* params[4];
        for (size_t i = 0; i < 4; ++i) {
            const Tensor& p = ctx.input(i + 1);
            require_dtype(node_, p, DType::Float32, kParamNames[i]);
            if (p.shape() != std::vector<int64_t>{channels})
                fail(std::string("input ") + kParamNames[i] + " has shape " + shape_to_string(p.shape()) +
                     "; expected [" + std::to_string(channels) + "] for input X " + shape_to_string(x.shape()));
            params[i] = p.data_ptr<float>();
        }
        const auto [scale, bias, mean, var] = params;
        const int64_t plane = batch * channels == 0 ? 0 : x.num_elements() / (batch * channels);
        const float* xd = x.data_ptr<float>();
        Tensor y(x.shape(), DType::Float32);
        float* yd = y.data_ptr<float>();
        for (int64_t c = 0; c < channels; ++c) {
            // Folded into one multiply-add per element.
            const float mul = static_cast<float>(scale[c] / std::sqrt(static_cast<double>(var[c]) + epsilon_));
            const float add = bias[c] - mean[c] * mul;
            for (int64_t n = 0; n < batch; ++n) {
                const int64_t offset = (n * channels + c) * plane;
                for (int64_t i = 0; i < plane; ++i) yd[offset + i] = xd[offset + i] * mul + add;
            }
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    double epsilon_;
};

void infer_batch_norm(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() == 1)
        fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, ...)");
    if (x.shape.size() >= 2 && x.shape[1]) {
        for (size_t i = 0; i < 4; ++i) {
            if (!ctx.has_input(i + 1)) continue;
            const Shape& p = ctx.input(i + 1).shape;
            if (p.size() != 1 || (p[0] && *p[0] != *x.shape[1]))
                fail_node(ctx.node, std::string("input ") + kParamNames[i] + " has shape " + shape_to_string(p) +
                                        "; expected [" + std::to_string(*x.shape[1]) + "] for input X " +
                                        shape_to_string(x.shape));
        }
    }
    ctx.set_output(0, x.dtype, x.shape);
}

}  // namespace

void register_norm_ops(OpTable& table) {
    // Up to 5 outputs so models of older opsets (optional training statistics) get the clear
    // "training mode" error from the kernel rather than an arity error.
    table.add(OpSchema{"BatchNormalization", "", 6, 5, 5, 1, 5, infer_batch_norm,
                       [](const KernelInfo& info) { return std::make_unique<BatchNormKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
