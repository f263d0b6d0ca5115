// Level 2, quantized graphs: the ONNX QDQ and dynamic-quantization forms become int8 nodes.
//   fuse_qdq_conv_matmul: DequantizeLinear(x), DequantizeLinear(w constant) [, bias] -> Conv,
//     MatMul or Gemm [-> Relu/Clip after Conv] -> QuantizeLinear becomes QLinearConv /
//     QLinearMatMul / com.pyflame QGemm (or com.pyflame FusedQLinearConv with the activation):
//     int8 in, int8 out, requantized in the kernel, so chains of quantized ops stay in int8; a
//     MatMul/Gemm with no QuantizeLinear after it becomes com.pyflame MatMulIntegerToFloat
//     (int8 in, float32 out; fuse_matmul_integer_to_float_bias then takes in a following bias Add).
//   fuse_qdq_add: DequantizeLinear(a), DequantizeLinear(b) -> Add -> QuantizeLinear becomes
//     com.pyflame QLinearAdd (ResNet's quantized shortcut additions).
//   fuse_qlinearconv_add: QLinearConv read only by a QLinearAdd becomes com.pyflame
//     QLinearConvAdd (the residual addition inside the convolution's requantization).
//   fuse_qdq_maxpool: DequantizeLinear -> MaxPool -> QuantizeLinear with equal parameters becomes
//     MaxPool on the int8 values (exact).
//   fuse_dynamic_quantize_matmul: DynamicQuantizeLinear -> MatMulInteger (constant B) -> Cast ->
//     Mul(a_scale * b_scale) [-> Add(bias)] becomes com.pyflame DynamicQuantizeMatMul.
// A QDQ pair around any other op stays as it is (the reference semantics of the parts).
// These run before level 1's constant folding, which would otherwise turn the weights'
// DequantizeLinear into float initializers and hide the pattern.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_set>

#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

bool is_default(const Node& n) { return n.domain().empty() || n.domain() == "ai.onnx"; }

const Tensor* constant(const Graph& graph, const GraphUses& uses, const std::string& name) {
    return uses.is_constant(name) ? &graph.get_initializer(name) : nullptr;
}

bool is_8bit(DType d) { return d == DType::Int8 || d == DType::UInt8; }

// A per-tensor or per-axis DequantizeLinear / QuantizeLinear with constant parameters.
struct QuantParams {
    const Node* node = nullptr;
    std::string data, scale, zero_point;  // zero_point may be empty
    const Tensor* scale_value = nullptr;
    const Tensor* zp_value = nullptr;
    int64_t axis = 1;
};

std::optional<QuantParams> quant_params(const Graph& graph, const GraphUses& uses, const Node& n, const char* op) {
    if (n.op_type() != op || !is_default(n) || n.inputs().size() < 2 || n.outputs().size() != 1) return std::nullopt;
    if (n.get_attribute<int64_t>("block_size", 0) != 0 || n.has_attribute("output_dtype") || n.has_attribute("precision"))
        return std::nullopt;
    QuantParams p;
    p.node = &n;
    p.data = n.inputs()[0];
    p.scale = n.inputs()[1];
    p.zero_point = n.has_input(2) ? n.inputs()[2] : std::string();
    p.scale_value = constant(graph, uses, p.scale);
    if (!p.scale_value || p.scale_value->dtype() != DType::Float32) return std::nullopt;
    if (!p.zero_point.empty()) {
        p.zp_value = constant(graph, uses, p.zero_point);
        // int32 zero points only come with int32 data (a quantized bias); callers check the type.
        if (!p.zp_value || (!is_8bit(p.zp_value->dtype()) && p.zp_value->dtype() != DType::Int32) ||
            p.zp_value->num_elements() != p.scale_value->num_elements())
            return std::nullopt;
    }
    p.axis = n.get_attribute<int64_t>("axis", 1);
    return p;
}

bool per_tensor(const QuantParams& p) { return p.scale_value->num_elements() == 1 && p.scale_value->ndim() <= 1; }

// The DequantizeLinear producing `value`, per tensor with an 8-bit zero point (an activation).
std::optional<QuantParams> activation_dequantize(const Graph& graph, const GraphUses& uses, const std::string& value) {
    const auto* n = producer_of(graph, value);
    if (!n) return std::nullopt;
    auto p = quant_params(graph, uses, *n, "DequantizeLinear");
    if (!p || !per_tensor(*p) || !p->zp_value || !is_8bit(p->zp_value->dtype())) return std::nullopt;
    return p;
}

std::optional<QuantParams> output_quantize(const Graph& graph, const GraphUses& uses, const Node& n) {
    auto p = quant_params(graph, uses, n, "QuantizeLinear");
    if (!p || !per_tensor(*p) || !p->zp_value || !is_8bit(p->zp_value->dtype())) return std::nullopt;
    return p;
}

void replace_nodes(Graph& graph, const Node* at, std::shared_ptr<Node> replacement,
                   const std::unordered_set<const Node*>& removed) {
    std::vector<std::shared_ptr<Node>> nodes;
    for (const auto& n : graph.nodes()) {
        if (n.get() == at) nodes.push_back(replacement);
        else if (!removed.count(n.get())) nodes.push_back(n);
    }
    graph.set_nodes(std::move(nodes));
}

// Clip's constant bounds (attributes before opset 11, inputs from 11); nullopt when not constant.
std::optional<std::vector<double>> clip_bounds(const Graph& graph, const GraphUses& uses, const Node& clip) {
    double lo = clip.get_attribute<double>("min", -std::numeric_limits<float>::max());
    double hi = clip.get_attribute<double>("max", std::numeric_limits<float>::max());
    for (size_t i = 1; i < 3; ++i) {
        if (!clip.has_input(i)) continue;
        const Tensor* t = constant(graph, uses, clip.inputs()[i]);
        if (!t || t->dtype() != DType::Float32 || t->num_elements() != 1) return std::nullopt;
        (i == 1 ? lo : hi) = t->data_ptr<float>()[0];
    }
    return std::vector<double>{lo, hi};
}

class FuseQdqConvMatMul : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_qdq_conv_matmul"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& op, PassResult& r) const override {
        const bool conv = op->op_type() == "Conv", gemm = op->op_type() == "Gemm";
        if ((!conv && !gemm && op->op_type() != "MatMul") || !is_default(*op) || op->outputs().size() != 1 ||
            op->inputs().size() < 2)
            return false;
        if (op->op_type() == "MatMul" && op->inputs().size() != 2) return false;
        // Gemm: Y = A B' + C only (alpha, beta 1; A not transposed; B' = B or its transpose).
        const bool trans_b = gemm && op->get_attribute<int64_t>("transB", 0) == 1;
        if (gemm && (op->get_attribute<double>("alpha", 1.0) != 1.0 || op->get_attribute<double>("beta", 1.0) != 1.0 ||
                     op->get_attribute<int64_t>("transA", 0) != 0))
            return false;
        const auto x = activation_dequantize(graph, uses, op->inputs()[0]);
        const auto* w_node = producer_of(graph, op->inputs()[1]);
        if (!x || !w_node) return false;
        const auto w = quant_params(graph, uses, *w_node, "DequantizeLinear");
        if (!w) return false;
        const Tensor* wq = constant(graph, uses, w->data);
        if (!wq || !is_8bit(wq->dtype()) || wq->ndim() < 2 || (!conv && wq->ndim() != 2) ||
            (w->zp_value && w->zp_value->dtype() != wq->dtype()))
            return false;
        // Weight scales: one, or one per output channel (Conv and Gemm's transposed B: axis 0;
        // MatMul and Gemm's B: axis 1, the columns).
        const int64_t channel_axis = conv || trans_b ? 0 : 1;
        const int64_t channels = wq->shape()[channel_axis];
        if (!per_tensor(*w)) {
            const int64_t axis = w->axis < 0 ? w->axis + wq->ndim() : w->axis;
            if (axis != channel_axis || w->scale_value->ndim() != 1 || w->scale_value->num_elements() != channels)
                return false;
        }
        // What follows: [Relu | Clip] -> QuantizeLinear; for a MatMul/Gemm possibly nothing
        // quantized (then a float32 output: MatMulIntegerToFloat).
        const auto* next = sole_consumer(graph, uses, op->outputs()[0]);
        if (!next && conv) return false;
        const Node* activation = nullptr;
        std::vector<double> bounds;
        if (conv && (next->op_type() == "Relu" || next->op_type() == "Clip") && is_default(*next) &&
            next->inputs()[0] == op->outputs()[0]) {
            if (next->op_type() == "Clip") {
                const auto b = clip_bounds(graph, uses, *next);
                if (!b) return false;
                bounds = *b;
            }
            activation = next;
            next = sole_consumer(graph, uses, activation->outputs()[0]);
            if (!next) return false;
        }
        const auto y = next ? output_quantize(graph, uses, *next) : std::nullopt;
        if (!y && conv) return false;

        // Inputs of the int8 node; a missing weight zero point becomes explicit zeros.
        std::optional<Tensor> bias;
        if ((conv || gemm) && op->has_input(2)) {
            bias = quantized_bias(graph, uses, op->inputs()[2], *x->scale_value, *w->scale_value, channels);
            if (!bias) return false;
        }
        std::string w_zp = w->zero_point;
        if (w_zp.empty()) {
            w_zp = unique_name(graph, w->data + "_zero_point");
            graph.add_initializer(w_zp, Tensor::zeros(w->scale_value->shape(), wq->dtype()));
        }
        std::string weights = w->data;
        if (trans_b) {  // QGemm takes B as (K, N): transposed once, here
            weights = unique_name(graph, w->data + "_transposed");
            graph.add_initializer(weights, transposed(*wq));
        }
        if (!y) {  // float32 output: the bias in real units, added as the product is written
            std::string bias_name;
            if (bias) {
                Tensor real({channels}, DType::Float32);
                const float xs = x->scale_value->data_ptr<float>()[0];
                for (int64_t m = 0; m < channels; ++m)
                    real.data_ptr<float>()[m] = static_cast<float>(bias->data_ptr<int32_t>()[m]) *
                                                (xs * w->scale_value->data_ptr<float>()[w->scale_value->num_elements() == 1 ? 0 : m]);
                bias_name = unique_name(graph, op->name() + "_bias");
                graph.add_initializer(bias_name, real);
            }
            std::vector<std::string> inputs{x->data, weights, x->scale, w->scale, x->zero_point, w_zp};
            if (bias) inputs.push_back(bias_name);
            auto fused = std::make_shared<Node>("MatMulIntegerToFloat", unique_name(graph, op->name() + "_quant"), inputs,
                                                op->outputs());
            fused->set_domain("com.pyflame");
            graph.opset_imports().emplace("com.pyflame", 1);
            replace_nodes(graph, op.get(), fused, {});
            ++r.nodes_fused;
            return true;
        }
        std::string bias_name;
        if (bias) {
            bias_name = unique_name(graph, op->name() + "_bias_int32");
            graph.add_initializer(bias_name, *bias);
        }
        std::vector<std::string> inputs{x->data, x->scale, x->zero_point, weights, w->scale, w_zp};
        if (gemm) inputs.push_back(bias_name);  // QGemm: C before y_scale (empty when absent)
        inputs.insert(inputs.end(), {y->scale, y->zero_point});
        if (conv && bias) inputs.push_back(bias_name);
        const bool fused_activation = activation != nullptr;
        const char* type = conv ? (fused_activation ? "FusedQLinearConv" : "QLinearConv") : gemm ? "QGemm" : "QLinearMatMul";
        auto fused = std::make_shared<Node>(type, unique_name(graph, op->name() + "_quant"), inputs, y->node->outputs());
        if (gemm) {
            fused->set_domain("com.pyflame");
            graph.opset_imports().emplace("com.pyflame", 1);
        }
        if (conv)
            for (const auto& [k, v] : op->attributes()) fused->set_attribute(k, v);
        if (fused_activation) {
            fused->set_domain("com.pyflame");
            fused->set_attribute("activation", activation->op_type());
            if (!bounds.empty()) fused->set_attribute("activation_params", bounds);
            graph.opset_imports().emplace("com.pyflame", 1);
        }
        std::unordered_set<const Node*> removed{y->node};
        if (activation) removed.insert(activation);
        replace_nodes(graph, op.get(), fused, removed);
        r.nodes_fused += 1 + (activation ? 1 : 0);
        return true;
    }

private:
    static Tensor transposed(const Tensor& w) {
        const int64_t rows = w.shape()[0], cols = w.shape()[1];
        Tensor t({cols, rows}, w.dtype());
        const auto* src = static_cast<const uint8_t*>(w.data());
        auto* dst = static_cast<uint8_t*>(t.data());
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < cols; ++j) dst[j * rows + i] = src[i * cols + j];
        return t;
    }

    // The bias as int32 in units of x_scale * w_scale[m] (what QLinearConv adds to its
    // accumulators): the integers themselves when the bias is already quantized on that grid
    // (quantizers write it so), else its real values rounded onto the grid.
    static std::optional<Tensor> quantized_bias(const Graph& graph, const GraphUses& uses, const std::string& name,
                                                const Tensor& x_scale, const Tensor& w_scale, int64_t channels) {
        std::vector<double> real(static_cast<size_t>(channels));
        std::vector<float> grid(static_cast<size_t>(channels));
        const float xs = x_scale.data_ptr<float>()[0];
        for (int64_t m = 0; m < channels; ++m)
            grid[m] = xs * w_scale.data_ptr<float>()[w_scale.num_elements() == 1 ? 0 : m];
        Tensor out({channels}, DType::Int32);
        int32_t* o = out.data_ptr<int32_t>();
        if (const Tensor* b = constant(graph, uses, name)) {
            if (b->dtype() != DType::Float32 || b->num_elements() != channels) return std::nullopt;
            for (int64_t m = 0; m < channels; ++m) real[m] = b->data_ptr<float>()[m];
        } else {
            const auto* dq = producer_of(graph, name);
            if (!dq) return std::nullopt;
            const auto p = quant_params(graph, uses, *dq, "DequantizeLinear");
            const Tensor* bq = p ? constant(graph, uses, p->data) : nullptr;
            if (!bq || bq->dtype() != DType::Int32 || bq->num_elements() != channels) return std::nullopt;
            if (p->zp_value) {
                if (p->zp_value->dtype() != DType::Int32) return std::nullopt;
                const int32_t* z = p->zp_value->data_ptr<int32_t>();
                if (std::any_of(z, z + p->zp_value->num_elements(), [](int32_t v) { return v != 0; })) return std::nullopt;
            }
            const Tensor& bs = *p->scale_value;
            if (bs.num_elements() != 1 && bs.num_elements() != channels) return std::nullopt;
            bool on_grid = true;
            for (int64_t m = 0; m < channels; ++m) {
                const float s = bs.data_ptr<float>()[bs.num_elements() == 1 ? 0 : m];
                on_grid = on_grid && s == grid[m];
                real[m] = static_cast<double>(bq->data_ptr<int32_t>()[m]) * s;
            }
            if (on_grid) {
                std::copy(bq->data_ptr<int32_t>(), bq->data_ptr<int32_t>() + channels, o);
                return out;
            }
        }
        for (int64_t m = 0; m < channels; ++m) {
            if (grid[m] == 0.0f) return std::nullopt;
            const double q = std::nearbyint(real[m] / grid[m]);
            if (!(std::fabs(q) < 2147483647.0)) return std::nullopt;
            o[m] = static_cast<int32_t>(q);
        }
        return out;
    }
};

class FuseQdqAdd : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_qdq_add"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& add, PassResult& r) const override {
        if (add->op_type() != "Add" || !is_default(*add) || add->inputs().size() != 2 || add->outputs().size() != 1)
            return false;
        const auto a = activation_dequantize(graph, uses, add->inputs()[0]);
        const auto b = activation_dequantize(graph, uses, add->inputs()[1]);
        const auto* next = sole_consumer(graph, uses, add->outputs()[0]);
        if (!a || !b || !next) return false;
        const auto y = output_quantize(graph, uses, *next);
        if (!y) return false;
        auto fused = std::make_shared<Node>(
            "QLinearAdd", unique_name(graph, add->name() + "_quant"),
            std::vector<std::string>{a->data, a->scale, a->zero_point, b->data, b->scale, b->zero_point, y->scale, y->zero_point},
            y->node->outputs());
        fused->set_domain("com.pyflame");
        graph.opset_imports().emplace("com.pyflame", 1);
        replace_nodes(graph, add.get(), fused, {y->node});
        ++r.nodes_fused;
        return true;
    }
};

// DequantizeLinear(x) -> MaxPool -> QuantizeLinear with the same scale and zero point is
// MaxPool(x) on the integers: both maps are monotonic and QuantizeLinear(DequantizeLinear(v))
// is v, so the result is identical.
class FuseQdqMaxPool : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_qdq_maxpool"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& pool, PassResult& r) const override {
        if (pool->op_type() != "MaxPool" || !is_default(*pool) || pool->inputs().size() != 1 ||
            (pool->outputs().size() > 1 && !pool->outputs()[1].empty()) || pool->get_attribute<int64_t>("storage_order", 0) != 0)
            return false;
        const auto x = activation_dequantize(graph, uses, pool->inputs()[0]);
        const auto* next = sole_consumer(graph, uses, pool->outputs()[0]);
        if (!x || !next) return false;
        const auto y = output_quantize(graph, uses, *next);
        if (!y || y->zp_value->dtype() != x->zp_value->dtype() ||
            y->scale_value->data_ptr<float>()[0] != x->scale_value->data_ptr<float>()[0] ||
            std::memcmp(y->zp_value->data(), x->zp_value->data(), 1) != 0)
            return false;
        auto fused = std::make_shared<Node>(*pool);
        fused->set_input(0, x->data);
        fused->set_output(0, y->node->outputs()[0]);
        replace_nodes(graph, pool.get(), fused, {y->node});
        r.nodes_fused += 1;
        return true;
    }
};

class FuseDynamicQuantizeMatMul : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_dynamic_quantize_matmul"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mm, PassResult& r) const override {
        if (mm->op_type() != "MatMulInteger" || !is_default(*mm) || mm->inputs().size() < 3) return false;
        const auto* dql = producer_of(graph, mm->inputs()[0]);
        if (!dql || dql->op_type() != "DynamicQuantizeLinear" || !is_default(*dql) || dql->outputs().size() != 3 ||
            mm->inputs()[2] != dql->outputs()[2])
            return false;
        const Tensor* b = constant(graph, uses, mm->inputs()[1]);
        if (!b || b->ndim() != 2 || !is_8bit(b->dtype())) return false;
        if (mm->has_input(3) && !constant(graph, uses, mm->inputs()[3])) return false;
        const auto* cast = sole_consumer(graph, uses, mm->outputs()[0]);
        if (!cast || cast->op_type() != "Cast" || cast->get_attribute<int64_t>("to", 0) != 1) return false;
        const auto* mul = sole_consumer(graph, uses, cast->outputs()[0]);
        if (!mul || mul->op_type() != "Mul" || !is_default(*mul) || mul->inputs().size() != 2) return false;
        const std::string& scale = other_input(*mul, cast->outputs()[0]);
        // scale = Mul(a_scale, b_scale constant), read by this Mul only.
        const auto* scale_mul = producer_of(graph, scale);
        if (!scale_mul || scale_mul->op_type() != "Mul" || !is_default(*scale_mul) ||
            scale_mul->inputs().size() != 2 || uses.uses(scale) != 1 || !uses.is_internal(scale))
            return false;
        const auto& scale_inputs = scale_mul->inputs();
        if (scale_inputs[0] != dql->outputs()[1] && scale_inputs[1] != dql->outputs()[1]) return false;
        const std::string& b_scale = other_input(*scale_mul, dql->outputs()[1]);
        const Tensor* bs = constant(graph, uses, b_scale);
        if (!bs || bs->dtype() != DType::Float32 || b_scale == scale ||
            (bs->num_elements() != 1 && !(bs->ndim() == 1 && bs->num_elements() == b->shape()[1])))
            return false;
        std::unordered_set<const Node*> removed{cast, mul, scale_mul};
        std::string output = mul->outputs()[0], bias;
        if (const auto* add = sole_consumer(graph, uses, output); add && add->op_type() == "Add" && is_default(*add) &&
                                                                  add->inputs().size() == 2) {
            const std::string& other = other_input(*add, output);
            const Tensor* c = constant(graph, uses, other);
            if (c && c->dtype() == DType::Float32 && c->ndim() == 1 && c->num_elements() == b->shape()[1]) {
                bias = other;
                output = add->outputs()[0];
                removed.insert(add);
            }
        }
        auto fused = std::make_shared<Node>(
            "DynamicQuantizeMatMul", unique_name(graph, mm->name() + "_dynamic"),
            std::vector<std::string>{dql->inputs()[0], mm->inputs()[1], b_scale, mm->has_input(3) ? mm->inputs()[3] : "", bias},
            std::vector<std::string>{output});
        fused->set_domain("com.pyflame");
        graph.opset_imports().emplace("com.pyflame", 1);
        replace_nodes(graph, mm.get(), fused, removed);
        r.nodes_fused += static_cast<int>(removed.size());
        return true;
    }

private:
    static std::string other_input(const Node& binary, const std::string& one) {
        if (binary.inputs().size() != 2) return {};
        return binary.inputs()[0] == one ? binary.inputs()[1] : binary.inputs()[0];
    }
};

}  // namespace

namespace {

// QLinearConv -> DequantizeLinear (its output's scale and zero point) -> Relu | Clip ->
// QuantizeLinear becomes FusedQLinearConv applying the activation to the accumulator and
// requantizing once, to the QuantizeLinear's parameters: quantizers that keep a QDQ pair between
// a convolution and its activation (symmetric activations) get the fused kernel too. Skipping
// the intermediate rounding moves a result by at most one quantization step.
class FuseQLinearConvActivation : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_qlinearconv_activation"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& conv, PassResult& r) const override {
        if (conv->op_type() != "QLinearConv" || !is_default(*conv) || conv->outputs().size() != 1 || conv->inputs().size() < 8)
            return false;
        const auto* dq_node = sole_consumer(graph, uses, conv->outputs()[0]);
        if (!dq_node) return false;
        const auto dq = quant_params(graph, uses, *dq_node, "DequantizeLinear");
        if (!dq || !per_tensor(*dq) || !same_constant(graph, uses, dq->scale, conv->inputs()[6]) ||
            !same_constant(graph, uses, dq->zero_point, conv->inputs()[7]))
            return false;
        const auto* act = sole_consumer(graph, uses, dq_node->outputs()[0]);
        if (!act || !is_default(*act) || (act->op_type() != "Relu" && act->op_type() != "Clip") ||
            act->inputs()[0] != dq_node->outputs()[0])
            return false;
        std::vector<double> bounds;
        if (act->op_type() == "Clip") {
            const auto b = clip_bounds(graph, uses, *act);
            if (!b) return false;
            bounds = *b;
        }
        const auto* q_node = sole_consumer(graph, uses, act->outputs()[0]);
        if (!q_node) return false;
        const auto y = output_quantize(graph, uses, *q_node);
        if (!y || y->zero_point.empty()) return false;
        std::vector<std::string> inputs = conv->inputs();
        inputs[6] = y->scale;
        inputs[7] = y->zero_point;
        auto fused = std::make_shared<Node>("FusedQLinearConv", conv->name(), inputs, y->node->outputs());
        for (const auto& [k, v] : conv->attributes()) fused->set_attribute(k, v);
        fused->set_domain("com.pyflame");
        fused->set_attribute("activation", act->op_type());
        if (!bounds.empty()) fused->set_attribute("activation_params", bounds);
        graph.opset_imports().emplace("com.pyflame", 1);
        replace_nodes(graph, conv.get(), fused, {dq_node, act, y->node});
        r.nodes_fused += 3;
        return true;
    }

private:
    // Both names are the same scalar constant (or both absent).
    static bool same_constant(const Graph& graph, const GraphUses& uses, const std::string& a, const std::string& b) {
        if (a.empty() || b.empty()) return a.empty() && b.empty();
        if (a == b) return true;
        const Tensor* ta = constant(graph, uses, a);
        const Tensor* tb = constant(graph, uses, b);
        return ta && tb && ta->dtype() == tb->dtype() && ta->num_elements() == 1 && tb->num_elements() == 1 &&
               std::memcmp(ta->data(), tb->data(), dtype_size(ta->dtype())) == 0;
    }
};

// MatMulIntegerToFloat without a bias, read only by an Add of a constant [N] float32 vector
// (a transformer projection's bias, constant once Identity copies are gone), takes it in.
class FuseMatMulIntegerToFloatBias : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_matmul_integer_to_float_bias"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mm, PassResult& r) const override {
        if (mm->op_type() != "MatMulIntegerToFloat" || mm->domain() != "com.pyflame" || mm->has_input(6) ||
            mm->outputs().size() != 1)
            return false;
        const Tensor* b = constant(graph, uses, mm->inputs()[1]);
        const auto* add = sole_consumer(graph, uses, mm->outputs()[0]);
        if (!b || b->ndim() != 2 || !add || add->op_type() != "Add" || !is_default(*add) || add->inputs().size() != 2 ||
            add->inputs()[0] == add->inputs()[1])
            return false;
        const std::string& other = add->inputs()[0] == mm->outputs()[0] ? add->inputs()[1] : add->inputs()[0];
        const Tensor* c = constant(graph, uses, other);
        if (!c || c->dtype() != DType::Float32 || c->ndim() != 1 || c->num_elements() != b->shape()[1]) return false;
        std::vector<std::string> inputs = mm->inputs();
        inputs.resize(6);
        inputs.push_back(other);
        auto fused = std::make_shared<Node>("MatMulIntegerToFloat", mm->name(), inputs, add->outputs());
        fused->set_domain("com.pyflame");
        replace_nodes(graph, mm.get(), fused, {add});
        ++r.nodes_fused;
        return true;
    }
};

// QLinearConv whose only reader is a QLinearAdd (a residual block's last convolution plus its
// shortcut) becomes com.pyflame QLinearConvAdd: the sum is formed from the convolution's exact
// value and requantized once to the addition's parameters (oneDNN's sum post-op), so the
// convolution's own rounding and the separate pass over both tensors go. A result moves by at
// most about one output step against the unfused graph.
class FuseQLinearConvAdd : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_qlinearconv_add"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& add, PassResult& r) const override {
        if (add->op_type() != "QLinearAdd" || add->domain() != "com.pyflame" || add->inputs().size() != 8 ||
            add->outputs().size() != 1 || add->inputs()[7].empty())
            return false;
        for (size_t side : {0, 3}) {
            const auto* conv = producer_of(graph, add->inputs()[side]);
            if (!conv || conv->op_type() != "QLinearConv" || !is_default(*conv) || conv->outputs().size() != 1 ||
                conv->inputs().size() < 8 || uses.uses(conv->outputs()[0]) != 1 ||
                !uses.is_internal(conv->outputs()[0]))
                continue;
            // Its output's parameters are the ones the addition dequantizes it with.
            if (conv->inputs()[6] != add->inputs()[side + 1] || conv->inputs()[7] != add->inputs()[side + 2]) continue;
            const size_t other = 3 - side;
            const auto& conv_in = conv->inputs();
            std::vector<std::string> inputs(conv_in.begin(), conv_in.begin() + 6);
            inputs.push_back(add->inputs()[6]);
            inputs.push_back(add->inputs()[7]);
            inputs.push_back(conv_in.size() > 8 ? conv_in[8] : std::string());
            inputs.push_back(add->inputs()[other]);
            inputs.push_back(add->inputs()[other + 1]);
            inputs.push_back(add->inputs()[other + 2]);
            auto fused = std::make_shared<Node>("QLinearConvAdd", unique_name(graph, conv->name() + "_add"), inputs,
                                                add->outputs());
            for (const auto& [k, v] : conv->attributes()) fused->set_attribute(k, v);
            fused->set_domain("com.pyflame");
            graph.opset_imports().emplace("com.pyflame", 1);
            const Node* conv_node = conv;
            replace_nodes(graph, add.get(), fused, {conv_node});
            ++r.nodes_fused;
            return true;
        }
        return false;
    }
};

}  // namespace

void add_qdq_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    passes.push_back(std::make_unique<FuseQdqConvMatMul>());
    passes.push_back(std::make_unique<FuseQLinearConvActivation>());  // after QDQ convs became QLinearConv
    passes.push_back(std::make_unique<FuseMatMulIntegerToFloatBias>());
    passes.push_back(std::make_unique<FuseQdqAdd>());
    passes.push_back(std::make_unique<FuseQLinearConvAdd>());  // after QDQ adds became QLinearAdd
    passes.push_back(std::make_unique<FuseQdqMaxPool>());
    passes.push_back(std::make_unique<FuseDynamicQuantizeMatMul>());
}

}  // namespace pyflame_rt::optimize
