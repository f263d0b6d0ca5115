// Level 2: scaled dot-product attention as one com.pyflame FusedAttention node.
//
//   MatMul(Q', K') [-> Mul/Div(scalar)] [-> Add(mask)] -> Softmax(last axis) -> MatMul(., V)
//
// where Q' is Q, or Q multiplied (divided) by a scalar constant, and K' is Transpose(K) swapping
// the last two axes (or a K already transposed), each optionally scaled by a scalar constant
// before or after the Transpose: what torch exports for nn.MultiheadAttention
// (MatMul(Mul(Q, s), Mul(Transpose(K), s))) and the hand-written forms (Div by sqrt(d) after
// the product). The scalars multiply into the node's `scale`; the scores never leave the kernel.
// Every value in between has exactly one reader and is not a graph output.
#include <cmath>
#include <optional>
#include <unordered_set>

#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

// Rank of a float32 tensor value, 0 when not known to be one.
size_t float_rank(const Graph& graph, const std::string& name) {
    const auto info = info_of(graph, name);
    if (!info || info->kind != ValueKind::Tensor || !info->rank_known || info->dtype != DType::Float32) return 0;
    return info->shape.size();
}

bool is_op(const Node* n, const char* op) { return n && n->op_type() == op && n->domain().empty(); }

// A value the fusion removes: one reader, not a graph output (nor read by a subgraph).
bool removable(const GraphUses& uses, const std::string& value) { return uses.uses(value) == 1 && uses.is_internal(value); }

struct Match {
    std::unordered_set<const Node*> removed;
    double scale = 1.0;
};

// When `value` (removable) is Mul(x, c), Mul(c, x) or Div(x, c) with c a float32 scalar
// constant that does not raise x's rank: x, with c folded into `m.scale`.
std::optional<std::string> unscaled(const Graph& graph, const GraphUses& uses, const std::string& value, Match& m) {
    const Node* n = producer_of(graph, value);
    if (!removable(uses, value) || (!is_op(n, "Mul") && !is_op(n, "Div")) || n->inputs().size() != 2) return std::nullopt;
    const bool div = n->op_type() == "Div";
    for (size_t c = div ? 1 : 0; c < 2; ++c) {
        const std::string& constant = n->inputs()[c];
        const std::string& x = n->inputs()[1 - c];
        if (!uses.is_constant(constant) || constant == x) continue;
        const Tensor& t = graph.get_initializer(constant);
        // x feeds a MatMul (rank >= 1): a constant of rank <= 1 cannot raise its rank.
        if (t.dtype() != DType::Float32 || t.num_elements() != 1 || (t.ndim() > 1 && t.ndim() > float_rank(graph, x)))
            continue;
        const double v = t.data_ptr<float>()[0];
        m.scale = div ? m.scale / v : m.scale * v;
        m.removed.insert(n);
        return x;
    }
    return std::nullopt;
}

// Strips every scalar scaling off `value`.
std::string strip_scales(const Graph& graph, const GraphUses& uses, std::string value, Match& m) {
    while (auto x = unscaled(graph, uses, value, m)) value = *x;
    return value;
}

// Whether `perm` swaps the last two of `rank` axes and keeps the others.
bool swaps_last_two(const std::vector<int64_t>& perm, size_t rank) {
    if (rank < 2 || perm.size() != rank) return false;
    for (size_t i = 0; i + 2 < rank; ++i)
        if (perm[i] != static_cast<int64_t>(i)) return false;
    return perm[rank - 2] == static_cast<int64_t>(rank) - 1 && perm[rank - 1] == static_cast<int64_t>(rank) - 2;
}

class FuseAttention : public NodeRewritePass {
public:
    std::string name() const override { return "fuse_attention"; }
    int level() const override { return 2; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& softmax,
                     PassResult& r) const override {
        if (!is_op(softmax.get(), "Softmax") || softmax->inputs().size() != 1 || softmax->outputs().size() != 1) return false;
        const std::string& probs = softmax->outputs()[0];
        // Before opset 13, Softmax flattens at `axis` (default 1): the last axis alone only when
        // axis = rank - 1. From 13 it runs along `axis`: -1 is the last whatever the rank.
        const bool legacy = graph.opset_version("") < 13;
        const int64_t axis = softmax->get_attribute<int64_t>("axis", legacy ? 1 : -1);
        if (legacy || axis != -1) {
            const auto rank = static_cast<int64_t>(float_rank(graph, softmax->inputs()[0]));
            if (rank < 2 || (axis < 0 ? axis + rank : axis) != rank - 1) return false;
        }

        const Node* out_mm = sole_consumer(graph, uses, probs);
        if (!is_op(out_mm, "MatMul") || out_mm->inputs().size() != 2 || out_mm->inputs()[0] != probs ||
            out_mm->inputs()[1] == probs)
            return false;
        const std::string& v = out_mm->inputs()[1];

        Match m;
        m.removed = {softmax.get(), out_mm};
        std::string scores = softmax->inputs()[0];
        if (!removable(uses, scores)) return false;
        std::string mask;
        if (const Node* add = producer_of(graph, scores); is_op(add, "Add")) {
            if (add->inputs().size() != 2 || add->inputs()[0] == add->inputs()[1]) return false;
            // The product is the input that comes from a MatMul (through scalings).
            size_t chain = 2;
            for (size_t i = 0; i < 2 && chain == 2; ++i) {
                Match probe;
                const std::string x = strip_scales(graph, uses, add->inputs()[i], probe);
                if (removable(uses, add->inputs()[i]) && is_op(producer_of(graph, x), "MatMul")) chain = i;
            }
            if (chain == 2) return false;
            m.removed.insert(add);
            mask = add->inputs()[1 - chain];
            scores = add->inputs()[chain];
        }
        const std::string product = strip_scales(graph, uses, scores, m);
        const Node* qk = producer_of(graph, product);
        if (!is_op(qk, "MatMul") || qk->inputs().size() != 2 || !removable(uses, product)) return false;
        m.removed.insert(qk);
        const std::string q = strip_scales(graph, uses, qk->inputs()[0], m);
        std::string k = strip_scales(graph, uses, qk->inputs()[1], m);
        bool k_transposed = true;
        if (const Node* t = producer_of(graph, k); is_op(t, "Transpose") && removable(uses, k) && t->inputs().size() == 1 &&
                                                 swaps_last_two(t->get_attribute<std::vector<int64_t>>("perm", {}),
                                                                float_rank(graph, t->inputs()[0]))) {
            m.removed.insert(t);
            k = strip_scales(graph, uses, t->inputs()[0], m);
            k_transposed = false;
        }
        if (!std::isfinite(m.scale)) return false;
        if (float_rank(graph, q) < 2 || float_rank(graph, k) < 2 || float_rank(graph, v) < 2) return false;
        if (!mask.empty() && !mask_fits(graph, mask)) return false;

        auto fused = std::make_shared<Node>("FusedAttention", unique_name(graph, out_mm->name() + "_attention"),
                                            std::vector<std::string>{q, k, v}, out_mm->outputs());
        if (!mask.empty()) fused->set_input(3, mask);
        fused->set_domain("com.pyflame");
        fused->set_attribute("scale", m.scale);
        fused->set_attribute("k_transposed", static_cast<int64_t>(k_transposed ? 1 : 0));
        std::vector<std::shared_ptr<Node>> nodes;
        for (const auto& n : graph.nodes()) {
            if (n.get() == out_mm) nodes.push_back(fused);
            else if (!m.removed.count(n.get())) nodes.push_back(n);
        }
        graph.set_nodes(std::move(nodes));
        graph.opset_imports().emplace("com.pyflame", 1);
        r.nodes_fused += static_cast<int>(m.removed.size()) - 1;
        return true;
    }

private:
    // A float32 tensor: FusedAttention broadcasts it with the scores as Add would (a mask whose
    // last dim is neither 1 nor Sk would fail the unfused graph's second MatMul, as it fails
    // FusedAttention).
    static bool mask_fits(const Graph& graph, const std::string& mask) {
        const auto info = info_of(graph, mask);
        return info && info->kind == ValueKind::Tensor && info->dtype == DType::Float32;
    }
};

}  // namespace

void add_attention_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    passes.push_back(std::make_unique<FuseAttention>());
}

}  // namespace pyflame_rt::optimize
