// NonMaxSuppression, BitCast and the recent LLM-era ops (SwiGLU, CausalConvWithState,
// LinearAttention) here; the other families owned with this file live in rnn.cpp, signal.cpp,
// string_ops.cpp, random_ops.cpp, ml_ops.cpp and training_ops.cpp and are registered from
// register_misc_ops (op.hpp lists one function per owner).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/dispatch.hpp"
#include "ops/nn_common.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_rnn_ops(OpTable& table);
void register_signal_ops(OpTable& table);
void register_string_ops(OpTable& table);
void register_random_ops(OpTable& table);
void register_ml_ops(OpTable& table);
void register_training_ops(OpTable& table);

namespace {

// ---------------------------------------------------------------------------------------------
// NonMaxSuppression: per batch and class, greedily keeps the highest-scoring boxes whose IoU
// with every kept box is at most iou_threshold. Same comparisons and tie-breaks (lower box
// index first) as ONNX Runtime and the ONNX reference.

struct Box {
    float x_min, x_max, y_min, y_max;
};

Box box_at(const float* b, bool center) {
    if (center) {  // [x_center, y_center, width, height]
        return {b[0] - b[2] / 2, b[0] + b[2] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2};
    }
    // [y1, x1, y2, x2], either corner first
    return {std::min(b[1], b[3]), std::max(b[1], b[3]), std::min(b[0], b[2]), std::max(b[0], b[2])};
}

bool suppressed(const Box& a, const Box& b, float iou_threshold) {
    const float ix_min = std::max(a.x_min, b.x_min), ix_max = std::min(a.x_max, b.x_max);
    if (ix_max <= ix_min) return false;
    const float iy_min = std::max(a.y_min, b.y_min), iy_max = std::min(a.y_max, b.y_max);
    if (iy_max <= iy_min) return false;
    const float inter = (ix_max - ix_min) * (iy_max - iy_min);
    const float area_a = (a.x_max - a.x_min) * (a.y_max - a.y_min);
    const float area_b = (b.x_max - b.x_min) * (b.y_max - b.y_min);
    const float uni = area_a + area_b - inter;
    if (inter <= 0 || area_a <= 0 || area_b <= 0 || uni <= 0) return false;
    return inter / uni > iou_threshold;
}

class NonMaxSuppressionKernel final : public NodeKernel {
public:
    explicit NonMaxSuppressionKernel(const Node& node)
        : NodeKernel(node), center_(node.get_attribute<int64_t>("center_point_box", 0) != 0) {
        const int64_t c = node.get_attribute<int64_t>("center_point_box", 0);
        if (c != 0 && c != 1) fail("center_point_box must be 0 or 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& boxes = ctx.input(0);
        const Tensor& scores = ctx.input(1);
        require_dtype(node_, boxes, DType::Float32, "boxes");
        require_dtype(node_, scores, DType::Float32, "scores");
        if (boxes.ndim() != 3 || boxes.shape()[2] != 4)
            fail("boxes has shape " + shape_to_string(boxes.shape()) + "; expected [batches, boxes, 4]");
        const int64_t batches = boxes.shape()[0], count = boxes.shape()[1];
        if (scores.ndim() != 3 || scores.shape()[0] != batches || scores.shape()[2] != count)
            fail("scores has shape " + shape_to_string(scores.shape()) + "; expected [" + std::to_string(batches) +
                 ", classes, " + std::to_string(count) + "]");
        const int64_t classes = scores.shape()[1];
        int64_t max_out = 0;
        if (ctx.has_input(2) && ctx.input(2).num_elements() > 0) {
            require_dtype(node_, ctx.input(2), DType::Int64, "max_output_boxes_per_class");
            max_out = std::max<int64_t>(0, ctx.input(2).data_ptr<int64_t>()[0]);
        }
        auto float_scalar = [&](size_t i, const char* what) -> std::optional<float> {
            if (!ctx.has_input(i) || ctx.input(i).num_elements() == 0) return std::nullopt;
            require_dtype(node_, ctx.input(i), DType::Float32, what);
            return ctx.input(i).data_ptr<float>()[0];
        };
        const float iou = float_scalar(3, "iou_threshold").value_or(0.0f);
        const std::optional<float> score_threshold = float_scalar(4, "score_threshold");
        if (iou < 0 || iou > 1) fail("iou_threshold must be in [0, 1]; got " + std::to_string(iou));

        std::vector<int64_t> selected;  // triples
        std::vector<int64_t> order, kept;
        for (int64_t b = 0; b < batches; ++b) {
            const float* bd = boxes.data_ptr<float>() + b * count * 4;
            for (int64_t c = 0; c < classes; ++c) {
                const float* sd = scores.data_ptr<float>() + (b * classes + c) * count;
                order.clear();
                for (int64_t i = 0; i < count; ++i)
                    if (!score_threshold || sd[i] > *score_threshold) order.push_back(i);
                std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return sd[x] > sd[y]; });
                kept.clear();
                for (int64_t i : order) {
                    if (static_cast<int64_t>(kept.size()) >= max_out) break;
                    const Box cand = box_at(bd + i * 4, center_);
                    const bool drop = std::any_of(kept.begin(), kept.end(), [&](int64_t k) {
                        return suppressed(cand, box_at(bd + k * 4, center_), iou);
                    });
                    if (drop) continue;
                    kept.push_back(i);
                    selected.insert(selected.end(), {b, c, i});
                }
            }
        }
        Tensor out({static_cast<int64_t>(selected.size() / 3), 3}, DType::Int64);
        std::copy(selected.begin(), selected.end(), out.data_ptr<int64_t>());
        ctx.outputs[0] = std::move(out);
    }

private:
    bool center_;
};

void infer_nms(InferenceContext& ctx) { ctx.set_output(0, DType::Int64, {std::nullopt, 3}); }

// ---------------------------------------------------------------------------------------------
// BitCast: the same bits read as another type of the same bit width. Sub-byte types are held
// one per byte, so their low bits are reinterpreted (and sign-extended for Int4/Int2).

int bit_width(DType dt) {
    switch (dt) {
        case DType::Int4: case DType::UInt4: case DType::Float4E2M1: return 4;
        case DType::Int2: case DType::UInt2: return 2;
        default: return static_cast<int>(dtype_size(dt)) * 8;
    }
}

DType bitcast_target(const Node& node) {
    const int64_t to = node.get_attribute<int64_t>("to");
    DType dt;
    try {
        dt = dtype_from_onnx(static_cast<int>(to));
    } catch (const ValidationError&) {
        fail_node(node, "attribute 'to' is " + std::to_string(to) + ", not a supported type");
    }
    if (dt == DType::String) fail_node(node, "BitCast cannot produce strings");
    return dt;
}

void check_bitcast(const Node& node, DType from, DType to) {
    if (from == DType::String) fail_node(node, "BitCast cannot take strings");
    if (bit_width(from) != bit_width(to))
        fail_node(node, "cannot bitcast " + dtype_to_string(from) + " (" + std::to_string(bit_width(from)) + " bits) to " +
                            dtype_to_string(to) + " (" + std::to_string(bit_width(to)) + " bits)");
}

class BitCastKernel final : public NodeKernel {
public:
    explicit BitCastKernel(const Node& node) : NodeKernel(node), to_(bitcast_target(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        check_bitcast(node_, x.dtype(), to_);
        Tensor y(x.shape(), to_);
        const int bits = bit_width(to_);
        if (bits >= 8 && to_ != DType::Bool) {
            std::memcpy(y.data(), x.data(), x.size_bytes());
        } else {
            const auto* src = x.data_ptr<uint8_t>();
            auto* dst = y.data_ptr<uint8_t>();
            const bool is_signed = to_ == DType::Int4 || to_ == DType::Int2;
            const auto mask = static_cast<uint8_t>(bits == 8 ? 0xFF : (1u << bits) - 1);
            for (int64_t i = 0; i < x.num_elements(); ++i) {
                uint8_t v = static_cast<uint8_t>(src[i] & mask);
                if (is_signed && (v >> (bits - 1))) v = static_cast<uint8_t>(v | ~mask);
                // A bool byte must be 0 or 1 to be a valid C++ bool.
                dst[i] = to_ == DType::Bool ? static_cast<uint8_t>(v != 0) : v;
            }
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    DType to_;
};

void infer_bitcast(InferenceContext& ctx) {
    const DType to = bitcast_target(ctx.node);
    if (!ctx.has_input(0)) return;
    check_bitcast(ctx.node, ctx.input(0).dtype, to);
    ctx.set_output(0, to, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// Recent ops: SwiGLU (opset 28), CausalConvWithState and LinearAttention (opset 27),
// ai.onnx.preview FlexAttention. Float types are computed in float32 (float64 for double
// inputs), as the ONNX reference does, and rounded once to the output type.

// The arithmetic type of the references: float32 for every float type but double.
double compute_round(DType dt, double v) { return dt == DType::Float64 ? v : static_cast<double>(static_cast<float>(v)); }

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// SwiGLU: Y = A * sigmoid(alpha * A) * B, no broadcasting.
class SwiGluKernel final : public NodeKernel {
public:
    explicit SwiGluKernel(const Node& node) : NodeKernel(node), alpha_(node.get_attribute<double>("alpha", 1.0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        if (a.shape() != b.shape() || a.dtype() != b.dtype())
            fail("A and B must have the same shape and dtype (no broadcasting); got " + dtype_to_string(a.dtype()) + " " +
                 shape_to_string(a.shape()) + " and " + dtype_to_string(b.dtype()) + " " + shape_to_string(b.shape()));
        std::vector<double> av = float_values(a, node_);
        const std::vector<double> bv = float_values(b, node_);
        for (size_t i = 0; i < av.size(); ++i) av[i] = compute_round(a.dtype(), av[i] * sigmoid(alpha_ * av[i]) * bv[i]);
        ctx.outputs[0] = float_tensor(a.shape(), a.dtype(), av, node_);
    }

private:
    double alpha_;
};

void infer_swiglu(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    if (ctx.has_input(1) && ctx.input(1).dtype != ctx.input(0).dtype)
        fail_node(ctx.node, "A and B must have the same dtype");
    ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

// CausalConvWithState: depthwise causal 1-D convolution over [past_state (or zeros), input],
// optionally followed by SiLU; present_state is the last k - 1 positions of that sequence.
class CausalConvKernel final : public NodeKernel {
public:
    explicit CausalConvKernel(const Node& node) : NodeKernel(node) {
        const std::string act = node.get_attribute<std::string>("activation", "none");
        if (act != "none" && act != "silu" && act != "swish") fail("activation '" + act + "' is not none, silu or swish");
        silu_ = act != "none";
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(1);
        if (x.ndim() != 3) fail("input has shape " + shape_to_string(x.shape()) + "; expected (batch, channels, length)");
        const int64_t batch = x.shape()[0], channels = x.shape()[1], len = x.shape()[2];
        if (w.ndim() != 3 || w.shape()[0] != channels || w.shape()[1] != 1 || w.shape()[2] < 1)
            fail("weight has shape " + shape_to_string(w.shape()) + "; expected (" + std::to_string(channels) + ", 1, k)");
        const int64_t k = w.shape()[2], past = k - 1, total = past + len;
        for (size_t i = 1; i < 4; ++i)
            if (ctx.has_input(i) && ctx.input(i).dtype() != x.dtype()) fail("all inputs must share the input's dtype");
        const std::vector<double> xv = float_values(x, node_), wv = float_values(w, node_);
        std::vector<double> bias(static_cast<size_t>(channels), 0.0), state(static_cast<size_t>(batch * channels * past), 0.0);
        if (ctx.has_input(2)) {
            if (ctx.input(2).shape() != std::vector<int64_t>{channels}) fail("bias must have shape [" + std::to_string(channels) + "]");
            bias = float_values(ctx.input(2), node_);
        }
        if (ctx.has_input(3)) {
            if (ctx.input(3).shape() != std::vector<int64_t>{batch, channels, past})
                fail("past_state has shape " + shape_to_string(ctx.input(3).shape()) + "; expected " +
                     shape_to_string(std::vector<int64_t>{batch, channels, past}));
            state = float_values(ctx.input(3), node_);
        }
        std::vector<double> y(xv.size()), present(state.size()), padded(static_cast<size_t>(total));
        for (int64_t bc = 0; bc < batch * channels; ++bc) {
            const int64_t c = bc % channels;
            std::copy(state.begin() + bc * past, state.begin() + (bc + 1) * past, padded.begin());
            std::copy(xv.begin() + bc * len, xv.begin() + (bc + 1) * len, padded.begin() + past);
            for (int64_t t = 0; t < len; ++t) {
                double acc = bias[c];
                for (int64_t j = 0; j < k; ++j) acc += wv[c * k + j] * padded[t + j];
                acc = compute_round(x.dtype(), acc);
                y[bc * len + t] = silu_ ? static_cast<float>(acc * sigmoid(acc)) : acc;
            }
            std::copy(padded.end() - past, padded.end(), present.begin() + bc * past);
        }
        ctx.outputs[0] = float_tensor(x.shape(), x.dtype(), y, node_);
        ctx.outputs[1] = float_tensor({batch, channels, past}, x.dtype(), present, node_);
    }

private:
    bool silu_ = false;
};

void infer_causal_conv(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 3) fail_node(ctx.node, "input has shape " + shape_to_string(x.shape) + "; expected rank 3");
    ctx.set_output(0, x.dtype, x.shape);
    std::optional<int64_t> past;
    if (ctx.has_input(1) && ctx.input(1).shape.size() == 3 && ctx.input(1).shape[2]) past = *ctx.input(1).shape[2] - 1;
    ctx.set_output(1, x.dtype, {x.shape[0], x.shape[1], past});
}

// LinearAttention: the recurrent state S (d_k x d_v per kv head) updated token by token with
// the linear / gated / delta / gated_delta rule; o_t = scale * q_t^T S_t.
class LinearAttentionKernel final : public NodeKernel {
public:
    explicit LinearAttentionKernel(const Node& node)
        : NodeKernel(node),
          hq_(node.get_attribute<int64_t>("q_num_heads")),
          hkv_(node.get_attribute<int64_t>("kv_num_heads")),
          scale_(node.get_attribute<double>("scale", 0.0)) {
        const std::string rule = node.get_attribute<std::string>("update_rule", "gated_delta");
        if (rule != "linear" && rule != "gated" && rule != "delta" && rule != "gated_delta")
            fail("update_rule '" + rule + "' is not linear, gated, delta or gated_delta");
        gated_ = rule == "gated" || rule == "gated_delta";
        delta_ = rule == "delta" || rule == "gated_delta";
        if (hq_ <= 0 || hkv_ <= 0 || hq_ % hkv_ != 0) fail("q_num_heads must be a positive multiple of kv_num_heads");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& q = ctx.input(0);
        const Tensor& k = ctx.input(1);
        const Tensor& v = ctx.input(2);
        for (const Tensor* t : {&q, &k, &v})
            if (t->ndim() != 3) fail("query, key and value must be rank 3 (B, T, H*D)");
        const int64_t B = q.shape()[0], T = q.shape()[1];
        if (q.shape().back() % hq_ || k.shape().back() % hkv_ || v.shape().back() % hkv_)
            fail("the last dims of query/key/value must divide by their head counts");
        const int64_t dk = q.shape().back() / hq_, dv = v.shape().back() / hkv_, group = hq_ / hkv_;
        if (k.shape() != std::vector<int64_t>{B, T, hkv_ * dk} || v.shape()[0] != B || v.shape()[1] != T)
            fail("key " + shape_to_string(k.shape()) + " / value " + shape_to_string(v.shape()) + " do not fit query " +
                 shape_to_string(q.shape()));
        if (gated_ != ctx.has_input(4)) fail(gated_ ? "this update_rule needs the decay input" : "this update_rule takes no decay input");
        if (delta_ != ctx.has_input(5)) fail(delta_ ? "this update_rule needs the beta input" : "this update_rule takes no beta input");
        // decay: per head (B, T, H_kv) or per key dim (B, T, H_kv*d_k); beta: (B, T, H_kv) or (B, T, 1).
        std::vector<double> decay, beta;
        int64_t decay_width = 0, beta_width = 0;
        if (gated_) {
            const Tensor& d = ctx.input(4);
            decay_width = d.ndim() == 3 ? d.shape()[2] : 0;
            if (d.ndim() != 3 || d.shape()[0] != B || d.shape()[1] != T || (decay_width != hkv_ && decay_width != hkv_ * dk))
                fail("decay has shape " + shape_to_string(d.shape()) + "; expected (B, T, H_kv) or (B, T, H_kv*d_k)");
            decay = float_values(d, node_);
        }
        if (delta_) {
            const Tensor& b = ctx.input(5);
            beta_width = b.ndim() == 3 ? b.shape()[2] : 0;
            if (b.ndim() != 3 || b.shape()[0] != B || b.shape()[1] != T || (beta_width != hkv_ && beta_width != 1))
                fail("beta has shape " + shape_to_string(b.shape()) + "; expected (B, T, H_kv) or (B, T, 1)");
            beta = float_values(b, node_);
        }
        const size_t state_size = static_cast<size_t>(B * hkv_ * dk * dv);
        std::vector<double> S(state_size, 0.0);
        DType state_dtype = q.dtype();
        if (ctx.has_input(3)) {
            const Tensor& p = ctx.input(3);
            if (p.shape() != std::vector<int64_t>{B, hkv_, dk, dv})
                fail("past_state has shape " + shape_to_string(p.shape()) + "; expected " +
                     shape_to_string(std::vector<int64_t>{B, hkv_, dk, dv}));
            S = float_values(p, node_);
            state_dtype = p.dtype();
        }
        const std::vector<double> qv = float_values(q, node_), kv = float_values(k, node_), vv = float_values(v, node_);
        const double scale = scale_ != 0.0 ? scale_ : 1.0 / std::sqrt(static_cast<double>(dk));
        std::vector<double> out(static_cast<size_t>(B * T * hq_ * dv)), u(static_cast<size_t>(dv));
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < T; ++t) {
                const int64_t bt = b * T + t;
                for (int64_t h = 0; h < hkv_; ++h) {
                    double* s = S.data() + (b * hkv_ + h) * dk * dv;
                    const double* kt = kv.data() + (bt * hkv_ + h) * dk;
                    const double* vt = vv.data() + (bt * hkv_ + h) * dv;
                    if (gated_)
                        for (int64_t i = 0; i < dk; ++i) {
                            const double g = std::exp(decay[bt * decay_width + (decay_width == hkv_ ? h : h * dk + i)]);
                            for (int64_t j = 0; j < dv; ++j) s[i * dv + j] *= g;
                        }
                    for (int64_t j = 0; j < dv; ++j) {
                        u[j] = vt[j];
                        if (delta_) {  // beta * (v - S^T k)
                            double retrieved = 0;
                            for (int64_t i = 0; i < dk; ++i) retrieved += s[i * dv + j] * kt[i];
                            u[j] = beta[bt * beta_width + (beta_width == 1 ? 0 : h)] * (vt[j] - retrieved);
                        }
                    }
                    for (int64_t i = 0; i < dk; ++i)
                        for (int64_t j = 0; j < dv; ++j) s[i * dv + j] += kt[i] * u[j];
                    for (int64_t qh = h * group; qh < (h + 1) * group; ++qh) {
                        const double* qt = qv.data() + (bt * hq_ + qh) * dk;
                        for (int64_t j = 0; j < dv; ++j) {
                            double acc = 0;
                            for (int64_t i = 0; i < dk; ++i) acc += qt[i] * s[i * dv + j];
                            out[(bt * hq_ + qh) * dv + j] = scale * acc;
                        }
                    }
                }
            }
        ctx.outputs[0] = float_tensor({B, T, hq_ * dv}, q.dtype(), out, node_);
        ctx.outputs[1] = float_tensor({B, hkv_, dk, dv}, state_dtype, S, node_);
    }

private:
    int64_t hq_, hkv_;
    double scale_;
    bool gated_ = false, delta_ = false;
};

void infer_linear_attention(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& q = ctx.input(0);
    if (q.shape.size() != 3) fail_node(ctx.node, "query must be rank 3 (B, T, H*D)");
    const int64_t hq = ctx.node.get_attribute<int64_t>("q_num_heads"), hkv = ctx.node.get_attribute<int64_t>("kv_num_heads");
    if (hq <= 0 || hkv <= 0) fail_node(ctx.node, "head counts must be positive");
    std::optional<int64_t> dk, dv;
    if (q.shape[2]) dk = *q.shape[2] / hq;
    if (ctx.has_input(2) && ctx.input(2).shape.size() == 3 && ctx.input(2).shape[2]) dv = *ctx.input(2).shape[2] / hkv;
    ctx.set_output(0, q.dtype, {q.shape[0], q.shape[1], dv ? std::optional<int64_t>(*dv * hq) : std::nullopt});
    ctx.set_output(1, ctx.has_input(3) ? ctx.input(3).dtype : q.dtype, {q.shape[0], hkv, dk, dv});
}

// FlexAttention (ai.onnx.preview): softmax((Q K^T) * scale) V with optional score_mod and
// prob_mod subgraphs applied to the (B, Hq, L, S) scores and probabilities.
class FlexAttentionKernel final : public NodeKernel {
public:
    explicit FlexAttentionKernel(const KernelInfo& info) : NodeKernel(info.node) {
        const Node& node = info.node;
        if (node.has_attribute("scale")) scale_ = node.get_attribute<double>("scale");
        if (node.has_attribute("softmax_precision")) {
            const int64_t code = node.get_attribute<int64_t>("softmax_precision");
            if (code != 1 && code != 10 && code != 11 && code != 16)
                fail("softmax_precision " + std::to_string(code) + " is not float, float16, bfloat16 or double");
            precision_ = dtype_from_onnx(static_cast<int>(code));
        }
        for (const char* name : {"score_mod", "prob_mod"}) {
            if (!node.has_attribute(name)) continue;
            if (!info.compile_subgraph) fail(std::string("cannot compile the '") + name + "' subgraph here");
            const auto graph = node.get_attribute<std::shared_ptr<Graph>>(name);
            auto runner = info.compile_subgraph(*graph);
            if (runner->graph().inputs().size() != 1 || runner->graph().outputs().size() != 1)
                fail(std::string("subgraph '") + name + "' must have exactly one input and one output");
            (std::string(name) == "score_mod" ? score_mod_ : prob_mod_) = std::move(runner);
        }
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& q = ctx.input(0);
        const Tensor& k = ctx.input(1);
        const Tensor& v = ctx.input(2);
        if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) fail("Q, K and V must be rank 4");
        const int64_t B = q.shape()[0], Hq = q.shape()[1], L = q.shape()[2], E = q.shape()[3];
        const int64_t Hkv = k.shape()[1], S = k.shape()[2], Ev = v.shape()[3];
        if (k.shape()[0] != B || v.shape()[0] != B || k.shape()[3] != E || v.shape()[1] != Hkv || v.shape()[2] != S)
            fail("shapes Q " + shape_to_string(q.shape()) + ", K " + shape_to_string(k.shape()) + ", V " +
                 shape_to_string(v.shape()) + " do not fit together");
        if (Hkv <= 0 || Hq % Hkv != 0) fail("q_num_heads must be a multiple of kv_num_heads");
        if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) fail("Q, K and V must share one dtype");
        const DType cdt = precision_ ? *precision_ : q.dtype() == DType::Float64 ? DType::Float64 : DType::Float32;
        // Q and K are each scaled by sqrt(scale) (rounded to float32, then to the input type).
        const double root = static_cast<float>(std::sqrt(static_cast<float>(scale_ ? *scale_ : 1.0 / std::sqrt(static_cast<double>(E)))));
        auto scaled = [&](const Tensor& t) {
            std::vector<double> x = float_values(t, node_);
            for (double& e : x) e = round_to(t.dtype(), e * root);
            return x;
        };
        const std::vector<double> qv = scaled(q), kv = scaled(k), vv = float_values(v, node_);
        const int64_t group = Hq / Hkv;
        std::vector<double> scores(static_cast<size_t>(B * Hq * L * S));
        for (int64_t b = 0; b < B; ++b)
            for (int64_t h = 0; h < Hq; ++h)
                for (int64_t i = 0; i < L; ++i)
                    for (int64_t j = 0; j < S; ++j) {
                        const double* qi = qv.data() + ((b * Hq + h) * L + i) * E;
                        const double* kj = kv.data() + ((b * Hkv + h / group) * S + j) * E;
                        double acc = 0;
                        for (int64_t e = 0; e < E; ++e) acc += qi[e] * kj[e];
                        scores[((b * Hq + h) * L + i) * S + j] = round_to(cdt, round_to(q.dtype(), acc));
                    }
        const std::vector<int64_t> shape{B, Hq, L, S};
        if (score_mod_) scores = apply(*score_mod_, scores, shape, cdt, ctx, "score_mod");
        for (size_t row = 0; row < scores.size(); row += static_cast<size_t>(S)) {
            double* r = scores.data() + row;
            const double top = *std::max_element(r, r + S);
            double sum = 0;
            for (int64_t j = 0; j < S; ++j) sum += r[j] = round_to(cdt, std::exp(r[j] - top));
            for (int64_t j = 0; j < S; ++j) r[j] = round_to(cdt, r[j] / sum);
        }
        if (prob_mod_) scores = apply(*prob_mod_, scores, shape, cdt, ctx, "prob_mod");
        std::vector<double> y(static_cast<size_t>(B * Hq * L * Ev));
        for (int64_t bh = 0; bh < B * Hq; ++bh) {
            const double* vh = vv.data() + ((bh / Hq) * Hkv + (bh % Hq) / group) * S * Ev;
            for (int64_t i = 0; i < L; ++i)
                for (int64_t e = 0; e < Ev; ++e) {
                    double acc = 0;
                    for (int64_t j = 0; j < S; ++j) acc += scores[(bh * L + i) * S + j] * vh[j * Ev + e];
                    y[(bh * L + i) * Ev + e] = round_to(cdt, acc);
                }
        }
        ctx.outputs[0] = float_tensor({B, Hq, L, Ev}, v.dtype(), y, node_);
    }

private:
    static double round_to(DType dt, double v) {
        switch (dt) {
            case DType::Float64: return v;
            case DType::Float16: return static_cast<float>(Eigen::half(static_cast<float>(v)));
            case DType::BFloat16: return static_cast<float>(Eigen::bfloat16(static_cast<float>(v)));
            default: return static_cast<float>(v);
        }
    }

    // Runs a modifier subgraph on a (B, Hq, L, S) tensor of dtype cdt; the result must keep the shape.
    std::vector<double> apply(const SubgraphRunner& runner, const std::vector<double>& x, const std::vector<int64_t>& shape,
                              DType cdt, const KernelContext& ctx, const char* name) const {
        static const ScopeLookup no_scope = [](const std::string&) -> const Value* { return nullptr; };
        static const RunControl no_control;
        std::vector<Value> in;
        in.emplace_back(float_tensor(shape, cdt, x, node_));
        std::vector<Value> out = runner.run(std::move(in), ctx.scope ? *ctx.scope : no_scope, ctx.control ? *ctx.control : no_control);
        if (out.size() != 1 || !out[0].is_tensor() || out[0].tensor().shape() != shape)
            fail(std::string("subgraph '") + name + "' must return one tensor of shape " + shape_to_string(shape));
        std::vector<double> r = float_values(out[0].tensor(), node_);
        for (double& e : r) e = round_to(cdt, e);
        return r;
    }

    std::optional<double> scale_;
    std::optional<DType> precision_;
    std::unique_ptr<SubgraphRunner> score_mod_, prob_mod_;
};

void infer_flex_attention(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& q = ctx.input(0);
    if (q.shape.size() != 4) fail_node(ctx.node, "Q must be rank 4");
    std::optional<int64_t> ev;
    if (ctx.has_input(2) && ctx.input(2).shape.size() == 4) ev = ctx.input(2).shape[3];
    ctx.set_output(0, q.dtype, {q.shape[0], q.shape[1], q.shape[2], ev});
}

}  // namespace

void register_misc_ops(OpTable& table) {
    table.add(OpSchema{"NonMaxSuppression", "", 10, 2, 5, 1, 1, infer_nms,
                       [](const KernelInfo& info) { return std::make_unique<NonMaxSuppressionKernel>(info.node); }});
    table.add(OpSchema{"BitCast", "", 26, 1, 1, 1, 1, infer_bitcast,
                       [](const KernelInfo& info) { return std::make_unique<BitCastKernel>(info.node); }});
    table.add(OpSchema{"SwiGLU", "", 28, 2, 2, 1, 1, infer_swiglu,
                       [](const KernelInfo& info) { return std::make_unique<SwiGluKernel>(info.node); }});
    table.add(OpSchema{"CausalConvWithState", "", 27, 2, 4, 2, 2, infer_causal_conv,
                       [](const KernelInfo& info) { return std::make_unique<CausalConvKernel>(info.node); }});
    table.add(OpSchema{"LinearAttention", "", 27, 3, 6, 2, 2, infer_linear_attention,
                       [](const KernelInfo& info) { return std::make_unique<LinearAttentionKernel>(info.node); }});
    table.add(OpSchema{"FlexAttention", "ai.onnx.preview", 1, 3, 3, 1, 1, infer_flex_attention,
                       [](const KernelInfo& info) { return std::make_unique<FlexAttentionKernel>(info); }});
    register_rnn_ops(table);
    register_signal_ops(table);
    register_string_ops(table);
    register_random_ops(table);
    register_ml_ops(table);
    register_training_ops(table);
}

}  // namespace pyflame_rt::ops
