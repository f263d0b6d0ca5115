// com.pyflame FusedAttention (see attention_op.hpp): schema, shape inference and the reference
// kernel, one (batch) matrix at a time with its [Sq, Sk] scores in a buffer of its own:
// scores = scale * Q·Kᵀ (GEMM), + mask, a numerically stable softmax per row, then scores·V.
#include "ops/attention_op.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pyflame_rt::ops {

AttentionAttributes AttentionAttributes::parse(const Node& node) {
    AttentionAttributes a;
    a.has_scale = node.has_attribute("scale");
    if (a.has_scale) a.scale = static_cast<float>(node.get_attribute<double>("scale"));
    if (a.has_scale && !std::isfinite(a.scale)) fail_node(node, "attribute scale must be finite");
    const int64_t kt = node.get_attribute<int64_t>("k_transposed", 0);
    if (kt != 0 && kt != 1) fail_node(node, "attribute k_transposed must be 0 or 1, got " + std::to_string(kt));
    a.k_transposed = kt == 1;
    return a;
}

float AttentionAttributes::scale_for(int64_t head_size) const {
    return has_scale ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(head_size, 1))));
}

std::vector<int64_t> AttentionShapes::out_shape() const {
    std::vector<int64_t> out = batch;
    out.push_back(rows);
    out.push_back(dv);
    return out;
}

AttentionShapes attention_shapes(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                                 const std::vector<int64_t>& v, const std::vector<int64_t>* mask, bool k_transposed,
                                 const Node& node) {
    auto describe = [&] {
        std::string s = "Q " + shape_to_string(q) + ", K " + shape_to_string(k) + ", V " + shape_to_string(v);
        if (mask) s += ", mask " + shape_to_string(*mask);
        return s + (k_transposed ? " (K transposed)" : "");
    };
    if (q.size() < 2 || k.size() < 2 || v.size() < 2) fail_node(node, "Q, K and V must have rank >= 2; got " + describe());
    AttentionShapes s;
    s.sq = q[q.size() - 2];
    s.d = q.back();
    s.sk = k_transposed ? k.back() : k[k.size() - 2];
    const int64_t kd = k_transposed ? k[k.size() - 2] : k.back();
    s.dv = v.back();
    if (kd != s.d) fail_node(node, "Q and K have different head sizes: " + describe());
    if (v[v.size() - 2] != s.sk) fail_node(node, "K and V have different sequence lengths: " + describe());
    s.q_batch.assign(q.begin(), q.end() - 2);
    s.k_batch.assign(k.begin(), k.end() - 2);
    s.v_batch.assign(v.begin(), v.end() - 2);
    s.has_mask = mask != nullptr;
    if (mask) {
        std::vector<int64_t> m = *mask;
        while (m.size() < 2) m.insert(m.begin(), 1);
        s.mask_rows = m[m.size() - 2];
        s.mask_cols = m.back();
        if ((s.mask_rows != 1 && s.mask_rows != s.sq && s.sq != 1) || (s.mask_cols != 1 && s.mask_cols != s.sk))
            fail_node(node, "the mask does not broadcast with the scores [Sq, Sk]: " + describe());
        s.mask_batch.assign(m.begin(), m.end() - 2);
    }
    s.rows = s.sq == 1 ? s.mask_rows : s.sq;
    try {
        s.batch = broadcast_shapes(broadcast_shapes(s.q_batch, s.k_batch), broadcast_shapes(s.v_batch, s.mask_batch));
    } catch (const ValidationError&) {
        fail_node(node, "batch dimensions cannot be broadcast: " + describe());
    }
    return s;
}

namespace {

class FusedAttentionKernel final : public NodeKernel {
public:
    explicit FusedAttentionKernel(const Node& node) : NodeKernel(node), attrs_(AttentionAttributes::parse(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& q = ctx.input(0);
        const Tensor& k = ctx.input(1);
        const Tensor& v = ctx.input(2);
        const Tensor* mask = ctx.has_input(3) ? &ctx.input(3) : nullptr;
        require_dtype(node_, q, DType::Float32, "input Q");
        require_dtype(node_, k, DType::Float32, "input K");
        require_dtype(node_, v, DType::Float32, "input V");
        if (mask) require_dtype(node_, *mask, DType::Float32, "input mask");
        const AttentionShapes s =
            attention_shapes(q.shape(), k.shape(), v.shape(), mask ? &mask->shape() : nullptr, attrs_.k_transposed, node_);
        Tensor y(s.out_shape(), DType::Float32);
        const int64_t count = num_elements_of(s.batch);
        if (y.num_elements() == 0) {
            ctx.outputs[0] = std::move(y);
            return;
        }
        const std::vector<int64_t> q_off = batch_offsets(s.batch, s.q_batch), k_off = batch_offsets(s.batch, s.k_batch),
                                   v_off = batch_offsets(s.batch, s.v_batch),
                                   m_off = mask ? batch_offsets(s.batch, s.mask_batch) : std::vector<int64_t>();
        const float scale = attrs_.scale_for(s.d);
        const float* qd = q.data_ptr<float>();
        const float* kd = k.data_ptr<float>();
        const float* vd = v.data_ptr<float>();
        const float* md = mask ? mask->data_ptr<float>() : nullptr;
        float* yd = y.data_ptr<float>();
        const double flops = 2.0 * static_cast<double>(count) * s.rows * s.sk * (s.d + s.dv);
        const int threads = threads_for_work(flops, ctx.num_threads);
        // Whole matrices per thread when there are enough of them, else threads inside each GEMM.
        const int gemm_threads = count >= threads ? 1 : threads;
        parallel_for(count, count >= threads ? threads : 1, [&](int64_t begin, int64_t end) {
            std::vector<float> scores(static_cast<size_t>(s.rows * s.sk));
            for (int64_t t = begin; t < end; ++t) {
                gemm(false, !attrs_.k_transposed, s.sq, s.sk, s.d, scale, qd + q_off[t] * s.sq * s.d,
                     kd + k_off[t] * s.sk * s.d, 0.0f, scores.data(), gemm_threads);
                for (int64_t i = s.sq; i < s.rows; ++i)  // Q's one row, broadcast to the mask's rows
                    std::copy(scores.begin(), scores.begin() + s.sk, scores.begin() + i * s.sk);
                const float* m = md ? md + m_off[t] * s.mask_rows * s.mask_cols : nullptr;
                for (int64_t i = 0; i < s.rows; ++i)
                    softmax_row(scores.data() + i * s.sk, s.sk, m ? m + (s.mask_rows == 1 ? 0 : i) * s.mask_cols : nullptr,
                                s.mask_cols);
                gemm(false, false, s.rows, s.dv, s.sk, 1.0f, scores.data(), vd + v_off[t] * s.sk * s.dv, 0.0f,
                     yd + t * s.rows * s.dv, gemm_threads);
            }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    // row = softmax(row + mask_row) in place; a mask row of one column broadcasts. The max is
    // subtracted first so exp() stays <= 1 (as the Softmax reference kernel does).
    static void softmax_row(float* row, int64_t n, const float* mask_row, int64_t mask_cols) {
        if (mask_row)
            for (int64_t j = 0; j < n; ++j) row[j] += mask_row[mask_cols == 1 ? 0 : j];
        float max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n; ++j) max = std::max(max, row[j]);
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += row[j] = static_cast<float>(std::exp(static_cast<double>(row[j]) - max));
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    }

    AttentionAttributes attrs_;
};

// The output: batch dims broadcast from every operand, then [Sq, Dv]; Q's dtype.
void infer_attention(InferenceContext& ctx) {
    const Node& node = ctx.node;
    const AttentionAttributes attrs = AttentionAttributes::parse(node);
    if (!ctx.has_input(0) || !ctx.has_input(1) || !ctx.has_input(2)) return;
    const TensorInfo &q = ctx.input(0), &k = ctx.input(1), &v = ctx.input(2);
    const TensorInfo* mask = ctx.has_input(3) ? &ctx.input(3) : nullptr;
    for (const TensorInfo* t : {&k, &v, mask})
        if (t && t->dtype != q.dtype)
            fail_node(node, "inputs differ in dtype: Q is " + dtype_to_string(q.dtype) + ", another " + dtype_to_string(t->dtype));
    if (!q.rank_known || !k.rank_known || !v.rank_known || (mask && !mask->rank_known)) return;
    if (q.shape.size() < 2 || k.shape.size() < 2 || v.shape.size() < 2)
        fail_node(node, "Q, K and V must have rank >= 2; got Q " + shape_to_string(q.shape) + ", K " +
                            shape_to_string(k.shape) + ", V " + shape_to_string(v.shape));
    auto same = [&](const std::optional<int64_t>& a, const std::optional<int64_t>& b, const char* what) {
        if (a && b && *a != *b) fail_node(node, std::string(what) + " differ: " + std::to_string(*a) + " and " + std::to_string(*b));
    };
    const size_t kr = k.shape.size();
    same(q.shape.back(), attrs.k_transposed ? k.shape[kr - 2] : k.shape.back(), "the head sizes of Q and K");
    same(attrs.k_transposed ? k.shape.back() : k.shape[kr - 2], v.shape[v.shape.size() - 2],
         "the sequence lengths of K and V");
    auto batch_of = [](const Shape& s) { return Shape(s.begin(), s.end() - std::min<size_t>(2, s.size())); };
    Shape out;
    std::optional<int64_t> rows = q.shape[q.shape.size() - 2];
    try {
        out = broadcast_shapes(broadcast_shapes(batch_of(q.shape), batch_of(k.shape)), batch_of(v.shape));
        if (mask) out = broadcast_shapes(out, batch_of(mask->shape));
        if (mask && mask->shape.size() >= 2) rows = broadcast_shapes(Shape{rows}, Shape{mask->shape[mask->shape.size() - 2]})[0];
    } catch (const ValidationError&) {
        fail_node(node, "batch dimensions or the mask's rows cannot be broadcast");
    }
    out.push_back(rows);
    out.push_back(v.shape.back());
    ctx.set_output(0, q.dtype, std::move(out));
}

}  // namespace

void register_attention_ops(OpTable& table) {
    table.add(OpSchema{"FusedAttention", "com.pyflame", 1, 3, 4, 1, 1, infer_attention,
                       [](const KernelInfo& info) { return std::make_unique<FusedAttentionKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
