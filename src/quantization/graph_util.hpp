#pragma once
// Internal helpers of the quantizer and the calibrator.
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/quantization/quant_config.hpp"

namespace pyflame_rt::quantization::detail {

// The dtype of every value of the graph that shape inference can tell (inputs, initializers,
// intermediates, outputs), computed on a copy: the graph itself is not annotated.
std::unordered_map<std::string, DType> value_dtypes(const Graph& graph);

// Adds the dtype of values `dtypes` lacks wherever the op's type rule gives it from its typed
// inputs (the output of a Reshape to a computed shape, and what follows it).
void propagate_dtypes(const Graph& graph, std::unordered_map<std::string, DType>& dtypes);

// Identity outputs that copy an initializer (exporters share parameters so), mapped to the
// initializer's name; `resolve_constant` gives the initializer behind a name, else the name.
using ConstantAliases = std::unordered_map<std::string, std::string>;
ConstantAliases constant_aliases(const Graph& graph);
const std::string& resolve_constant(const ConstantAliases& aliases, const std::string& name);

// What the static INT8 quantizer does to a graph, computed without the activation parameters
// (the calibrator needs the tensor list before any parameter exists).
struct StaticPlan {
    std::vector<size_t> weighted_nodes;       // Conv/MatMul/Gemm with a constant weight (node indices)
    std::vector<size_t> activation_nodes;     // Relu/Clip/pooling/shape ops/Add/... quantized around
    std::vector<std::string> activations;     // float tensors to quantize, in graph order
    size_t skipped = 0;                       // quantizable op types left in float
};
StaticPlan plan_static(const Graph& graph, const QuantConfig& config,
                       const std::unordered_map<std::string, DType>& dtypes);

// Ops whose output is a rearrangement (or max) of the input's values: the output takes the
// input's quantization parameters, so int8 flows through unchanged.
bool is_same_scale_op(const std::string& op_type);

}  // namespace pyflame_rt::quantization::detail
