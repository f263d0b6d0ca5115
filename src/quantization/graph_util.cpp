#include "quantization/graph_util.hpp"

#include "ops/shape_inference.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::quantization::detail {

std::unordered_map<std::string, DType> value_dtypes(const Graph& graph) {
    Graph copy(graph);
    try {
        ops::infer_shapes(copy);
    } catch (const ValidationError&) {
        // Inference is a hint here: values it cannot type are left out (and then not converted).
    }
    std::unordered_map<std::string, DType> dtypes;
    for (const auto& in : copy.inputs()) dtypes[in.name] = in.dtype;
    for (const auto& [name, info] : copy.value_infos())
        if (info.rank_known || info.kind == ValueKind::Tensor) dtypes[name] = info.dtype;
    for (const auto& out : copy.outputs()) dtypes.emplace(out.name, out.dtype);
    for (const auto& [name, t] : copy.initializers()) dtypes[name] = t.dtype();
    return dtypes;
}

bool is_same_scale_op(const std::string& op) {
    return op == "MaxPool" || op == "Flatten" || op == "Reshape" || op == "Transpose" || op == "Squeeze" ||
           op == "Unsqueeze" || op == "GlobalMaxPool";
}

namespace {

bool is_activation_op(const std::string& op) {
    return is_same_scale_op(op) || op == "Relu" || op == "Clip" || op == "Add" || op == "AveragePool" ||
           op == "GlobalAveragePool" || op == "Concat";
}

// The data inputs of an op that get quantized (shape operands and the like stay as they are).
size_t quantized_input_count(const Node& n) {
    const std::string& op = n.op_type();
    if (op == "Add" || op == "Concat") return n.inputs().size();
    return 1;
}

}  // namespace

StaticPlan plan_static(const Graph& graph, const QuantConfig& config, const std::unordered_map<std::string, DType>& dtypes) {
    StaticPlan plan;
    const auto& nodes = graph.nodes();
    auto is_float_activation = [&](const std::string& name) {
        if (name.empty() || graph.has_initializer(name)) return false;
        auto it = dtypes.find(name);
        return it != dtypes.end() && it->second == DType::Float32;
    };
    auto is_float_weight = [&](const std::string& name) {
        return !name.empty() && graph.has_initializer(name) && graph.get_initializer(name).dtype() == DType::Float32;
    };
    std::unordered_set<std::string> seen;
    auto add = [&](const std::string& name) {
        if (is_float_activation(name) && seen.insert(name).second) plan.activations.push_back(name);
    };
    for (size_t i = 0; i < nodes.size(); ++i) {
        const Node& n = *nodes[i];
        const std::string& op = n.op_type();
        const bool weighted_type = op == "Conv" || op == "MatMul" || op == "Gemm";
        if (!n.domain().empty() || (!weighted_type && !is_activation_op(op))) continue;
        if (config.excludes(op, n.name())) {
            ++plan.skipped;
            continue;
        }
        if (weighted_type) {
            bool ok = n.inputs().size() >= 2 && is_float_activation(n.inputs()[0]) && is_float_weight(n.inputs()[1]);
            if (ok && op == "Conv") ok = graph.get_initializer(n.inputs()[1]).ndim() >= 3;
            if (ok && op == "MatMul") ok = graph.get_initializer(n.inputs()[1]).ndim() == 2;
            if (ok && op == "Gemm") {
                ok = n.get_attribute<int64_t>("transA", 0) == 0 && n.get_attribute<double>("alpha", 1.0) == 1.0 &&
                     n.get_attribute<double>("beta", 1.0) == 1.0;
                if (ok && n.has_input(2)) ok = is_float_weight(n.inputs()[2]) && graph.get_initializer(n.inputs()[2]).ndim() == 1;
            }
            if (ok && op == "Conv" && n.has_input(2))
                ok = is_float_weight(n.inputs()[2]) && graph.get_initializer(n.inputs()[2]).ndim() == 1;
            if (!ok) {
                ++plan.skipped;
                continue;
            }
            plan.weighted_nodes.push_back(i);
            add(n.inputs()[0]);
            add(n.outputs()[0]);
        } else {
            bool any = false;
            for (size_t k = 0; k < quantized_input_count(n) && k < n.inputs().size(); ++k) any |= is_float_activation(n.inputs()[k]);
            if (!any || !is_float_activation(n.outputs()[0])) continue;  // not a float data op here
            bool all = true;
            for (size_t k = 0; k < quantized_input_count(n) && k < n.inputs().size(); ++k) all &= is_float_activation(n.inputs()[k]);
            if (!all) {
                ++plan.skipped;
                continue;
            }
            plan.activation_nodes.push_back(i);
            for (size_t k = 0; k < quantized_input_count(n) && k < n.inputs().size(); ++k) add(n.inputs()[k]);
            add(n.outputs()[0]);
        }
    }
    return plan;
}

}  // namespace pyflame_rt::quantization::detail
