// Internal fused operators the optimizer produces (domain com.pyflame, like ONNX Runtime's
// com.microsoft FusedConv / FusedGemm / FusedMatMul), each with an optional `activation`
// (+ `activation_params`):
//   FusedConv(X, W, [B], [Z]) = activation(Conv(X, W, B) + Z)      (Z: a residual)
//   FusedMatMul(A, B, [bias])  = activation(MatMul(op(A), op(B)) + bias)   (bias: [N], any rank
//                                of A; op: the last two axes swapped when transA / transB is 1)
//   FusedGemm(A, B, [C])       = activation(Gemm(A, B, C))         (Gemm's attributes)
//   InvertedResidual(X, W0, [B0], W1, [B1], W2, [B2], [Z]) = three FusedConvs in a row:
//       project(depthwise(expand(X))) (+ Z), each part with its own attributes under a prefix
//       (expand_activation, depthwise_strides, project_activation, ...). MobileNetV2's block:
//       a backend runs it in row slabs, so the wide middle tensors never leave the cache.
// Their reference kernels compose the reference kernels of the parts, so the math is defined
// once; backends run them as one kernel (oneDNN: post-ops).
#include <algorithm>

#include "ops/indexing_common.hpp"
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
    if (op == "LeakyRelu" || op == "Elu" || op == "Swish") param(0, "alpha");
    else if (op == "HardSigmoid") param(0, "alpha"), param(1, "beta");
    else if (op == "Clip") param(0, "min"), param(1, "max");
    else if (op != "Relu" && op != "Sigmoid" && op != "Tanh" && op != "HardSwish" && op != "Gelu")
        fail_node(fused, "unsupported fused activation '" + op + "'");
    return act;
}

// FusedMatMul's transA / transB (Gemm's kernel reads its own): 0 or 1.
bool transposed_operand(const Node& node, const char* attribute) {
    if (node.op_type() != "FusedMatMul") return false;
    const int64_t value = node.get_attribute<int64_t>(attribute, 0);
    if (value != 0 && value != 1) fail_node(node, std::string(attribute) + " must be 0 or 1, got " + std::to_string(value));
    return value == 1;
}

[[noreturn]] void fail_transposed_vector(const Node& node, const char* name, const std::string& shape) {
    fail_node(node, std::string("trans") + name + " needs input " + name + " of rank >= 2, got shape " + shape);
}

// `t` with its last two axes swapped (MatMul's operand `name` under trans`name`).
Tensor swap_last_two_axes(const Tensor& t, const Node& node, const char* name, int num_threads) {
    if (t.ndim() < 2) fail_transposed_vector(node, name, shape_to_string(t.shape()));
    std::vector<int64_t> perm(t.ndim());
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    return permute_axes(t, t.shape(), perm, num_threads);
}

// The main op on the first `main_inputs` inputs (FusedMatMul's operands transposed first when
// asked), then + input `add_input` (if given), then the activation.
class FusedKernel final : public NodeKernel {
public:
    FusedKernel(const KernelInfo& info, const std::string& main_op, size_t main_inputs, size_t add_input)
        : NodeKernel(info.node),
          trans_{transposed_operand(info.node, "transA"), transposed_operand(info.node, "transB")},
          main_inputs_(main_inputs),
          add_input_(add_input),
          main_(OpTable::instance().find(main_op)->reference_kernel(main_info(info, main_inputs, trans_))),
          add_(info.node.has_input(add_input) ? make_add(info) : nullptr),
          activation_(info.node.has_attribute("activation") ? make_activation(info) : nullptr) {}

    void compute(KernelContext& ctx) const override {
        KernelContext main;
        main.num_threads = ctx.num_threads;
        main.inputs.assign(ctx.inputs.begin(), ctx.inputs.begin() + std::min(main_inputs_, ctx.inputs.size()));
        Tensor transposed[2];
        for (size_t i = 0; i < 2; ++i) {
            if (!trans_[i] || i >= main.inputs.size() || !main.inputs[i]) continue;
            transposed[i] = swap_last_two_axes(*main.inputs[i], node_, i == 0 ? "A" : "B", ctx.num_threads);
            main.inputs[i] = &transposed[i];
        }
        main.outputs.resize(1);
        main_->compute(main);
        Tensor y = std::move(main.outputs[0]);
        if (add_) y = apply(*add_, {&y, &ctx.input(add_input_)}, ctx.num_threads);
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

    // The main op sees its own inputs (it ignores the activation's attributes); a transposed
    // constant is not its operand's value.
    static KernelInfo main_info(const KernelInfo& info, size_t inputs, const bool (&trans)[2]) {
        KernelInfo main = info;
        if (main.constant_inputs.size() > inputs) main.constant_inputs.resize(inputs);
        for (size_t i = 0; i < 2 && i < main.constant_inputs.size(); ++i)
            if (trans[i]) main.constant_inputs[i] = nullptr;
        return main;
    }

    static std::unique_ptr<OpKernel> make_add(const KernelInfo& info) {
        const Node add("Add", info.node.name() + "_add", {"y", "z"}, {"out"});
        return OpTable::instance().find("Add")->reference_kernel(KernelInfo{add, 14, {}, {}});
    }

    static std::unique_ptr<OpKernel> make_activation(const KernelInfo& info) {
        const Node act = activation_node(info.node);
        // Opset 10: Clip's bounds are attributes there (from 11 they are inputs).
        return OpTable::instance().find(act.op_type())->reference_kernel(KernelInfo{act, 10, {}, {}});
    }

    bool trans_[2];
    size_t main_inputs_, add_input_;
    std::unique_ptr<OpKernel> main_, add_, activation_;
};

// The three FusedConv parts, each on the previous one's output.
class InvertedResidualKernel final : public NodeKernel {
public:
    explicit InvertedResidualKernel(const KernelInfo& info) : NodeKernel(info.node) {
        const OpSchema* fused_conv = OpTable::instance().find("FusedConv", "com.pyflame");
        for (int p = 0; p < kInvertedResidualParts; ++p) {
            parts_[p] = std::make_unique<Node>(inverted_residual_part(info.node, p));
            std::vector<const Tensor*> constants{nullptr, info.constant_input(1 + 2 * p), info.constant_input(2 + 2 * p)};
            if (p == 2) constants.push_back(info.constant_input(7));
            kernels_[p] = fused_conv->reference_kernel(KernelInfo{*parts_[p], info.opset, constants});
        }
    }

    void compute(KernelContext& ctx) const override {
        Tensor value;
        for (int p = 0; p < kInvertedResidualParts; ++p) {
            KernelContext step;
            step.num_threads = ctx.num_threads;
            step.inputs = {p == 0 ? &ctx.input(0) : &value, &ctx.input(1 + 2 * p),
                           ctx.has_input(2 + 2 * p) ? &ctx.input(2 + 2 * p) : nullptr};
            if (p == 2 && ctx.has_input(7)) step.inputs.push_back(&ctx.input(7));
            step.outputs.resize(1);
            kernels_[p]->compute(step);
            value = std::move(step.outputs[0]);
        }
        ctx.outputs[0] = std::move(value);
    }

private:
    std::unique_ptr<Node> parts_[kInvertedResidualParts];  // the kernels hold references to them
    std::unique_ptr<OpKernel> kernels_[kInvertedResidualParts];
};

// Conv's shape inference through the three parts.
ShapeInferenceFn inverted_residual_infer(ShapeInferenceFn conv_infer) {
    return [conv_infer](InferenceContext& ctx) {
        std::optional<TensorInfo> value = ctx.inputs.empty() ? std::nullopt : ctx.inputs[0];
        for (int p = 0; p < kInvertedResidualParts; ++p) {
            const Node part = inverted_residual_part(ctx.node, p);
            auto input = [&](size_t i) { return i < ctx.inputs.size() ? ctx.inputs[i] : std::nullopt; };
            InferenceContext step{part, ctx.opset, {value, input(1 + 2 * p), input(2 + 2 * p)},
                                  {nullptr, ctx.constant(1 + 2 * p), ctx.constant(2 + 2 * p)}, {}};
            conv_infer(step);
            value = step.outputs.empty() ? std::nullopt : step.outputs[0];
            if (!value) return;
        }
        ctx.outputs = {value};
    };
}

}  // namespace

const char* const kInvertedResidualPartNames[kInvertedResidualParts] = {"expand", "depthwise", "project"};

Node inverted_residual_part(const Node& node, int part) {
    const std::vector<std::string>& in = node.inputs();
    auto input = [&](size_t i) { return i < in.size() ? in[i] : std::string(); };
    std::vector<std::string> inputs{part == 0 ? input(0) : "x", input(1 + 2 * part), input(2 + 2 * part)};
    if (part == 2 && !input(7).empty()) inputs.push_back(input(7));
    const std::string part_name = kInvertedResidualPartNames[part], prefix = part_name + "_";
    Node conv("FusedConv", node.name() + "/" + part_name, inputs, {"y"});
    conv.set_domain("com.pyflame");
    for (const auto& [name, value] : node.attributes())
        if (name.compare(0, prefix.size(), prefix) == 0) conv.set_attribute(name.substr(prefix.size()), value);
    return conv;
}

void register_fused_ops(OpTable& table) {
    auto fused = [&](const char* name, const char* main_op, int min_inputs, int max_inputs, size_t main_inputs,
                     size_t add_input, ShapeInferenceFn infer) {
        const std::string op = main_op;
        table.add(OpSchema{name, "com.pyflame", 1, min_inputs, max_inputs, 1, 1, std::move(infer),
                           [op, main_inputs, add_input](const KernelInfo& info) {
                               return std::make_unique<FusedKernel>(info, op, main_inputs, add_input);
                           }});
    };
    const OpSchema* conv = table.find("Conv");
    const OpSchema* matmul = table.find("MatMul");
    const OpSchema* gemm = table.find("Gemm");
    fused("FusedConv", "Conv", 2, 4, 3, 3, conv ? conv->infer : ShapeInferenceFn{});
    // MatMul's inference on op(A) and op(B); the bias broadcasts along the last axis.
    ShapeInferenceFn matmul_infer;
    if (matmul && matmul->infer)
        matmul_infer = [infer = matmul->infer](InferenceContext& ctx) {
            InferenceContext mm{ctx.node, ctx.opset, {ctx.inputs.begin(), ctx.inputs.begin() + std::min<size_t>(2, ctx.inputs.size())},
                                {ctx.constant_inputs.begin(), ctx.constant_inputs.begin() + std::min<size_t>(2, ctx.constant_inputs.size())},
                                std::move(ctx.outputs)};
            for (size_t i = 0; i < mm.inputs.size(); ++i) {
                const char* name = i == 0 ? "A" : "B";
                // An empty shape: rank unknown (MatMul's inference reads it so too).
                if (!transposed_operand(ctx.node, i == 0 ? "transA" : "transB") || !mm.inputs[i] ||
                    mm.inputs[i]->shape.empty())
                    continue;
                Shape& shape = mm.inputs[i]->shape;
                if (shape.size() < 2) fail_transposed_vector(ctx.node, name, shape_to_string(shape));
                std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
                if (i < mm.constant_inputs.size()) mm.constant_inputs[i] = nullptr;  // its value is not op(value)
            }
            infer(mm);
            ctx.outputs = std::move(mm.outputs);
        };
    fused("FusedMatMul", "MatMul", 2, 3, 2, 2, matmul_infer);
    fused("FusedGemm", "Gemm", 2, 3, 3, 99, gemm ? gemm->infer : ShapeInferenceFn{});
    table.add(OpSchema{"InvertedResidual", "com.pyflame", 1, 6, 8, 1, 1,
                       conv && conv->infer ? inverted_residual_infer(conv->infer) : ShapeInferenceFn{},
                       [](const KernelInfo& info) { return std::make_unique<InvertedResidualKernel>(info); }});
}

}  // namespace pyflame_rt::ops
