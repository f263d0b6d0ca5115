#include "ops/shape_inference.hpp"

#include <algorithm>
#include <optional>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// The elements of a scalar or 1-D integer tensor that are known (shape arithmetic).
struct ShapeValue {
    bool scalar = false;
    std::vector<std::optional<int64_t>> elements;

    bool fully_known() const {
        return std::all_of(elements.begin(), elements.end(), [](const auto& e) { return e.has_value(); });
    }
};

constexpr int64_t kMaxTrackedElements = 64;  // shape vectors, not data

bool is_index_type(DType t) { return t == DType::Int64 || t == DType::Int32; }

std::optional<ShapeValue> shape_value_of_constant(const Tensor& t) {
    if (!is_index_type(t.dtype()) || t.ndim() > 1 || t.num_elements() > kMaxTrackedElements || !t.is_plain()) return std::nullopt;
    ShapeValue v;
    v.scalar = t.ndim() == 0;
    for (int64_t i = 0; i < t.num_elements(); ++i)
        v.elements.push_back(t.dtype() == DType::Int64 ? t.data_ptr<int64_t>()[i] : t.data_ptr<int32_t>()[i]);
    return v;
}

Tensor tensor_of(const ShapeValue& v, DType dtype) {
    const int64_t n = static_cast<int64_t>(v.elements.size());
    Tensor t(v.scalar ? std::vector<int64_t>{} : std::vector<int64_t>{n}, dtype);
    for (int64_t i = 0; i < n; ++i) {
        if (dtype == DType::Int64) t.data_ptr<int64_t>()[i] = *v.elements[i];
        else t.data_ptr<int32_t>()[i] = static_cast<int32_t>(*v.elements[i]);
    }
    return t;
}

// Integer arithmetic as ONNX defines it for the tracked ops (Div truncates, Mod takes the
// divisor's sign unless fmod); nullopt where it is undefined.
std::optional<int64_t> arithmetic(const std::string& op, int64_t a, int64_t b, bool fmod) {
    if (op == "Add") return a + b;
    if (op == "Sub") return a - b;
    if (op == "Mul") return a * b;
    if (b == 0) return std::nullopt;
    if (op == "Div") return a / b;
    int64_t r = a % b;
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}

// What `node` computes from shape values, when its inputs are tracked and it is one of the
// ops exporters use for shape arithmetic.
std::optional<ShapeValue> propagate_shape_value(const Node& node, const std::vector<const ShapeValue*>& in,
                                                const std::vector<std::optional<TensorInfo>>& infos) {
    const std::string& op = node.op_type();
    if (!node.domain().empty() || node.outputs().size() != 1) return std::nullopt;
    auto input = [&](size_t i) { return i < in.size() ? in[i] : nullptr; };
    ShapeValue out;
    if (op == "Shape") {
        if (infos.empty() || !infos[0] || !infos[0]->rank_known) return std::nullopt;
        const auto& dims = infos[0]->shape;
        const int64_t rank = static_cast<int64_t>(dims.size());
        auto clamp = [rank](int64_t a) { return std::clamp(a < 0 ? a + rank : a, int64_t{0}, rank); };
        const int64_t start = clamp(node.get_attribute<int64_t>("start", 0));
        const int64_t end = clamp(node.get_attribute<int64_t>("end", rank));
        for (int64_t d = start; d < end; ++d) out.elements.push_back(dims[d]);
        return out;
    }
    if (op == "Size") {
        if (infos.empty() || !infos[0] || !infos[0]->rank_known) return std::nullopt;
        int64_t n = 1;
        for (const auto& d : infos[0]->shape) {
            if (!d) return std::nullopt;
            n *= *d;
        }
        out.scalar = true;
        out.elements.push_back(n);
        return out;
    }
    const ShapeValue* a = input(0);
    if (!a) return std::nullopt;
    if (op == "Identity" || op == "Cast") return *a;  // the caller keeps integer results only
    if (op == "Unsqueeze" || op == "Squeeze") {
        if (op == "Unsqueeze" && a->scalar) out.scalar = false;
        else if (op == "Squeeze" && !a->scalar && a->elements.size() == 1) out.scalar = true;
        else return std::nullopt;  // ranks beyond 1 are not tracked
        out.elements = a->elements;
        return out;
    }
    if (op == "Reshape") {
        const ShapeValue* target = input(1);
        if (!target || !target->fully_known() || target->elements.size() > 1) return std::nullopt;
        out.scalar = target->elements.empty();
        out.elements = a->elements;
        return out;
    }
    if (op == "Concat") {
        for (const ShapeValue* v : in) {
            if (!v || v->scalar) return std::nullopt;
            out.elements.insert(out.elements.end(), v->elements.begin(), v->elements.end());
        }
        return out;
    }
    if (op == "Gather") {
        const ShapeValue* idx = input(1);
        if (a->scalar || !idx || !idx->fully_known() || node.get_attribute<int64_t>("axis", 0) != 0) return std::nullopt;
        const int64_t n = static_cast<int64_t>(a->elements.size());
        out.scalar = idx->scalar;
        for (const auto& i : idx->elements) {
            const int64_t k = *i < 0 ? *i + n : *i;
            if (k < 0 || k >= n) return std::nullopt;  // the kernel reports it
            out.elements.push_back(a->elements[k]);
        }
        return out;
    }
    if (op == "Slice") {
        if (a->scalar || in.size() < 3) return std::nullopt;
        for (size_t i = 1; i < in.size(); ++i)
            if (!node.inputs()[i].empty() && (!in[i] || !in[i]->fully_known() || in[i]->elements.size() != 1)) return std::nullopt;
        if (in.size() > 3 && in[3] && *in[3]->elements[0] != 0 && *in[3]->elements[0] != -1) return std::nullopt;
        const int64_t n = static_cast<int64_t>(a->elements.size());
        const int64_t step = in.size() > 4 && in[4] ? *in[4]->elements[0] : 1;
        if (step == 0) return std::nullopt;
        int64_t start = *in[1]->elements[0], end = *in[2]->elements[0];
        if (start < 0) start += n;
        if (end < 0) end += n;
        if (step > 0) {
            start = std::clamp(start, int64_t{0}, n);
            end = std::clamp(end, int64_t{0}, n);
            for (int64_t i = start; i < end; i += step) out.elements.push_back(a->elements[i]);
        } else {
            start = std::clamp(start, int64_t{-1}, n - 1);
            end = std::clamp(end, int64_t{-1}, n - 1);
            for (int64_t i = start; i > end; i += step) out.elements.push_back(a->elements[i]);
        }
        return out;
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Mod") {
        const ShapeValue* b = input(1);
        if (!b) return std::nullopt;
        const size_t na = a->elements.size(), nb = b->elements.size();
        if (na != nb && na != 1 && nb != 1) return std::nullopt;
        const bool fmod = op == "Mod" && node.get_attribute<int64_t>("fmod", 0) != 0;
        out.scalar = a->scalar && b->scalar;
        for (size_t i = 0; i < std::max(na, nb); ++i) {
            const auto& x = a->elements[na == 1 ? 0 : i];
            const auto& y = b->elements[nb == 1 ? 0 : i];
            // x * 0 is 0 whatever x is; otherwise both must be known.
            if (op == "Mul" && ((x && *x == 0) || (y && *y == 0))) out.elements.push_back(0);
            else out.elements.push_back(x && y ? arithmetic(op, *x, *y, fmod) : std::nullopt);
        }
        return out;
    }
    return std::nullopt;
}

// Reshape's output dims from a target whose elements are partly known: each known element
// is a dim (0 copies the input's, unless allowzero), -1 is solved when every other dim is known.
std::optional<TensorInfo> reshape_from_shape_value(const Node& node, const TensorInfo& data, const ShapeValue& target) {
    const bool allowzero = node.get_attribute<int64_t>("allowzero", 0) != 0;
    Shape out;
    std::optional<size_t> infer_at;
    for (size_t i = 0; i < target.elements.size(); ++i) {
        const auto& e = target.elements[i];
        if (e && *e == 0 && !allowzero) out.push_back(data.rank_known && i < data.shape.size() ? data.shape[i] : std::nullopt);
        else if (e && *e == -1) {
            infer_at = i;
            out.push_back(std::nullopt);
        } else if (e && *e < 0) return std::nullopt;  // invalid: the kernel reports it
        else out.push_back(e);
    }
    if (infer_at && data.rank_known) {
        int64_t in_elements = 1, out_elements = 1;
        bool known = true;
        for (const auto& d : data.shape) known = known && d && (in_elements *= *d, true);
        for (size_t i = 0; i < out.size(); ++i)
            if (i != *infer_at) known = known && out[i] && (out_elements *= *out[i], true);
        if (known && out_elements > 0 && in_elements % out_elements == 0) out[*infer_at] = in_elements / out_elements;
    }
    return TensorInfo{"", data.dtype, out};
}

}  // namespace

std::vector<std::string> infer_shapes(Graph& graph, std::unordered_map<std::string, Tensor>* static_values) {
    std::vector<std::string> warnings;
    std::unordered_map<std::string, TensorInfo> known;
    std::unordered_map<std::string, Tensor> constants;
    std::unordered_map<std::string, ShapeValue> shape_values;
    for (const auto& [name, t] : graph.initializers()) {
        known[name] = TensorInfo{name, t.dtype(), to_shape(t.shape())};
        constants[name] = t;
        if (auto v = shape_value_of_constant(t)) shape_values[name] = std::move(*v);
    }
    for (const auto& in : graph.inputs()) {
        known[in.name] = in;
        constants.erase(in.name);  // an input with a default can be overridden: not constant
        shape_values.erase(in.name);
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
        std::vector<const ShapeValue*> tracked;
        for (const auto& in : node->inputs()) {
            auto it = in.empty() ? shape_values.end() : shape_values.find(in);
            tracked.push_back(it == shape_values.end() ? nullptr : &it->second);
        }
        const bool is_reshape = node->op_type() == "Reshape" && node->domain().empty();
        if (is_reshape && ctx.has_input(0) && !ctx.constant(1) && tracked.size() > 1 && tracked[1] && !tracked[1]->scalar)
            if (auto info = reshape_from_shape_value(*node, ctx.input(0), *tracked[1])) ctx.outputs[0] = info;
        if (auto value = propagate_shape_value(*node, tracked, ctx.inputs);
            value && ctx.outputs.size() == 1 && ctx.outputs[0] && is_index_type(ctx.outputs[0]->dtype)) {
            const std::string& name = node->outputs()[0];
            if (value->fully_known() && !constants.count(name)) {
                Tensor t = tensor_of(*value, ctx.outputs[0]->dtype);
                if (static_values) (*static_values)[name] = t;
                constants[name] = std::move(t);  // later nodes infer from it as from any constant
            }
            shape_values[name] = std::move(*value);
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
        for (const auto& out : node->outputs()) {
            auto c = out.empty() ? constants.end() : constants.find(out);
            if (c != constants.end() && !shape_values.count(out))
                if (auto v = shape_value_of_constant(c->second)) shape_values[out] = std::move(*v);
        }
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
