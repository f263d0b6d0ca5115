// Level 1: identity/dropout elimination, constant folding, common subexpression elimination,
// dead-node elimination.
#include <algorithm>
#include <cstring>
#include <sstream>

#include "ops/op.hpp"
#include "ops/shape_inference.hpp"
#include "optimize/passes.hpp"
#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

bool is_default_domain(const Node& n) { return n.domain().empty() || n.domain() == "ai.onnx"; }

// Ops whose result is not a function of their inputs: never folded or merged.
bool is_nondeterministic(const Node& n) {
    static const char* const kRandom[] = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                          "RandomUniformLike", "Bernoulli", "Multinomial", "Dropout"};
    return std::find_if(std::begin(kRandom), std::end(kRandom), [&](const char* op) { return n.op_type() == op; }) !=
           std::end(kRandom);
}

std::vector<std::shared_ptr<Node>> without(const std::vector<std::shared_ptr<Node>>& nodes,
                                           const std::unordered_set<const Node*>& removed) {
    std::vector<std::shared_ptr<Node>> kept;
    for (const auto& n : nodes)
        if (!removed.count(n.get())) kept.push_back(n);
    return kept;
}

// Identity, and Dropout in inference (no training_mode, mask unused): consumers read the input.
class EliminateIdentity : public NodeRewritePass {
public:
    std::string name() const override { return "eliminate_identity"; }
    int level() const override { return 1; }

protected:
    bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& node,
                     PassResult& result) const override {
        if (!is_default_domain(*node) || node->inputs().empty() || node->outputs().empty()) return false;
        const bool identity = node->op_type() == "Identity";
        const bool dropout = node->op_type() == "Dropout" && !node->has_input(2) &&
                             (node->outputs().size() < 2 || node->outputs()[1].empty() ||
                              (uses.uses(node->outputs()[1]) == 0 && uses.is_internal(node->outputs()[1])));
        if (!identity && !dropout) return false;
        const std::string in = node->inputs()[0], out = node->outputs()[0];
        if (in.empty() || !uses.is_internal(out)) return false;
        replace_uses(graph, out, in);
        graph.set_nodes(without(graph.nodes(), {node.get()}));
        ++result.nodes_removed;
        return true;
    }
};

// Nodes whose every input is constant are run once now; their outputs become initializers.
class ConstantFolding : public GraphPass {
public:
    std::string name() const override { return "constant_folding"; }
    int level() const override { return 1; }
    PassResult run(Graph& graph) const override {
        PassResult r{name()};
        // Folding turns outputs into initializers; GraphUses reads constness from the graph
        // itself, so one instance serves the whole pass.
        const GraphUses uses(graph);
        for (const auto& node : graph.topological_sort()) {
            if (!foldable(*node, uses)) continue;
            const ops::OpSchema* schema = ops::OpTable::instance().find(node->op_type(), node->domain());
            try {
                ops::KernelInfo info{*node, graph.opset_version(""), {}, {}};
                ops::KernelContext ctx;
                for (const auto& in : node->inputs()) {
                    const Tensor* t = in.empty() ? nullptr : &graph.get_initializer(in);
                    info.constant_inputs.push_back(t);
                    ctx.inputs.push_back(t);
                    ctx.input_values.push_back(nullptr);
                }
                std::vector<Value> values;
                values.reserve(ctx.inputs.size());
                for (size_t i = 0; i < ctx.inputs.size(); ++i) {
                    values.push_back(ctx.inputs[i] ? Value(*ctx.inputs[i]) : Value());
                }
                for (size_t i = 0; i < values.size(); ++i) ctx.input_values[i] = ctx.inputs[i] ? &values[i] : nullptr;
                ctx.outputs.resize(node->outputs().size());
                ctx.output_values.resize(node->outputs().size());
                ops::check_arity(*schema, *node);
                schema->reference_kernel(info)->compute(ctx);
                for (size_t o = 0; o < node->outputs().size(); ++o) {
                    if (ctx.output_values[o] || (ctx.outputs[o].empty() && !node->outputs()[o].empty()))
                        throw ValidationError("not a tensor");  // sequences stay as nodes
                }
                for (size_t o = 0; o < node->outputs().size(); ++o)
                    if (!node->outputs()[o].empty()) graph.add_initializer(node->outputs()[o], ctx.outputs[o]);
            } catch (const PyFlameRTError&) {
                continue;  // left for run time, where the same error will name the node
            }
            graph.set_nodes(without(graph.nodes(), {node.get()}));
            ++r.nodes_removed;
        }
        return r;
    }

private:
    static bool foldable(const Node& node, const GraphUses& uses) {
        if (has_subgraph(node) || is_nondeterministic(node)) return false;
        const ops::OpSchema* schema = ops::OpTable::instance().find(node.op_type(), node.domain());
        if (!schema || !schema->reference_kernel) return false;
        for (const auto& in : node.inputs())
            if (!in.empty() && !uses.is_constant(in)) return false;
        for (const auto& out : node.outputs())
            if (!out.empty() && (uses.is_graph_input(out) || uses.read_by_subgraph(out))) return false;
        return true;
    }
};

// Shape arithmetic whose result the static dims already decide (Gather(Shape(x), 2) where x's
// dim 2 is fixed, and what is computed from it) becomes initializers, even though it reads
// non-constant tensors; constant folding then finishes what follows from them.
class FoldShapeComputations : public GraphPass {
public:
    std::string name() const override { return "fold_shape_computations"; }
    int level() const override { return 1; }
    PassResult run(Graph& graph) const override {
        PassResult r{name()};
        std::unordered_map<std::string, Tensor> static_values;
        try {
            ops::infer_shapes(graph, &static_values);
        } catch (const ValidationError&) {
            return r;  // contradictory shapes: the session reports them
        }
        const GraphUses uses(graph);
        std::unordered_set<const Node*> folded;
        for (const auto& node : graph.nodes()) {
            if (node->outputs().size() != 1 || has_subgraph(*node) || is_nondeterministic(*node)) continue;
            const std::string& out = node->outputs()[0];
            auto it = static_values.find(out);
            if (it == static_values.end() || uses.read_by_subgraph(out) || uses.is_graph_input(out)) continue;
            graph.add_initializer(out, it->second);
            folded.insert(node.get());
        }
        if (folded.empty()) return r;
        graph.set_nodes(without(graph.nodes(), folded));
        r.nodes_removed = static_cast<int>(folded.size());
        return r;
    }
};

// Two nodes with the same op, inputs and attributes compute the same values: keep one.
class CommonSubexpressionElimination : public GraphPass {
public:
    std::string name() const override { return "common_subexpression_elimination"; }
    int level() const override { return 1; }
    PassResult run(Graph& graph) const override {
        PassResult r{name()};
        const GraphUses uses(graph);
        std::unordered_map<std::string, const Node*> seen;
        std::unordered_set<const Node*> removed;
        std::vector<std::pair<std::string, std::string>> renames;
        for (const auto& node : graph.topological_sort()) {
            if (has_subgraph(*node) || is_nondeterministic(*node)) continue;
            std::string key = signature(*node, renames);
            auto [it, inserted] = seen.emplace(key, node.get());
            if (inserted) continue;
            bool internal = node->outputs().size() == it->second->outputs().size();
            for (const auto& out : node->outputs()) internal = internal && uses.is_internal(out);
            if (!internal) continue;
            for (size_t o = 0; o < node->outputs().size(); ++o)
                if (!node->outputs()[o].empty()) renames.emplace_back(node->outputs()[o], it->second->outputs()[o]);
            removed.insert(node.get());
            ++r.nodes_removed;
        }
        if (removed.empty()) return r;
        graph.set_nodes(without(graph.nodes(), removed));
        for (const auto& [from, to] : renames) replace_uses(graph, from, to);
        return r;
    }

private:
    // Inputs are resolved through earlier merges so chains of duplicates collapse in one pass.
    static std::string signature(const Node& n, const std::vector<std::pair<std::string, std::string>>& renames) {
        std::ostringstream key;
        key << n.domain() << "::" << n.op_type() << "(";
        for (std::string in : n.inputs()) {
            for (const auto& [from, to] : renames)
                if (in == from) in = to;
            key << in.size() << ":" << in << ",";
        }
        key << ")" << n.outputs().size() << "{";
        for (const auto& [name, value] : n.attributes()) {
            key << name << "=" << attribute_kind_name(value) << ":";
            std::visit(
                [&](const auto& v) {
                    using T = std::decay_t<decltype(v)>;
                    if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, std::string>) key << v;
                    else if constexpr (std::is_same_v<T, double>) key << std::hexfloat << v << std::defaultfloat;
                    else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<std::string>>) {
                        for (const auto& e : v) key << e << "|";
                    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
                        for (double e : v) key << std::hexfloat << e << std::defaultfloat << "|";
                    } else if constexpr (std::is_same_v<T, Tensor>) {
                        key << dtype_to_string(v.dtype()) << shape_to_string(v.shape());
                        if (v.dtype() == DType::String) {
                            for (int64_t i = 0; i < v.num_elements(); ++i) key << v.template data_ptr<std::string>()[i] << "|";
                        } else {
                            key.write(static_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size_bytes()));
                        }
                    } else {
                        key << static_cast<const void*>(v.get());  // subgraphs: never equal (excluded above)
                    }
                },
                value);
            key << ";";
        }
        key << "}";
        return key.str();
    }
};

// Nodes none of whose outputs are used, and initializers nothing reads.
class EliminateDeadNodes : public GraphPass {
public:
    std::string name() const override { return "eliminate_dead_nodes"; }
    int level() const override { return 1; }
    PassResult run(Graph& graph) const override {
        PassResult r{name()};
        bool changed = true;
        while (changed) {
            changed = false;
            const GraphUses uses(graph);
            std::unordered_set<const Node*> dead;
            for (const auto& node : graph.nodes()) {
                bool used = false;
                for (const auto& out : node->outputs())
                    used = used || (!out.empty() && (uses.uses(out) > 0 || !uses.is_internal(out)));
                if (!used) dead.insert(node.get());
            }
            if (!dead.empty()) {
                graph.set_nodes(without(graph.nodes(), dead));
                r.nodes_removed += static_cast<int>(dead.size());
                changed = true;
            }
        }
        const GraphUses uses(graph);
        for (const auto& name : std::vector<std::string>(graph.initializer_names()))
            if (uses.uses(name) == 0 && uses.is_internal(name) && !uses.is_graph_input(name)) graph.remove_initializer(name);
        return r;
    }
};

}  // namespace

void add_basic_passes(std::vector<std::unique_ptr<GraphPass>>& passes) {
    passes.push_back(std::make_unique<EliminateIdentity>());
    passes.push_back(std::make_unique<FoldShapeComputations>());
    passes.push_back(std::make_unique<ConstantFolding>());
    passes.push_back(std::make_unique<CommonSubexpressionElimination>());
    passes.push_back(std::make_unique<EliminateDeadNodes>());
}

}  // namespace pyflame_rt::optimize
