#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/graph.hpp"

namespace pyflame_rt::ops {

// Infers the type and shape of every value from the op schemas, in topological order.
// Records intermediates as value infos and completes graph outputs whose dtype/shape were
// left open. Contradictions (e.g. a MatMul of [2,3] by [4,5]) raise ValidationError.
// Returns warnings (ops without inference, unknown ops).
//
// Small integer tensors computed from shapes (Shape -> Gather/Slice/Concat/arithmetic, as
// exporters emit for Reshape targets) are tracked element by element, so a Reshape whose
// target mixes a dynamic batch with static dims still gets those static dims. When
// `static_values` is given, it receives every such value that is fully known although its
// node reads no constant-only inputs (e.g. Gather(Shape(x), 2) with x's dim 2 static): values
// a pass may fold, or a plan may compute once per input-shape signature.
std::vector<std::string> infer_shapes(Graph& graph, std::unordered_map<std::string, Tensor>* static_values = nullptr);

}  // namespace pyflame_rt::ops
