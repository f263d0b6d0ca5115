// com.pyflame FusedAttention (float32) on oneDNN: three primitives over all (batch, head)
// matrices at once, built once per input-shape signature:
//   scores = Q·Kᵀ (matmul; Kᵀ read in place through its strides), with `scale` and the mask
//            applied as the product is written (eltwise_linear and binary_add post-ops);
//   scores = softmax(scores) along the last axis, in place;
//   Y      = scores·V (matmul).
// (A loop over the (batch, head) matrices keeping each one's scores in cache, on single-threaded
// primitives, measured no faster at BERT's sizes: the two products dominate.)
// The scores are a temporary from the session's arena. Shapes whose scores V or the mask would
// enlarge (batch dims, a row of Q broadcast), other dtypes and invalid inputs go to the
// reference kernel.
#include "backends/cpu/onednn_context.hpp"
#include "ops/attention_op.hpp"

namespace pyflame_rt::onednn {
namespace {

struct AttentionEntry {
    std::vector<int64_t> out_shape, scores_shape;
    dnnl::memory::desc q, k, v, mask, scores, y;
    Step qk, softmax, pv;
    int mask_arg = 0;            // the mask's argument of `qk` (its binary post-op) ...
    std::optional<Step> add_mask;  // ... or, for broadcasts the post-op lacks, a binary add in place
};

// `batch` with leading 1s up to `rank` dims, then the two matrix dims.
Dims matrix_dims(const std::vector<int64_t>& batch, size_t rank, int64_t rows, int64_t cols) {
    Dims dims(rank - 2 - batch.size(), 1);
    dims.insert(dims.end(), batch.begin(), batch.end());
    dims.push_back(rows);
    dims.push_back(cols);
    return dims;
}

class AttentionKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<AttentionKernel>(info, std::move(reference));
    }

    AttentionKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)), attrs_(ops::AttentionAttributes::parse(info.node)) {}

    void compute(ops::KernelContext& ctx) const override {
        apply_thread_budget(ctx.num_threads);
        const Tensor* mask = ctx.has_input(3) ? &ctx.input(3) : nullptr;
        for (size_t i = 0; i < ctx.inputs.size(); ++i)
            if (ctx.has_input(i) && (ctx.input(i).dtype() != DType::Float32 || ctx.input(i).num_elements() == 0))
                return fallback(ctx);
        const Tensor& q = ctx.input(0);
        const Tensor& k = ctx.input(1);
        const Tensor& v = ctx.input(2);
        std::vector<int64_t> key;
        for (const Tensor* t : {&q, &k, &v, mask}) {
            key.push_back(t ? static_cast<int64_t>(t->ndim()) : -1);
            if (t) key.insert(key.end(), t->shape().begin(), t->shape().end());
        }
        const auto entry = cache_.get(key, [&] { return build(q.shape(), k.shape(), v.shape(), mask ? &mask->shape() : nullptr); });
        if (!entry) return fallback(ctx);

        Tensor scores(entry->scores_shape, DType::Float32);
        Tensor y(entry->out_shape, DType::Float32);
        dnnl::stream& stream = thread_stream();
        const dnnl::memory scores_memory = memory_over(entry->scores, scores.data());
        ExecArgs qk_args{{DNNL_ARG_SRC, memory_over(entry->q, q.data())},
                                                      {DNNL_ARG_WEIGHTS, memory_over(entry->k, k.data())},
                                                      {DNNL_ARG_DST, scores_memory}};
        if (mask && !entry->add_mask) qk_args.emplace(entry->mask_arg, memory_over(entry->mask, mask->data()));
        entry->qk.execute(stream, std::move(qk_args));
        if (entry->add_mask)
            entry->add_mask->execute(stream, {{DNNL_ARG_SRC_0, scores_memory},
                                              {DNNL_ARG_SRC_1, memory_over(entry->mask, mask->data())},
                                              {DNNL_ARG_DST, scores_memory}});
        entry->softmax.execute(stream, {{DNNL_ARG_SRC, scores_memory}, {DNNL_ARG_DST, scores_memory}});
        entry->pv.execute(stream, {{DNNL_ARG_SRC, scores_memory},
                                   {DNNL_ARG_WEIGHTS, memory_over(entry->v, v.data())},
                                   {DNNL_ARG_DST, memory_over(entry->y, y.data())}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    std::shared_ptr<const AttentionEntry> build(const std::vector<int64_t>& q_shape, const std::vector<int64_t>& k_shape,
                                                const std::vector<int64_t>& v_shape, const std::vector<int64_t>* mask_shape) const {
        ops::AttentionShapes s;
        try {
            s = ops::attention_shapes(q_shape, k_shape, v_shape, mask_shape, attrs_.k_transposed, node_);
        } catch (const ValidationError&) {
            return nullptr;  // the reference kernel words the error
        }
        // The scores are Q·Kᵀ's as they are: V and the mask may only broadcast into them.
        if (s.batch != ops::broadcast_shapes(s.q_batch, s.k_batch) || s.rows != s.sq) return nullptr;
        const size_t rank = s.batch.size() + 2;
        if (rank > DNNL_MAX_NDIMS) return nullptr;
        auto e = std::make_shared<AttentionEntry>();
        e->out_shape = s.out_shape();
        e->scores_shape = s.batch;
        e->scores_shape.insert(e->scores_shape.end(), {s.sq, s.sk});
        e->q = plain_desc(matrix_dims(s.q_batch, rank, s.sq, s.d));
        if (attrs_.k_transposed) {
            e->k = plain_desc(matrix_dims(s.k_batch, rank, s.d, s.sk));
        } else {
            // K [..., Sk, D] read as [..., D, Sk]: its last two strides swapped, no copy.
            Dims strides = plain_desc(matrix_dims(s.k_batch, rank, s.sk, s.d)).get_strides();
            std::swap(strides[rank - 2], strides[rank - 1]);
            e->k = dnnl::memory::desc(matrix_dims(s.k_batch, rank, s.d, s.sk), dnnl::memory::data_type::f32, strides);
        }
        e->v = plain_desc(matrix_dims(s.v_batch, rank, s.sk, s.dv));
        e->scores = plain_desc(to_dims(e->scores_shape));
        e->y = plain_desc(to_dims(e->out_shape));
        const float scale = attrs_.scale_for(s.d);
        if (s.has_mask) e->mask = plain_desc(matrix_dims(s.mask_batch, rank, s.mask_rows, s.mask_cols));
        // Q·Kᵀ with the scale (and the mask) applied as the product is written.
        auto qk_pd = [&](bool mask_post_op) {
            dnnl::post_ops post_ops;
            if (scale != 1.0f) post_ops.append_eltwise(dnnl::algorithm::eltwise_linear, scale, 0.0f);
            if (mask_post_op) {
                e->mask_arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_ops.len()) | DNNL_ARG_SRC_1;
                post_ops.append_binary(dnnl::algorithm::binary_add, e->mask);
            }
            dnnl::primitive_attr attr = base_attr();
            attr.set_post_ops(post_ops);
            return dnnl::matmul::primitive_desc(*cpu_engine(), e->q, e->k, e->scores, attr);
        };
        try {
            std::optional<dnnl::matmul::primitive_desc> qk;
            if (s.has_mask) {
                qk.emplace(qk_pd(true));
                if (!optimized(*qk)) {
                    // oneDNN's optimized matmuls take only some broadcasts of a binary post-op
                    // (not a [Sq, Sk] mask shared by all batches, say): add it in place after.
                    qk.emplace(qk_pd(false));
                    const dnnl::binary::primitive_desc add(*cpu_engine(), dnnl::algorithm::binary_add, e->scores, e->mask,
                                                           e->scores, base_attr());
                    e->add_mask = Step{dnnl::binary(add), add.scratchpad_desc()};
                }
            } else {
                qk.emplace(qk_pd(false));
            }
            const dnnl::softmax_forward::primitive_desc softmax(*cpu_engine(), dnnl::prop_kind::forward_inference,
                                                                dnnl::algorithm::softmax_accurate, e->scores, e->scores,
                                                                static_cast<int>(rank - 1), base_attr());
            const dnnl::matmul::primitive_desc pv(*cpu_engine(), e->scores, e->v, e->y, base_attr());
            if (!optimized(*qk) || !optimized(softmax) || !optimized(pv)) return nullptr;
            e->qk = Step{dnnl::matmul(*qk), qk->scratchpad_desc()};
            e->softmax = Step{dnnl::softmax_forward(softmax), softmax.scratchpad_desc()};
            e->pv = Step{dnnl::matmul(pv), pv.scratchpad_desc()};
        } catch (const dnnl::error&) {
            return nullptr;
        }
        return e;
    }

    ops::AttentionAttributes attrs_;
    ShapeCache<AttentionEntry> cache_;
};

}  // namespace

void add_attention_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["com.pyflame::FusedAttention"] = factory<AttentionKernel>("FusedAttention", "com.pyflame");
}

}  // namespace pyflame_rt::onednn
