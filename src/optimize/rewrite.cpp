#include "optimize/rewrite.hpp"

namespace pyflame_rt::optimize {
namespace {

void collect_subgraph_reads(const Graph& g, std::unordered_set<std::string>& out) {
    for (const auto& node : g.nodes()) {
        for (const auto& [k, v] : node->attributes()) {
            const auto* sub = std::get_if<std::shared_ptr<Graph>>(&v);
            if (!sub || !*sub) continue;
            // Over-approximation: every name a subgraph mentions.
            for (const auto& n : (*sub)->nodes())
                for (const auto& in : n->inputs()) out.insert(in);
            for (const auto& o : (*sub)->outputs()) out.insert(o.name);
            collect_subgraph_reads(**sub, out);
        }
    }
}

}  // namespace

GraphUses::GraphUses(const Graph& graph) : graph_(graph) {
    for (const auto& node : graph.nodes())
        for (const auto& in : node->inputs())
            if (!in.empty()) ++uses_[in];
    for (const auto& o : graph.outputs()) outputs_.insert(o.name);
    for (const auto& i : graph.inputs()) inputs_.insert(i.name);
    collect_subgraph_reads(graph, subgraph_reads_);
}

int GraphUses::uses(const std::string& name) const {
    auto it = uses_.find(name);
    return it == uses_.end() ? 0 : it->second;
}

bool GraphUses::is_constant(const std::string& name) const {
    return !name.empty() && graph_.has_initializer(name) && !is_graph_input(name);
}

PassResult NodeRewritePass::run(Graph& graph) const {
    PassResult result{name()};
    for (bool changed = true; changed;) {
        changed = false;
        const GraphUses uses(graph);
        const auto nodes = graph.nodes();  // a snapshot: rewrites replace the graph's node list
        for (const auto& node : nodes) {
            if (try_rewrite(graph, uses, node, result)) {
                changed = true;
                break;
            }
        }
    }
    return result;
}

bool has_subgraph(const Node& node) {
    for (const auto& [k, v] : node.attributes())
        if (std::holds_alternative<std::shared_ptr<Graph>>(v)) return true;
    return false;
}

void replace_uses(Graph& graph, const std::string& from, const std::string& to) {
    std::vector<std::shared_ptr<Node>> nodes = graph.nodes();
    for (auto& node : nodes) {
        bool hit = false;
        for (const auto& in : node->inputs()) hit = hit || in == from;
        if (!hit) continue;
        auto copy = std::make_shared<Node>(*node);
        for (size_t i = 0; i < copy->inputs().size(); ++i)
            if (copy->inputs()[i] == from) copy->set_input(i, to);
        node = copy;
    }
    graph.set_nodes(std::move(nodes));
}

std::string unique_name(const Graph& graph, const std::string& base) {
    std::unordered_set<std::string> taken;
    for (const auto& n : graph.nodes()) {
        taken.insert(n->name());
        for (const auto& o : n->outputs()) taken.insert(o);
    }
    for (const auto& i : graph.inputs()) taken.insert(i.name);
    for (const auto& name : graph.initializer_names()) taken.insert(name);
    std::string name = base;
    for (int k = 1; taken.count(name); ++k) name = base + "_" + std::to_string(k);
    return name;
}

const Node* producer_of(const Graph& graph, const std::string& value) {
    if (value.empty()) return nullptr;
    for (const auto& n : graph.nodes())
        for (const auto& out : n->outputs())
            if (out == value) return n.get();
    return nullptr;
}

const Node* sole_consumer(const Graph& graph, const GraphUses& uses, const std::string& value) {
    if (value.empty() || uses.uses(value) != 1 || !uses.is_internal(value)) return nullptr;
    for (const auto& n : graph.nodes())
        for (const auto& in : n->inputs())
            if (in == value) return n.get();
    return nullptr;
}

std::optional<TensorInfo> info_of(const Graph& graph, const std::string& name) {
    if (name.empty()) return std::nullopt;
    for (const auto& in : graph.inputs())
        if (in.name == name) return in;  // before initializers: an input may override its default
    if (graph.has_initializer(name)) {
        const Tensor& t = graph.get_initializer(name);
        return TensorInfo{name, t.dtype(), to_shape(t.shape()), true, ValueKind::Tensor};
    }
    auto it = graph.value_infos().find(name);
    if (it != graph.value_infos().end()) return it->second;
    return std::nullopt;
}

}  // namespace pyflame_rt::optimize
