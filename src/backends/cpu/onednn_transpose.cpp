// Transpose as one oneDNN reorder: the destination is described over the input's dims with the
// output's strides permuted back, so the JIT reorder walks both tensors in blocks (a plain
// loop strides through one of them element by element). An input in a backend layout (e.g. a
// convolution's nChw16c) is transposed straight from it, without a reorder to row-major first;
// a transpose that only moves axes of size 1 (batch 1 in [seq, batch, hidden] models) is a view.
#include <numeric>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

struct TransposeEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc src, dst;
    Step step;
};

class TransposeKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<TransposeKernel>(info, std::move(reference));
    }

    TransposeKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          perm_(info.node.get_attribute<std::vector<int64_t>>("perm", std::vector<int64_t>{})) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        const std::vector<int64_t> perm = resolved(x.ndim());
        if (x.dtype() != DType::Float32 || x.num_elements() == 0 || x.ndim() < 2 || x.ndim() > DNNL_MAX_NDIMS ||
            perm.empty())
            return fallback(ctx);  // the reference kernel reports invalid perms
        if (x.is_plain() && keeps_order(x.shape(), perm)) {
            // Only axes of size 1 move: the same bytes in the same order, a view of the input.
            std::vector<int64_t> out_shape;
            for (int64_t p : perm) out_shape.push_back(x.shape()[p]);
            ctx.outputs[0] = x.reshape(out_shape);
            return;
        }
        const auto entry = cache_.get(shape_and_layout_key(x), [&] {
            return build(x.shape(), perm, desc_of(x, plain_desc(to_dims(x.shape()))));
        });
        if (!entry) return fallback(ctx);
        Tensor y(entry->out_shape, DType::Float32);
        dnnl::stream& stream = thread_stream();
        entry->step.execute(stream, {{DNNL_ARG_SRC, memory_over(entry->src, x.data())},
                                     {DNNL_ARG_DST, memory_over(entry->dst, y.data())}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

    bool reads_layout(size_t input) const override { return input == 0; }

private:
    // The permutation for rank `rank` (reversed axes when the node gives none); empty when
    // `perm_` is not a permutation of 0..rank-1.
    std::vector<int64_t> resolved(size_t rank) const {
        std::vector<int64_t> perm = perm_;
        if (perm.empty()) {
            perm.resize(rank);
            std::iota(perm.rbegin(), perm.rend(), 0);
        }
        if (perm.size() != rank) return {};
        std::vector<char> seen(rank, 0);
        for (int64_t p : perm) {
            if (p < 0 || p >= static_cast<int64_t>(rank) || seen[p]) return {};
            seen[p] = 1;
        }
        return perm;
    }

    // Whether the axes longer than 1 keep their relative order under `perm`.
    static bool keeps_order(const std::vector<int64_t>& shape, const std::vector<int64_t>& perm) {
        int64_t last = -1;
        for (int64_t p : perm) {
            if (shape[p] == 1) continue;
            if (p < last) return false;
            last = p;
        }
        return true;
    }

    static std::shared_ptr<TransposeEntry> build(const std::vector<int64_t>& shape, const std::vector<int64_t>& perm,
                                                 const dnnl::memory::desc& src) {
        auto e = std::make_shared<TransposeEntry>();
        const size_t rank = shape.size();
        for (int64_t p : perm) e->out_shape.push_back(shape[p]);
        // Output axis d is input axis perm[d]: its row-major stride goes to that input axis.
        Dims out_strides(rank), strides(rank);
        int64_t stride = 1;
        for (size_t d = rank; d-- > 0;) {
            out_strides[d] = stride;
            stride *= e->out_shape[d];
        }
        for (size_t d = 0; d < rank; ++d) strides[perm[d]] = out_strides[d];
        e->src = src;
        e->dst = dnnl::memory::desc(to_dims(shape), dnnl::memory::data_type::f32, strides);
        try {
            e->step = make_reorder(e->src, e->dst);
        } catch (const dnnl::error&) {
            return nullptr;
        }
        return e;
    }

    std::vector<int64_t> perm_;
    ShapeCache<TransposeEntry> cache_;
};

}  // namespace

void add_transpose_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["::Transpose"] = factory<TransposeKernel>("Transpose");
}

}  // namespace pyflame_rt::onednn
