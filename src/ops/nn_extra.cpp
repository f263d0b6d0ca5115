// Neural-network ops beyond the basic families: Dropout, Einsum, Det, Attention,
// RotaryEmbedding, NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, Resize, Upsample,
// GridSample, AffineGrid, RoiAlign. Floating inputs are computed in double and rounded once
// to the output type (the float types: float, double, float16, bfloat16).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "ops/nn_common.hpp"

namespace pyflame_rt::ops {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Writes doubles into a new tensor of any numeric dtype: floats rounded, integers rounded
// half to even and saturated (as ONNX's reference saturate_cast).
Tensor numeric_tensor(const std::vector<int64_t>& shape, DType dtype, const std::vector<double>& values,
                      const Node& node) {
    Tensor t(shape, dtype);
    dispatch_numeric(dtype, node, [&](auto v) {
        using T = decltype(v);
        T* out = t.data_ptr<T>();
        for (size_t i = 0; i < values.size(); ++i) {
            if constexpr (is_floating_v<T>) {
                out[i] = static_cast<T>(values[i]);
            } else {
                const double r = std::nearbyint(values[i]);  // the default rounding: half to even
                const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
                const double hi = static_cast<double>(std::numeric_limits<T>::max());
                out[i] = std::isnan(r) ? T(0) : r <= lo ? std::numeric_limits<T>::lowest()
                                                 : r >= hi ? std::numeric_limits<T>::max() : static_cast<T>(r);
            }
        }
    });
    return t;
}

// Any numeric tensor's values as doubles.
std::vector<double> numeric_values(const Tensor& t, const Node& node) {
    std::vector<double> out(static_cast<size_t>(t.num_elements()));
    dispatch_numeric(t.dtype(), node, [&](auto v) {
        using T = decltype(v);
        std::transform(t.data_ptr<T>(), t.data_ptr<T>() + out.size(), out.begin(),
                       [](T e) { return static_cast<double>(e); });
    });
    return out;
}

// A scalar (or one-element) input's value.
double scalar_value(const Tensor& t, const Node& node, const char* what) {
    if (t.num_elements() != 1) fail_node(node, std::string(what) + " has shape " + shape_to_string(t.shape()) + "; expected a scalar");
    if (t.dtype() == DType::Bool) return t.data_ptr<uint8_t>()[0] != 0 ? 1.0 : 0.0;
    return numeric_values(t, node)[0];
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
    std::vector<int64_t> s(shape.size(), 1);
    for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
    return s;
}

void infer_same(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// Dropout. Inference (and ratio 0): the identity, mask all true. Training: elements are kept
// when a uniform draw in [0, 1) is >= ratio and scaled by 1 / (1 - ratio). The draws are those
// of numpy's legacy RandomState(seed).uniform (MT19937, 53-bit doubles), so a seeded node
// matches the ONNX reference; without a seed every run draws a fresh one.

class DropoutKernel final : public NodeKernel {
public:
    DropoutKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          legacy_(opset > 0 && opset < 12),
          attr_ratio_(node.get_attribute<double>("ratio", 0.5)),
          has_seed_(node.has_attribute("seed")),
          seed_(node.get_attribute<int64_t>("seed", 0)),
          bool_mask_(opset <= 0 || opset >= 10),
          want_mask_(wants_output(node, 1)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input data");
        double ratio = legacy_ ? attr_ratio_ : 0.5;
        bool training = false;
        if (!legacy_) {
            if (ctx.has_input(1)) ratio = scalar_value(ctx.input(1), node_, "input ratio");
            if (ctx.has_input(2)) training = scalar_value(ctx.input(2), node_, "input training_mode") != 0;
        }
        if (training && !(ratio >= 0 && ratio < 1))
            fail("ratio is " + std::to_string(ratio) + "; expected a value in [0, 1)");
        if (!training || ratio == 0) {
            ctx.outputs[0] = x;  // shares the storage: kernels never write their inputs
            if (want_mask_) {
                if (bool_mask_) {
                    Tensor mask(x.shape(), DType::Bool);
                    std::fill_n(mask.data_ptr<uint8_t>(), mask.num_elements(), uint8_t{1});
                    ctx.outputs[1] = std::move(mask);
                } else {
                    ctx.outputs[1] = float_tensor(x.shape(), x.dtype(), std::vector<double>(x.num_elements(), 1.0), node_);
                }
            }
            return;
        }
        std::mt19937 gen(has_seed_ ? static_cast<uint32_t>(seed_) : std::random_device{}());
        auto uniform = [&gen] {  // numpy's random_sample: 27 + 26 bits
            const uint32_t a = gen() >> 5, b = gen() >> 6;
            return (a * 67108864.0 + b) / 9007199254740992.0;
        };
        Tensor y(x.shape(), x.dtype());
        Tensor mask(x.shape(), DType::Bool);
        uint8_t* keep = mask.data_ptr<uint8_t>();
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T scale = static_cast<T>(1.0 / (1.0 - ratio));
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t i = 0; i < x.num_elements(); ++i) {
                keep[i] = uniform() >= ratio ? 1 : 0;
                yd[i] = keep[i] ? static_cast<T>(xd[i] * scale) : T(0);
            }
        });
        ctx.outputs[0] = std::move(y);
        if (want_mask_) ctx.outputs[1] = std::move(mask);
    }

private:
    bool legacy_;
    double attr_ratio_;
    bool has_seed_;
    int64_t seed_;
    bool bool_mask_;
    bool want_mask_;
};

void infer_dropout(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input data");
    ctx.set_output(0, x.dtype, x.shape);
    if (wants_output(ctx.node, 1)) ctx.set_output(1, ctx.opset > 0 && ctx.opset < 10 ? x.dtype : DType::Bool, x.shape);
}

// ---------------------------------------------------------------------------------------------
// Einsum: any equation with explicit or implicit output, repeated labels (diagonals) and
// ellipsis broadcasting; one loop over all labels, summing products into the output.

struct EinsumPlan {
    std::vector<int64_t> sizes;                     // per label (all labels: output ones first)
    size_t out_labels = 0;                          // the first out_labels labels form the output
    std::vector<std::vector<int64_t>> strides;      // per operand, per label (0: not indexed)
};

// Ellipsis dims get labels 256 + k (k-th broadcast dim, counted from the left of the widest).
EinsumPlan plan_einsum(const std::string& raw, const std::vector<const Tensor*>& ops, const Node& node) {
    std::string eq;
    for (char c : raw)
        if (c != ' ') eq += c;
    const size_t arrow = eq.find("->");
    const std::string lhs = eq.substr(0, arrow);
    std::vector<std::string> terms;
    for (size_t start = 0;;) {
        const size_t comma = lhs.find(',', start);
        terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (terms.size() != ops.size())
        fail_node(node, "equation '" + raw + "' has " + std::to_string(terms.size()) + " operands; the node has " +
                            std::to_string(ops.size()) + " inputs");
    // Parse each term into letters, with -1 standing for the ellipsis.
    auto parse = [&](const std::string& term) {
        std::vector<int> labels;
        for (size_t i = 0; i < term.size(); ++i) {
            if (term.compare(i, 3, "...") == 0) {
                if (std::count(labels.begin(), labels.end(), -1)) fail_node(node, "equation '" + raw + "' has two ellipses in a term");
                labels.push_back(-1);
                i += 2;
            } else if (std::isalpha(static_cast<unsigned char>(term[i]))) {
                labels.push_back(static_cast<unsigned char>(term[i]));
            } else {
                fail_node(node, "equation '" + raw + "' has an invalid character '" + std::string(1, term[i]) + "'");
            }
        }
        return labels;
    };
    std::vector<std::vector<int>> op_labels(ops.size());
    size_t ellipsis_rank = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
        const std::vector<int> t = parse(terms[i]);
        const bool has_ellipsis = std::count(t.begin(), t.end(), -1) != 0;
        const size_t letters = t.size() - (has_ellipsis ? 1 : 0);
        const size_t rank = ops[i]->ndim();
        if (has_ellipsis ? rank < letters : rank != letters)
            fail_node(node, "operand " + std::to_string(i) + " '" + terms[i] + "' does not fit input shape " +
                                shape_to_string(ops[i]->shape()));
        ellipsis_rank = std::max(ellipsis_rank, rank - letters);
    }
    std::map<int, int64_t> size;
    std::map<int, int> count;
    for (size_t i = 0; i < ops.size(); ++i) {
        const std::vector<int> t = parse(terms[i]);
        const bool has_ellipsis = std::count(t.begin(), t.end(), -1) != 0;
        const size_t e = ops[i]->ndim() - (t.size() - (has_ellipsis ? 1 : 0));
        for (int l : t) {
            if (l != -1) {
                op_labels[i].push_back(l);
                continue;
            }
            for (size_t k = 0; k < e; ++k) op_labels[i].push_back(256 + static_cast<int>(ellipsis_rank - e + k));
        }
        for (size_t d = 0; d < op_labels[i].size(); ++d) {
            const int l = op_labels[i][d];
            const int64_t dim = ops[i]->shape()[d];
            ++count[l];
            auto it = size.find(l);
            if (it == size.end() || it->second == 1) size[l] = dim;
            else if (dim != 1 && dim != it->second)
                fail_node(node, "equation '" + raw + "': a label has sizes " + std::to_string(it->second) + " and " +
                                    std::to_string(dim));
        }
    }
    std::vector<int> out;
    if (arrow != std::string::npos) {
        for (int l : parse(eq.substr(arrow + 2))) {
            if (l == -1) {
                for (size_t k = 0; k < ellipsis_rank; ++k) out.push_back(256 + static_cast<int>(k));
                continue;
            }
            if (!size.count(l)) fail_node(node, "equation '" + raw + "': output label '" + std::string(1, char(l)) + "' is in no input");
            if (std::count(out.begin(), out.end(), l)) fail_node(node, "equation '" + raw + "' repeats an output label");
            out.push_back(l);
        }
    } else {  // implicit: the broadcast dims, then the labels used once, in alphabetical order
        for (size_t k = 0; k < ellipsis_rank; ++k) out.push_back(256 + static_cast<int>(k));
        for (const auto& [l, n] : count)
            if (l < 256 && n == 1) out.push_back(l);
    }
    std::vector<int> all = out;
    for (const auto& [l, n] : size)
        if (!std::count(all.begin(), all.end(), l)) all.push_back(l);
    EinsumPlan p;
    p.out_labels = out.size();
    for (int l : all) p.sizes.push_back(size[l]);
    for (size_t i = 0; i < ops.size(); ++i) {
        const std::vector<int64_t> st = strides_of(ops[i]->shape());
        std::vector<int64_t> per_label(all.size(), 0);
        for (size_t d = 0; d < op_labels[i].size(); ++d) {
            if (ops[i]->shape()[d] == 1) continue;  // broadcast (or size 1): no stride
            const size_t at = static_cast<size_t>(std::find(all.begin(), all.end(), op_labels[i][d]) - all.begin());
            per_label[at] += st[d];  // a repeated label walks the diagonal
        }
        p.strides.push_back(std::move(per_label));
    }
    return p;
}

class EinsumKernel final : public NodeKernel {
public:
    explicit EinsumKernel(const Node& node) : NodeKernel(node), equation_(node.get_attribute<std::string>("equation")) {}

    void compute(KernelContext& ctx) const override {
        std::vector<const Tensor*> ops;
        for (size_t i = 0; i < ctx.inputs.size(); ++i) ops.push_back(&ctx.input(i));
        const DType dtype = ops[0]->dtype();
        for (const Tensor* t : ops)
            if (t->dtype() != dtype) fail("inputs have different dtypes");
        const EinsumPlan p = plan_einsum(equation_, ops, node_);
        const std::vector<int64_t> out_shape(p.sizes.begin(), p.sizes.begin() + static_cast<std::ptrdiff_t>(p.out_labels));
        Tensor y(out_shape, dtype);
        dispatch_numeric(dtype, node_, [&](auto t) {
            using T = decltype(t);
            using A = std::conditional_t<is_floating_v<T>, double, std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;
            const int64_t out_size = num_elements_of(out_shape);
            std::vector<A> acc(static_cast<size_t>(out_size), A(0));
            const int64_t total = num_elements_of(p.sizes);
            const size_t n = p.sizes.size();
            std::vector<int64_t> index(n, 0), offset(ops.size(), 0);
            const std::vector<int64_t> out_strides = strides_of(out_shape);
            int64_t out = 0;
            for (int64_t it = 0; it < total; ++it) {
                A prod = A(1);
                for (size_t i = 0; i < ops.size(); ++i) prod *= static_cast<A>(ops[i]->data_ptr<T>()[offset[i]]);
                acc[out] += prod;
                for (size_t d = n; d-- > 0;) {  // odometer step over the labels
                    const int64_t os = d < p.out_labels ? out_strides[d] : 0;
                    ++index[d];
                    out += os;
                    for (size_t i = 0; i < ops.size(); ++i) offset[i] += p.strides[i][d];
                    if (index[d] < p.sizes[d]) break;
                    index[d] = 0;
                    out -= os * p.sizes[d];
                    for (size_t i = 0; i < ops.size(); ++i) offset[i] -= p.strides[i][d] * p.sizes[d];
                }
            }
            std::transform(acc.begin(), acc.end(), y.data_ptr<T>(), [](A a) { return static_cast<T>(a); });
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    std::string equation_;
};

void infer_einsum(InferenceContext& ctx) {
    // Output dims are only computed when every input's shape is static (run the planner on
    // empty stand-ins of the right shapes); the dtype is always the first input's.
    std::vector<Tensor> stand_ins;
    for (size_t i = 0; i < ctx.node.inputs().size(); ++i) {
        if (!ctx.has_input(i) || !is_static(ctx.input(i).shape)) {
            if (ctx.has_input(0)) set_output_rank_unknown(ctx, 0, ctx.input(0).dtype);
            return;
        }
        std::vector<int64_t> dims;
        for (const auto& d : ctx.input(i).shape) dims.push_back(*d);
        stand_ins.emplace_back(nullptr, dims, ctx.input(i).dtype);
    }
    std::vector<const Tensor*> ops;
    for (const Tensor& t : stand_ins) ops.push_back(&t);
    const EinsumPlan p = plan_einsum(ctx.node.get_attribute<std::string>("equation"), ops, ctx.node);
    ctx.set_output(0, ctx.input(0).dtype,
                   to_shape(std::vector<int64_t>(p.sizes.begin(), p.sizes.begin() + static_cast<std::ptrdiff_t>(p.out_labels))));
}

// ---------------------------------------------------------------------------------------------
// Det: determinants of the trailing square matrices (LU with partial pivoting, in double).

class DetKernel final : public NodeKernel {
public:
    explicit DetKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input X");
        const size_t rank = x.ndim();
        if (rank < 2 || x.shape()[rank - 1] != x.shape()[rank - 2])
            fail("input X has shape " + shape_to_string(x.shape()) + "; expected (..., M, M)");
        const int64_t m = x.shape()[rank - 1];
        const std::vector<int64_t> out_shape(x.shape().begin(), x.shape().end() - 2);
        const int64_t count = num_elements_of(out_shape);
        const std::vector<double> v = float_values(x, node_);
        std::vector<double> det(static_cast<size_t>(count));
        std::vector<double> a(static_cast<size_t>(m * m));
        for (int64_t b = 0; b < count; ++b) {
            std::copy_n(v.begin() + b * m * m, m * m, a.begin());
            double d = 1;
            for (int64_t c = 0; c < m && d != 0; ++c) {
                int64_t pivot = c;
                for (int64_t r = c + 1; r < m; ++r)
                    if (std::abs(a[r * m + c]) > std::abs(a[pivot * m + c])) pivot = r;
                if (a[pivot * m + c] == 0) {
                    d = 0;
                    break;
                }
                if (pivot != c) {
                    std::swap_ranges(a.begin() + c * m, a.begin() + (c + 1) * m, a.begin() + pivot * m);
                    d = -d;
                }
                d *= a[c * m + c];
                for (int64_t r = c + 1; r < m; ++r) {
                    const double f = a[r * m + c] / a[c * m + c];
                    for (int64_t k = c; k < m; ++k) a[r * m + k] -= f * a[c * m + k];
                }
            }
            det[b] = d;
        }
        ctx.outputs[0] = float_tensor(out_shape, x.dtype(), det, node_);
    }
};

void infer_det(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() < 2) fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (..., M, M)");
    ctx.set_output(0, x.dtype, Shape(x.shape.begin(), x.shape.end() - 2));
}

// ---------------------------------------------------------------------------------------------
// Attention (opset 23+): softmax(Q K^T * scale [softcap] + bias) V per head, with grouped KV
// heads, 3-D (B, S, heads * size) or 4-D (B, heads, S, size) inputs, a boolean or additive
// mask (broadcast to (B, Hq, Sq, kv), shorter kv padded as masked), offset-aware causal and
// sliding-window masks, past/present KV cache and nonpad_kv_seqlen. A query row with every key
// masked gives zeros. As the ONNX reference (onnx/reference/ops/op_attention.py).

struct AttentionAttrs {
    bool causal;
    std::optional<double> scale;
    int64_t q_heads, kv_heads;
    double softcap;
    int64_t qk_mode;
    int64_t left_window, right_window;

    AttentionAttrs(const Node& node)
        : causal(node.get_attribute<int64_t>("is_causal", 0) != 0),
          q_heads(node.get_attribute<int64_t>("q_num_heads", 0)),
          kv_heads(node.get_attribute<int64_t>("kv_num_heads", 0)),
          softcap(node.get_attribute<double>("softcap", 0.0)),
          qk_mode(node.get_attribute<int64_t>("qk_matmul_output_mode", 0)),
          left_window(node.get_attribute<int64_t>("left_window_size", -1)),
          right_window(node.get_attribute<int64_t>("right_window_size", -1)) {
        if (node.has_attribute("scale")) scale = node.get_attribute<double>("scale");
        if (qk_mode < 0 || qk_mode > 3)
            fail_node(node, "attribute 'qk_matmul_output_mode' is " + std::to_string(qk_mode) + "; expected 0 to 3");
        if (left_window < -1 || right_window < -1)
            fail_node(node, "attributes 'left_window_size' and 'right_window_size' must be -1 or >= 0");
    }
};

// (batch, heads, seq, size) views of Q/K/V, whichever of 3-D or 4-D they came in.
struct HeadView {
    int64_t batch = 0, heads = 0, seq = 0, size = 0;
    bool packed = false;  // 3-D (B, S, heads * size)
    int64_t at(int64_t b, int64_t h, int64_t s, int64_t d) const {
        return packed ? (b * seq + s) * heads * size + h * size + d : ((b * heads + h) * seq + s) * size + d;
    }
};

HeadView head_view(const std::vector<int64_t>& shape, int64_t heads_attr, const Node& node, const char* what) {
    HeadView v;
    if (shape.size() == 4) {
        v = HeadView{shape[0], shape[1], shape[2], shape[3], false};
    } else if (shape.size() == 3) {
        if (heads_attr < 1 || shape[2] % heads_attr != 0)
            fail_node(node, std::string(what) + " has shape " + shape_to_string(shape) +
                                "; 3-D inputs need q_num_heads/kv_num_heads dividing the hidden size");
        v = HeadView{shape[0], heads_attr, shape[1], shape[2] / heads_attr, true};
    } else {
        fail_node(node, std::string(what) + " has shape " + shape_to_string(shape) + "; expected rank 3 or 4");
    }
    return v;
}

class AttentionKernel final : public NodeKernel {
public:
    explicit AttentionKernel(const Node& node)
        : NodeKernel(node),
          a_(node),
          want_present_k_(wants_output(node, 1)),
          want_present_v_(wants_output(node, 2)),
          want_qk_(wants_output(node, 3)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& q_t = ctx.input(0);
        const Tensor& k_t = ctx.input(1);
        const Tensor& v_t = ctx.input(2);
        require_float_type(node_, q_t.dtype(), "input Q");
        if (q_t.ndim() != k_t.ndim() || q_t.ndim() != v_t.ndim())
            fail("inputs Q " + shape_to_string(q_t.shape()) + ", K " + shape_to_string(k_t.shape()) + " and V " +
                 shape_to_string(v_t.shape()) + " must have the same rank");
        const HeadView q = head_view(q_t.shape(), a_.q_heads, node_, "input Q");
        const HeadView k = head_view(k_t.shape(), a_.kv_heads, node_, "input K");
        const HeadView v = head_view(v_t.shape(), a_.kv_heads, node_, "input V");
        if (k.batch != q.batch || v.batch != q.batch || k.seq != v.seq || k.heads != v.heads || k.size != q.size)
            fail("inputs Q " + shape_to_string(q_t.shape()) + ", K " + shape_to_string(k_t.shape()) + " and V " +
                 shape_to_string(v_t.shape()) + " do not agree on batch, KV length, heads or head size");
        if (q.heads % k.heads != 0)
            fail("Q has " + std::to_string(q.heads) + " heads, not a multiple of K/V's " + std::to_string(k.heads));
        const bool has_past = ctx.has_input(4) || ctx.has_input(5);
        if (has_past && !(ctx.has_input(4) && ctx.has_input(5))) fail("past_key and past_value must be given together");
        if (has_past && ctx.has_input(6)) fail("nonpad_kv_seqlen cannot be combined with past_key/past_value");
        const int64_t B = q.batch, Hq = q.heads, Hk = k.heads, Sq = q.seq, D = q.size, Dv = v.size;
        int64_t past = 0;
        if (has_past) {
            const auto& pk = ctx.input(4).shape();
            const auto& pv = ctx.input(5).shape();
            if (pk.size() != 4 || pv.size() != 4 || pk[0] != B || pk[1] != Hk || pk[3] != D || pv[0] != B ||
                pv[1] != Hk || pv[3] != Dv || pv[2] != pk[2])
                fail("past_key " + shape_to_string(pk) + " / past_value " + shape_to_string(pv) + " do not fit K and V");
            past = pk[2];
        }
        const int64_t S = past + k.seq;  // total KV length

        // Present K/V (B, Hk, S, size), in double for the products.
        std::vector<double> key(static_cast<size_t>(B * Hk * S * D)), value(static_cast<size_t>(B * Hk * S * Dv));
        {
            const std::vector<double> kd = float_values(k_t, node_), vd = float_values(v_t, node_);
            const std::vector<double> pk = has_past ? float_values(ctx.input(4), node_) : std::vector<double>();
            const std::vector<double> pv = has_past ? float_values(ctx.input(5), node_) : std::vector<double>();
            for (int64_t b = 0; b < B; ++b)
                for (int64_t h = 0; h < Hk; ++h)
                    for (int64_t s = 0; s < S; ++s) {
                        for (int64_t d = 0; d < D; ++d)
                            key[((b * Hk + h) * S + s) * D + d] =
                                s < past ? pk[((b * Hk + h) * past + s) * D + d] : kd[k.at(b, h, s - past, d)];
                        for (int64_t d = 0; d < Dv; ++d)
                            value[((b * Hk + h) * S + s) * Dv + d] =
                                s < past ? pv[((b * Hk + h) * past + s) * Dv + d] : vd[v.at(b, h, s - past, d)];
                    }
        }
        const std::vector<double> qd = float_values(q_t, node_);

        // The mask, right-aligned to (B, Hq, Sq, mask_kv); keys past mask_kv are masked.
        const Tensor* mask = ctx.has_input(3) ? &ctx.input(3) : nullptr;
        std::vector<double> mask_values;
        std::array<int64_t, 4> mask_strides{0, 0, 0, 0};
        int64_t mask_kv = 0;
        const bool bool_mask = mask && mask->dtype() == DType::Bool;
        if (mask) {
            const auto& ms = mask->shape();
            if (ms.empty() || ms.size() > 4) fail("attn_mask has shape " + shape_to_string(ms) + "; expected rank 1 to 4");
            mask_kv = ms.back();
            if (mask_kv > S) fail("attn_mask has " + std::to_string(mask_kv) + " keys; K/V have " + std::to_string(S));
            const std::array<int64_t, 3> lead{B, Hq, Sq};
            const std::vector<int64_t> st = strides_of(ms);
            for (size_t i = 0; i + 1 < ms.size(); ++i) {
                const size_t axis = 3 - (ms.size() - 1 - i);  // right-aligned
                if (ms[i] != 1 && ms[i] != lead[axis])
                    fail("attn_mask has shape " + shape_to_string(ms) + ", which does not broadcast to (" +
                         std::to_string(B) + ", " + std::to_string(Hq) + ", " + std::to_string(Sq) + ", kv)");
                if (ms[i] != 1) mask_strides[axis] = st[i];
            }
            mask_values = bool_mask ? std::vector<double>() : numeric_values(*mask, node_);
        }
        std::vector<int64_t> nonpad;
        if (ctx.has_input(6)) {
            nonpad = int_values(ctx.input(6), node_, "nonpad_kv_seqlen");
            if (static_cast<int64_t>(nonpad.size()) != B)
                fail("nonpad_kv_seqlen has " + std::to_string(nonpad.size()) + " values; expected " + std::to_string(B));
        }
        const double scale = a_.scale ? *a_.scale : 1.0 / std::sqrt(static_cast<double>(D));

        const DType out_type = q_t.dtype();
        std::vector<double> y(static_cast<size_t>(B * Hq * Sq * Dv));
        std::vector<double> qk(want_qk_ ? static_cast<size_t>(B * Hq * Sq * S) : 0);
        const int64_t group = Hq / Hk;
        const double work = 2.0 * static_cast<double>(B * Hq * Sq) * static_cast<double>(S) * static_cast<double>(D + Dv);
        parallel_for(B * Hq, threads_for_work(work, ctx.num_threads), [&](int64_t begin, int64_t end) {
            std::vector<double> raw(static_cast<size_t>(S)), bias(static_cast<size_t>(S)), x(static_cast<size_t>(S));
            for (int64_t bh = begin; bh < end; ++bh) {
                const int64_t b = bh / Hq, h = bh % Hq, hk = h / group;
                // Bottom-right alignment: past keys precede the queries (or the external cache's).
                const int64_t offset = has_past ? past : !nonpad.empty() ? nonpad[b] - Sq : 0;
                for (int64_t i = 0; i < Sq; ++i) {
                    bool all_masked = true;
                    for (int64_t j = 0; j < S; ++j) {
                        double dot = 0;
                        const double* kr = &key[((b * Hk + hk) * S + j) * D];
                        for (int64_t d = 0; d < D; ++d) dot += qd[q.at(b, h, i, d)] * kr[d];
                        raw[j] = dot * scale;
                        double bj = 0;
                        if (mask) {
                            if (j >= mask_kv) {
                                bj = -kInf;
                            } else {
                                const int64_t at = b * mask_strides[0] + h * mask_strides[1] + i * mask_strides[2] + j;
                                bj = bool_mask ? (mask->data_ptr<uint8_t>()[at] ? 0.0 : -kInf) : mask_values[at];
                            }
                        }
                        const int64_t pos = i + offset;  // the query's absolute position
                        if (a_.causal && j > pos) bj = -kInf;
                        if (a_.left_window >= 0 && pos - j > a_.left_window) bj = -kInf;
                        if (a_.right_window >= 0 && j - pos > a_.right_window) bj = -kInf;
                        if (!nonpad.empty() && j >= nonpad[b]) bj = -kInf;
                        bias[j] = bj;
                        if (!(bj == -kInf)) all_masked = false;
                    }
                    double* qk_row = want_qk_ ? &qk[((b * Hq + h) * Sq + i) * S] : nullptr;
                    if (qk_row && a_.qk_mode == 0) std::copy(raw.begin(), raw.end(), qk_row);
                    if (a_.softcap > 0)
                        for (double& r : raw) r = a_.softcap * std::tanh(r / a_.softcap);
                    if (qk_row && a_.qk_mode == 1) std::copy(raw.begin(), raw.end(), qk_row);
                    double max = -kInf;
                    for (int64_t j = 0; j < S; ++j) {
                        x[j] = raw[j] + bias[j];
                        max = std::max(max, x[j]);
                    }
                    if (qk_row && a_.qk_mode == 2) std::copy(x.begin(), x.end(), qk_row);
                    // A row of -inf softmaxes to zeros, not NaN; one with every key masked is zeroed.
                    const double shift = max == -kInf ? 0.0 : max;
                    double sum = 0;
                    for (int64_t j = 0; j < S; ++j) sum += x[j] = std::exp(x[j] - shift);
                    if (sum == 0) sum = 1;
                    for (int64_t j = 0; j < S; ++j) x[j] = all_masked ? 0.0 : x[j] / sum;
                    if (qk_row && a_.qk_mode == 3) std::copy(x.begin(), x.end(), qk_row);
                    double* yr = &y[((b * Hq + h) * Sq + i) * Dv];
                    for (int64_t j = 0; j < S; ++j) {
                        if (x[j] == 0) continue;
                        const double* vr = &value[((b * Hk + hk) * S + j) * Dv];
                        for (int64_t d = 0; d < Dv; ++d) yr[d] += x[j] * vr[d];
                    }
                }
            }
        });

        if (q.packed) {  // back to (B, Sq, Hq * Dv)
            std::vector<double> packed(y.size());
            for (int64_t b = 0; b < B; ++b)
                for (int64_t h = 0; h < Hq; ++h)
                    for (int64_t s = 0; s < Sq; ++s)
                        std::copy_n(&y[((b * Hq + h) * Sq + s) * Dv], Dv, &packed[((b * Sq + s) * Hq + h) * Dv]);
            ctx.outputs[0] = float_tensor({B, Sq, Hq * Dv}, out_type, packed, node_);
        } else {
            ctx.outputs[0] = float_tensor({B, Hq, Sq, Dv}, out_type, y, node_);
        }
        if (want_present_k_) ctx.outputs[1] = float_tensor({B, Hk, S, D}, k_t.dtype(), key, node_);
        if (want_present_v_) ctx.outputs[2] = float_tensor({B, Hk, S, Dv}, v_t.dtype(), value, node_);
        if (want_qk_) ctx.outputs[3] = float_tensor({B, Hq, Sq, S}, out_type, qk, node_);
    }

private:
    AttentionAttrs a_;
    bool want_present_k_, want_present_v_, want_qk_;
};

void infer_attention(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1) || !ctx.has_input(2)) return;
    const TensorInfo& q = ctx.input(0);
    const TensorInfo& k = ctx.input(1);
    const TensorInfo& v = ctx.input(2);
    require_float_type(ctx.node, q.dtype, "input Q");
    const size_t rank = q.shape.size();
    if ((rank != 3 && rank != 4) || k.shape.size() != rank || v.shape.size() != rank)
        fail_node(ctx.node, "inputs Q, K and V must all have rank 3 or 4");
    const AttentionAttrs a(ctx.node);
    using Dim = std::optional<int64_t>;
    auto div = [](Dim d, int64_t by) { return d && by > 0 ? Dim(*d / by) : Dim(); };
    const Dim batch = q.shape[0];
    const Dim hq = rank == 4 ? q.shape[1] : Dim(a.q_heads);
    const Dim hk = rank == 4 ? k.shape[1] : Dim(a.kv_heads);
    const Dim sq = rank == 4 ? q.shape[2] : q.shape[1];
    const Dim skv = rank == 4 ? k.shape[2] : k.shape[1];
    const Dim dk = rank == 4 ? k.shape[3] : div(k.shape[2], a.kv_heads);
    const Dim dv = rank == 4 ? v.shape[3] : div(v.shape[2], a.kv_heads);
    Dim total = skv;
    if (ctx.has_input(4)) {
        const Shape& pk = ctx.input(4).shape;
        total = pk.size() == 4 && pk[2] && skv ? Dim(*pk[2] + *skv) : Dim();
    }
    if (rank == 4) ctx.set_output(0, q.dtype, {batch, hq, sq, dv});
    else ctx.set_output(0, q.dtype, {batch, sq, hq && dv ? Dim(*hq * *dv) : Dim()});
    if (wants_output(ctx.node, 1)) ctx.set_output(1, k.dtype, {batch, hk, total, dk});
    if (wants_output(ctx.node, 2)) ctx.set_output(2, v.dtype, {batch, hk, total, dv});
    if (wants_output(ctx.node, 3)) ctx.set_output(3, q.dtype, {batch, hq, sq, total});
}

// ---------------------------------------------------------------------------------------------
// RotaryEmbedding: rotates the first rotary_embedding_dim values of each head by the cached
// cos/sin of its position (halves, or interleaved pairs); the rest pass through.

class RotaryEmbeddingKernel final : public NodeKernel {
public:
    explicit RotaryEmbeddingKernel(const Node& node)
        : NodeKernel(node),
          interleaved_(node.get_attribute<int64_t>("interleaved", 0) != 0),
          rotary_dim_(node.get_attribute<int64_t>("rotary_embedding_dim", 0)),
          num_heads_(node.get_attribute<int64_t>("num_heads", 0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input");
        const HeadView v = head_view(x.shape(), num_heads_, node_, "input");
        // 4-D input is (B, heads, S, size); head_view reads 4-D that way already.
        const int64_t rot = rotary_dim_ > 0 ? rotary_dim_ : v.size, half = rot / 2;
        if (rot > v.size || rot % 2 != 0)
            fail("rotary_embedding_dim " + std::to_string(rot) + " must be even and at most the head size " + std::to_string(v.size));
        const Tensor& cos_t = ctx.input(1);
        const Tensor& sin_t = ctx.input(2);
        if (cos_t.shape() != sin_t.shape() || cos_t.ndim() < 2 || cos_t.shape().back() != half)
            fail("cos_cache " + shape_to_string(cos_t.shape()) + " and sin_cache " + shape_to_string(sin_t.shape()) +
                 " must have the same shape, ending in rotary_embedding_dim / 2 = " + std::to_string(half));
        std::vector<int64_t> pos;
        if (ctx.has_input(3)) {
            pos = int_values(ctx.input(3), node_, "position_ids");
            if (ctx.input(3).shape() != std::vector<int64_t>{v.batch, v.seq})
                fail("position_ids has shape " + shape_to_string(ctx.input(3).shape()) + "; expected [" +
                     std::to_string(v.batch) + ", " + std::to_string(v.seq) + "]");
            if (cos_t.ndim() != 2) fail("with position_ids the caches must be 2-D (max_position, rotary_dim / 2)");
            for (int64_t p : pos)
                if (p < 0 || p >= cos_t.shape()[0])
                    fail("position id " + std::to_string(p) + " is out of range for caches of " +
                         std::to_string(cos_t.shape()[0]) + " positions");
        } else if (cos_t.shape() != std::vector<int64_t>{v.batch, v.seq, half}) {
            fail("without position_ids the caches must have shape [" + std::to_string(v.batch) + ", " +
                 std::to_string(v.seq) + ", " + std::to_string(half) + "]");
        }
        const std::vector<double> xd = float_values(x, node_), cd = float_values(cos_t, node_), sd = float_values(sin_t, node_);
        std::vector<double> y(xd);
        for (int64_t b = 0; b < v.batch; ++b)
            for (int64_t s = 0; s < v.seq; ++s) {
                const int64_t row = (pos.empty() ? b * v.seq + s : pos[b * v.seq + s]) * half;
                for (int64_t h = 0; h < v.heads; ++h)
                    for (int64_t j = 0; j < half; ++j) {
                        const int64_t i1 = v.at(b, h, s, interleaved_ ? 2 * j : j);
                        const int64_t i2 = v.at(b, h, s, interleaved_ ? 2 * j + 1 : j + half);
                        const double c = cd[row + j], sn = sd[row + j];
                        y[i1] = c * xd[i1] - sn * xd[i2];
                        y[i2] = sn * xd[i1] + c * xd[i2];
                    }
            }
        ctx.outputs[0] = float_tensor(x.shape(), x.dtype(), y, node_);
    }

private:
    bool interleaved_;
    int64_t rotary_dim_;
    int64_t num_heads_;
};

// ---------------------------------------------------------------------------------------------
// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (the NLL of log_softmax over axis 1):
// input (N, C, d...), target (N, d...); loss = -input[n, target, d] * weight[target], 0 where
// target == ignore_index; reduction none, sum, or mean (divided by the summed weights).

class LossKernel final : public NodeKernel {
public:
    LossKernel(const Node& node, bool softmax)
        : NodeKernel(node),
          softmax_(softmax),
          reduction_(node.get_attribute<std::string>("reduction", "mean")),
          ignore_index_(node.has_attribute("ignore_index") ? std::optional<int64_t>(node.get_attribute<int64_t>("ignore_index"))
                                                           : std::nullopt),
          want_log_prob_(softmax && wants_output(node, 1)) {
        if (reduction_ != "none" && reduction_ != "sum" && reduction_ != "mean")
            fail("attribute 'reduction' is '" + reduction_ + "'; expected none, sum or mean");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& target = ctx.input(1);
        require_float_type(node_, x.dtype(), "input scores");
        if (x.ndim() < 2) fail("input has shape " + shape_to_string(x.shape()) + "; expected (N, C, d...)");
        const int64_t n = x.shape()[0], classes = x.shape()[1];
        const int64_t inner = dims_product(x.shape(), 2, x.ndim());
        std::vector<int64_t> target_shape(x.shape());
        target_shape.erase(target_shape.begin() + 1);
        if (target.shape() != target_shape)
            fail("target has shape " + shape_to_string(target.shape()) + "; expected " + shape_to_string(target_shape));
        std::vector<double> weight;
        if (ctx.has_input(2)) {
            weight = float_values(ctx.input(2), node_);
            if (ctx.input(2).shape() != std::vector<int64_t>{classes})
                fail("weight has shape " + shape_to_string(ctx.input(2).shape()) + "; expected [" + std::to_string(classes) + "]");
        }
        std::vector<double> lp = float_values(x, node_);
        if (softmax_) {  // log_softmax over the classes, shifted by the max
            for (int64_t b = 0; b < n; ++b)
                for (int64_t d = 0; d < inner; ++d) {
                    double max = -kInf, sum = 0;
                    for (int64_t c = 0; c < classes; ++c) max = std::max(max, lp[(b * classes + c) * inner + d]);
                    for (int64_t c = 0; c < classes; ++c) sum += std::exp(lp[(b * classes + c) * inner + d] - max);
                    const double shift = max + std::log(sum);
                    for (int64_t c = 0; c < classes; ++c) lp[(b * classes + c) * inner + d] -= shift;
                }
        }
        const std::vector<int64_t> t = int_values(target, node_, "target");
        std::vector<double> loss(t.size());
        double weight_sum = 0;
        for (int64_t b = 0; b < n; ++b)
            for (int64_t d = 0; d < inner; ++d) {
                const int64_t i = b * inner + d, c = t[i];
                if (ignore_index_ && c == *ignore_index_) {
                    loss[i] = 0;
                    continue;
                }
                if (c < 0 || c >= classes)
                    fail("target value " + std::to_string(c) + " is out of range [0, " + std::to_string(classes) + ")");
                const double w = weight.empty() ? 1.0 : weight[c];
                loss[i] = -lp[(b * classes + c) * inner + d] * w;
                weight_sum += w;
            }
        if (reduction_ == "none") {
            ctx.outputs[0] = float_tensor(target_shape, x.dtype(), loss, node_);
        } else {
            double sum = 0;
            for (double l : loss) sum += l;
            ctx.outputs[0] = float_tensor({}, x.dtype(), {reduction_ == "sum" ? sum : sum / weight_sum}, node_);
        }
        if (want_log_prob_) ctx.outputs[1] = float_tensor(x.shape(), x.dtype(), lp, node_);
    }

private:
    bool softmax_;
    std::string reduction_;
    std::optional<int64_t> ignore_index_;
    bool want_log_prob_;
};

void infer_loss(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input scores");
    if (x.shape.size() < 2) fail_node(ctx.node, "input has shape " + shape_to_string(x.shape) + "; expected (N, C, d...)");
    if (ctx.node.get_attribute<std::string>("reduction", "mean") == "none") {
        Shape t = x.shape;
        t.erase(t.begin() + 1);
        ctx.set_output(0, x.dtype, t);
    } else {
        ctx.set_output(0, x.dtype, {});
    }
    if (wants_output(ctx.node, 1)) ctx.set_output(1, x.dtype, x.shape);
}

// ---------------------------------------------------------------------------------------------
// Resize (opsets 10-19) and Upsample: separable interpolation, one axis at a time. Per output
// index each axis has n source indices (clamped to the input: edge padding) and weights, or is
// extrapolated (tf_crop_and_resize outside the input).

enum class InterpMode { Nearest, Linear, Cubic };
enum class NearestMode { RoundPreferFloor, RoundPreferCeil, Floor, Ceil, Simple };

struct ResizeAttrs {
    InterpMode mode = InterpMode::Nearest;
    NearestMode nearest = NearestMode::RoundPreferFloor;
    std::string coord = "half_pixel";
    double cubic_a = -0.75;
    bool exclude_outside = false;
    double extrapolation = 0;
    bool antialias = false;
    std::string aspect = "stretch";
    std::vector<int64_t> axes;
    bool legacy = false;  // Upsample and Resize-10: asymmetric, "simple" nearest (as ONNX Runtime)

    ResizeAttrs(const Node& node, int64_t opset, bool upsample) {
        legacy = upsample || (opset > 0 && opset < 11);
        const std::string m = node.get_attribute<std::string>("mode", "nearest");
        if (m == "nearest") mode = InterpMode::Nearest;
        else if (m == "linear" || m == "bilinear" || m == "trilinear") mode = InterpMode::Linear;
        else if (m == "cubic" && !legacy) mode = InterpMode::Cubic;
        else fail_node(node, "attribute 'mode' is '" + m + "'; expected nearest, linear" + std::string(legacy ? "" : " or cubic"));
        if (legacy) {
            coord = "asymmetric";
            nearest = NearestMode::Simple;
            return;
        }
        coord = node.get_attribute<std::string>("coordinate_transformation_mode", "half_pixel");
        static const char* const coords[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                             "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn"};
        if (std::find(std::begin(coords), std::end(coords), coord) == std::end(coords))
            fail_node(node, "attribute 'coordinate_transformation_mode' is '" + coord + "'");
        const std::string nm = node.get_attribute<std::string>("nearest_mode", "round_prefer_floor");
        if (nm == "round_prefer_floor") nearest = NearestMode::RoundPreferFloor;
        else if (nm == "round_prefer_ceil") nearest = NearestMode::RoundPreferCeil;
        else if (nm == "floor") nearest = NearestMode::Floor;
        else if (nm == "ceil") nearest = NearestMode::Ceil;
        else fail_node(node, "attribute 'nearest_mode' is '" + nm + "'");
        cubic_a = node.get_attribute<double>("cubic_coeff_a", -0.75);
        exclude_outside = node.get_attribute<int64_t>("exclude_outside", 0) != 0;
        extrapolation = node.get_attribute<double>("extrapolation_value", 0.0);
        antialias = node.get_attribute<int64_t>("antialias", 0) != 0 && mode != InterpMode::Nearest;
        aspect = node.get_attribute<std::string>("keep_aspect_ratio_policy", "stretch");
        if (aspect != "stretch" && aspect != "not_larger" && aspect != "not_smaller")
            fail_node(node, "attribute 'keep_aspect_ratio_policy' is '" + aspect + "'");
        axes = node.get_attribute<std::vector<int64_t>>("axes", {});
    }
};

// The source taps of one axis: for each output index, `n` indices and weights.
struct AxisTaps1D {
    int64_t n = 0;
    std::vector<int64_t> index;
    std::vector<double> weight;
    std::vector<bool> extrapolated;
};

// The weights for fractional position `ratio` (1 when the position is a whole number).
std::vector<double> resize_coeffs(const ResizeAttrs& a, double ratio, double scale) {
    const double A = a.cubic_a;
    switch (a.mode) {
        case InterpMode::Nearest: {
            if (ratio == 1) return {0, 1};
            bool second = false;
            switch (a.nearest) {
                case NearestMode::RoundPreferFloor: second = ratio > 0.5; break;
                case NearestMode::RoundPreferCeil: second = ratio >= 0.5; break;
                case NearestMode::Floor: second = false; break;
                case NearestMode::Ceil: second = true; break;
                case NearestMode::Simple: second = false; break;  // handled by the caller
            }
            return {second ? 0.0 : 1.0, second ? 1.0 : 0.0};
        }
        case InterpMode::Linear: {
            if (!a.antialias) return {1 - ratio, ratio};
            // A triangle filter stretched by 1/scale when downsampling.
            const double s = std::min(scale, 1.0);
            const int64_t start = static_cast<int64_t>(std::floor(-1 / s) + 1), footprint = 2 - 2 * start;
            std::vector<double> c;
            double sum = 0;
            for (int64_t i = start; i < start + footprint; ++i) {
                const double v = std::clamp(1 - std::abs((static_cast<double>(i) - ratio) * s), 0.0, 1.0);
                c.push_back(v);
                sum += v;
            }
            for (double& v : c) v /= sum;
            return c;
        }
        case InterpMode::Cubic: {
            auto k = [A](double x) {
                x = std::abs(x);
                if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
                if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
                return 0.0;
            };
            if (!a.antialias) return {k(ratio + 1), k(ratio), k(1 - ratio), k(2 - ratio)};
            const double s = std::min(scale, 1.0);
            const int64_t start = static_cast<int64_t>(std::floor(-2 / s) + 1), end = 2 - start;
            std::vector<double> c;
            double sum = 0;
            for (int64_t i = start; i < end; ++i) {
                c.push_back(k(s * (static_cast<double>(i) - ratio)));
                sum += c.back();
            }
            for (double& v : c) v /= sum;
            return c;
        }
    }
    return {};
}

AxisTaps1D resize_axis(const ResizeAttrs& a, int64_t in, int64_t out, double scale, double roi_start, double roi_end) {
    AxisTaps1D t;
    const double out_width = scale * static_cast<double>(in);
    for (int64_t o = 0; o < out; ++o) {
        const double y = static_cast<double>(o);
        double x = 0;
        bool extrapolated = false;
        const std::string& c = a.coord;
        if (c == "align_corners") {
            x = out_width == 1 ? 0.0 : y * static_cast<double>(in - 1) / (out_width - 1);
        } else if (c == "asymmetric") {
            x = y / scale;
        } else if (c == "tf_crop_and_resize") {
            x = out_width == 1 ? (roi_end - roi_start) * static_cast<double>(in - 1) / 2
                               : y * (roi_end - roi_start) * static_cast<double>(in - 1) / (out_width - 1);
            x += roi_start * static_cast<double>(in - 1);
            extrapolated = x < 0 || x > static_cast<double>(in - 1);
        } else if (c == "pytorch_half_pixel") {
            x = out_width == 1 ? -0.5 : (y + 0.5) / scale - 0.5;
        } else if (c == "half_pixel_symmetric") {
            const double adjustment = static_cast<double>(out) / out_width;
            const double center = static_cast<double>(in) / 2;
            x = center * (1 - adjustment) + (y + 0.5) / scale - 0.5;
        } else if (c == "tf_half_pixel_for_nn") {
            x = (y + 0.5) / scale;
        } else {  // half_pixel
            x = (y + 0.5) / scale - 0.5;
        }
        std::vector<int64_t> idx;
        std::vector<double> w;
        if (a.mode == InterpMode::Nearest && a.nearest == NearestMode::Simple) {
            // ONNX Runtime's pre-opset-11 rule: truncate when upsampling, ceil when downsampling.
            const int64_t i = scale < 1 ? static_cast<int64_t>(std::ceil(x)) : static_cast<int64_t>(x);
            idx = {i};
            w = {1.0};
        } else {
            const double fl = std::floor(x);
            const bool whole = x == fl;
            w = resize_coeffs(a, whole ? 1.0 : x - fl, scale);
            const int64_t n = static_cast<int64_t>(w.size());
            // Neighbours as the ONNX reference picks them (n even: floor-centred).
            int64_t start;
            if (n % 2 == 0) start = static_cast<int64_t>(fl) - n / 2 + (whole ? 0 : 1);
            else start = static_cast<int64_t>(fl) - (n - 1) / 2 + (x - fl <= 0.5 ? 0 : 1);
            for (int64_t k = 0; k < n; ++k) idx.push_back(start + k);
            if (a.exclude_outside) {
                double sum = 0;
                for (int64_t k = 0; k < n; ++k) {
                    if (idx[k] < 0 || idx[k] >= in) w[k] = 0;
                    sum += w[k];
                }
                if (sum != 0)
                    for (double& v : w) v /= sum;
            }
        }
        if (t.n == 0) t.n = static_cast<int64_t>(idx.size());
        for (int64_t k = 0; k < t.n; ++k) {
            t.index.push_back(std::clamp<int64_t>(idx[k], 0, in - 1));
            t.weight.push_back(w[k]);
        }
        t.extrapolated.push_back(extrapolated);
    }
    return t;
}

// Per resized axis: its scale and output size, from scales (floor(scale * in)) or sizes
// (scale out / in; with keep_aspect_ratio_policy one scale for all axes, sizes rounded).
void resize_output(const ResizeAttrs& a, const std::vector<int64_t>& dims, const std::vector<int64_t>& axes,
                   const std::vector<double>& scales, const std::vector<int64_t>& sizes, std::vector<double>& scale,
                   std::vector<int64_t>& out, const Node& node) {
    const size_t na = axes.size();
    scale.assign(na, 1.0);
    out.assign(na, 0);
    if (!sizes.empty()) {
        for (size_t i = 0; i < na; ++i)
            if (sizes[i] < 0 || (sizes[i] > 0 && dims[axes[i]] == 0))
                fail_node(node, "sizes " + shape_to_string(sizes) + " do not fit the input's dims");
        for (size_t i = 0; i < na; ++i) scale[i] = static_cast<double>(sizes[i]) / static_cast<double>(dims[axes[i]]);
        out = sizes;
        if (a.aspect != "stretch") {
            const double s = a.aspect == "not_larger" ? *std::min_element(scale.begin(), scale.end())
                                                      : *std::max_element(scale.begin(), scale.end());
            if (!std::isfinite(s)) fail_node(node, "keep_aspect_ratio_policy needs non-empty resized axes");
            for (size_t i = 0; i < na; ++i) {
                scale[i] = s;
                out[i] = static_cast<int64_t>(s * static_cast<double>(dims[axes[i]]) + 0.5);  // round half up
            }
        }
    } else {
        for (size_t i = 0; i < na; ++i) {
            // Positive and finite, with an output size an int64 holds.
            if (!(scales[i] > 0) || !(scales[i] * static_cast<double>(dims[axes[i]]) < 9e18))
                fail_node(node, "scales must be positive and finite; got " + std::to_string(scales[i]));
            scale[i] = scales[i];
            out[i] = static_cast<int64_t>(std::floor(scales[i] * static_cast<double>(dims[axes[i]])));
        }
    }
    for (size_t i = 0; i < na; ++i)
        if (out[i] < 0 || (out[i] > 0 && dims[axes[i]] == 0)) fail_node(node, "cannot resize an empty axis");
}

class ResizeKernel final : public NodeKernel {
public:
    ResizeKernel(const Node& node, int64_t opset, bool upsample)
        : NodeKernel(node),
          a_(node, opset, upsample),
          upsample_(upsample),
          opset_(opset),
          attr_scales_(upsample ? node.get_attribute<std::vector<double>>("scales", {}) : std::vector<double>()) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const int64_t rank = static_cast<int64_t>(x.ndim());
        // Inputs: Upsample (X, scales) or scales attribute; Resize-10 (X, scales); Resize-11+
        // (X, roi, scales, sizes).
        const bool v10 = upsample_ || (opset_ > 0 && opset_ < 11);
        std::vector<double> scales, roi;
        std::vector<int64_t> sizes;
        if (upsample_ && !attr_scales_.empty()) scales = attr_scales_;
        else if (v10 && ctx.has_input(1)) scales = float_values(ctx.input(1), node_);
        if (!v10) {
            if (ctx.has_input(1)) roi = float_values(ctx.input(1), node_);
            if (ctx.has_input(2)) scales = float_values(ctx.input(2), node_);
            if (ctx.has_input(3)) sizes = int_values(ctx.input(3), node_, "sizes");
        }
        std::vector<int64_t> axes;
        for (int64_t ax : a_.axes) {
            const int64_t n = normalize_axis(ax, rank, node_);
            if (std::count(axes.begin(), axes.end(), n)) fail("axis " + std::to_string(ax) + " is repeated in axes");
            axes.push_back(n);
        }
        if (axes.empty())
            for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
        const size_t na = axes.size();
        if (!sizes.empty() && !scales.empty()) fail("only one of scales and sizes may be given");
        if (sizes.empty() && scales.size() != na)
            fail("scales has " + std::to_string(scales.size()) + " values; expected " + std::to_string(na) +
                 (sizes.empty() && scales.empty() ? " (or sizes)" : ""));
        if (!sizes.empty() && sizes.size() != na)
            fail("sizes has " + std::to_string(sizes.size()) + " values; expected " + std::to_string(na));
        if (!roi.empty() && roi.size() != 2 * na)
            fail("roi has " + std::to_string(roi.size()) + " values; expected " + std::to_string(2 * na));
        if (a_.coord == "tf_crop_and_resize" && roi.empty()) fail("tf_crop_and_resize needs the roi input");
        for (double v : roi)
            if (!std::isfinite(v)) fail("roi has a non-finite value");

        std::vector<double> scale;
        std::vector<int64_t> out;
        resize_output(a_, x.shape(), axes, scales, sizes, scale, out, node_);
        std::vector<double> data = numeric_values(x, node_);
        std::vector<int64_t> shape = x.shape();
        for (size_t i = 0; i < na; ++i) {
            const int64_t axis = axes[i];
            const double rs = roi.empty() ? 0.0 : roi[i], re = roi.empty() ? 1.0 : roi[i + na];
            // An identity axis is skipped, as the reference does.
            if (std::abs(scale[i] - 1.0) <= 1e-9 && out[i] == shape[axis] && rs == 0.0 && re == 1.0) continue;
            if (out[i] == 0 || shape[axis] == 0) {
                shape[axis] = out[i];
                data.assign(static_cast<size_t>(num_elements_of(shape)), 0.0);
                continue;
            }
            const AxisTaps1D t = resize_axis(a_, shape[axis], out[i], scale[i], rs, re);
            const AxisSplit s = split_at(shape, axis);
            std::vector<double> next(static_cast<size_t>(s.outer * out[i] * s.inner));
            for (int64_t o = 0; o < s.outer; ++o)
                for (int64_t j = 0; j < out[i]; ++j) {
                    double* dst = &next[(o * out[i] + j) * s.inner];
                    if (t.extrapolated[j]) {
                        std::fill_n(dst, s.inner, a_.extrapolation);
                        continue;
                    }
                    for (int64_t k = 0; k < t.n; ++k) {
                        const double w = t.weight[j * t.n + k];
                        if (w == 0) continue;  // nearest: only the chosen tap (0 * inf would be NaN)
                        const double* src = &data[(o * s.n + t.index[j * t.n + k]) * s.inner];
                        for (int64_t e = 0; e < s.inner; ++e) dst[e] += w * src[e];
                    }
                }
            data = std::move(next);
            shape[axis] = out[i];
        }
        ctx.outputs[0] = numeric_tensor(shape, x.dtype(), data, node_);
    }

private:
    ResizeAttrs a_;
    bool upsample_;
    int64_t opset_;
    std::vector<double> attr_scales_;
};

void infer_resize(InferenceContext& ctx, bool upsample) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const ResizeAttrs a(ctx.node, ctx.opset, upsample);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::vector<int64_t> axes;
    for (int64_t ax : a.axes) axes.push_back(normalize_axis(ax, rank, ctx.node));
    if (axes.empty())
        for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
    Shape out = x.shape;
    for (int64_t ax : axes) out[ax] = std::nullopt;
    // The sizes/scales when known now (constants or the attribute).
    const bool v10 = upsample || (ctx.opset > 0 && ctx.opset < 11);
    std::vector<double> scales = upsample ? ctx.node.get_attribute<std::vector<double>>("scales", {}) : std::vector<double>();
    std::vector<int64_t> sizes;
    bool known = !scales.empty();
    if (!known) {
        const size_t scales_at = v10 ? 1 : 2;
        const Tensor* sizes_t = v10 ? nullptr : ctx.constant(3);
        const Tensor* scales_t = ctx.constant(scales_at);
        if (sizes_t && sizes_t->num_elements() > 0) {
            sizes = int_values(*sizes_t, ctx.node, "sizes");
            known = true;
        } else if (scales_t && scales_t->num_elements() > 0 && !(!v10 && ctx.node.has_input(3) && !sizes_t)) {
            scales = float_values(*scales_t, ctx.node);
            known = true;
        }
    }
    if (known && (sizes.empty() ? scales.size() : sizes.size()) != axes.size())
        fail_node(ctx.node, std::string(sizes.empty() ? "scales" : "sizes") + " does not have " + std::to_string(axes.size()) + " values");
    std::vector<int64_t> dims;
    for (const auto& d : x.shape) dims.push_back(d.value_or(-1));
    const bool dims_known = std::all_of(axes.begin(), axes.end(), [&](int64_t ax) { return dims[ax] >= 0; });
    if (known && !sizes.empty() && a.aspect == "stretch") {
        for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = sizes[i];
    } else if (known && dims_known) {
        std::vector<double> scale;
        std::vector<int64_t> o;
        resize_output(a, dims, axes, scales, sizes, scale, o, ctx.node);
        for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = o[i];
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// GridSample (1-3 spatial dims): samples X at the grid's normalized [-1, 1] coordinates (last
// grid axis: x, y[, z], i.e. reversed dims) with nearest/linear/cubic interpolation and zeros,
// border or reflection padding.

enum class Padding { Zeros, Border, Reflection };

class GridSampleKernel final : public NodeKernel {
public:
    explicit GridSampleKernel(const Node& node)
        : NodeKernel(node), align_corners_(node.get_attribute<int64_t>("align_corners", 0) != 0) {
        const std::string m = node.get_attribute<std::string>("mode", "linear");
        if (m == "nearest") mode_ = InterpMode::Nearest;
        else if (m == "linear" || m == "bilinear") mode_ = InterpMode::Linear;
        else if (m == "cubic" || m == "bicubic") mode_ = InterpMode::Cubic;
        else fail("attribute 'mode' is '" + m + "'; expected nearest, linear or cubic");
        const std::string p = node.get_attribute<std::string>("padding_mode", "zeros");
        if (p == "zeros") padding_ = Padding::Zeros;
        else if (p == "border") padding_ = Padding::Border;
        else if (p == "reflection") padding_ = Padding::Reflection;
        else fail("attribute 'padding_mode' is '" + p + "'; expected zeros, border or reflection");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& grid = ctx.input(1);
        require_float_type(node_, x.dtype(), "input X");
        const size_t r = x.ndim() - 2;
        if (x.ndim() < 3 || x.ndim() > 5 || grid.ndim() != x.ndim() || grid.shape()[0] != x.shape()[0] ||
            grid.shape().back() != static_cast<int64_t>(r))
            fail("input X " + shape_to_string(x.shape()) + " and grid " + shape_to_string(grid.shape()) +
                 " do not fit: expected X (N, C, D1..Dr) and grid (N, O1..Or, r), r from 1 to 3");
        const int64_t n = x.shape()[0], channels = x.shape()[1];
        const std::vector<int64_t> in(x.shape().begin() + 2, x.shape().end());
        if (grid.num_elements() > 0 && channels > 0 && num_elements_of(in) == 0)
            fail("input X has shape " + shape_to_string(x.shape()) + "; cannot sample an empty image");
        const std::vector<int64_t> in_strides = strides_of(in);
        const int64_t in_plane = num_elements_of(in);
        std::vector<int64_t> out_shape{n, channels};
        out_shape.insert(out_shape.end(), grid.shape().begin() + 1, grid.shape().end() - 1);
        const int64_t out_plane = dims_product(out_shape, 2, out_shape.size());
        const std::vector<double> xd = float_values(x, node_), gd = float_values(grid, node_);
        std::vector<double> y(static_cast<size_t>(n * channels * out_plane));
        const int taps = mode_ == InterpMode::Nearest ? 1 : mode_ == InterpMode::Linear ? 2 : 4;
        std::vector<int64_t> index(r * taps);
        std::vector<double> weight(r * taps);
        std::vector<bool> inside(r * taps);
        for (int64_t b = 0; b < n; ++b)
            for (int64_t p = 0; p < out_plane; ++p) {
                // Per axis: the taps' (padded) indices and weights.
                for (size_t d = 0; d < r; ++d) {
                    const double g = gd[(b * out_plane + p) * static_cast<int64_t>(r) + static_cast<int64_t>(r - 1 - d)];
                    axis_taps(g, in[d], &index[d * taps], &weight[d * taps], inside, d * taps);
                }
                const int64_t combos = static_cast<int64_t>(std::pow(taps, static_cast<double>(r)));
                for (int64_t c = 0; c < channels; ++c) {
                    const double* plane = &xd[(b * channels + c) * in_plane];
                    double sum = 0;
                    for (int64_t k = 0; k < combos; ++k) {
                        double w = 1;
                        int64_t at = 0;
                        bool ok = true;
                        for (size_t d = 0, rest = static_cast<size_t>(k); d < r; ++d, rest /= taps) {
                            const size_t t = d * taps + rest % taps;
                            w *= weight[t];
                            ok = ok && inside[t];
                            at += index[t] * in_strides[d];
                        }
                        if (ok && w != 0) sum += w * plane[at];
                    }
                    y[(b * channels + c) * out_plane + p] = sum;
                }
            }
        ctx.outputs[0] = float_tensor(out_shape, x.dtype(), y, node_);
    }

private:
    // The border for reflection: pixel centres (align_corners) or edges.
    double lo(int64_t) const { return align_corners_ ? 0.0 : -0.5; }
    double hi(int64_t size) const { return align_corners_ ? static_cast<double>(size - 1) : static_cast<double>(size) - 0.5; }

    double reflect(double v, int64_t size) const {
        const double a = lo(size), b = hi(size), range = b - a;
        if (range <= 0) return a;
        if (v < a) {
            const double dx = a - v;
            const int64_t k = static_cast<int64_t>(dx / range);
            const double rem = dx - static_cast<double>(k) * range;
            return k % 2 == 0 ? a + rem : b - rem;
        }
        if (v > b) {
            const double dx = v - b;
            const int64_t k = static_cast<int64_t>(dx / range);
            const double rem = dx - static_cast<double>(k) * range;
            return k % 2 == 0 ? b - rem : a + rem;
        }
        return v;
    }

    // Index i after padding: `inside` false when it reads zeros.
    int64_t pad_index(int64_t i, int64_t size, bool& inside) const {
        inside = true;
        switch (padding_) {
            case Padding::Zeros: inside = i >= 0 && i < size; return inside ? i : 0;
            case Padding::Border: return std::clamp<int64_t>(i, 0, size - 1);
            case Padding::Reflection: return std::clamp<int64_t>(static_cast<int64_t>(reflect(static_cast<double>(i), size)), 0, size - 1);
        }
        return i;
    }

    void axis_taps(double g, int64_t size, int64_t* index, double* weight, std::vector<bool>& inside, size_t at) const {
        double v = align_corners_ ? (g + 1) / 2 * static_cast<double>(size - 1) : ((g + 1) * static_cast<double>(size) - 1) / 2;
        if (std::isnan(v)) {  // a NaN coordinate reads NaN (one tap, index 0)
            const int n = mode_ == InterpMode::Nearest ? 1 : mode_ == InterpMode::Linear ? 2 : 4;
            for (int k = 0; k < n; ++k) {
                index[k] = 0;
                weight[k] = k == 0 ? std::numeric_limits<double>::quiet_NaN() : 0.0;
                inside[at + k] = k == 0;
            }
            return;
        }
        // Far-out coordinates are clamped so the index arithmetic cannot overflow; at that
        // distance every padding mode reads the same values.
        v = std::clamp(v, -1e15, 1e15);
        if (mode_ == InterpMode::Nearest) v = std::nearbyint(v);  // half to even, as numpy's rint
        if (v < lo(size) || v > hi(size)) {
            if (padding_ == Padding::Border) v = std::clamp(v, 0.0, static_cast<double>(size - 1));
            else if (padding_ == Padding::Reflection) v = reflect(v, size);
        }
        bool in = true;
        if (mode_ == InterpMode::Nearest) {
            index[0] = pad_index(static_cast<int64_t>(v), size, in);
            weight[0] = 1;
            inside[at] = in;
            return;
        }
        const double f = std::floor(v), t = v - f;
        const int64_t base = static_cast<int64_t>(f);
        if (mode_ == InterpMode::Linear) {
            const double w[2] = {1 - t, t};
            for (int k = 0; k < 2; ++k) {
                index[k] = pad_index(base + k, size, in);
                weight[k] = w[k];
                inside[at + k] = in;
            }
            return;
        }
        constexpr double A = -0.75;
        auto cubic = [](double x) {
            x = std::abs(x);
            if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
            return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
        };
        const double w[4] = {cubic(t + 1), cubic(t), cubic(1 - t), cubic(2 - t)};
        for (int k = 0; k < 4; ++k) {
            index[k] = pad_index(base - 1 + k, size, in);
            weight[k] = w[k];
            inside[at + k] = in;
        }
    }

    bool align_corners_;
    InterpMode mode_ = InterpMode::Linear;
    Padding padding_ = Padding::Zeros;
};

void infer_grid_sample(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() < 3) fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, D1, ...)");
    Shape out{x.shape[0], x.shape[1]};
    if (ctx.has_input(1)) {
        const Shape& g = ctx.input(1).shape;
        if (g.size() != x.shape.size()) fail_node(ctx.node, "grid has shape " + shape_to_string(g) + "; expected rank " + std::to_string(x.shape.size()));
        out.insert(out.end(), g.begin() + 1, g.end() - 1);
    } else {
        out.resize(x.shape.size());
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// AffineGrid: theta (N, 2, 3) or (N, 3, 4) applied to the normalized [-1, 1] coordinates of
// an (H, W) or (D, H, W) grid; the output's last axis is (x, y[, z]).

class AffineGridKernel final : public NodeKernel {
public:
    explicit AffineGridKernel(const Node& node)
        : NodeKernel(node), align_corners_(node.get_attribute<int64_t>("align_corners", 0) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& theta = ctx.input(0);
        require_float_type(node_, theta.dtype(), "input theta");
        const std::vector<int64_t> size = int_values(ctx.input(1), node_, "size");
        if (size.size() != 4 && size.size() != 5) fail("size has " + std::to_string(size.size()) + " values; expected 4 or 5");
        const int64_t r = static_cast<int64_t>(size.size()) - 2, n = size[0];
        if (theta.shape() != std::vector<int64_t>{n, r, r + 1})
            fail("theta has shape " + shape_to_string(theta.shape()) + "; expected [" + std::to_string(n) + ", " +
                 std::to_string(r) + ", " + std::to_string(r + 1) + "]");
        const std::vector<int64_t> spatial(size.begin() + 2, size.end());
        for (int64_t d : spatial)
            if (d < 0) fail("size has a negative dimension");
        const std::vector<double> th = float_values(theta, node_);
        const int64_t points = num_elements_of(spatial);
        std::vector<double> out(static_cast<size_t>(n * points * r));
        auto coord = [&](int64_t i, int64_t len) {
            if (align_corners_) return len == 1 ? 0.0 : -1.0 + 2.0 * static_cast<double>(i) / static_cast<double>(len - 1);
            return -1.0 + (2.0 * static_cast<double>(i) + 1.0) / static_cast<double>(len);
        };
        const std::vector<int64_t> st = strides_of(spatial);
        std::vector<double> base(static_cast<size_t>(r + 1));
        for (int64_t p = 0; p < points; ++p) {
            // base = (x, y[, z], 1): the innermost dim is x.
            for (int64_t d = 0; d < r; ++d) base[r - 1 - d] = coord(p / st[d] % spatial[d], spatial[d]);
            base[r] = 1;
            for (int64_t b = 0; b < n; ++b)
                for (int64_t k = 0; k < r; ++k) {
                    double v = 0;
                    for (int64_t j = 0; j <= r; ++j) v += th[(b * r + k) * (r + 1) + j] * base[j];
                    out[(b * points + p) * r + k] = v;
                }
        }
        std::vector<int64_t> shape{n};
        shape.insert(shape.end(), spatial.begin(), spatial.end());
        shape.push_back(r);
        ctx.outputs[0] = float_tensor(shape, theta.dtype(), out, node_);
    }

private:
    bool align_corners_;
};

void infer_affine_grid(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const DType dtype = ctx.input(0).dtype;
    require_float_type(ctx.node, dtype, "input theta");
    if (const Tensor* size = ctx.constant(1)) {
        const std::vector<int64_t> s = int_values(*size, ctx.node, "size");
        if (s.size() == 4 || s.size() == 5) {
            std::vector<int64_t> shape{s[0]};
            shape.insert(shape.end(), s.begin() + 2, s.end());
            shape.push_back(static_cast<int64_t>(s.size()) - 2);
            return ctx.set_output(0, dtype, to_shape(shape));
        }
    }
    if (ctx.has_input(1) && ctx.input(1).shape.size() == 1 && ctx.input(1).shape[0]) {
        const int64_t len = *ctx.input(1).shape[0];  // the rank is known: (N, spatial..., r)
        if (len != 4 && len != 5) fail_node(ctx.node, "size has " + std::to_string(len) + " values; expected 4 or 5");
        Shape out(static_cast<size_t>(len));
        if (ctx.has_input(0) && !ctx.input(0).shape.empty()) out[0] = ctx.input(0).shape[0];
        out.back() = len - 2;
        return ctx.set_output(0, dtype, out);
    }
    set_output_rank_unknown(ctx, 0, dtype);
}

// ---------------------------------------------------------------------------------------------
// RoiAlign: average (or max) of bilinear samples on a sampling grid in each output bin of
// each region of interest. As ONNX Runtime: max mode takes the max of the weighted corners.

class RoiAlignKernel final : public NodeKernel {
public:
    RoiAlignKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          half_pixel_(node.get_attribute<std::string>("coordinate_transformation_mode",
                                                      opset > 0 && opset < 16 ? "output_half_pixel" : "half_pixel") ==
                      "half_pixel"),
          max_(node.get_attribute<std::string>("mode", "avg") == "max"),
          out_h_(node.get_attribute<int64_t>("output_height", 1)),
          out_w_(node.get_attribute<int64_t>("output_width", 1)),
          sampling_ratio_(node.get_attribute<int64_t>("sampling_ratio", 0)),
          spatial_scale_(node.get_attribute<double>("spatial_scale", 1.0)) {
        const std::string mode = node.get_attribute<std::string>("mode", "avg");
        if (mode != "avg" && mode != "max") fail("attribute 'mode' is '" + mode + "'; expected avg or max");
        if (out_h_ < 1 || out_w_ < 1 || sampling_ratio_ < 0) fail("output_height/width must be >= 1 and sampling_ratio >= 0");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input X");
        if (x.ndim() != 4) fail("input X has shape " + shape_to_string(x.shape()) + "; expected (N, C, H, W)");
        const Tensor& rois_t = ctx.input(1);
        const std::vector<int64_t> batch_idx = int_values(ctx.input(2), node_, "batch_indices");
        const int64_t num = static_cast<int64_t>(batch_idx.size());
        if (rois_t.shape() != std::vector<int64_t>{num, 4})
            fail("rois has shape " + shape_to_string(rois_t.shape()) + "; expected [" + std::to_string(num) + ", 4]");
        const int64_t channels = x.shape()[1], height = x.shape()[2], width = x.shape()[3];
        if (num > 0 && channels > 0 && (height < 1 || width < 1))
            fail("input X has shape " + shape_to_string(x.shape()) + "; cannot sample an empty image");
        const std::vector<double> xd = float_values(x, node_), rois = float_values(rois_t, node_);
        std::vector<double> y(static_cast<size_t>(num * channels * out_h_ * out_w_));
        const double offset = half_pixel_ ? 0.5 : 0.0;
        for (int64_t r = 0; r < num; ++r) {
            if (batch_idx[r] < 0 || batch_idx[r] >= x.shape()[0])
                fail("batch index " + std::to_string(batch_idx[r]) + " is out of range");
            for (int64_t k = 0; k < 4; ++k)
                if (!std::isfinite(rois[r * 4 + k])) fail("rois has a non-finite coordinate");
            const double x0 = rois[r * 4] * spatial_scale_ - offset, y0 = rois[r * 4 + 1] * spatial_scale_ - offset;
            double rw = rois[r * 4 + 2] * spatial_scale_ - offset - x0, rh = rois[r * 4 + 3] * spatial_scale_ - offset - y0;
            if (!half_pixel_) {
                rw = std::max(rw, 1.0);
                rh = std::max(rh, 1.0);
            }
            const double bin_h = rh / static_cast<double>(out_h_), bin_w = rw / static_cast<double>(out_w_);
            const int64_t grid_h = sampling_ratio_ > 0 ? sampling_ratio_ : static_cast<int64_t>(std::ceil(rh / static_cast<double>(out_h_)));
            const int64_t grid_w = sampling_ratio_ > 0 ? sampling_ratio_ : static_cast<int64_t>(std::ceil(rw / static_cast<double>(out_w_)));
            const double count = static_cast<double>(std::max<int64_t>(grid_h * grid_w, 1));
            for (int64_t c = 0; c < channels; ++c) {
                const double* plane = &xd[(batch_idx[r] * channels + c) * height * width];
                for (int64_t ph = 0; ph < out_h_; ++ph)
                    for (int64_t pw = 0; pw < out_w_; ++pw) {
                        double acc = 0;
                        bool first = true;
                        for (int64_t iy = 0; iy < grid_h; ++iy) {
                            const double yy = y0 + static_cast<double>(ph) * bin_h + (static_cast<double>(iy) + 0.5) * bin_h / static_cast<double>(grid_h);
                            for (int64_t ix = 0; ix < grid_w; ++ix) {
                                const double xx = x0 + static_cast<double>(pw) * bin_w + (static_cast<double>(ix) + 0.5) * bin_w / static_cast<double>(grid_w);
                                const double v = sample(plane, height, width, yy, xx);
                                if (!max_) acc += v;
                                else if (first || v > acc) acc = v;
                                first = false;
                            }
                        }
                        y[((r * channels + c) * out_h_ + ph) * out_w_ + pw] = max_ ? acc : acc / count;
                    }
            }
        }
        ctx.outputs[0] = float_tensor({num, channels, out_h_, out_w_}, x.dtype(), y, node_);
    }

private:
    // Bilinear sample (or, in max mode, the largest weighted corner); 0 outside [-1, size].
    double sample(const double* plane, int64_t height, int64_t width, double yy, double xx) const {
        if (yy < -1.0 || yy > static_cast<double>(height) || xx < -1.0 || xx > static_cast<double>(width)) return 0;
        yy = std::max(yy, 0.0);
        xx = std::max(xx, 0.0);
        int64_t yl = static_cast<int64_t>(yy), xl = static_cast<int64_t>(xx), yh, xh;
        if (yl >= height - 1) {
            yh = yl = height - 1;
            yy = static_cast<double>(yl);
        } else {
            yh = yl + 1;
        }
        if (xl >= width - 1) {
            xh = xl = width - 1;
            xx = static_cast<double>(xl);
        } else {
            xh = xl + 1;
        }
        const double ly = yy - static_cast<double>(yl), lx = xx - static_cast<double>(xl), hy = 1 - ly, hx = 1 - lx;
        const double v1 = hy * hx * plane[yl * width + xl], v2 = hy * lx * plane[yl * width + xh];
        const double v3 = ly * hx * plane[yh * width + xl], v4 = ly * lx * plane[yh * width + xh];
        return max_ ? std::max({v1, v2, v3, v4}) : v1 + v2 + v3 + v4;
    }

    bool half_pixel_;
    bool max_;
    int64_t out_h_, out_w_, sampling_ratio_;
    double spatial_scale_;
};

void infer_roi_align(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() != 4) fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, H, W)");
    std::optional<int64_t> num;
    if (ctx.has_input(2) && ctx.input(2).shape.size() == 1) num = ctx.input(2).shape[0];
    ctx.set_output(0, x.dtype, {num, x.shape[1], ctx.node.get_attribute<int64_t>("output_height", 1),
                                ctx.node.get_attribute<int64_t>("output_width", 1)});
}

}  // namespace

void register_nn_extra_ops(OpTable& table) {
    table.add(OpSchema{"Dropout", "", 1, 1, 3, 1, 2, infer_dropout,
                       [](const KernelInfo& info) { return std::make_unique<DropoutKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Einsum", "", 12, 1, -1, 1, 1, infer_einsum,
                       [](const KernelInfo& info) { return std::make_unique<EinsumKernel>(info.node); }});
    table.add(OpSchema{"Det", "", 11, 1, 1, 1, 1, infer_det,
                       [](const KernelInfo& info) { return std::make_unique<DetKernel>(info.node); }});
    table.add(OpSchema{"Attention", "", 23, 3, 7, 1, 4, infer_attention,
                       [](const KernelInfo& info) { return std::make_unique<AttentionKernel>(info.node); }});
    table.add(OpSchema{"RotaryEmbedding", "", 23, 3, 4, 1, 1, infer_same,
                       [](const KernelInfo& info) { return std::make_unique<RotaryEmbeddingKernel>(info.node); }});
    table.add(OpSchema{"NegativeLogLikelihoodLoss", "", 12, 2, 3, 1, 1, infer_loss,
                       [](const KernelInfo& info) { return std::make_unique<LossKernel>(info.node, false); }});
    table.add(OpSchema{"SoftmaxCrossEntropyLoss", "", 12, 2, 3, 1, 2, infer_loss,
                       [](const KernelInfo& info) { return std::make_unique<LossKernel>(info.node, true); }});
    table.add(OpSchema{"Resize", "", 10, 1, 4, 1, 1, [](InferenceContext& ctx) { infer_resize(ctx, false); },
                       [](const KernelInfo& info) { return std::make_unique<ResizeKernel>(info.node, info.opset, false); }});
    table.add(OpSchema{"Upsample", "", 7, 1, 2, 1, 1, [](InferenceContext& ctx) { infer_resize(ctx, true); },
                       [](const KernelInfo& info) { return std::make_unique<ResizeKernel>(info.node, info.opset, true); }});
    table.add(OpSchema{"GridSample", "", 16, 2, 2, 1, 1, infer_grid_sample,
                       [](const KernelInfo& info) { return std::make_unique<GridSampleKernel>(info.node); }});
    table.add(OpSchema{"AffineGrid", "", 20, 2, 2, 1, 1, infer_affine_grid,
                       [](const KernelInfo& info) { return std::make_unique<AffineGridKernel>(info.node); }});
    table.add(OpSchema{"RoiAlign", "", 10, 3, 3, 1, 1, infer_roi_align,
                       [](const KernelInfo& info) { return std::make_unique<RoiAlignKernel>(info.node, info.opset); }});
}

}  // namespace pyflame_rt::ops
