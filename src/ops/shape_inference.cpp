#include "ops/shape_inference.hpp"

#include "ops/op.hpp"

namespace pyflame_rt::ops {

std::vector<std::string> infer_shapes(Graph& graph) {
    std::vector<std::string> warnings;
    std::unordered_map<std::string, TensorInfo> known;
    std::unordered_map<std::string, Tensor> constants;
    for (const auto& [name, t] : graph.initializers()) {
        known[name] = TensorInfo{name, t.dtype(), to_shape(t.shape())};
        constants[name] = t;
    }
    for (const auto& in : graph.inputs()) {
        known[in.name] = in;
        constants.erase(in.name);  // an input with a default can be overridden: not constant
    }
    for (const auto& [name, info] : graph.value_infos()) known.emplace(name, info);

    for (const auto& node : graph.topological_sort()) {
        const OpSchema* schema = OpTable::instance().find(node->op_type(), node->domain());
        if (!schema || !schema->infer) {
            if (!schema) warnings.push_back("no shape inference for " + node_label(*node) + ": not a built-in operator");
            continue;
        }
        check_arity(*schema, *node);
        InferenceContext ctx{*node, graph.opset_version(""), {}, {}, {}};
        for (const auto& in : node->inputs()) {
            auto it = in.empty() ? known.end() : known.find(in);
            // Ops read an empty shape as a scalar, and infer tensors only.
            const bool usable = it != known.end() && it->second.rank_known && it->second.kind == ValueKind::Tensor;
            ctx.inputs.push_back(usable ? std::optional<TensorInfo>(it->second) : std::nullopt);
            auto c = in.empty() ? constants.end() : constants.find(in);
            ctx.constant_inputs.push_back(c == constants.end() ? nullptr : &c->second);
        }
        ctx.outputs.resize(node->outputs().size());
        try {
            schema->infer(ctx);
        } catch (const ValidationError& e) {
            throw ValidationError(std::string("shape inference failed: ") + e.what());
        }
        for (size_t i = 0; i < ctx.outputs.size() && i < node->outputs().size(); ++i) {
            const std::string& name = node->outputs()[i];
            if (name.empty() || !ctx.outputs[i]) continue;
            ctx.outputs[i]->name = name;
            known[name] = *ctx.outputs[i];
            graph.set_value_info(*ctx.outputs[i]);
        }
        if (node->op_type() == "Constant" && node->domain().empty() && !node->outputs().empty())
            constants[node->outputs()[0]] = constant_node_value(*node);
    }

    std::vector<TensorInfo> outputs = graph.outputs();
    for (auto& out : outputs) {
        auto it = known.find(out.name);
        if (it == known.end()) continue;
        if (!out.rank_known && it->second.rank_known) {
            out.shape = it->second.shape;
            out.rank_known = true;
        }
        if (out.rank_known && it->second.rank_known && out.shape.size() != it->second.shape.size())
            throw ValidationError("graph output '" + out.name + "' is declared " + shape_to_string(out.shape) +
                                  " but computes to " + shape_to_string(it->second.shape));
        if (out.shape.size() == it->second.shape.size()) {
            for (size_t d = 0; d < out.shape.size(); ++d) {
                if (!out.shape[d]) out.shape[d] = it->second.shape[d];
                else if (it->second.shape[d] && *it->second.shape[d] != *out.shape[d])
                    throw ValidationError("graph output '" + out.name + "' is declared " + shape_to_string(out.shape) +
                                          " but computes to " + shape_to_string(it->second.shape));
            }
        }
    }
    graph.set_outputs(std::move(outputs));
    return warnings;
}

}  // namespace pyflame_rt::ops
