// Flatten, Reshape, Transpose, Concat, Identity, Constant: any dtype (they move bytes).
// Flatten, Reshape, Identity and Constant share storage with their input / attribute.
#include <algorithm>
#include <cstring>
#include <numeric>

#include <string>

#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

// Product of dims[begin, end): 0 if any known dim is 0, unknown if another dim is unknown.
std::optional<int64_t> product(const Shape& dims, size_t begin, size_t end) {
    int64_t p = 1;
    bool known = true;
    for (size_t i = begin; i < end; ++i) {
        if (dims[i] && *dims[i] == 0) return 0;
        if (dims[i]) p *= *dims[i];
        else known = false;
    }
    return known ? std::optional<int64_t>(p) : std::nullopt;
}

void infer_identity(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// Flatten: (d0 ... d_{axis-1}, d_axis ... d_{r-1}) -> (prod of the first, prod of the rest).

// Flatten's axis may be r (everything in the first dim) and negative (counted from r).
int64_t flatten_axis(int64_t axis, int64_t rank, const Node& node) {
    if (axis < -rank || axis > rank)
        fail_node(node, "axis " + std::to_string(axis) + " is out of range [" + std::to_string(-rank) + ", " +
                            std::to_string(rank) + "] for rank " + std::to_string(rank));
    return axis < 0 ? axis + rank : axis;
}

class FlattenKernel final : public NodeKernel {
public:
    explicit FlattenKernel(const Node& node) : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", 1)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        const int64_t axis = flatten_axis(axis_, static_cast<int64_t>(dims.size()), node_);
        const int64_t outer = std::accumulate(dims.begin(), dims.begin() + axis, int64_t{1}, std::multiplies<>());
        const int64_t inner = std::accumulate(dims.begin() + axis, dims.end(), int64_t{1}, std::multiplies<>());
        ctx.outputs[0] = x.reshape({outer, inner});
    }

private:
    int64_t axis_;
};

void infer_flatten(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const size_t rank = x.shape.size();
    if (rank == 0) return;  // rank unknown
    const auto axis = static_cast<size_t>(
        flatten_axis(ctx.node.get_attribute<int64_t>("axis", 1), static_cast<int64_t>(rank), ctx.node));
    ctx.set_output(0, x.dtype, {product(x.shape, 0, axis), product(x.shape, axis, rank)});
}

// ---------------------------------------------------------------------------------------------
// Reshape: the target shape is input 1 (int64); 0 copies the input's dim at that index
// (unless allowzero=1, then it is a real 0), -1 is inferred.

bool read_allowzero(const Node& node) {
    const int64_t v = node.get_attribute<int64_t>("allowzero", 0);
    if (v != 0 && v != 1) fail_node(node, "attribute 'allowzero' is " + std::to_string(v) + "; expected 0 or 1");
    return v == 1;
}

void check_target(const Node& node, const std::vector<int64_t>& target, bool allowzero) {
    const auto count = [&](int64_t v) { return std::count(target.begin(), target.end(), v); };
    for (int64_t v : target)
        if (v < -1) fail_node(node, "shape " + shape_to_string(target) + " has a dimension below -1");
    if (count(-1) > 1) fail_node(node, "shape " + shape_to_string(target) + " has more than one -1");
    if (allowzero && count(-1) && count(0))
        fail_node(node, "shape " + shape_to_string(target) + " has both 0 and -1, which allowzero=1 forbids");
}

class ReshapeKernel final : public NodeKernel {
public:
    explicit ReshapeKernel(const Node& node) : NodeKernel(node), allowzero_(read_allowzero(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const Tensor& shape = ctx.input(1);
        require_dtype(node_, shape, DType::Int64, "shape input");
        if (shape.ndim() != 1) fail("shape input must be 1-D; got shape " + shape_to_string(shape.shape()));
        std::vector<int64_t> target(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.num_elements());
        check_target(node_, target, allowzero_);
        for (size_t i = 0; i < target.size(); ++i) {
            if (target[i] != 0 || allowzero_) continue;
            if (i >= data.ndim())
                fail("shape " + shape_to_string(target) + " copies dimension " + std::to_string(i) +
                     " (0) of input " + shape_to_string(data.shape()) + ", which has rank " + std::to_string(data.ndim()));
            target[i] = data.shape()[i];
        }
        try {
            ctx.outputs[0] = data.reshape(target);
        } catch (const ValidationError&) {
            fail("cannot reshape input " + shape_to_string(data.shape()) + " (" + std::to_string(data.num_elements()) +
                 " elements) to " + shape_to_string(shape_to_vector(shape)));
        }
    }

private:
    static std::vector<int64_t> shape_to_vector(const Tensor& shape) {
        return std::vector<int64_t>(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.num_elements());
    }

    bool allowzero_;
};

void infer_reshape(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& data = ctx.input(0);
    const Tensor* shape = ctx.constant(1);
    if (!shape) {
        // Only the output's rank is known, from the shape input's length.
        if (ctx.has_input(1) && ctx.input(1).shape.size() == 1 && ctx.input(1).shape[0])
            ctx.set_output(0, data.dtype, Shape(static_cast<size_t>(*ctx.input(1).shape[0])));
        return;
    }
    if (shape->dtype() != DType::Int64 || shape->ndim() != 1)
        fail_node(node, "shape input must be a 1-D Int64 tensor; got " + dtype_to_string(shape->dtype()) + " " +
                            shape_to_string(shape->shape()));
    const bool allowzero = read_allowzero(node);
    const std::vector<int64_t> target(shape->data_ptr<int64_t>(), shape->data_ptr<int64_t>() + shape->num_elements());
    check_target(node, target, allowzero);

    // Dims copied by 0 cancel out of the element count, so -1 is known whenever the input dims
    // that are not copied are: [?, 3, 4] reshaped by [0, -1] gives [?, 12].
    Shape out(target.size());
    std::vector<bool> copied(data.shape.size(), false);
    int64_t known_out = 1;
    std::optional<size_t> infer_at;
    bool in_known = true;
    for (size_t i = 0; i < target.size(); ++i) {
        if (target[i] == 0 && !allowzero) {
            if (data.shape.empty()) {  // rank unknown (a true scalar fails at run time)
                in_known = false;
                continue;
            }
            if (i >= data.shape.size())
                fail_node(node, "shape " + shape_to_string(target) + " copies dimension " + std::to_string(i) +
                                    " (0) of input " + shape_to_string(data.shape) + ", which has rank " +
                                    std::to_string(data.shape.size()));
            out[i] = data.shape[i];
            copied[i] = true;
        } else if (target[i] == -1) {
            infer_at = i;
        } else {
            out[i] = target[i];
            known_out *= target[i];
        }
    }
    int64_t known_in = 1;
    for (size_t i = 0; i < data.shape.size(); ++i) {
        if (copied[i]) continue;
        if (data.shape[i]) known_in *= *data.shape[i];
        else in_known = false;
    }
    if (in_known) {
        const std::string why = "cannot reshape input " + shape_to_string(data.shape) + " to " + shape_to_string(target);
        if (infer_at) {
            if (known_out == 0 || known_in % known_out != 0) fail_node(node, why);
            out[*infer_at] = known_in / known_out;
        } else if (known_in != known_out) {
            fail_node(node, why);
        }
    }
    ctx.set_output(0, data.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Transpose: output dim i is input dim perm[i] (default: reversed).

std::vector<int64_t> read_perm(const Node& node) {
    const auto perm = node.get_attribute<std::vector<int64_t>>("perm", {});
    std::vector<bool> seen(perm.size(), false);
    for (int64_t p : perm) {
        if (p < 0 || p >= static_cast<int64_t>(perm.size()) || seen[p])
            fail_node(node, "attribute 'perm' " + shape_to_string(perm) + " is not a permutation of 0.." +
                                std::to_string(static_cast<int64_t>(perm.size()) - 1));
        seen[p] = true;
    }
    return perm;
}

std::vector<int64_t> resolve_perm(const std::vector<int64_t>& perm, size_t rank, const Node& node) {
    if (perm.empty()) {
        std::vector<int64_t> reversed(rank);
        std::iota(reversed.rbegin(), reversed.rend(), 0);
        return reversed;
    }
    if (perm.size() != rank)
        fail_node(node, "attribute 'perm' " + shape_to_string(perm) + " has " + std::to_string(perm.size()) +
                            " entries; the input has rank " + std::to_string(rank));
    return perm;
}

class TransposeKernel final : public NodeKernel {
public:
    explicit TransposeKernel(const Node& node) : NodeKernel(node), perm_(read_perm(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::vector<int64_t> perm = resolve_perm(perm_, x.ndim(), node_);
        ctx.outputs[0] = permute_axes(x, x.shape(), perm, ctx.num_threads);
    }

private:
    std::vector<int64_t> perm_;  // empty: reversed
};

void infer_transpose(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const std::vector<int64_t> perm_attr = read_perm(ctx.node);
    const std::vector<int64_t> perm = resolve_perm(perm_attr, x.shape.size(), ctx.node);
    Shape out;
    for (int64_t p : perm) out.push_back(x.shape[p]);
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Concat along `axis` (required, negative allowed): dims other than axis must match.

class ConcatKernel final : public NodeKernel {
public:
    explicit ConcatKernel(const Node& node) : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis")) {}

    void compute(KernelContext& ctx) const override {
        std::vector<const Tensor*> inputs;
        for (size_t i = 0; i < ctx.inputs.size(); ++i) inputs.push_back(&ctx.input(i));
        if (inputs.empty()) fail("needs at least one input");
        const Tensor& first = *inputs[0];
        const int64_t rank = static_cast<int64_t>(first.ndim());
        if (rank == 0) fail("cannot concatenate scalars");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, rank, node_));
        std::vector<int64_t> out_shape = first.shape();
        out_shape[axis] = 0;
        for (size_t i = 0; i < inputs.size(); ++i) {
            const Tensor& t = *inputs[i];
            if (t.dtype() != first.dtype())
                fail("input " + std::to_string(i) + " is " + dtype_to_string(t.dtype()) + "; input 0 is " +
                     dtype_to_string(first.dtype()));
            bool fits = t.ndim() == first.ndim();
            for (size_t d = 0; fits && d < t.ndim(); ++d) fits = d == axis || t.shape()[d] == first.shape()[d];
            if (!fits)
                fail("input " + std::to_string(i) + " has shape " + shape_to_string(t.shape()) + "; input 0 has " +
                     shape_to_string(first.shape()) + " (only axis " + std::to_string(axis) + " may differ)");
            out_shape[axis] += t.shape()[axis];
        }
        Tensor y(out_shape, first.dtype());
        const size_t elem = dtype_size(first.dtype());
        const int64_t outer = std::accumulate(out_shape.begin(), out_shape.begin() + static_cast<std::ptrdiff_t>(axis),
                                              int64_t{1}, std::multiplies<>());
        // Each input contributes one contiguous block per outer index.
        const size_t out_block = static_cast<size_t>(num_elements_of(out_shape) / std::max<int64_t>(outer, 1)) * elem;
        auto* dst = static_cast<uint8_t*>(y.data());
        size_t block_offset = 0;
        const bool strings = first.dtype() == DType::String;
        for (const Tensor* t : inputs) {
            const size_t block = static_cast<size_t>(t->num_elements() / std::max<int64_t>(outer, 1)) * elem;
            const auto* src = static_cast<const uint8_t*>(t->data());
            for (int64_t o = 0; o < outer && block > 0; ++o) {
                if (strings) {  // std::string elements copy by assignment
                    const auto* from = reinterpret_cast<const std::string*>(src + o * block);
                    std::copy(from, from + block / elem, reinterpret_cast<std::string*>(dst + o * out_block + block_offset));
                } else {
                    std::memcpy(dst + o * out_block + block_offset, src + o * block, block);
                }
            }
            block_offset += block;
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t axis_;
};

void infer_concat(InferenceContext& ctx) {
    const Node& node = ctx.node;
    const int64_t axis_attr = node.get_attribute<int64_t>("axis");
    for (size_t i = 0; i < ctx.inputs.size(); ++i)
        if (!ctx.has_input(i)) return;
    if (ctx.inputs.empty()) return;
    const TensorInfo& first = ctx.input(0);
    const int64_t rank = static_cast<int64_t>(first.shape.size());
    if (rank == 0) return;  // rank unknown (scalars cannot be concatenated)
    const auto axis = static_cast<size_t>(normalize_axis(axis_attr, rank, node));
    Shape out = first.shape;
    for (size_t i = 1; i < ctx.inputs.size(); ++i) {
        const TensorInfo& t = ctx.input(i);
        if (t.dtype != first.dtype)
            fail_node(node, "input " + std::to_string(i) + " is " + dtype_to_string(t.dtype) + "; input 0 is " +
                                dtype_to_string(first.dtype));
        if (t.shape.size() != first.shape.size())
            fail_node(node, "input " + std::to_string(i) + " has shape " + shape_to_string(t.shape) + "; input 0 has " +
                                shape_to_string(first.shape));
        for (size_t d = 0; d < out.size(); ++d) {
            if (d == axis) {
                out[d] = out[d] && t.shape[d] ? std::optional<int64_t>(*out[d] + *t.shape[d]) : std::nullopt;
            } else if (out[d] && t.shape[d] && *out[d] != *t.shape[d]) {
                fail_node(node, "input " + std::to_string(i) + " has shape " + shape_to_string(t.shape) +
                                    "; input 0 has " + shape_to_string(first.shape) + " (only axis " +
                                    std::to_string(axis) + " may differ)");
            } else if (!out[d]) {
                out[d] = t.shape[d];  // a dim known from any input is known for all
            }
        }
    }
    ctx.set_output(0, first.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Identity and Constant: outputs share storage.

class IdentityKernel final : public NodeKernel {
public:
    explicit IdentityKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        if (ctx.has_input(0)) {
            ctx.outputs[0] = ctx.input(0);
            return;
        }
        // Identity passes sequences and optionals (opset 14/16) through as they are.
        const Value* v = ctx.input_value(0);
        if (!v) fail("input 0 is missing");
        ctx.set_output_value(0, *v);
    }
};

class ConstantKernel final : public NodeKernel {
public:
    explicit ConstantKernel(const Node& node) : NodeKernel(node), value_(constant_node_value(node)) {}
    void compute(KernelContext& ctx) const override { ctx.outputs[0] = value_; }

private:
    Tensor value_;  // never written: kernels do not modify their inputs
};

template <typename T>
Tensor tensor_of(const std::vector<int64_t>& shape, const std::vector<T>& values) {
    Tensor t(shape, dtype_of<T>::value);
    std::copy(values.begin(), values.end(), t.data_ptr<T>());
    return t;
}

void infer_constant(InferenceContext& ctx) {
    const Tensor value = constant_node_value(ctx.node);
    ctx.set_output(0, value.dtype(), to_shape(value.shape()));
}

}  // namespace

Tensor constant_node_value(const Node& node) {
    static const char* const kValueAttributes[] = {"value",     "value_float",  "value_floats",  "value_int",
                                                   "value_ints", "value_string", "value_strings", "sparse_value"};
    std::string which;
    for (const char* name : kValueAttributes) {
        if (!node.has_attribute(name)) continue;
        if (!which.empty())
            fail_node(node, "has both '" + which + "' and '" + name + "'; a Constant takes exactly one value attribute");
        which = name;
    }
    if (which.empty())
        fail_node(node, "has no value attribute (value, value_float(s), value_int(s), value_string(s))");
    if (which == "value") {
        Tensor t = node.get_attribute<Tensor>("value");
        if (t.empty()) fail_node(node, "attribute 'value' holds no data");
        return t;
    }
    if (which == "value_float")
        return tensor_of<float>({}, {static_cast<float>(node.get_attribute<double>(which))});
    if (which == "value_floats") {
        const auto v = node.get_attribute<std::vector<double>>(which);
        return tensor_of<float>({static_cast<int64_t>(v.size())}, std::vector<float>(v.begin(), v.end()));
    }
    if (which == "value_int") return tensor_of<int64_t>({}, {node.get_attribute<int64_t>(which)});
    if (which == "value_ints") {
        const auto v = node.get_attribute<std::vector<int64_t>>(which);
        return tensor_of<int64_t>({static_cast<int64_t>(v.size())}, v);
    }
    if (which == "value_string") {
        Tensor t({}, DType::String);
        *t.data_ptr<std::string>() = node.get_attribute<std::string>(which);
        return t;
    }
    if (which == "value_strings") {
        const auto v = node.get_attribute<std::vector<std::string>>(which);
        Tensor t({static_cast<int64_t>(v.size())}, DType::String);
        std::copy(v.begin(), v.end(), t.data_ptr<std::string>());
        return t;
    }
    fail_node(node, "attribute 'sparse_value' is not supported (sparse tensors are not implemented; store the "
                    "constant densely in 'value')");
}

void register_shape_ops(OpTable& table) {
    table.add(OpSchema{"Flatten", "", 1, 1, 1, 1, 1, infer_flatten,
                       [](const KernelInfo& info) { return std::make_unique<FlattenKernel>(info.node); }});
    table.add(OpSchema{"Reshape", "", 5, 2, 2, 1, 1, infer_reshape,
                       [](const KernelInfo& info) { return std::make_unique<ReshapeKernel>(info.node); }});
    table.add(OpSchema{"Transpose", "", 1, 1, 1, 1, 1, infer_transpose,
                       [](const KernelInfo& info) { return std::make_unique<TransposeKernel>(info.node); }});
    table.add(OpSchema{"Concat", "", 4, 1, -1, 1, 1, infer_concat,
                       [](const KernelInfo& info) { return std::make_unique<ConcatKernel>(info.node); }});
    table.add(OpSchema{"Identity", "", 1, 1, 1, 1, 1, infer_identity,
                       [](const KernelInfo& info) { return std::make_unique<IdentityKernel>(info.node); }});
    table.add(OpSchema{"Constant", "", 1, 0, 0, 1, 1, infer_constant,
                       [](const KernelInfo& info) { return std::make_unique<ConstantKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
