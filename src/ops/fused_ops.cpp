// Internal fused operators the optimizer produces (domain com.pyflame, like ONNX Runtime's
// com.microsoft FusedConv): FusedConv = Conv followed by an activation. Their reference
// kernels compose the reference kernels of the parts, so the math is defined once; backends
// run them as one kernel (oneDNN: a convolution with an eltwise post-op).
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// The activation a fused node applies, as a stand-alone node of the default domain.
Node activation_node(const Node& fused) {
    const std::string op = fused.get_attribute<std::string>("activation");
    const std::vector<double> params = fused.get_attribute<std::vector<double>>("activation_params", {});
    Node act(op, fused.name() + "_activation", {"x"}, {"y"});
    auto param = [&](size_t i, const char* name) {
        if (i >= params.size()) fail_node(fused, "activation " + op + " needs " + std::to_string(i + 1) + " activation_params");
        act.set_attribute(name, params[i]);
    };
    if (op == "LeakyRelu" || op == "Elu") param(0, "alpha");
    else if (op == "HardSigmoid") param(0, "alpha"), param(1, "beta");
    else if (op == "Clip") param(0, "min"), param(1, "max");
    else if (op != "Relu" && op != "Sigmoid" && op != "Tanh" && op != "HardSwish")
        fail_node(fused, "unsupported fused activation '" + op + "'");
    return act;
}

class FusedConvKernel final : public NodeKernel {
public:
    explicit FusedConvKernel(const KernelInfo& info)
        : NodeKernel(info.node),
          conv_(OpTable::instance().find("Conv")->reference_kernel(info)),
          activation_(make_activation(info)) {}

    void compute(KernelContext& ctx) const override {
        conv_->compute(ctx);
        KernelContext act;
        act.num_threads = ctx.num_threads;
        act.inputs = {&ctx.outputs[0]};
        act.outputs.resize(1);
        activation_->compute(act);
        ctx.outputs[0] = std::move(act.outputs[0]);
    }

private:
    static std::unique_ptr<OpKernel> make_activation(const KernelInfo& info) {
        const Node act = activation_node(info.node);
        // Opset 10: Clip's bounds are attributes there (from 11 they are inputs).
        return OpTable::instance().find(act.op_type())->reference_kernel(KernelInfo{act, 10, {}, {}});
    }

    std::unique_ptr<OpKernel> conv_, activation_;
};

}  // namespace

void register_fused_ops(OpTable& table) {
    const OpSchema* conv = table.find("Conv");
    table.add(OpSchema{"FusedConv", "com.pyflame", 1, 2, 3, 1, 1, conv ? conv->infer : ShapeInferenceFn{},
                       [](const KernelInfo& info) { return std::make_unique<FusedConvKernel>(info); }});
}

}  // namespace pyflame_rt::ops
