#pragma once
// Graph optimization passes and the PassManager that runs them by level or by name.
//   level 1 (basic):    constant folding, identity/dropout elimination, common
//                       subexpression elimination, dead-node elimination
//   level 2 (extended): Conv+BatchNormalization folding, MatMul+Add -> Gemm
//   level 3:            level 2 (layout passes will join here)
// Every pass keeps the graph's results equal to the unoptimized graph's (within float
// round-off) and never mutates nodes shared with other copies of the graph.
#include <memory>
#include <string>
#include <vector>

#include "pyflame_rt/graph.hpp"

namespace pyflame_rt::optimize {

struct PassResult {
    std::string pass;
    int nodes_removed = 0;  // nodes gone (folded, eliminated, merged)
    int nodes_fused = 0;    // nodes merged into another node
    int nodes_added = 0;
    bool changed() const { return nodes_removed || nodes_fused || nodes_added; }
};

class GraphPass {
public:
    virtual ~GraphPass() = default;
    virtual std::string name() const = 0;
    virtual int level() const = 0;  // the lowest optimization level that runs it
    virtual PassResult run(Graph& graph) const = 0;
};

class PassManager {
public:
    PassManager();  // holds the built-in passes
    ~PassManager();

    std::vector<std::string> list_passes() const;
    int pass_level(const std::string& name) const;  // ValidationError for an unknown pass
    // Runs every pass of level <= `level` (0 runs nothing), in order, until nothing changes
    // (at most a few rounds). One result per pass run.
    std::vector<PassResult> run_level(Graph& graph, int level) const;
    // Runs the named passes once each, in the order given; ValidationError for unknown names.
    std::vector<PassResult> run_passes(Graph& graph, const std::vector<std::string>& names) const;
    void add_pass(std::unique_ptr<GraphPass> pass);

private:
    std::vector<std::unique_ptr<GraphPass>> passes_;
};

}  // namespace pyflame_rt::optimize
