// BatchNormalization (float, double, float16, bfloat16; parameters may have their own
// floating type, as opset 15 allows):
//   y = (x - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1).
// Inference uses the given statistics. Training (training_mode=1 from opset 14; before, when
// the statistics outputs are requested or is_test=0) normalizes with the batch's own mean and
// (population) variance and outputs the running statistics
//   running = input_stat * momentum + batch_stat * (1 - momentum).
// spatial=0 (opsets 7-8) takes statistics per channel and spatial position (inference only).
#include <cmath>

#include "ops/nn_common.hpp"

namespace pyflame_rt::ops {
namespace {

const char* const kParamNames[] = {"scale", "B", "input_mean", "input_var"};

class BatchNormKernel final : public NodeKernel {
public:
    BatchNormKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          epsilon_(node.get_attribute<double>("epsilon", 1e-5)),
          momentum_(node.get_attribute<double>("momentum", 0.9)),
          per_activation_(node.get_attribute<int64_t>("spatial", 1) == 0),
          legacy_outputs_(opset > 0 && opset < 14) {
        if (!legacy_outputs_) {
            training_ = node.get_attribute<int64_t>("training_mode", 0) != 0;
        } else {
            // Before opset 14 the statistics outputs exist only in training (opset 6 also
            // says so with is_test=0).
            training_ = node.get_attribute<int64_t>("is_test", 1) == 0;
            for (size_t i = 1; i < node.outputs().size(); ++i) training_ = training_ || wants_output(node, i);
        }
        if (!(epsilon_ >= 0)) fail("attribute 'epsilon' is " + std::to_string(epsilon_) + "; expected >= 0");
        if (training_ && per_activation_) fail("spatial=0 is supported in inference only");
        if (!training_)
            for (size_t i = 1; i < node.outputs().size(); ++i)
                if (wants_output(node, i))
                    fail("output " + std::to_string(i) + " ('" + node.outputs()[i] +
                         "') is a training statistic; it exists only with training_mode=1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        if (dims.size() < 2) fail("input X has shape " + shape_to_string(dims) + "; expected (N, C, ...)");
        const int64_t batch = dims[0], channels = dims[1];
        const int64_t plane = dims_product(dims, 2, dims.size());
        // Parameters are per channel, or per channel and position with spatial=0.
        const int64_t params = per_activation_ ? channels * plane : channels;
        std::vector<double> p[4];
        for (size_t i = 0; i < 4; ++i) {
            const Tensor& t = ctx.input(i + 1);
            if (t.num_elements() != params || (!per_activation_ && t.ndim() != 1))
                fail(std::string("input ") + kParamNames[i] + " has shape " + shape_to_string(t.shape()) +
                     "; expected " + (per_activation_ ? std::to_string(params) + " values" : "[" + std::to_string(channels) + "]") +
                     " for input X " + shape_to_string(dims));
            p[i] = float_values(t, node_);
        }
        auto& [scale, bias, mean, var] = p;
        std::vector<double> batch_mean, batch_var;
        if (training_) {
            batch_mean.assign(static_cast<size_t>(channels), 0.0);
            batch_var.assign(static_cast<size_t>(channels), 0.0);
            dispatch_float_types(x.dtype(), node_, [&](auto t) {
                using T = decltype(t);
                const T* xd = x.data_ptr<T>();
                const double count = static_cast<double>(batch * plane);
                for (int64_t c = 0; c < channels; ++c) {
                    double sum = 0, sq = 0;
                    for (int64_t n = 0; n < batch; ++n)
                        for (int64_t i = 0; i < plane; ++i) sum += static_cast<double>(xd[(n * channels + c) * plane + i]);
                    const double m = sum / count;
                    for (int64_t n = 0; n < batch; ++n)
                        for (int64_t i = 0; i < plane; ++i) {
                            const double d = static_cast<double>(xd[(n * channels + c) * plane + i]) - m;
                            sq += d * d;
                        }
                    batch_mean[c] = m;
                    batch_var[c] = sq / count;
                }
            });
        }
        const std::vector<double>& use_mean = training_ ? batch_mean : mean;
        const std::vector<double>& use_var = training_ ? batch_var : var;
        // Folded into one multiply-add per element.
        std::vector<double> mul(static_cast<size_t>(params)), add(static_cast<size_t>(params));
        for (int64_t k = 0; k < params; ++k) {
            mul[k] = scale[k] / std::sqrt(use_var[k] + epsilon_);
            add[k] = bias[k] - use_mean[k] * mul[k];
        }
        Tensor y(dims, x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t n = 0; n < batch; ++n)
                for (int64_t c = 0; c < channels; ++c) {
                    const int64_t offset = (n * channels + c) * plane;
                    for (int64_t i = 0; i < plane; ++i) {
                        const int64_t k = per_activation_ ? c * plane + i : c;
                        yd[offset + i] = static_cast<T>(static_cast<double>(xd[offset + i]) * mul[k] + add[k]);
                    }
                }
        });
        ctx.outputs[0] = std::move(y);
        if (!training_) return;

        std::vector<double> running_mean(static_cast<size_t>(channels)), running_var(static_cast<size_t>(channels));
        for (int64_t c = 0; c < channels; ++c) {
            running_mean[c] = mean[c] * momentum_ + batch_mean[c] * (1 - momentum_);
            running_var[c] = var[c] * momentum_ + batch_var[c] * (1 - momentum_);
        }
        const DType stat_dtype = ctx.input(3).dtype();
        const std::vector<int64_t> stat_shape{channels};
        // Opsets 9-13 add the batch statistics as outputs 3 and 4.
        const std::vector<double>* outs[] = {&running_mean, &running_var, &batch_mean, &batch_var};
        for (size_t i = 1; i < ctx.outputs.size() && i <= 4; ++i)
            if (i <= 2 || legacy_outputs_) ctx.outputs[i] = float_tensor(stat_shape, stat_dtype, *outs[i - 1], node_);
    }

private:
    double epsilon_;
    double momentum_;
    bool per_activation_;
    bool legacy_outputs_;
    bool training_ = false;
};

void infer_batch_norm(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() < 2)
        fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, ...)");
    const bool per_activation = ctx.node.get_attribute<int64_t>("spatial", 1) == 0;
    if (x.shape[1] && !per_activation) {
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
    const DType stat_dtype = ctx.has_input(3) ? ctx.input(3).dtype : x.dtype;
    for (size_t i = 1; i < ctx.node.outputs().size() && i <= 4; ++i)
        if (wants_output(ctx.node, i)) ctx.set_output(i, stat_dtype, Shape{x.shape[1]});
}

}  // namespace

void register_norm_ops(OpTable& table) {
    // Up to 5 outputs: opsets 9-13 have four optional training statistics.
    table.add(OpSchema{"BatchNormalization", "", 6, 5, 5, 1, 5, infer_batch_norm, [](const KernelInfo& info) {
                           return std::make_unique<BatchNormKernel>(info.node, info.opset);
                       }});
}

}  // namespace pyflame_rt::ops
