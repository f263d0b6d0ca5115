// Level 3: layout optimization. A Transpose is a full copy of its input; these passes remove
// the ones that cancel, fold the ones feeding a matrix product into the product (to oneDNN a
// transposed operand is only other strides), and move transposes below elementwise ops so they
// meet one of the former. (A Transpose of a constant is constant folding's, level 1.)
#include <unordered_set>

#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

// What is known of a value's shape: graph input, initializer or inferred annotation.
std::optional<Shape> shape_of(const Graph& graph, const std::string& name) {
    const auto info = info_of(graph, name);
    if (!info || !info->rank_known || info->kind != ValueKind::Tensor) return std::nullopt;
    return info->shape;
}

bool is_transpose(const Node& n) {
    return n.op_type() == "Transpose" && n.domain().empty() && n.inputs().size() == 1 && n.outputs().size() == 1 &&
           !n.inputs()[0].empty();
}

// A Transpose's permutation; empty when unknown (no `perm` and an unknown rank) or invalid.
std::vector<int64_t> perm_of(const Graph& graph, const Node& transpose) {
    std::vector<int64_t> perm;
    if (transpose.has_attribute("perm")) {
        perm = transpose.get_attribute<std::vector<int64_t>>("perm");
    } else {
        const auto shape = shape_of(graph, transpose.inputs()[0]);
        if (!shape) return {};
        for (size_t i = shape->size(); i-- > 0;) perm.push_back(static_cast<int64_t>(i));  // reversed
    }
    std::vector<bool> seen(perm.size(), false);
    for (int64_t p : perm) {
        if (p < 0 || p >= static_cast<int64_t>(perm.size()) || seen[static_cast<size_t>(p)]) return {};
        seen[static_cast<size_t>(p)] = true;
    }
    return perm;
}

bool is_identity(const std::vector<int64_t>& perm) {
    for (size_t i = 0; i < perm.size(); ++i)
        if (perm[i] != static_cast<int64_t>(i)) return false;
    return true;
}

bool swaps_last_two_axes(const std::vector<int64_t>& perm) {
    const size_t n = perm.size();
    if (n < 2) return false;
    for (size_t i = 0; i + 2 < n; ++i)
        if (perm[i] != static_cast<int64_t>(i)) return false;
    return perm[n - 2] == static_cast<int64_t>(n - 1) && perm[n - 1] == static_cast<int64_t>(n - 2);
}

// A matrix product that can read operand `input` (0 = A, 1 = B) transposed, for a transpose of
// rank `rank`: Gemm and FusedGemm (2-D, transA/transB), MatMul and FusedMatMul (any rank >= 2).
bool product_takes_transposed(const Node& n, size_t input, size_t rank) {
    if (input > 1 || n.inputs().size() < 2 || n.outputs().size() != 1) return false;
    const bool gemm = (n.op_type() == "Gemm" && n.domain().empty()) ||
                      (n.op_type() == "FusedGemm" && n.domain() == "com.pyflame");
    const bool matmul = (n.op_type() == "MatMul" && n.domain().empty()) ||
                        (n.op_type() == "FusedMatMul" && n.domain() == "com.pyflame");
    return (gemm && rank == 2) || (matmul && rank >= 2);
}

// The graph's nodes with `old_node` replaced by `replacement` (nothing when empty) and
// `removed` dropped.
void rewrite_nodes(Graph& graph, const Node* old_node, const std::vector<std::shared_ptr<Node>>& replacement,
                   const std::unordered_set<const Node*>& removed) {
    std::vector<std::shared_ptr<Node>> nodes;
    for (const auto& n : graph.nodes()) {
        if (n.get() == old_node) nodes.insert(nodes.end(), replacement.begin(), replacement.end());
        else if (!removed.count(n.get())) nodes.push_back(n);
    }
    graph.set_nodes(std::move(nodes));
}

// Transpose(perm p1) -> Transpose(perm p2) is one Transpose with perm p1[p2[i]], or nothing when
// that is the identity. The first stays when something else reads it.
class CancelTransposes : public NodeRewritePass {
public:
    std::string name() const override { return "cancel_transposes"; }
    int level() const override { return 3; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& second,
                     PassResult& r) const override {
        if (!is_transpose(*second)) return false;
        const Node* first = producer_of(graph, second->inputs()[0]);
        if (!first || !is_transpose(*first)) return false;
        const std::vector<int64_t> p1 = perm_of(graph, *first), p2 = perm_of(graph, *second);
        if (p1.empty() || p1.size() != p2.size()) return false;
        std::vector<int64_t> composed(p2.size());
        for (size_t i = 0; i < p2.size(); ++i) composed[i] = p1[static_cast<size_t>(p2[i])];

        const std::string x = first->inputs()[0], middle = second->inputs()[0], y = second->outputs()[0];
        std::unordered_set<const Node*> removed;
        if (uses.uses(middle) == 1 && uses.is_internal(middle)) removed.insert(first);
        const bool vanishes = is_identity(composed) && uses.is_internal(y);
        std::vector<std::shared_ptr<Node>> replacement;
        if (vanishes) {
            // Nothing left: y's readers read x (below).
        } else if (is_identity(composed)) {
            // y is a graph output (or read by a subgraph): it keeps its name, without a copy.
            replacement.push_back(std::make_shared<Node>("Identity", second->name(), std::vector<std::string>{x},
                                                         std::vector<std::string>{y}));
        } else {
            auto merged = std::make_shared<Node>(*second);
            merged->set_input(0, x);
            merged->set_attribute("perm", composed);
            replacement.push_back(merged);
        }
        rewrite_nodes(graph, second.get(), replacement, removed);
        if (vanishes) replace_uses(graph, y, x);
        r.nodes_removed += static_cast<int>(removed.size()) + (vanishes || is_identity(composed) ? 1 : 0);
        return true;
    }
};

// Transpose swapping the last two axes -> operand of MatMul / FusedMatMul / Gemm / FusedGemm
// becomes the product's transA / transB (a MatMul becomes a FusedMatMul without bias or
// activation); the kernels read the operand in place through its strides.
class FoldTransposeIntoMatMul : public NodeRewritePass {
public:
    std::string name() const override { return "fold_transpose_into_matmul"; }
    int level() const override { return 3; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& product,
                     PassResult& r) const override {
        for (size_t i = 0; i < 2 && i < product->inputs().size(); ++i) {
            const std::string& operand = product->inputs()[i];
            if (operand.empty() || uses.uses(operand) != 1 || !uses.is_internal(operand)) continue;
            const Node* transpose = producer_of(graph, operand);
            if (!transpose || !is_transpose(*transpose)) continue;
            const std::vector<int64_t> perm = perm_of(graph, *transpose);
            if (!swaps_last_two_axes(perm) || !product_takes_transposed(*product, i, perm.size())) continue;

            std::shared_ptr<Node> folded;
            if (product->op_type() == "MatMul") {
                folded = std::make_shared<Node>("FusedMatMul", product->name(), product->inputs(), product->outputs());
                folded->set_domain("com.pyflame");
                graph.opset_imports().emplace("com.pyflame", 1);
            } else {
                folded = std::make_shared<Node>(*product);
            }
            const char* attribute = i == 0 ? "transA" : "transB";
            folded->set_attribute(attribute, static_cast<int64_t>(product->get_attribute<int64_t>(attribute, 0) == 0));
            folded->set_input(i, transpose->inputs()[0]);
            rewrite_nodes(graph, product.get(), {folded}, {transpose});
            ++r.nodes_fused;
            return true;
        }
        return false;
    }
};

// How an elementwise op reading a transposed value takes its other operand.
enum class Operand {
    None,        // not elementwise in that value alone: the transpose cannot move past it
    AsIs,        // a unary op, or a one-element operand: broadcasting ignores the axis order
    Reshaped,    // a row along the last axis (shape [..., 1, n], n maybe unknown): it follows
                 // the transpose as a Reshape putting n on the axis the last one came from
};

// How `n` is elementwise in `value` (transposed with a perm of `rank` axes) and its other operand.
Operand elementwise_in(const Graph& graph, const Node& n, const std::string& value, size_t rank) {
    static const std::unordered_set<std::string> unary{
        "Relu", "Sigmoid", "Tanh", "Erf", "Cast", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Gelu",
        "LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "HardSigmoid", "HardSwish", "Mish", "Sin",
        "Cos", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf", "ThresholdedRelu", "Shrink"};
    static const std::unordered_set<std::string> binary{"Add", "Sub", "Mul", "Div", "Pow"};
    if (!n.domain().empty() || n.outputs().size() != 1 || n.inputs().empty() || has_subgraph(n)) return Operand::None;
    if (unary.count(n.op_type())) return n.inputs().size() == 1 && n.inputs()[0] == value ? Operand::AsIs : Operand::None;
    if (!binary.count(n.op_type()) || n.inputs().size() != 2 || n.inputs()[0] == n.inputs()[1]) return Operand::None;
    if (n.inputs()[0] != value && n.inputs()[1] != value) return Operand::None;
    const auto other = shape_of(graph, n.inputs()[0] == value ? n.inputs()[1] : n.inputs()[0]);
    if (!other || other->size() > rank) return Operand::None;
    for (size_t i = 0; i + 1 < other->size(); ++i)
        if ((*other)[i] != std::optional<int64_t>(1)) return Operand::None;
    return other->empty() || other->back() == std::optional<int64_t>(1) ? Operand::AsIs : Operand::Reshaped;
}

// Transpose -> elementwise op becomes elementwise op -> Transpose, when the transpose then goes
// on through more elementwise ops to a Transpose or a product it folds into: it moves down to
// meet them, one op at a time. (Attention's K^T scaled before Q x K^T, as torch exports it.)
class PushTransposeThroughElementwise : public NodeRewritePass {
public:
    std::string name() const override { return "push_transpose_through_elementwise"; }
    int level() const override { return 3; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& transpose,
                     PassResult& r) const override {
        if (!is_transpose(*transpose)) return false;
        const std::vector<int64_t> perm = perm_of(graph, *transpose);
        if (perm.empty()) return false;
        const std::string& transposed = transpose->outputs()[0];
        const Node* op = sole_consumer(graph, uses, transposed);
        if (!op) return false;
        const Operand operand = elementwise_in(graph, *op, transposed, perm.size());
        if (operand == Operand::None || !meets_its_match(graph, uses, *op, perm)) return false;

        std::vector<std::shared_ptr<Node>> replacement;
        auto moved_op = std::make_shared<Node>(*op);
        for (size_t i = 0; i < op->inputs().size(); ++i) {
            if (op->inputs()[i] == transposed) {
                moved_op->set_input(i, transpose->inputs()[0]);
            } else if (operand == Operand::Reshaped) {
                // The row broadcast along the transposed value's last axis lies along axis
                // perm[last] of the untransposed one.
                std::vector<int64_t> dims(perm.size(), 1);
                dims[static_cast<size_t>(perm.back())] = -1;
                Tensor shape({static_cast<int64_t>(dims.size())}, DType::Int64);
                std::copy(dims.begin(), dims.end(), shape.data_ptr<int64_t>());
                const std::string shape_name = unique_name(graph, op->inputs()[i] + "_moved_shape");
                graph.add_initializer(shape_name, shape);
                const std::string reshaped = unique_name(graph, op->inputs()[i] + "_moved");
                replacement.push_back(std::make_shared<Node>("Reshape", unique_name(graph, op->name() + "_operand_moved"),
                                                             std::vector<std::string>{op->inputs()[i], shape_name},
                                                             std::vector<std::string>{reshaped}));
                moved_op->set_input(i, reshaped);
            }
        }
        const std::string untransposed = unique_name(graph, op->outputs()[0] + "_before_transpose");
        moved_op->set_output(0, untransposed);
        auto moved_transpose = std::make_shared<Node>("Transpose", unique_name(graph, transpose->name() + "_moved"),
                                                      std::vector<std::string>{untransposed}, op->outputs());
        moved_transpose->set_attribute("perm", perm);
        replacement.push_back(moved_op);
        replacement.push_back(moved_transpose);
        rewrite_nodes(graph, op, replacement, {transpose.get()});
        ++r.nodes_removed;
        r.nodes_added += static_cast<int>(replacement.size()) - 1;
        return true;
    }

private:
    // Whether the chain of single-reader elementwise ops after `op` ends at a Transpose or at a
    // product the transpose folds into.
    static bool meets_its_match(const Graph& graph, const GraphUses& uses, const Node& op, const std::vector<int64_t>& perm) {
        const Node* current = &op;
        for (int depth = 0; depth < 16; ++depth) {
            const std::string& value = current->outputs()[0];
            const Node* next = sole_consumer(graph, uses, value);
            if (!next) return false;
            if (is_transpose(*next)) return true;
            for (size_t i = 0; i < 2 && i < next->inputs().size(); ++i)
                if (next->inputs()[i] == value && swaps_last_two_axes(perm) && product_takes_transposed(*next, i, perm.size()))
                    return true;
            if (elementwise_in(graph, *next, value, perm.size()) == Operand::None) return false;
            current = next;
        }
        return false;
    }
};

}  // namespace

void add_layout_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    // Moving, then folding, then cancelling: a transpose swapping the last two axes goes into
    // its product before cancel_transposes could merge it into a transpose before it.
    passes.push_back(std::make_unique<PushTransposeThroughElementwise>());
    passes.push_back(std::make_unique<FoldTransposeIntoMatMul>());
    passes.push_back(std::make_unique<CancelTransposes>());
}

}  // namespace pyflame_rt::optimize
