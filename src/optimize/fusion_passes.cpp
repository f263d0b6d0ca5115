// Level 2: Conv+BatchNormalization folding, MatMul+Add -> Gemm.
#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "ops/op.hpp"
#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"
#include "pyflame_rt/quantization/float16.hpp"

namespace pyflame_rt::optimize {
namespace {

bool is_f32_constant(const GraphUses& uses, const Graph& graph, const std::string& name) {
    return uses.is_constant(name) && graph.get_initializer(name).dtype() == DType::Float32;
}

// A float32 constant, or a half-precision one (FP16/BF16 graphs hold their weights so).
bool is_float_constant(const GraphUses& uses, const Graph& graph, const std::string& name) {
    if (!uses.is_constant(name)) return false;
    const DType d = graph.get_initializer(name).dtype();
    return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16;
}

// `old_node` becomes `replacement` (in its place in the order), and the nodes it absorbed go.
void replace_node(Graph& graph, const Node* old_node, std::shared_ptr<Node> replacement,
                  std::initializer_list<const Node*> also_remove) {
    std::vector<std::shared_ptr<Node>> nodes;
    for (const auto& n : graph.nodes()) {
        if (n.get() == old_node) nodes.push_back(replacement);
        else if (std::find(also_remove.begin(), also_remove.end(), n.get()) == also_remove.end()) nodes.push_back(n);
    }
    graph.set_nodes(std::move(nodes));
}

// Conv(X, W[, B]) -> BatchNormalization(scale, bias, mean, var) becomes one Conv with
// W' = W * s and B' = (B - mean) * s + bias, where s = scale / sqrt(var + epsilon).
class FoldConvBatchNorm : public NodeRewritePass {
public:
    std::string name() const override { return "fold_conv_batchnorm"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& conv,
                     PassResult& r) const override {
        if (conv->op_type() != "Conv" || !conv->domain().empty() || conv->outputs().size() != 1) return false;
        const auto* bn_ptr = sole_consumer(graph, uses, conv->outputs()[0]);
        if (!bn_ptr) return false;
        const Node& bn = *bn_ptr;
        if (bn.op_type() != "BatchNormalization" || bn.inputs().size() != 5 || bn.inputs()[0] != conv->outputs()[0]) return false;
        if (bn.outputs().size() > 1 && !bn.outputs()[1].empty()) return false;  // training outputs
        if (bn.get_attribute<int64_t>("training_mode", 0) != 0) return false;
        const std::string& w_name = conv->inputs().size() > 1 ? conv->inputs()[1] : std::string();
        const bool has_bias = conv->has_input(2);
        bool constant = is_f32_constant(uses, graph, w_name) && (!has_bias || is_f32_constant(uses, graph, conv->inputs()[2]));
        for (size_t i = 1; i < 5; ++i) constant = constant && is_f32_constant(uses, graph, bn.inputs()[i]);
        if (!constant) return false;
        const Tensor& w = graph.get_initializer(w_name);
        const int64_t out_channels = w.ndim() ? w.shape()[0] : 0;
        bool shapes_ok = w.ndim() >= 3;
        for (size_t i = 1; i < 5; ++i) shapes_ok = shapes_ok && graph.get_initializer(bn.inputs()[i]).num_elements() == out_channels;
        if (has_bias) shapes_ok = shapes_ok && graph.get_initializer(conv->inputs()[2]).num_elements() == out_channels;
        if (!shapes_ok) return false;

        const float* scale = graph.get_initializer(bn.inputs()[1]).data_ptr<float>();
        const float* shift = graph.get_initializer(bn.inputs()[2]).data_ptr<float>();
        const float* mean = graph.get_initializer(bn.inputs()[3]).data_ptr<float>();
        const float* var = graph.get_initializer(bn.inputs()[4]).data_ptr<float>();
        const double eps = bn.get_attribute<double>("epsilon", 1e-5);
        Tensor new_w = w.clone();
        Tensor new_b({out_channels}, DType::Float32);
        const int64_t per_channel = w.num_elements() / std::max<int64_t>(out_channels, 1);
        for (int64_t o = 0; o < out_channels; ++o) {
            const double s = scale[o] / std::sqrt(static_cast<double>(var[o]) + eps);
            float* row = new_w.data_ptr<float>() + o * per_channel;
            for (int64_t k = 0; k < per_channel; ++k) row[k] = static_cast<float>(row[k] * s);
            const double b = has_bias ? graph.get_initializer(conv->inputs()[2]).data_ptr<float>()[o] : 0.0;
            new_b.data_ptr<float>()[o] = static_cast<float>((b - mean[o]) * s + shift[o]);
        }
        const std::string w2 = unique_name(graph, w_name + "_bn_folded");
        graph.add_initializer(w2, new_w);
        const std::string b2 = unique_name(graph, conv->name() + "_bias_bn_folded");
        graph.add_initializer(b2, new_b);
        auto fused = std::make_shared<Node>(*conv);
        fused->set_input(1, w2);
        fused->set_input(2, b2);
        fused->set_output(0, bn.outputs()[0]);
        replace_node(graph, conv.get(), fused, {&bn});
        ++r.nodes_fused;
        return true;
    }
};

// MatMul(A[M,K], B[K,N] constant) -> Add(C constant of shape [N] or [1,N]) becomes Gemm(A, B, C).
class MatMulAddToGemm : public NodeRewritePass {
public:
    std::string name() const override { return "matmul_add_to_gemm"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mm,
                     PassResult& r) const override {
        if (mm->op_type() != "MatMul" || !mm->domain().empty() || mm->inputs().size() != 2) return false;
        if (!rank_is(graph, mm->inputs()[0], 2) || !is_f32_constant(uses, graph, mm->inputs()[1])) return false;
        const Tensor& b = graph.get_initializer(mm->inputs()[1]);
        if (b.ndim() != 2) return false;
        const auto* add_ptr = sole_consumer(graph, uses, mm->outputs()[0]);
        if (!add_ptr || add_ptr->op_type() != "Add" || !add_ptr->domain().empty()) return false;
        const Node& add = *add_ptr;
        const std::string& other = add.inputs()[0] == mm->outputs()[0] ? add.inputs()[1] : add.inputs()[0];
        if (!is_f32_constant(uses, graph, other)) return false;
        const Tensor& c = graph.get_initializer(other);
        const int64_t n = b.shape()[1];
        if (!((c.ndim() == 1 && c.shape()[0] == n) || (c.ndim() == 2 && c.shape()[0] == 1 && c.shape()[1] == n))) return false;
        auto gemm = std::make_shared<Node>("Gemm", unique_name(graph, mm->name() + "_gemm"),
                                           std::vector<std::string>{mm->inputs()[0], mm->inputs()[1], other},
                                           std::vector<std::string>{add.outputs()[0]});
        replace_node(graph, mm.get(), gemm, {&add});
        ++r.nodes_fused;
        return true;
    }

private:
    static bool rank_is(const Graph& graph, const std::string& name, size_t rank) {
        for (const auto& in : graph.inputs())
            if (in.name == name) return in.rank_known && in.shape.size() == rank && in.kind == ValueKind::Tensor;
        auto it = graph.value_infos().find(name);
        return it != graph.value_infos().end() && it->second.rank_known && it->second.shape.size() == rank &&
               it->second.kind == ValueKind::Tensor;
    }
};

bool is_conv(const Node& n) { return n.op_type() == "Conv" && n.domain().empty() && n.outputs().size() == 1; }
bool is_fused_conv(const Node& n) { return n.op_type() == "FusedConv" && n.domain() == "com.pyflame"; }

// A FusedConv node replacing `conv` (a Conv or a FusedConv), writing `output`.
std::shared_ptr<Node> fused_conv_from(const Node& conv, const std::string& output) {
    auto fused = std::make_shared<Node>("FusedConv", conv.name(), conv.inputs(), std::vector<std::string>{output});
    for (const auto& [k, v] : conv.attributes()) fused->set_attribute(k, v);
    fused->set_domain("com.pyflame");
    return fused;
}

size_t rank_of(const Graph& graph, const std::string& name) {
    for (const auto& in : graph.inputs())
        if (in.name == name) return in.rank_known ? in.shape.size() : 0;
    auto it = graph.value_infos().find(name);
    return it != graph.value_infos().end() && it->second.rank_known ? it->second.shape.size() : 0;
}

// Conv -> Add(residual) becomes FusedConv(X, W, B, Z): the residual is summed into the
// convolution's output as it is written (ResNet's shortcut connections).
class FuseConvAdd : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_conv_add"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& conv,
                     PassResult& r) const override {
        if (!is_conv(*conv)) return false;
        const auto* add_ptr = sole_consumer(graph, uses, conv->outputs()[0]);
        if (!add_ptr || add_ptr->op_type() != "Add" || !add_ptr->domain().empty()) return false;
        const Node& add = *add_ptr;
        if (add.inputs().size() != 2 || add.inputs()[0] == add.inputs()[1]) return false;
        const std::string& residual = add.inputs()[0] == conv->outputs()[0] ? add.inputs()[1] : add.inputs()[0];
        // Same rank as the output: the residual cannot broadcast the result to a bigger shape.
        const size_t rank = rank_of(graph, conv->outputs()[0]);
        if (rank == 0 || rank_of(graph, residual) != rank) return false;
        auto fused = fused_conv_from(*conv, add.outputs()[0]);
        fused->set_input(3, residual);  // an absent bias stays an empty input name
        replace_node(graph, conv.get(), fused, {&add});
        graph.opset_imports().emplace("com.pyflame", 1);
        ++r.nodes_fused;
        return true;
    }
};

// Clip's bounds: attributes before opset 11, constant inputs from 11; absent = unbounded.
bool clip_bounds(const Graph& graph, const GraphUses& uses, const Node& clip, std::vector<double>& params) {
    double lo = clip.get_attribute<double>("min", -3.4028234663852886e38);
    double hi = clip.get_attribute<double>("max", 3.4028234663852886e38);
    for (size_t i = 1; i < 3; ++i) {
        if (!clip.has_input(i)) continue;
        if (!is_f32_constant(uses, graph, clip.inputs()[i])) return false;
        const Tensor& t = graph.get_initializer(clip.inputs()[i]);
        if (t.num_elements() != 1) return false;
        (i == 1 ? lo : hi) = t.data_ptr<float>()[0];
    }
    params = {lo, hi};
    return true;
}

// Whether `act` is an activation the fused ops apply (their `activation` attribute is its op
// type), with its `activation_params`.
bool fusable_activation(const Graph& graph, const GraphUses& uses, const Node& act, std::vector<double>& params) {
    const std::string& op = act.op_type();
    if (!act.domain().empty() || act.inputs().empty()) return false;
    if (op == "LeakyRelu") params = {act.get_attribute<double>("alpha", 0.01)};
    else if (op == "Elu") params = {act.get_attribute<double>("alpha", 1.0)};
    else if (op == "HardSigmoid") params = {act.get_attribute<double>("alpha", 0.2), act.get_attribute<double>("beta", 0.5)};
    else if (op == "Clip") return clip_bounds(graph, uses, act, params);
    else if (op == "Gelu") return act.get_attribute<std::string>("approximate", "none") == "none";
    else if (op == "Swish") params = {act.get_attribute<double>("alpha", 1.0)};
    return op == "Swish" || op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish" || op == "LeakyRelu" || op == "Elu" ||
           op == "HardSigmoid";
}

// Conv (or a FusedConv without one) -> activation (Relu, LeakyRelu, Sigmoid, Tanh,
// HardSigmoid, HardSwish, Elu, Gelu, Clip with constant bounds) becomes FusedConv (com.pyflame):
// one kernel, one pass over the output.
class FuseConvActivation : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_conv_activation"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& conv,
                     PassResult& r) const override {
        if (!is_conv(*conv) && !(is_fused_conv(*conv) && !conv->has_attribute("activation"))) return false;
        const auto* act_ptr = sole_consumer(graph, uses, conv->outputs()[0]);
        if (!act_ptr || !act_ptr->domain().empty() || act_ptr->inputs()[0] != conv->outputs()[0]) return false;
        const Node& act = *act_ptr;
        std::vector<double> params;
        if (!fusable_activation(graph, uses, act, params)) return false;
        const std::string& op = act.op_type();
        auto fused = fused_conv_from(*conv, act.outputs()[0]);
        fused->set_attribute("activation", op);
        if (!params.empty()) fused->set_attribute("activation_params", params);
        replace_node(graph, conv.get(), fused, {&act});
        graph.opset_imports().emplace("com.pyflame", 1);
        ++r.nodes_fused;
        return true;
    }

};

// MobileNetV2's inverted residual block: a 1x1 convolution widening the channels, a depthwise
// 3x3 one, and a 1x1 one narrowing them again (+ a residual) becomes one InvertedResidual node
// (com.pyflame), which a backend runs in row slabs: the wide middle tensors, 6x the block's input
// and output, then never leave the cache. Matched where the CPU kernel runs it: float32
// constant weights, 16k middle channels, depthwise stride 1 or 2, activations Relu, Clip or none.
class FuseInvertedResidual : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_inverted_residual"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& expand,
                     PassResult& r) const override {
        if (!plain_conv(graph, uses, *expand, 1) || expand->has_input(3)) return false;
        const Node* depthwise = sole_consumer(graph, uses, expand->outputs()[0]);
        if (!depthwise || !plain_conv(graph, uses, *depthwise, 3) || depthwise->has_input(3) ||
            depthwise->inputs()[0] != expand->outputs()[0])
            return false;
        const Node* project = sole_consumer(graph, uses, depthwise->outputs()[0]);
        if (!project || !plain_conv(graph, uses, *project, 1) || project->inputs()[0] != depthwise->outputs()[0]) return false;
        const int64_t middle = graph.get_initializer(expand->inputs()[1]).shape()[0];
        const std::vector<int64_t> dw_shape = graph.get_initializer(depthwise->inputs()[1]).shape();
        if (middle % 16 != 0 || dw_shape[0] != middle || dw_shape[1] != 1 ||
            depthwise->get_attribute<int64_t>("group", 1) != middle ||
            graph.get_initializer(project->inputs()[1]).shape()[1] != middle)
            return false;
        const std::vector<int64_t> strides = depthwise->get_attribute<std::vector<int64_t>>("strides", {1, 1});
        if (strides.size() != 2 || strides[0] != strides[1] || (strides[0] != 1 && strides[0] != 2)) return false;

        auto block = std::make_shared<Node>("InvertedResidual", unique_name(graph, expand->name() + "/inverted_residual"),
                                            std::vector<std::string>{expand->inputs()[0]}, project->outputs());
        block->set_domain("com.pyflame");
        const Node* parts[] = {expand.get(), depthwise, project};
        for (int p = 0; p < ops::kInvertedResidualParts; ++p) {
            const std::vector<std::string>& in = parts[p]->inputs();
            block->set_input(1 + 2 * p, in[1]);
            block->set_input(2 + 2 * p, in.size() > 2 ? in[2] : std::string());
            for (const auto& [k, v] : parts[p]->attributes())
                block->set_attribute(std::string(ops::kInvertedResidualPartNames[p]) + "_" + k, v);
        }
        if (project->has_input(3)) block->set_input(7, project->inputs()[3]);
        replace_node(graph, project, block, {expand.get(), depthwise});
        graph.opset_imports().emplace("com.pyflame", 1);
        r.nodes_fused += 2;
        return true;
    }

private:
    // A 2-D Conv/FusedConv with a k x k window on float32 constant weights (and bias), no
    // dilation or automatic pads, pads of k / 2 (1x1: none, at stride 1), and an activation
    // the kernel applies (Relu, Clip or none).
    static bool plain_conv(const Graph& graph, const GraphUses& uses, const Node& conv, int64_t k) {
        if ((!is_conv(conv) && !is_fused_conv(conv)) || conv.inputs().size() < 2 ||
            !is_f32_constant(uses, graph, conv.inputs()[1]) ||
            (conv.has_input(2) && !is_f32_constant(uses, graph, conv.inputs()[2])))
            return false;
        const Tensor& w = graph.get_initializer(conv.inputs()[1]);
        if (w.ndim() != 4 || w.shape()[2] != k || w.shape()[3] != k) return false;
        if (conv.has_input(2) && graph.get_initializer(conv.inputs()[2]).shape() != std::vector<int64_t>{w.shape()[0]})
            return false;
        if (conv.get_attribute<std::string>("auto_pad", "NOTSET") != "NOTSET" ||
            conv.get_attribute<std::vector<int64_t>>("dilations", {1, 1}) != std::vector<int64_t>{1, 1} ||
            conv.get_attribute<std::vector<int64_t>>("pads", {0, 0, 0, 0}) != std::vector<int64_t>(4, k / 2))
            return false;
        if (k == 1 && (conv.get_attribute<int64_t>("group", 1) != 1 ||
                       conv.get_attribute<std::vector<int64_t>>("strides", {1, 1}) != std::vector<int64_t>{1, 1}))
            return false;
        const std::string act = conv.get_attribute<std::string>("activation", "");
        return act.empty() || act == "Relu" ||
               (act == "Clip" && conv.get_attribute<std::vector<double>>("activation_params", {}).size() == 2);
    }
};

// x * 0.5 * (1 + erf(x / sqrt(2))) as torch exports it — Div(x, sqrt 2) -> Erf -> Add(1) ->
// Mul(x) -> Mul(0.5) — becomes one Gelu node (one vectorized pass instead of five).
class FuseGelu : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_gelu"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& erf,
                     PassResult& r) const override {
        if (erf->op_type() != "Erf" || !erf->domain().empty() || erf->inputs().size() != 1) return false;
        const Node* div = producer_of(graph, erf->inputs()[0]);
        if (!div || div->op_type() != "Div" || !div->domain().empty() || uses.uses(erf->inputs()[0]) != 1 ||
            !uses.is_internal(erf->inputs()[0]) || !is_scalar(graph, uses, div->inputs()[1], 1.4142135623730951))
            return false;
        const std::string& x = div->inputs()[0];
        const auto* add = sole_consumer(graph, uses, erf->outputs()[0]);
        if (!add || add->op_type() != "Add" || !is_scalar(graph, uses, other_input(*add, erf->outputs()[0]), 1.0))
            return false;
        const auto* mul = sole_consumer(graph, uses, add->outputs()[0]);
        if (!mul || mul->op_type() != "Mul" || other_input(*mul, add->outputs()[0]) != x) return false;
        const auto* half = sole_consumer(graph, uses, mul->outputs()[0]);
        if (!half || half->op_type() != "Mul" || !is_scalar(graph, uses, other_input(*half, mul->outputs()[0]), 0.5))
            return false;
        auto gelu = std::make_shared<Node>("Gelu", unique_name(graph, erf->name() + "_gelu"), std::vector<std::string>{x},
                                           half->outputs());
        replace_node(graph, half, gelu, {div, erf.get(), add, mul});
        r.nodes_fused += 4;
        return true;
    }

private:
    static std::string other_input(const Node& binary, const std::string& one) {
        if (binary.inputs().size() != 2 || !binary.domain().empty()) return {};
        return binary.inputs()[0] == one ? binary.inputs()[1] : binary.inputs()[0];
    }
    static bool is_scalar(const Graph& graph, const GraphUses& uses, const std::string& name, double value) {
        if (!is_float_constant(uses, graph, name)) return false;
        const Tensor& t = graph.get_initializer(name);
        if (t.num_elements() != 1) return false;
        if (t.dtype() == DType::Float32) return std::fabs(t.data_ptr<float>()[0] - value) < 1e-5 * std::fabs(value);
        // Half precision: the constant is `value` rounded to that type.
        const uint16_t bits = *static_cast<const uint16_t*>(t.data());
        const float f = static_cast<float>(value);
        return bits == (t.dtype() == DType::BFloat16 ? quantization::BFloat16::from_float(f).bits
                                                     : quantization::Float16::from_float(f).bits);
    }
};

// x * Sigmoid(x) — SiLU as torch exports it (EfficientNet, YOLO, ...) — becomes one Swish node
// (alpha 1): one pass instead of two, and an activation Conv/Gemm/MatMul fusions then take in.
class FuseSilu : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_silu"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& sigmoid,
                     PassResult& r) const override {
        if (sigmoid->op_type() != "Sigmoid" || !sigmoid->domain().empty() || sigmoid->inputs().size() != 1 ||
            sigmoid->outputs().size() != 1)
            return false;
        const std::string& x = sigmoid->inputs()[0];
        const std::string& s = sigmoid->outputs()[0];
        const auto* mul = sole_consumer(graph, uses, s);
        if (!mul || mul->op_type() != "Mul" || !mul->domain().empty() || mul->inputs().size() != 2) return false;
        const auto& in = mul->inputs();
        if (!((in[0] == x && in[1] == s) || (in[0] == s && in[1] == x))) return false;
        auto swish = std::make_shared<Node>("Swish", unique_name(graph, sigmoid->name() + "_swish"),
                                            std::vector<std::string>{x}, mul->outputs());
        swish->set_attribute("alpha", 1.0);
        replace_node(graph, mul, swish, {sigmoid.get()});
        ++r.nodes_fused;
        return true;
    }
};

// MatMul(A[..., K], B[K, N] constant) -> Add(bias [N] constant) becomes FusedMatMul(A, B, bias)
// where Gemm does not apply: A of rank 3 and more (transformers' [batch, seq, hidden]
// projections). The bias is added as the product is written.
class FuseMatMulBias : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_matmul_bias"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mm,
                     PassResult& r) const override {
        if (mm->op_type() != "MatMul" || !mm->domain().empty() || mm->inputs().size() != 2) return false;
        if (!is_float_constant(uses, graph, mm->inputs()[1]) || rank_of(graph, mm->inputs()[0]) < 2) return false;
        const Tensor& b = graph.get_initializer(mm->inputs()[1]);
        if (b.ndim() != 2) return false;
        const auto* add_ptr = sole_consumer(graph, uses, mm->outputs()[0]);
        if (!add_ptr || add_ptr->op_type() != "Add" || !add_ptr->domain().empty()) return false;
        const Node& add = *add_ptr;
        if (add.inputs().size() != 2 || add.inputs()[0] == add.inputs()[1]) return false;
        const std::string& bias = add.inputs()[0] == mm->outputs()[0] ? add.inputs()[1] : add.inputs()[0];
        if (!is_float_constant(uses, graph, bias)) return false;
        const Tensor& c = graph.get_initializer(bias);
        if (c.dtype() != b.dtype() || c.ndim() != 1 || c.shape()[0] != b.shape()[1]) return false;
        auto fused = std::make_shared<Node>("FusedMatMul", mm->name(),
                                            std::vector<std::string>{mm->inputs()[0], mm->inputs()[1], bias},
                                            std::vector<std::string>{add.outputs()[0]});
        fused->set_domain("com.pyflame");
        replace_node(graph, mm.get(), fused, {&add});
        graph.opset_imports().emplace("com.pyflame", 1);
        ++r.nodes_fused;
        return true;
    }
};

// Gemm, MatMul or FusedMatMul (without an activation) -> activation becomes FusedGemm or
// FusedMatMul applying it as the product is written.
class FuseMatMulActivation : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_matmul_activation"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mm,
                     PassResult& r) const override {
        const bool gemm = mm->op_type() == "Gemm" && mm->domain().empty();
        const bool matmul = (mm->op_type() == "MatMul" && mm->domain().empty()) ||
                            (mm->op_type() == "FusedMatMul" && mm->domain() == "com.pyflame" &&
                             !mm->has_attribute("activation"));
        if ((!gemm && !matmul) || mm->outputs().size() != 1) return false;
        const auto* act_ptr = sole_consumer(graph, uses, mm->outputs()[0]);
        if (!act_ptr || act_ptr->inputs()[0] != mm->outputs()[0]) return false;
        const Node& act = *act_ptr;
        std::vector<double> params;
        if (!fusable_activation(graph, uses, act, params)) return false;
        auto fused = std::make_shared<Node>(gemm ? "FusedGemm" : "FusedMatMul", mm->name(), mm->inputs(),
                                            std::vector<std::string>{act.outputs()[0]});
        for (const auto& [k, v] : mm->attributes()) fused->set_attribute(k, v);
        fused->set_domain("com.pyflame");
        fused->set_attribute("activation", act.op_type());
        if (!params.empty()) fused->set_attribute("activation_params", params);
        replace_node(graph, mm.get(), fused, {&act});
        graph.opset_imports().emplace("com.pyflame", 1);
        ++r.nodes_fused;
        return true;
    }
};

}  // namespace

void add_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    passes.push_back(std::make_unique<FoldConvBatchNorm>());
    passes.push_back(std::make_unique<MatMulAddToGemm>());
    passes.push_back(std::make_unique<FuseConvAdd>());         // after Conv+BN folding
    passes.push_back(std::make_unique<FuseConvActivation>());  // after the residual add
    passes.push_back(std::make_unique<FuseInvertedResidual>());  // after both
    passes.push_back(std::make_unique<FuseGelu>());
    passes.push_back(std::make_unique<FuseSilu>());
    passes.push_back(std::make_unique<FuseMatMulBias>());        // after MatMul+Add to Gemm (rank 2)
    passes.push_back(std::make_unique<FuseMatMulActivation>());  // after Gelu's pattern became one node
}

}  // namespace pyflame_rt::optimize
