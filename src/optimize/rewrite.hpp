#pragma once
// What graph passes need to know about a graph: who uses each value, what is constant.
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/optimize/pass_manager.hpp"

namespace pyflame_rt::optimize {

class GraphUses {
public:
    explicit GraphUses(const Graph& graph);
    // Uses by node inputs (a node reading a value twice counts twice).
    int uses(const std::string& name) const;
    bool is_graph_output(const std::string& name) const { return outputs_.count(name) != 0; }
    bool is_graph_input(const std::string& name) const { return inputs_.count(name) != 0; }
    // Read by a subgraph from the enclosing scope: rewrites must leave such names alone.
    bool read_by_subgraph(const std::string& name) const { return subgraph_reads_.count(name) != 0; }
    // Safe to rename away or drop: no graph output, no subgraph reads it.
    bool is_internal(const std::string& name) const { return !is_graph_output(name) && !read_by_subgraph(name); }
    // An initializer no graph input can override.
    bool is_constant(const std::string& name) const;

private:
    const Graph& graph_;
    std::unordered_map<std::string, int> uses_;
    std::unordered_set<std::string> outputs_, inputs_, subgraph_reads_;
};

// A pass that rewrites one matching node at a time and repeats until no node matches (each
// rewrite changes who uses what, so the matching starts over on the new graph).
class NodeRewritePass : public GraphPass {
public:
    PassResult run(Graph& graph) const final;

protected:
    // Rewrites around `node` when it matches, counting what changed in `result`; true if so.
    virtual bool try_rewrite(Graph& graph, const GraphUses& uses, const std::shared_ptr<Node>& node,
                             PassResult& result) const = 0;
};

bool has_subgraph(const Node& node);
// Every node input equal to `from` becomes `to` (nodes are replaced by changed copies).
void replace_uses(Graph& graph, const std::string& from, const std::string& to);
// A name not yet used by any value or node in `graph`, starting from `base`.
std::string unique_name(const Graph& graph, const std::string& base);
// The node writing `value`; nullptr for graph inputs, initializers and unknown names.
const Node* producer_of(const Graph& graph, const std::string& value);
// The node reading `value` when exactly one node input reads it and no graph output or
// subgraph does; else nullptr.
const Node* sole_consumer(const Graph& graph, const GraphUses& uses, const std::string& value);
// What is known of a value's type and shape: an initializer's, a graph input's or an inferred one.
std::optional<TensorInfo> info_of(const Graph& graph, const std::string& name);

}  // namespace pyflame_rt::optimize
