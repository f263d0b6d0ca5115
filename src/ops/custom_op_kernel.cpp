#include "ops/custom_op_kernel.hpp"

#include "pyflame_rt/registry.hpp"

namespace pyflame_rt::ops {
namespace {

std::any to_any(const AttributeValue& value) {
    return std::visit([](const auto& v) -> std::any { return v; }, value);
}

// Runs a function of the public OperatorRegistry as a node. The function is looked up once,
// at session creation, so re-registering an op affects only sessions created afterwards.
class CustomOpKernel : public OpKernel {
public:
    explicit CustomOpKernel(const Node& node)
        : node_name_(node.name()), func_(OperatorRegistry::instance().get(node.op_type())) {
        if (node.outputs().size() != 1)
            throw ValidationError("node " + node_label(node) + ": custom operators have exactly one output");
        for (const auto& [k, v] : node.attributes()) attributes_[k] = to_any(v);
    }

    void compute(KernelContext& ctx) const override {
        std::vector<Tensor> inputs;
        inputs.reserve(ctx.inputs.size());
        for (const Tensor* t : ctx.inputs) inputs.push_back(t ? *t : Tensor());
        ctx.outputs[0] = func_(inputs, attributes_);
    }

private:
    std::string node_name_;
    OperatorRegistry::OpFunction func_;
    std::unordered_map<std::string, std::any> attributes_;
};

}  // namespace

std::unique_ptr<OpKernel> make_custom_op_kernel(const KernelInfo& info) { return std::make_unique<CustomOpKernel>(info.node); }

}  // namespace pyflame_rt::ops
