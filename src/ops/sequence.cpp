// Sequence and optional ops: SequenceEmpty, SequenceConstruct, SequenceAt, SequenceInsert,
// SequenceErase, SequenceLength, ConcatFromSequence, SplitToSequence, Optional,
// OptionalHasElement, OptionalGetElement. Their values travel as ctx.input_values /
// set_output_value (pyflame_rt::Value), not as plain tensors.
#include "ops/op.hpp"
#include "ops/tensor_util.hpp"

namespace pyflame_rt::ops {
namespace {

const std::vector<Tensor>& sequence_input(const KernelContext& ctx, size_t i, const Node& node) {
    const Value* v = ctx.input_value(i);
    if (!v || !v->is_sequence()) fail_node(node, "input " + std::to_string(i) + " must be a sequence");
    return v->items();
}

int64_t scalar_int(const Tensor& t, const Node& node, const char* what) {
    if (t.num_elements() != 1) fail_node(node, std::string(what) + " must be a scalar");
    if (t.dtype() == DType::Int64) return t.data_ptr<int64_t>()[0];
    if (t.dtype() == DType::Int32) return t.data_ptr<int32_t>()[0];
    fail_node(node, std::string(what) + " must be int32 or int64");
}

// Position in [-n, n) (or [-n, n] when `insert`) made non-negative.
int64_t position(int64_t pos, int64_t n, bool insert, const Node& node) {
    const int64_t hi = insert ? n : n - 1;
    if (pos < -n || pos > hi)
        fail_node(node, "position " + std::to_string(pos) + " is out of range for a sequence of length " + std::to_string(n));
    return pos < 0 ? pos + n : pos;
}

class SequenceEmptyKernel final : public NodeKernel {
public:
    explicit SequenceEmptyKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override { ctx.set_output_value(0, Value::sequence({})); }
};

class SequenceConstructKernel final : public NodeKernel {
public:
    explicit SequenceConstructKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        std::vector<Tensor> items;
        for (size_t i = 0; i < ctx.inputs.size(); ++i) {
            items.push_back(ctx.input(i));
            if (items.back().dtype() != items.front().dtype()) fail("sequence elements must share one dtype");
        }
        ctx.set_output_value(0, Value::sequence(std::move(items)));
    }
};

class SequenceAtKernel final : public NodeKernel {
public:
    explicit SequenceAtKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        const auto& items = sequence_input(ctx, 0, node_);
        const int64_t n = static_cast<int64_t>(items.size());
        ctx.outputs[0] = items[position(scalar_int(ctx.input(1), node_, "position"), n, false, node_)];
    }
};

class SequenceInsertKernel final : public NodeKernel {
public:
    explicit SequenceInsertKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        std::vector<Tensor> items = sequence_input(ctx, 0, node_);
        const int64_t n = static_cast<int64_t>(items.size());
        const int64_t at = ctx.has_input(2) ? position(scalar_int(ctx.input(2), node_, "position"), n, true, node_) : n;
        if (!items.empty() && items[0].dtype() != ctx.input(1).dtype()) fail("tensor dtype differs from the sequence's");
        items.insert(items.begin() + at, ctx.input(1));
        ctx.set_output_value(0, Value::sequence(std::move(items)));
    }
};

class SequenceEraseKernel final : public NodeKernel {
public:
    explicit SequenceEraseKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        std::vector<Tensor> items = sequence_input(ctx, 0, node_);
        const int64_t n = static_cast<int64_t>(items.size());
        if (n == 0) fail("cannot erase from an empty sequence");
        const int64_t at = ctx.has_input(1) ? position(scalar_int(ctx.input(1), node_, "position"), n, false, node_) : n - 1;
        items.erase(items.begin() + at);
        ctx.set_output_value(0, Value::sequence(std::move(items)));
    }
};

class SequenceLengthKernel final : public NodeKernel {
public:
    explicit SequenceLengthKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        Tensor t({}, DType::Int64);
        t.data_ptr<int64_t>()[0] = static_cast<int64_t>(sequence_input(ctx, 0, node_).size());
        ctx.outputs[0] = t;
    }
};

class ConcatFromSequenceKernel final : public NodeKernel {
public:
    explicit ConcatFromSequenceKernel(const Node& node)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis")), new_axis_(node.get_attribute<int64_t>("new_axis", 0) != 0) {}
    void compute(KernelContext& ctx) const override {
        try {
            ctx.outputs[0] = concat_along(sequence_input(ctx, 0, node_), axis_, new_axis_);
        } catch (const ValidationError& e) {
            fail(e.what());
        }
    }

private:
    int64_t axis_;
    bool new_axis_;
};

class SplitToSequenceKernel final : public NodeKernel {
public:
    explicit SplitToSequenceKernel(const Node& node)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", 0)), keepdims_(node.get_attribute<int64_t>("keepdims", 1) != 0) {}
    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const int64_t axis = normalize_axis(axis_, static_cast<int64_t>(x.ndim()), node_);
        const int64_t dim = x.shape()[axis];
        std::vector<int64_t> lengths;
        bool drop_axis = false;
        if (!ctx.has_input(1)) {  // one element per index; keepdims decides the axis
            lengths.assign(static_cast<size_t>(dim), 1);
            drop_axis = !keepdims_;
        } else {
            const Tensor& split = ctx.input(1);
            std::vector<int64_t> values(static_cast<size_t>(split.num_elements()));
            for (size_t i = 0; i < values.size(); ++i)
                values[i] = split.dtype() == DType::Int64 ? split.data_ptr<int64_t>()[i] : split.data_ptr<int32_t>()[i];
            if (split.ndim() == 0) {  // equal chunks of this size, the last one smaller
                if (values[0] <= 0) fail("split must be positive");
                for (int64_t at = 0; at < dim; at += values[0]) lengths.push_back(std::min(values[0], dim - at));
            } else {
                int64_t total = 0;
                for (int64_t v : values) {
                    if (v < 0) fail("split lengths must be >= 0");
                    total += v;
                }
                if (total != dim) fail("split lengths sum to " + std::to_string(total) + ", the axis has " + std::to_string(dim));
                lengths = values;
            }
        }
        std::vector<Tensor> items;
        int64_t start = 0;
        for (int64_t len : lengths) {
            items.push_back(slice_along(x, axis, start, len, !drop_axis));
            start += len;
        }
        ctx.set_output_value(0, Value::sequence(std::move(items)));
    }

private:
    int64_t axis_;
    bool keepdims_;
};

class OptionalKernel final : public NodeKernel {
public:
    explicit OptionalKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        const Value* v = ctx.input_value(0);
        ctx.set_output_value(0, v ? *v : Value());
    }
};

class OptionalHasElementKernel final : public NodeKernel {
public:
    explicit OptionalHasElementKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        const Value* v = ctx.input_value(0);
        Tensor t({}, DType::Bool);
        t.data_ptr<bool>()[0] = v && !v->is_none();
        ctx.outputs[0] = t;
    }
};

class OptionalGetElementKernel final : public NodeKernel {
public:
    explicit OptionalGetElementKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override {
        const Value* v = ctx.input_value(0);
        if (!v || v->is_none()) fail("the optional input is empty");
        ctx.set_output_value(0, *v);
    }
};

template <typename K>
KernelFactory factory() {
    return [](const KernelInfo& info) { return std::make_unique<K>(info.node); };
}


void infer_scalar(InferenceContext& ctx, DType dtype) { ctx.set_output(0, dtype, Shape{}); }

}  // namespace

void register_sequence_ops(OpTable& table) {
    table.add({"SequenceEmpty", "", 11, 0, 0, 1, 1, {}, factory<SequenceEmptyKernel>()});
    table.add({"SequenceConstruct", "", 11, 1, -1, 1, 1, {}, factory<SequenceConstructKernel>()});
    table.add({"SequenceAt", "", 11, 2, 2, 1, 1, {}, factory<SequenceAtKernel>()});
    table.add({"SequenceInsert", "", 11, 2, 3, 1, 1, {}, factory<SequenceInsertKernel>()});
    table.add({"SequenceErase", "", 11, 1, 2, 1, 1, {}, factory<SequenceEraseKernel>()});
    table.add({"SequenceLength", "", 11, 1, 1, 1, 1, [](InferenceContext& c) { infer_scalar(c, DType::Int64); },
               factory<SequenceLengthKernel>()});
    table.add({"ConcatFromSequence", "", 11, 1, 1, 1, 1, {}, factory<ConcatFromSequenceKernel>()});
    table.add({"SplitToSequence", "", 11, 1, 2, 1, 1, {}, factory<SplitToSequenceKernel>()});
    table.add({"Optional", "", 15, 0, 1, 1, 1, {}, factory<OptionalKernel>()});
    table.add({"OptionalHasElement", "", 15, 0, 1, 1, 1, [](InferenceContext& c) { infer_scalar(c, DType::Bool); },
               factory<OptionalHasElementKernel>()});
    table.add({"OptionalGetElement", "", 15, 1, 1, 1, 1, {}, factory<OptionalGetElementKernel>()});
}

}  // namespace pyflame_rt::ops
