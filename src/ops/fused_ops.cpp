// Internal fused operators the optimizer produces (domain com.pyflame, like ONNX Runtime's
// com.microsoft FusedConv): FusedConv(X, W, [B], [Z]) = activation(Conv(X, W, B) + Z), where
// the residual Z and the activation are each optional. Their reference
// kernels compose the reference kernels of the parts, so the math is defined once; backends
// run them as one kernel (oneDNN: a convolution with an eltwise post-op).
#include <algorithm>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// The activation a fused node applies, as a stand-alone node of the default domain.
Node activation_node(const Node& fused) {
    const std::string op = fused.get_attribute<std::string>("activation", "");
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
          conv_(OpTable::instance().find("Conv")->reference_kernel(conv_info(info))),
          add_(info.node.has_input(3) ? make_add(info) : nullptr),
          activation_(info.node.has_attribute("activation") ? make_activation(info) : nullptr) {}

    void compute(KernelContext& ctx) const override {
        KernelContext conv;
        conv.num_threads = ctx.num_threads;
        conv.inputs.assign(ctx.inputs.begin(), ctx.inputs.begin() + std::min<size_t>(3, ctx.inputs.size()));
        conv.outputs.resize(1);
        conv_->compute(conv);
        Tensor y = std::move(conv.outputs[0]);
        if (add_) y = apply(*add_, {&y, &ctx.input(3)}, ctx.num_threads);
        if (activation_) y = apply(*activation_, {&y}, ctx.num_threads);
        ctx.outputs[0] = std::move(y);
    }

private:
    static Tensor apply(const OpKernel& kernel, std::vector<const Tensor*> inputs, int num_threads) {
        KernelContext step;
        step.num_threads = num_threads;
        step.inputs = std::move(inputs);
        step.outputs.resize(1);
        kernel.compute(step);
        return std::move(step.outputs[0]);
    }

    // The Conv part sees X, W and B only.
    static KernelInfo conv_info(const KernelInfo& info) {
        KernelInfo conv = info;
        if (conv.constant_inputs.size() > 3) conv.constant_inputs.resize(3);
        return conv;
    }

    static std::unique_ptr<OpKernel> make_add(const KernelInfo& info) {
        const Node add("Add", info.node.name() + "_residual", {"y", "z"}, {"out"});
        return OpTable::instance().find("Add")->reference_kernel(KernelInfo{add, 14, {}, {}});
    }

    static std::unique_ptr<OpKernel> make_activation(const KernelInfo& info) {
        const Node act = activation_node(info.node);
        // Opset 10: Clip's bounds are attributes there (from 11 they are inputs).
        return OpTable::instance().find(act.op_type())->reference_kernel(KernelInfo{act, 10, {}, {}});
    }

    std::unique_ptr<OpKernel> conv_, add_, activation_;
};

}  // namespace

void register_fused_ops(OpTable& table) {
    const OpSchema* conv = table.find("Conv");
    table.add(OpSchema{"FusedConv", "com.pyflame", 1, 2, 4, 1, 1, conv ? conv->infer : ShapeInferenceFn{},
                       [](const KernelInfo& info) { return std::make_unique<FusedConvKernel>(info); }});
}

}  // namespace pyflame_rt::ops
