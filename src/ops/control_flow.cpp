// Control flow: If, Loop, Scan (opset 8 and 9+ forms), SequenceMap. Bodies are compiled once
// at kernel creation (KernelInfo::compile_subgraph) and read enclosing values through the
// node's scope lookup.
#include <algorithm>

#include "ops/op.hpp"
#include "ops/tensor_util.hpp"

namespace pyflame_rt::ops {
namespace {

std::unique_ptr<SubgraphRunner> compile_body(const KernelInfo& info, const char* attr) {
    auto graph = info.node.get_attribute<std::shared_ptr<Graph>>(attr);
    if (!graph) fail_node(info.node, std::string("attribute '") + attr + "' holds no graph");
    if (!info.compile_subgraph) fail_node(info.node, "this backend cannot run subgraphs");
    return info.compile_subgraph(*graph);
}

bool truth(const Tensor& t, const Node& node, const char* what) {
    if (t.num_elements() != 1) fail_node(node, std::string(what) + " must hold exactly one element");
    switch (t.dtype()) {
        case DType::Bool: return t.data_ptr<bool>()[0];
        case DType::UInt8: case DType::Int8: return t.data_ptr<uint8_t>()[0] != 0;
        case DType::Int32: return t.data_ptr<int32_t>()[0] != 0;
        case DType::Int64: return t.data_ptr<int64_t>()[0] != 0;
        case DType::Float32: return t.data_ptr<float>()[0] != 0;
        default: fail_node(node, std::string(what) + " must be a bool");
    }
}

Tensor scalar_tensor(int64_t v) {
    Tensor t({}, DType::Int64);
    t.data_ptr<int64_t>()[0] = v;
    return t;
}

Tensor bool_tensor(bool v) {
    Tensor t({}, DType::Bool);
    t.data_ptr<bool>()[0] = v;
    return t;
}

const ScopeLookup& scope_of(const KernelContext& ctx, const Node& node) {
    if (!ctx.scope || !ctx.control) fail_node(node, "no scope to run the subgraph in");
    return *ctx.scope;
}

class IfKernel final : public NodeKernel {
public:
    explicit IfKernel(const KernelInfo& info)
        : NodeKernel(info.node), then_(compile_body(info, "then_branch")), else_(compile_body(info, "else_branch")) {}

    void compute(KernelContext& ctx) const override {
        const SubgraphRunner& branch = truth(ctx.input(0), node_, "cond") ? *then_ : *else_;
        auto outputs = branch.run({}, scope_of(ctx, node_), *ctx.control);
        if (outputs.size() < ctx.outputs.size())
            fail("the branch gives " + std::to_string(outputs.size()) + " outputs, the node has " +
                 std::to_string(ctx.outputs.size()));
        for (size_t i = 0; i < ctx.outputs.size(); ++i) ctx.set_output_value(i, std::move(outputs[i]));
    }

private:
    std::unique_ptr<SubgraphRunner> then_, else_;
};

// Stacks per-iteration tensors along a new axis; zero iterations give shape [0].
Value stack(const std::vector<Tensor>& items, int64_t axis, bool reverse, DType empty_dtype) {
    if (items.empty()) return Value(Tensor({0}, empty_dtype));
    if (!reverse) return Value(concat_along(items, axis, true));
    std::vector<Tensor> reversed(items.rbegin(), items.rend());
    return Value(concat_along(reversed, axis, true));
}

class LoopKernel final : public NodeKernel {
public:
    explicit LoopKernel(const KernelInfo& info) : NodeKernel(info.node), body_(compile_body(info, "body")) {
        const Graph& g = body_->graph();
        carried_ = static_cast<int64_t>(info.node.inputs().size()) - 2;
        if (carried_ < 0 || static_cast<int64_t>(g.inputs().size()) != carried_ + 2 ||
            static_cast<int64_t>(g.outputs().size()) < carried_ + 1)
            fail("the body must take 2 + " + std::to_string(carried_) + " inputs and give 1 + " + std::to_string(carried_) +
                 " outputs (plus scan outputs)");
        for (size_t k = carried_ + 1; k < g.outputs().size(); ++k) scan_dtypes_.push_back(g.outputs()[k].dtype);
    }

    void compute(KernelContext& ctx) const override {
        const bool has_max = ctx.has_input(0), has_cond = ctx.has_input(1);
        const int64_t max_trips = has_max ? ctx.input(0).data_ptr<int64_t>()[0] : 0;
        bool cond = has_cond ? truth(ctx.input(1), node_, "cond") : true;
        std::vector<Value> carried;
        for (int64_t i = 0; i < carried_; ++i) {
            const Value* v = ctx.input_value(2 + i);
            carried.push_back(v ? *v : Value());
        }
        std::vector<std::vector<Tensor>> scans(scan_dtypes_.size());
        const ScopeLookup& scope = scope_of(ctx, node_);
        for (int64_t iter = 0; (!has_max || iter < max_trips) && cond; ++iter) {
            if (!has_max && !has_cond) fail("neither a trip count nor a condition: the loop would never end");
            if (ctx.control->deadline && std::chrono::steady_clock::now() > *ctx.control->deadline)
                throw RunTimeoutError("run exceeded timeout_ms=" + std::to_string(ctx.control->timeout_ms) +
                                      " in loop " + node_label(node_));
            std::vector<Value> inputs{Value(scalar_tensor(iter)), Value(bool_tensor(cond))};
            inputs.insert(inputs.end(), carried.begin(), carried.end());
            auto outputs = body_->run(std::move(inputs), scope, *ctx.control);
            cond = outputs[0].is_tensor() ? truth(outputs[0].tensor(), node_, "the body's condition") : false;
            for (int64_t i = 0; i < carried_; ++i) carried[i] = std::move(outputs[1 + i]);
            for (size_t k = 0; k < scans.size(); ++k) scans[k].push_back(outputs[1 + carried_ + k].tensor());
        }
        for (int64_t i = 0; i < carried_ && i < static_cast<int64_t>(ctx.outputs.size()); ++i)
            ctx.set_output_value(i, std::move(carried[i]));
        for (size_t k = 0; k < scans.size() && carried_ + k < ctx.outputs.size(); ++k)
            ctx.set_output_value(carried_ + k, stack(scans[k], 0, false, scan_dtypes_[k]));
    }

private:
    std::unique_ptr<SubgraphRunner> body_;
    int64_t carried_ = 0;
    std::vector<DType> scan_dtypes_;
};

// Scan, opset 9+: state (N) and scan inputs (M) sliced along their scan axes; opset 8 adds
// a leading optional sequence_lens input and a batch axis 0 on every input and output.
class ScanKernel final : public NodeKernel {
public:
    explicit ScanKernel(const KernelInfo& info)
        : NodeKernel(info.node), body_(compile_body(info, "body")), legacy_(info.opset > 0 && info.opset < 9) {
        const Node& node = info.node;
        num_scan_inputs_ = node.get_attribute<int64_t>("num_scan_inputs");
        const Graph& g = body_->graph();
        const int64_t node_inputs = static_cast<int64_t>(node.inputs().size()) - (legacy_ ? 1 : 0);
        num_state_ = node_inputs - num_scan_inputs_;
        num_scan_outputs_ = static_cast<int64_t>(g.outputs().size()) - num_state_;
        if (num_state_ < 0 || num_scan_outputs_ < 0 || static_cast<int64_t>(g.inputs().size()) != node_inputs)
            fail("the body's inputs/outputs do not match the node's state and scan inputs");
        input_axes_ = node.get_attribute<std::vector<int64_t>>("scan_input_axes", std::vector<int64_t>(num_scan_inputs_, 0));
        input_dirs_ = node.get_attribute<std::vector<int64_t>>(
            legacy_ ? "directions" : "scan_input_directions", std::vector<int64_t>(num_scan_inputs_, 0));
        output_axes_ = node.get_attribute<std::vector<int64_t>>("scan_output_axes", std::vector<int64_t>(num_scan_outputs_, 0));
        output_dirs_ = node.get_attribute<std::vector<int64_t>>("scan_output_directions", std::vector<int64_t>(num_scan_outputs_, 0));
        if (static_cast<int64_t>(input_axes_.size()) != num_scan_inputs_ || static_cast<int64_t>(input_dirs_.size()) != num_scan_inputs_ ||
            static_cast<int64_t>(output_axes_.size()) != num_scan_outputs_ || static_cast<int64_t>(output_dirs_.size()) != num_scan_outputs_)
            fail("scan axis/direction attributes do not match the number of scan inputs/outputs");
        for (int64_t k = 0; k < num_scan_outputs_; ++k) scan_dtypes_.push_back(g.outputs()[num_state_ + k].dtype);
    }

    void compute(KernelContext& ctx) const override {
        const size_t first = legacy_ ? 1 : 0;
        std::vector<Tensor> in;
        for (size_t i = first; i < ctx.inputs.size(); ++i) in.push_back(ctx.input(i));
        if (!legacy_) {
            auto out = scan_once(ctx, in, /*scan_axis_offset=*/0);
            for (size_t i = 0; i < out.size(); ++i) ctx.set_output_value(i, Value(out[i]));
            return;
        }
        // Opset 8: loop over the batch axis, scan along axis 1, stack results on axis 0.
        if (ctx.has_input(0)) fail("sequence_lens is not supported; every sequence runs to full length");
        const int64_t batch = in.empty() ? 0 : in[0].shape()[0];
        std::vector<std::vector<Tensor>> per_output(static_cast<size_t>(num_state_ + num_scan_outputs_));
        for (int64_t b = 0; b < batch; ++b) {
            std::vector<Tensor> slice;
            for (const Tensor& t : in) slice.push_back(slice_along(t, 0, b, 1, false));
            auto out = scan_once(ctx, slice, 0);
            for (size_t i = 0; i < out.size(); ++i) per_output[i].push_back(out[i]);
        }
        for (size_t i = 0; i < per_output.size(); ++i)
            ctx.set_output_value(i, stack(per_output[i], 0, false, DType::Float32));
    }

private:
    std::vector<Tensor> scan_once(KernelContext& ctx, const std::vector<Tensor>& in, int64_t) const {
        std::vector<Value> state;
        for (int64_t i = 0; i < num_state_; ++i) state.push_back(Value(in[i]));
        std::vector<int64_t> axes(num_scan_inputs_);
        int64_t length = -1;
        for (int64_t j = 0; j < num_scan_inputs_; ++j) {
            const Tensor& t = in[num_state_ + j];
            axes[j] = normalize_axis(input_axes_[j], static_cast<int64_t>(t.ndim()), node_);
            const int64_t len = t.shape()[axes[j]];
            if (length >= 0 && len != length) fail("scan inputs differ in sequence length");
            length = len;
        }
        if (length < 0) length = 0;
        std::vector<std::vector<Tensor>> scans(static_cast<size_t>(num_scan_outputs_));
        const ScopeLookup& scope = scope_of(ctx, node_);
        for (int64_t step = 0; step < length; ++step) {
            std::vector<Value> inputs = state;
            for (int64_t j = 0; j < num_scan_inputs_; ++j) {
                const int64_t at = input_dirs_[j] ? length - 1 - step : step;
                inputs.push_back(Value(slice_along(in[num_state_ + j], axes[j], at, 1, false)));
            }
            auto outputs = body_->run(std::move(inputs), scope, *ctx.control);
            for (int64_t i = 0; i < num_state_; ++i) state[i] = std::move(outputs[i]);
            for (int64_t k = 0; k < num_scan_outputs_; ++k) scans[k].push_back(outputs[num_state_ + k].tensor());
        }
        std::vector<Tensor> result;
        for (auto& s : state) result.push_back(s.tensor());
        for (int64_t k = 0; k < num_scan_outputs_; ++k) {
            const int64_t rank = scans[k].empty() ? 1 : static_cast<int64_t>(scans[k][0].ndim()) + 1;
            const int64_t axis = normalize_axis(output_axes_[k], rank, node_);
            result.push_back(stack(scans[k], axis, output_dirs_[k] != 0, scan_dtypes_[k]).tensor());
        }
        return result;
    }

    std::unique_ptr<SubgraphRunner> body_;
    bool legacy_;
    int64_t num_scan_inputs_ = 0, num_state_ = 0, num_scan_outputs_ = 0;
    std::vector<int64_t> input_axes_, input_dirs_, output_axes_, output_dirs_;
    std::vector<DType> scan_dtypes_;
};

// SequenceMap: the body runs once per element of the first input; sequence inputs are
// indexed alongside it, tensor inputs are passed whole. Each output collects a sequence.
class SequenceMapKernel final : public NodeKernel {
public:
    explicit SequenceMapKernel(const KernelInfo& info) : NodeKernel(info.node), body_(compile_body(info, "body")) {}

    void compute(KernelContext& ctx) const override {
        const Value* first = ctx.input_value(0);
        if (!first || !first->is_sequence()) fail("input 0 must be a sequence");
        const size_t n = first->items().size();
        std::vector<std::vector<Tensor>> outputs(ctx.outputs.size());
        const ScopeLookup& scope = scope_of(ctx, node_);
        for (size_t e = 0; e < n; ++e) {
            std::vector<Value> inputs;
            for (size_t i = 0; i < ctx.input_values.size(); ++i) {
                const Value* v = ctx.input_values[i];
                if (!v) fail("input " + std::to_string(i) + " is missing");
                if (v->is_sequence()) {
                    if (v->items().size() != n) fail("sequence inputs differ in length");
                    inputs.push_back(Value(v->items()[e]));
                } else {
                    inputs.push_back(*v);
                }
            }
            auto out = body_->run(std::move(inputs), scope, *ctx.control);
            for (size_t k = 0; k < outputs.size(); ++k) outputs[k].push_back(out.at(k).tensor());
        }
        for (size_t k = 0; k < outputs.size(); ++k) ctx.set_output_value(k, Value::sequence(std::move(outputs[k])));
    }

private:
    std::unique_ptr<SubgraphRunner> body_;
};

template <typename K>
KernelFactory factory() {
    return [](const KernelInfo& info) { return std::make_unique<K>(info); };
}

}  // namespace

void register_control_flow_ops(OpTable& table) {
    table.add({"If", "", 1, 1, 1, 1, -1, {}, factory<IfKernel>()});
    table.add({"Loop", "", 1, 2, -1, 1, -1, {}, factory<LoopKernel>()});
    table.add({"Scan", "", 8, 1, -1, 1, -1, {}, factory<ScanKernel>()});
    table.add({"SequenceMap", "", 17, 1, -1, 1, -1, {}, factory<SequenceMapKernel>()});
}

}  // namespace pyflame_rt::ops
