#pragma once
// Graph -> ONNX ModelProto (the reverse of ONNXImporter): nodes, attributes (subgraphs
// included), initializers as raw_data (4-/2-bit types packed as ONNX requires), graph
// inputs/outputs/value infos, opset imports and metadata.
#include <string>

#include "pyflame_rt/graph.hpp"

namespace pyflame_rt {

// The serialized ModelProto. ValidationError for what ONNX cannot hold (a tensor over 2 GB).
std::string export_onnx_bytes(const Graph& graph);
// Writes it atomically to `path`.
void export_onnx(const Graph& graph, const std::string& path);

}  // namespace pyflame_rt
