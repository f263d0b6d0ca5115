#include "pyflame_rt/optimize/pass_manager.hpp"

#include <algorithm>

#include "optimize/passes.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::optimize {

PassManager::PassManager() {
    add_qdq_fusion_passes(passes_);  // level 2, but before constant folding folds the weights' DequantizeLinear
    add_basic_passes(passes_);
    add_attention_fusion_passes(passes_);  // before the MatMul fusions take its MatMuls
    add_fusion_passes(passes_);
    add_layer_norm_fusion_passes(passes_);
    add_layout_passes(passes_);  // level 3: after the level-2 fusions had their look at the graph
}

PassManager::~PassManager() = default;

void PassManager::add_pass(std::unique_ptr<GraphPass> pass) { passes_.push_back(std::move(pass)); }

std::vector<std::string> PassManager::list_passes() const {
    std::vector<std::string> names;
    for (const auto& p : passes_) names.push_back(p->name());
    return names;
}

int PassManager::pass_level(const std::string& name) const {
    for (const auto& p : passes_)
        if (p->name() == name) return p->level();
    throw ValidationError("unknown optimization pass '" + name + "'");
}

std::vector<PassResult> PassManager::run_level(Graph& graph, int level) const {
    if (level < 0 || level > 3) throw ValidationError("optimization level must be in 0..3, got " + std::to_string(level));
    std::vector<PassResult> results;
    // Passes enable each other (folding exposes dead nodes, fusion exposes duplicates):
    // repeat until a round changes nothing. Level 3's layout passes start once levels 1-2 are
    // done, so every fusion matches the graph as the exporter wrote it.
    for (const int stage : {std::min(level, 2), level}) {
        for (int round = 0; round < 4; ++round) {
            bool changed = false;
            for (const auto& p : passes_) {
                if (p->level() > stage) continue;
                results.push_back(p->run(graph));
                changed = changed || results.back().changed();
            }
            if (!changed) break;
        }
        if (stage == level) break;
    }
    return results;
}

std::vector<PassResult> PassManager::run_passes(Graph& graph, const std::vector<std::string>& names) const {
    for (const auto& name : names) (void)pass_level(name);  // all names valid before anything runs
    std::vector<PassResult> results;
    for (const auto& name : names)
        for (const auto& p : passes_)
            if (p->name() == name) results.push_back(p->run(graph));
    return results;
}

}  // namespace pyflame_rt::optimize
