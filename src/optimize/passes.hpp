#pragma once
#include <memory>
#include <vector>

#include "pyflame_rt/optimize/pass_manager.hpp"

namespace pyflame_rt::optimize {
void add_basic_passes(std::vector<std::unique_ptr<GraphPass>>& passes);     // basic_passes.cpp
void add_attention_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes);  // attention_fusion.cpp
void add_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes);    // fusion_passes.cpp
void add_qdq_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes);  // qdq_fusion_passes.cpp
void add_layer_norm_fusion_passes(std::vector<std::unique_ptr<GraphPass>>& passes);  // layernorm_fusion.cpp
void add_layout_passes(std::vector<std::unique_ptr<GraphPass>>& passes);    // layout_passes.cpp (level 3)
}
