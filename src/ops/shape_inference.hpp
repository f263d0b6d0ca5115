#pragma once
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt::ops {

// Infers the type and shape of every value from the op schemas, in topological order.
// Records intermediates as value infos and completes graph outputs whose dtype/shape were
// left open. Contradictions (e.g. a MatMul of [2,3] by [4,5]) raise ValidationError.
// Returns warnings (ops without inference, unknown ops).
std::vector<std::string> infer_shapes(Graph& graph);

}  // namespace pyflame_rt::ops
