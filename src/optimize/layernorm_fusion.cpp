// Level 2: the LayerNorm that exporters without LayerNormalization (torch < 2.0 / opset < 17,
// TF, Keras) spell out op by op becomes one LayerNormalization node (one pass over each row
// instead of nine elementwise and reduction ops):
//   mean = ReduceMean(x, axes=[-1]); d = Sub(x, mean)
//   var = ReduceMean(Pow(d, 2) or Mul(d, d), axes=[-1])
//   y = Div(d, Sqrt(Add(var, eps)))  or  Mul(d, Reciprocal(Sqrt(Add(var, eps))))
//   [y = Mul(y, gamma)] [y = Add(y, beta)]
// with eps, gamma and beta constants and every intermediate read by the pattern alone.
#include <algorithm>
#include <optional>
#include <unordered_set>

#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

bool is_op(const Node* n, const char* op_type, size_t inputs) {
    return n && n->op_type() == op_type && n->domain().empty() && n->inputs().size() == inputs && n->outputs().size() == 1;
}

// The input of binary `n` that is not `one` (empty when `n` reads `one` twice or not at all).
std::string other_input(const Node& n, const std::string& one) {
    if (n.inputs().size() != 2 || n.inputs()[0] == n.inputs()[1]) return {};
    if (n.inputs()[0] == one) return n.inputs()[1];
    if (n.inputs()[1] == one) return n.inputs()[0];
    return {};
}

// The value of a one-element numeric constant.
std::optional<double> scalar_constant(const Graph& graph, const GraphUses& uses, const std::string& name) {
    if (!uses.is_constant(name)) return std::nullopt;
    const Tensor& t = graph.get_initializer(name);
    if (t.num_elements() != 1) return std::nullopt;
    switch (t.dtype()) {
        case DType::Float32: return t.data_ptr<float>()[0];
        case DType::Float64: return t.data_ptr<double>()[0];
        case DType::Int32: return t.data_ptr<int32_t>()[0];
        case DType::Int64: return static_cast<double>(t.data_ptr<int64_t>()[0]);
        default: return std::nullopt;
    }
}

// Whether `n` is ReduceMean over the last axis of a rank-`rank` input, keeping it: axes [-1] or
// [rank - 1], as an attribute (opset < 18) or a constant input (opset 18).
bool is_mean_over_last_axis(const Graph& graph, const GraphUses& uses, const Node* n, size_t rank) {
    if (!n || n->op_type() != "ReduceMean" || !n->domain().empty() || n->inputs().empty() || n->outputs().size() != 1)
        return false;
    if (n->get_attribute<int64_t>("keepdims", 1) != 1) return false;
    std::vector<int64_t> axes;
    if (n->has_input(1)) {
        if (!uses.is_constant(n->inputs()[1])) return false;
        const Tensor& t = graph.get_initializer(n->inputs()[1]);
        if (t.dtype() != DType::Int64) return false;
        axes.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.num_elements());
    } else {
        axes = n->get_attribute<std::vector<int64_t>>("axes", {});
    }
    return axes.size() == 1 && (axes[0] == -1 || axes[0] == static_cast<int64_t>(rank) - 1);
}

// A constant that LayerNormalization can take as Scale or B for rows of `d` elements: float32,
// shape [..., 1, d] (or one element, broadcast), of rank at most `rank` so the Mul or Add
// broadcasting it does not widen the result.
bool fits_row(const Graph& graph, const GraphUses& uses, const std::string& name, int64_t d, size_t rank) {
    if (!uses.is_constant(name)) return false;
    const Tensor& t = graph.get_initializer(name);
    if (t.dtype() != DType::Float32 || t.ndim() > rank) return false;
    if (t.num_elements() == 1) return true;
    return t.ndim() >= 1 && t.shape().back() == d && t.num_elements() == d;
}

// `name` as a [d] initializer (reshaped or broadcast into a new one when it is not already).
std::string row_initializer(Graph& graph, const std::string& name, int64_t d, const std::string& base) {
    const Tensor& t = graph.get_initializer(name);
    if (t.ndim() == 1 && t.shape()[0] == d) return name;
    Tensor row({d}, DType::Float32);
    for (int64_t i = 0; i < d; ++i) row.data_ptr<float>()[i] = t.data_ptr<float>()[t.num_elements() == 1 ? 0 : i];
    const std::string row_name = unique_name(graph, base);
    graph.add_initializer(row_name, row);
    return row_name;
}

class FuseLayerNorm : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_layer_norm"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& mean,
                     PassResult& r) const override {
        if (mean->op_type() != "ReduceMean" || mean->inputs().empty()) return false;
        const std::string x = mean->inputs()[0];
        const auto x_info = info_of(graph, x);
        if (!x_info || x_info->kind != ValueKind::Tensor || x_info->dtype != DType::Float32 || !x_info->rank_known ||
            x_info->shape.empty() || !x_info->shape.back())
            return false;
        const size_t rank = x_info->shape.size();
        const int64_t d = *x_info->shape.back();
        if (!is_mean_over_last_axis(graph, uses, mean.get(), rank)) return false;

        // d = x - mean, read by the square and the division only.
        const Node* sub = sole_consumer(graph, uses, mean->outputs()[0]);
        if (!is_op(sub, "Sub", 2) || sub->inputs()[0] != x || sub->inputs()[1] != mean->outputs()[0]) return false;
        const std::string centered = sub->outputs()[0];
        if (!uses.is_internal(centered)) return false;
        std::vector<const Node*> readers;
        for (const auto& n : graph.nodes())
            if (std::find(n->inputs().begin(), n->inputs().end(), centered) != n->inputs().end()) readers.push_back(n.get());
        if (readers.size() != 2) return false;
        const Node* square = nullptr;
        for (const Node* n : readers) {
            const bool pow = is_op(n, "Pow", 2) && n->inputs()[0] == centered &&
                             scalar_constant(graph, uses, n->inputs()[1]) == std::optional<double>(2.0);
            const bool mul = is_op(n, "Mul", 2) && n->inputs()[0] == centered && n->inputs()[1] == centered;
            if (pow || mul) square = n;
        }
        if (!square || uses.uses(centered) != (square->op_type() == "Mul" ? 3 : 2)) return false;
        const Node* divide = readers[0] == square ? readers[1] : readers[0];

        // var = mean(d^2); std = sqrt(var + eps)
        const Node* variance = sole_consumer(graph, uses, square->outputs()[0]);
        if (!is_mean_over_last_axis(graph, uses, variance, rank) || variance->inputs()[0] != square->outputs()[0])
            return false;
        const Node* add_eps = sole_consumer(graph, uses, variance->outputs()[0]);
        if (!is_op(add_eps, "Add", 2)) return false;
        const std::optional<double> epsilon = scalar_constant(graph, uses, other_input(*add_eps, variance->outputs()[0]));
        if (!epsilon || *epsilon < 0) return false;
        const Node* sqrt = sole_consumer(graph, uses, add_eps->outputs()[0]);
        if (!is_op(sqrt, "Sqrt", 1)) return false;

        // d / std, or d * (1 / std)
        std::vector<const Node*> pattern{mean.get(), sub, square, variance, add_eps, sqrt};
        const Node* normalize = sole_consumer(graph, uses, sqrt->outputs()[0]);
        if (is_op(normalize, "Reciprocal", 1)) {
            pattern.push_back(normalize);
            const std::string inverse = normalize->outputs()[0];
            normalize = sole_consumer(graph, uses, inverse);
            if (!is_op(normalize, "Mul", 2) || other_input(*normalize, inverse) != centered) return false;
        } else if (!is_op(normalize, "Div", 2) || normalize->inputs()[0] != centered ||
                   normalize->inputs()[1] != sqrt->outputs()[0]) {
            return false;
        }
        if (normalize != divide) return false;
        pattern.push_back(normalize);

        // Optional * gamma, then optional + beta.
        const Node* last = normalize;
        std::string gamma, beta;
        if (const Node* mul = sole_consumer(graph, uses, last->outputs()[0]); is_op(mul, "Mul", 2)) {
            const std::string other = other_input(*mul, last->outputs()[0]);
            if (!other.empty() && fits_row(graph, uses, other, d, rank)) {
                gamma = other;
                pattern.push_back(last = mul);
            }
        }
        if (const Node* add = sole_consumer(graph, uses, last->outputs()[0]); is_op(add, "Add", 2)) {
            const std::string other = other_input(*add, last->outputs()[0]);
            if (!other.empty() && fits_row(graph, uses, other, d, rank)) {
                beta = other;
                pattern.push_back(last = add);
            }
        }

        const std::string base = mean->name().empty() ? std::string("layer_norm") : mean->name() + "_layer_norm";
        if (gamma.empty()) {
            Tensor ones({d}, DType::Float32);
            std::fill(ones.data_ptr<float>(), ones.data_ptr<float>() + d, 1.0f);
            gamma = unique_name(graph, base + "_scale");
            graph.add_initializer(gamma, ones);
        } else {
            gamma = row_initializer(graph, gamma, d, base + "_scale");
        }
        if (beta.empty()) {
            Tensor zeros({d}, DType::Float32);
            std::fill(zeros.data_ptr<float>(), zeros.data_ptr<float>() + d, 0.0f);
            beta = unique_name(graph, base + "_bias");
            graph.add_initializer(beta, zeros);
        } else {
            beta = row_initializer(graph, beta, d, base + "_bias");
        }
        auto fused = std::make_shared<Node>("LayerNormalization", unique_name(graph, base),
                                            std::vector<std::string>{x, gamma, beta}, last->outputs());
        fused->set_attribute("axis", static_cast<int64_t>(-1));
        fused->set_attribute("epsilon", *epsilon);

        const std::unordered_set<const Node*> gone(pattern.begin(), pattern.end());
        std::vector<std::shared_ptr<Node>> nodes;
        for (const auto& n : graph.nodes()) {
            if (n.get() == last) nodes.push_back(fused);
            else if (!gone.count(n.get())) nodes.push_back(n);
        }
        graph.set_nodes(std::move(nodes));
        r.nodes_fused += static_cast<int>(pattern.size()) - 1;
        return true;
    }
};

}  // namespace

void add_layer_norm_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    passes.push_back(std::make_unique<FuseLayerNorm>());
}

}  // namespace pyflame_rt::optimize
