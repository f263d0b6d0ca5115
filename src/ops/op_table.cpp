#include "ops/op.hpp"

namespace pyflame_rt::ops {

const TensorInfo& InferenceContext::input(size_t i) const {
    if (!has_input(i))
        throw ValidationError("node " + node_label(node) + ": type of input " + std::to_string(i) + " is unknown");
    return *inputs[i];
}

void InferenceContext::set_output(size_t i, DType dtype, Shape shape) {
    if (i >= outputs.size()) outputs.resize(i + 1);
    std::string name = i < node.outputs().size() ? node.outputs()[i] : std::string();
    outputs[i] = TensorInfo{name, dtype, std::move(shape)};
}

const Tensor& KernelContext::input(size_t i) const {
    if (!has_input(i)) throw ValidationError("kernel input " + std::to_string(i) + " is missing");
    return *inputs[i];
}

const OpTable& OpTable::instance() {
    static const OpTable table = [] {
        OpTable t;
        register_elementwise_ops(t);
        register_activation_ops(t);
        register_matmul_ops(t);
        register_conv_ops(t);
        register_pool_ops(t);
        register_norm_ops(t);
        register_shape_ops(t);
        register_math_ops(t);
        register_cast_ops(t);
        register_indexing_ops(t);
        register_reduce_ops(t);
        register_normalization_ops(t);
        register_nn_extra_ops(t);
        register_quantize_ops(t);
        register_sequence_ops(t);
        register_control_flow_ops(t);
        register_misc_ops(t);
        register_fused_ops(t);  // after Conv and the activations it composes
        register_fused_quant_ops(t);  // after the quantization ops it composes
        register_attention_ops(t);
        return t;
    }();
    return table;
}

const OpSchema* OpTable::find(const std::string& op_type, const std::string& domain) const {
    const std::string d = domain == "ai.onnx" ? "" : domain;
    auto it = ops_.find(d + "::" + op_type);
    return it == ops_.end() ? nullptr : &it->second;
}

std::vector<const OpSchema*> OpTable::all() const {
    std::vector<const OpSchema*> out;
    for (const auto& [k, v] : ops_) out.push_back(&v);
    return out;
}

void OpTable::add(OpSchema schema) {
    std::string key = schema.domain + "::" + schema.op_type;
    ops_[key] = std::move(schema);
}

std::string node_label(const Node& node) { return "'" + node.name() + "' (" + node.op_type() + ")"; }

void check_arity(const OpSchema& schema, const Node& node) {
    // Trailing empty names are omitted optional inputs.
    int n_in = static_cast<int>(node.inputs().size());
    while (n_in > 0 && node.inputs()[n_in - 1].empty()) --n_in;
    const int n_out = static_cast<int>(node.outputs().size());
    auto range = [](int lo, int hi) {
        return hi < 0 ? "at least " + std::to_string(lo)
                      : lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi);
    };
    if (n_in < schema.min_inputs || (schema.max_inputs >= 0 && n_in > schema.max_inputs))
        throw ValidationError("node " + node_label(node) + " has " + std::to_string(n_in) + " inputs; " +
                              schema.op_type + " takes " + range(schema.min_inputs, schema.max_inputs));
    if (n_out < schema.min_outputs || (schema.max_outputs >= 0 && n_out > schema.max_outputs))
        throw ValidationError("node " + node_label(node) + " has " + std::to_string(n_out) + " outputs; " +
                              schema.op_type + " gives " + range(schema.min_outputs, schema.max_outputs));
}

std::vector<int64_t> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    const size_t rank = std::max(a.size(), b.size());
    std::vector<int64_t> out(rank);
    for (size_t i = 0; i < rank; ++i) {
        const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1)
            throw ValidationError("shapes " + shape_to_string(a) + " and " + shape_to_string(b) +
                                  " cannot be broadcast");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
    const size_t rank = std::max(a.size(), b.size());
    Shape out(rank);
    for (size_t i = 0; i < rank; ++i) {
        const std::optional<int64_t> one = 1;
        const auto da = i < rank - a.size() ? one : a[i - (rank - a.size())];
        const auto db = i < rank - b.size() ? one : b[i - (rank - b.size())];
        if (da && db) {
            if (*da != *db && *da != 1 && *db != 1)
                throw ValidationError("shapes " + shape_to_string(a) + " and " + shape_to_string(b) +
                                      " cannot be broadcast");
            out[i] = *da == 1 ? db : da;
        } else if (da && *da != 1) {
            out[i] = da;
        } else if (db && *db != 1) {
            out[i] = db;
        } else {
            out[i] = std::nullopt;
        }
    }
    return out;
}

int64_t normalize_axis(int64_t axis, int64_t rank, const Node& node) {
    if (axis < -rank || axis >= rank)
        throw ValidationError("node " + node_label(node) + ": axis " + std::to_string(axis) +
                              " is out of range for rank " + std::to_string(rank));
    return axis < 0 ? axis + rank : axis;
}

void require_dtype(const Node& node, const Tensor& t, DType dtype, const char* what) {
    if (t.dtype() != dtype)
        throw ValidationError("node " + node_label(node) + ": " + what + " is " + dtype_to_string(t.dtype()) +
                              "; this kernel takes " + dtype_to_string(dtype));
}

}  // namespace pyflame_rt::ops
