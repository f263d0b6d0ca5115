#include "quantization/graph_util.hpp"

#include "ops/shape_inference.hpp"
#include "pyflame_rt/errors.hpp"

#include <optional>

namespace pyflame_rt::quantization::detail {

namespace {

// Ops whose first output does not take the dtype of their first input.
bool output_dtype_differs(const std::string& op) {
    static const std::unordered_set<std::string> ops = {
        "Cast", "CastLike", "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Where", "QuantizeLinear", "DequantizeLinear",
        "DynamicQuantizeLinear", "ConstantOfShape", "Constant", "EyeLike", "RandomNormalLike", "RandomUniformLike",
        "RandomNormal", "RandomUniform", "Multinomial", "Bernoulli", "MatMulInteger", "ConvInteger", "QLinearConv",
        "QLinearMatMul", "OneHot", "If", "Loop", "Scan", "SequenceConstruct", "SequenceAt", "SplitToSequence",
        "ConcatFromSequence", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceLength", "Optional",
        "OptionalGetElement", "OptionalHasElement", "StringNormalizer", "TfIdfVectorizer", "ImageDecoder"};
    return ops.count(op) != 0;
}

}  // namespace

// Shape inference stops typing values downstream of what it cannot shape (e.g. a Reshape to a
// computed shape in a transformer's attention): dtypes still follow from the ops' type rules,
// so values it left out get them here, in graph order.
void propagate_dtypes(const Graph& graph, std::unordered_map<std::string, DType>& dtypes) {
    for (const auto& node : graph.topological_sort()) {
        const Node& n = *node;
        if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
        const std::string& op = n.op_type();
        auto input_dtype = [&](size_t k) -> std::optional<DType> {
            if (k >= n.inputs().size() || n.inputs()[k].empty()) return std::nullopt;
            auto it = dtypes.find(n.inputs()[k]);
            return it == dtypes.end() ? std::nullopt : std::optional<DType>(it->second);
        };
        auto set = [&](size_t k, std::optional<DType> d) {
            if (d && k < n.outputs().size() && !n.outputs()[k].empty()) dtypes.emplace(n.outputs()[k], *d);
        };
        if (op == "Cast" && n.has_attribute("to")) {
            set(0, dtype_from_onnx(static_cast<int>(n.get_attribute<int64_t>("to"))));
        } else if (op == "CastLike" || op == "Where") {
            set(0, input_dtype(1));
        } else if (op == "Shape" || op == "Size" || op == "NonZero" || op == "ArgMax" || op == "ArgMin") {
            set(0, DType::Int64);
        } else if (op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" || op == "GreaterOrEqual" ||
                   op == "Not" || op == "And" || op == "Or" || op == "Xor" || op == "IsNaN" || op == "IsInf") {
            set(0, DType::Bool);
        } else if (op == "DequantizeLinear" && !n.has_attribute("output_dtype")) {
            set(0, DType::Float32);
        } else if (!output_dtype_differs(op)) {
            // Split's parts all take the input's type; other ops' extra outputs (indices,
            // statistics, masks) may not, and are left out.
            const size_t typed_outputs = op == "Split" ? n.outputs().size() : 1;
            for (size_t k = 0; k < typed_outputs; ++k) set(k, input_dtype(0));
        }
    }
}

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
    propagate_dtypes(copy, dtypes);
    return dtypes;
}

ConstantAliases constant_aliases(const Graph& graph) {
    ConstantAliases aliases;
    for (const auto& node : graph.topological_sort()) {
        const Node& n = *node;
        if (n.op_type() != "Identity" || (!n.domain().empty() && n.domain() != "ai.onnx") || n.inputs().empty() ||
            n.outputs().empty())
            continue;
        const std::string& in = resolve_constant(aliases, n.inputs()[0]);
        if (graph.has_initializer(in)) aliases[n.outputs()[0]] = in;
    }
    return aliases;
}

const std::string& resolve_constant(const ConstantAliases& aliases, const std::string& name) {
    auto it = aliases.find(name);
    return it == aliases.end() ? name : it->second;
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
    // Values fixed before any input arrives (initializers, Constant outputs, and Identity copies
    // of either, as exporters write shared parameters): never activations, so an Add of a bias
    // stays a float Add.
    const ConstantAliases aliases = constant_aliases(graph);
    std::unordered_set<std::string> constants;
    for (const auto& n : nodes)
        if (n->op_type() == "Constant" && (n->domain().empty() || n->domain() == "ai.onnx"))
            for (const auto& o : n->outputs()) constants.insert(o);
    auto is_float_activation = [&](const std::string& name) {
        if (name.empty() || graph.has_initializer(name) || aliases.count(name) || constants.count(name)) return false;
        auto it = dtypes.find(name);
        return it != dtypes.end() && it->second == DType::Float32;
    };
    auto is_float_weight = [&](const std::string& name) {
        const std::string& init = resolve_constant(aliases, name);
        return !init.empty() && graph.has_initializer(init) && graph.get_initializer(init).dtype() == DType::Float32;
    };
    auto initializer = [&](const std::string& name) -> const Tensor& {
        return graph.get_initializer(resolve_constant(aliases, name));
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
            if (ok && op == "Conv") ok = initializer(n.inputs()[1]).ndim() >= 3;
            if (ok && op == "MatMul") ok = initializer(n.inputs()[1]).ndim() == 2;
            if (ok && op == "Gemm") {
                ok = n.get_attribute<int64_t>("transA", 0) == 0 && n.get_attribute<double>("alpha", 1.0) == 1.0 &&
                     n.get_attribute<double>("beta", 1.0) == 1.0;
                if (ok && n.has_input(2)) ok = is_float_weight(n.inputs()[2]) && initializer(n.inputs()[2]).ndim() == 1;
            }
            if (ok && op == "Conv" && n.has_input(2))
                ok = is_float_weight(n.inputs()[2]) && initializer(n.inputs()[2]).ndim() == 1;
            if (!ok) {
                ++plan.skipped;
                continue;
            }
            plan.weighted_nodes.push_back(i);
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
        }
    }
    // An activation op is quantized only on a path into a quantized Conv/MatMul/Gemm (ResNet's
    // Add -> Relu -> Conv; not a transformer's residual Add -> LayerNormalization or the
    // Reshape/Transpose chain into the attention's float MatMuls): elsewhere its QDQ pairs
    // would only cost passes and precision.
    // Ops that only move values (no int8 kernel of their own) are quantized only between two
    // quantized ops: DequantizeLinear -> Transpose -> QuantizeLinear after a float op is waste.
    std::unordered_map<std::string, std::vector<size_t>> readers;
    std::unordered_map<std::string, size_t> producer;
    for (size_t i = 0; i < nodes.size(); ++i) {
        for (const auto& in : nodes[i]->inputs()) readers[in].push_back(i);
        for (const auto& out : nodes[i]->outputs()) producer[out] = i;
    }
    const std::unordered_set<size_t> weighted(plan.weighted_nodes.begin(), plan.weighted_nodes.end());
    std::unordered_set<size_t> quantized;
    auto keep_feeding_quantized = [&] {  // backwards: activation ops whose output a quantized op reads
        quantized = weighted;
        std::vector<size_t> kept;
        for (auto it = plan.activation_nodes.rbegin(); it != plan.activation_nodes.rend(); ++it) {
            bool feeds_quantized = false;
            for (size_t r : readers[nodes[*it]->outputs()[0]]) feeds_quantized |= quantized.count(r) != 0;
            if (!feeds_quantized) continue;
            quantized.insert(*it);
            kept.insert(kept.begin(), *it);
        }
        plan.activation_nodes = std::move(kept);
    };
    keep_feeding_quantized();
    std::vector<size_t> kept;
    for (size_t i : plan.activation_nodes) {
        const std::string& op = nodes[i]->op_type();
        const bool moves_only = op == "Reshape" || op == "Transpose" || op == "Squeeze" || op == "Unsqueeze" || op == "Flatten";
        auto p = producer.find(nodes[i]->inputs()[0]);
        if (moves_only && (p == producer.end() || !quantized.count(p->second))) {
            quantized.erase(i);
            continue;
        }
        kept.push_back(i);
    }
    plan.activation_nodes = std::move(kept);
    keep_feeding_quantized();
    for (size_t i = 0; i < nodes.size(); ++i) {
        if (!quantized.count(i)) continue;
        const Node& n = *nodes[i];
        const size_t count = weighted.count(i) ? 1 : std::min(quantized_input_count(n), n.inputs().size());
        for (size_t k = 0; k < count; ++k) add(n.inputs()[k]);
        // A MatMul/Gemm output no quantized op reads stays float (int8 in, float32 out: no
        // rounding to int8 before a bias Add, LayerNormalization or the graph output).
        bool read_quantized = n.op_type() == "Conv" || !weighted.count(i);
        for (size_t r : readers[n.outputs()[0]]) read_quantized |= quantized.count(r) != 0;
        if (read_quantized) add(n.outputs()[0]);
    }
    return plan;
}

}  // namespace pyflame_rt::quantization::detail
