// ai.onnx.preview.training optimizers: Adagrad, Adam, Momentum (standard and Nesterov), each
// updating n tensors at once (inputs R, T, then n of each state group). Float32 and float64,
// computed in double. Gradient is refused: it needs automatic differentiation of a graph.
#include <cmath>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

const char* const kTraining = "ai.onnx.preview.training";

enum class Optimizer { Adagrad, Adam, Momentum };

// Per optimizer: the state groups after R and T (X, G and the running states) and the output
// groups (X_new and the new states).
int input_groups(Optimizer o) { return o == Optimizer::Adam ? 4 : 3; }
int output_groups(Optimizer o) { return o == Optimizer::Adam ? 3 : 2; }

class OptimizerKernel final : public NodeKernel {
public:
    OptimizerKernel(const Node& node, Optimizer o) : NodeKernel(node), o_(o) {
        norm_ = node.get_attribute<double>("norm_coefficient", 0.0);
        switch (o) {
            case Optimizer::Adagrad:
                decay_ = node.get_attribute<double>("decay_factor", 0.0);
                epsilon_ = node.get_attribute<double>("epsilon", 1e-6);
                break;
            case Optimizer::Adam:
                alpha_ = node.get_attribute<double>("alpha", 0.9);
                beta_ = node.get_attribute<double>("beta", 0.999);
                epsilon_ = node.get_attribute<double>("epsilon", 1e-6);
                norm_post_ = node.get_attribute<double>("norm_coefficient_post", 0.0);
                break;
            case Optimizer::Momentum: {
                alpha_ = node.get_attribute<double>("alpha");
                beta_ = node.get_attribute<double>("beta");
                const std::string mode = node.get_attribute<std::string>("mode");
                if (mode != "standard" && mode != "nesterov") fail("mode '" + mode + "' is not standard or nesterov");
                nesterov_ = mode == "nesterov";
                break;
            }
        }
    }

    void compute(KernelContext& ctx) const override {
        const size_t groups = input_groups(o_);
        if (ctx.inputs.size() < 2 + groups || (ctx.inputs.size() - 2) % groups != 0)
            fail("expects R, T and " + std::to_string(groups) + " groups of equally many tensors; got " +
                 std::to_string(ctx.inputs.size()) + " inputs");
        const size_t n = (ctx.inputs.size() - 2) / groups;
        if (ctx.outputs.size() != n * output_groups(o_))
            fail("expects " + std::to_string(n * output_groups(o_)) + " outputs for " + std::to_string(n) + " tensors");
        const double r = scalar(ctx.input(0), "R");
        const Tensor& t_in = ctx.input(1);
        if (t_in.dtype() != DType::Int64 || t_in.num_elements() != 1) fail("T must be an int64 scalar");
        const double t = static_cast<double>(t_in.data_ptr<int64_t>()[0]);

        for (size_t i = 0; i < n; ++i) {
            const Tensor& x = ctx.input(2 + i);
            std::vector<const Tensor*> in;  // X, G, then the states
            for (size_t g = 0; g < groups; ++g) {
                const Tensor& v = ctx.input(2 + g * n + i);
                if (v.dtype() != x.dtype() || v.shape() != x.shape())
                    fail("input " + std::to_string(2 + g * n + i) + " must match X" + std::to_string(i + 1) + " (" +
                         dtype_to_string(x.dtype()) + " " + shape_to_string(x.shape()) + ")");
                in.push_back(&v);
            }
            std::vector<Tensor> out;
            for (int g = 0; g < output_groups(o_); ++g) out.emplace_back(x.shape(), x.dtype());
            if (x.dtype() == DType::Float32) update<float>(in, out, r, t);
            else if (x.dtype() == DType::Float64) update<double>(in, out, r, t);
            else fail("dtype " + dtype_to_string(x.dtype()) + " is not supported (float32 and float64 only)");
            for (int g = 0; g < output_groups(o_); ++g) ctx.outputs[g * n + i] = std::move(out[g]);
        }
    }

private:
    double scalar(const Tensor& t, const char* what) const {
        if (t.num_elements() != 1) fail(std::string(what) + " must be a scalar");
        if (t.dtype() == DType::Float32) return t.data_ptr<float>()[0];
        if (t.dtype() == DType::Float64) return t.data_ptr<double>()[0];
        fail(std::string(what) + " must be float32 or float64");
    }

    // The update rules of the ONNX spec, element by element.
    template <typename T>
    void update(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, double r, double t) const {
        const T* x = in[0]->data_ptr<T>();
        const T* g = in[1]->data_ptr<T>();
        const T* s1 = in[2]->data_ptr<T>();                             // H (Adagrad), V (Adam, Momentum)
        const T* s2 = o_ == Optimizer::Adam ? in[3]->data_ptr<T>() : nullptr;  // H (Adam)
        T* x_new = out[0].data_ptr<T>();
        T* s1_new = out[1].data_ptr<T>();
        T* s2_new = o_ == Optimizer::Adam ? out[2].data_ptr<T>() : nullptr;
        const int64_t n = in[0]->num_elements();
        const double adagrad_r = r / (1 + t * decay_);
        const double adam_r = t > 0 ? r * std::sqrt(1 - std::pow(beta_, t)) / (1 - std::pow(alpha_, t)) : r;
        const double momentum_beta = t > 0 ? beta_ : 1.0;
        for (int64_t k = 0; k < n; ++k) {
            const double gr = norm_ * static_cast<double>(x[k]) + static_cast<double>(g[k]);  // regularized gradient
            switch (o_) {
                case Optimizer::Adagrad: {
                    const double h = static_cast<double>(s1[k]) + gr * gr;
                    s1_new[k] = static_cast<T>(h);
                    x_new[k] = static_cast<T>(x[k] - adagrad_r * gr / (std::sqrt(h) + epsilon_));
                    break;
                }
                case Optimizer::Adam: {
                    const double v = alpha_ * s1[k] + (1 - alpha_) * gr;
                    const double h = beta_ * s2[k] + (1 - beta_) * gr * gr;
                    s1_new[k] = static_cast<T>(v);
                    s2_new[k] = static_cast<T>(h);
                    x_new[k] = static_cast<T>((1 - norm_post_) * (x[k] - adam_r * v / (std::sqrt(h) + epsilon_)));
                    break;
                }
                case Optimizer::Momentum: {
                    const double v = alpha_ * s1[k] + momentum_beta * gr;
                    s1_new[k] = static_cast<T>(v);
                    x_new[k] = static_cast<T>(x[k] - r * (nesterov_ ? gr + alpha_ * v : v));
                    break;
                }
            }
        }
    }

    Optimizer o_;
    double norm_ = 0, norm_post_ = 0, decay_ = 0, epsilon_ = 0, alpha_ = 0, beta_ = 0;
    bool nesterov_ = false;
};

void infer_optimizer(InferenceContext& ctx, Optimizer o) {
    const size_t groups = input_groups(o);
    if (ctx.inputs.size() < 2 + groups || (ctx.inputs.size() - 2) % groups != 0) return;
    const size_t n = (ctx.inputs.size() - 2) / groups;
    for (size_t i = 0; i < n; ++i) {
        if (!ctx.has_input(2 + i)) continue;
        const TensorInfo& x = ctx.input(2 + i);
        for (int g = 0; g < output_groups(o); ++g) ctx.set_output(g * n + i, x.dtype, x.shape);
    }
}

OpSchema optimizer_schema(const char* name, Optimizer o) {
    return OpSchema{name, kTraining, 1, 2 + input_groups(o), -1, output_groups(o), -1,
                    [o](InferenceContext& ctx) { infer_optimizer(ctx, o); },
                    [o](const KernelInfo& info) { return std::make_unique<OptimizerKernel>(info.node, o); }};
}

}  // namespace

void register_training_ops(OpTable& table) {
    table.add(optimizer_schema("Adagrad", Optimizer::Adagrad));
    table.add(optimizer_schema("Adam", Optimizer::Adam));
    table.add(optimizer_schema("Momentum", Optimizer::Momentum));
    table.add(OpSchema{"Gradient", kTraining, 1, 1, -1, 1, -1, nullptr, [](const KernelInfo& info) -> std::unique_ptr<OpKernel> {
                           throw UnsupportedOperatorError(
                               "Gradient", "operator Gradient (domain ai.onnx.preview.training) used by node " +
                                               node_label(info.node) +
                                               " is not supported: it needs automatic differentiation of the graph, "
                                               "which PyFlameRT (an inference runtime) does not provide");
                       }});
}

}  // namespace pyflame_rt::ops
