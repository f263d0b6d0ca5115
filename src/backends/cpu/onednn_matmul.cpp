// MatMul (numpy semantics) and Gemm (alpha, beta, transA, transB, broadcast C) on oneDNN's
// matmul, float32, and their fused forms (com.pyflame FusedMatMul: transA/transB + bias [N] +
// activation; FusedGemm: + activation) with the bias and activation applied as the product is
// written. Transposed operands are read in place through their strides; a constant B is packed
// once into the layout the primitive prefers.
#include <algorithm>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

struct MatMulEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc a, b, y, bias;  // as the tensors lie (Gemm's transposes are strides)
    Step matmul;
    dnnl::memory packed_b;             // a constant B in the primitive's layout
};

// The primitive for a (..., M, K) x b (..., K, N) -> y; nullptr when oneDNN has no
// implementation. A constant B is read in the layout the primitive picks, once.
std::shared_ptr<MatMulEntry> build_matmul(std::vector<int64_t> out_shape, const dnnl::memory::desc& a,
                                          const dnnl::memory::desc& b, const dnnl::memory::desc& y,
                                          const dnnl::memory::desc& bias, const std::optional<PackedConstant>& constant_b,
                                          const dnnl::primitive_attr& attr) {
    auto entry = std::make_shared<MatMulEntry>();
    entry->out_shape = std::move(out_shape);
    entry->a = a;
    entry->b = b;
    entry->y = y;
    entry->bias = bias;
    std::optional<dnnl::matmul::primitive_desc> pd;
    try {
        pd.emplace(*cpu_engine(), a, constant_b ? any_desc(b.get_dims()) : b, bias, y, attr);
    } catch (const dnnl::error&) {
        return nullptr;
    }
    if (!optimized(*pd)) return nullptr;
    entry->matmul = Step{dnnl::matmul(*pd), pd->scratchpad_desc()};
    if (constant_b) entry->packed_b = constant_b->get(b, pd->weights_desc());
    return entry;
}

// An operand of logical dims (..., rows, cols), row-major, or lying as (..., cols, rows) when
// `transposed`: then read through swapped strides, never copied.
dnnl::memory::desc operand_desc(const Dims& dims, bool transposed) {
    if (!transposed || dims.size() < 2) return plain_desc(dims);
    Dims stored = dims;
    std::swap(stored[stored.size() - 1], stored[stored.size() - 2]);
    Dims strides(dims.size());
    dnnl::memory::dim stride = 1;
    for (size_t i = stored.size(); i-- > 0;) {
        strides[i] = stride;
        stride *= stored[i];
    }
    std::swap(strides[strides.size() - 1], strides[strides.size() - 2]);
    return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
}

// Packs a constant 2-D B (stored (K, N), or (N, K) when `trans_b`) at creation into the layout
// the matmul primitive picks for it, which depends on K and N, not on M (BA16a64b for every M
// from 1 to 1024 on AVX-512): the initializer's row-major copy can then be dropped.
void prepack_constant_b(PackedConstant& b, const std::vector<int64_t>& b_shape, bool trans_b,
                        const dnnl::primitive_attr& attr) {
    if (b_shape.size() != 2 || b_shape[0] == 0 || b_shape[1] == 0) return;
    const int64_t k = trans_b ? b_shape[1] : b_shape[0], n = trans_b ? b_shape[0] : b_shape[1];
    try {
        const dnnl::matmul::primitive_desc pd(*cpu_engine(), plain_desc({1, k}), any_desc({k, n}), dnnl::memory::desc(),
                                              plain_desc({1, n}), attr);
        if (optimized(pd)) b.prepack(operand_desc({k, n}, trans_b), pd.weights_desc());
    } catch (const dnnl::error&) {
        // no packed layout: the primitives read B as it lies
    }
}

void run_matmul(const MatMulEntry& entry, const Tensor& a, const Tensor& b, Tensor& y, const float* bias) {
    dnnl::stream& stream = thread_stream();
    ExecArgs args{
        {DNNL_ARG_SRC, memory_over(entry.a, a.data())},
        {DNNL_ARG_WEIGHTS, entry.packed_b ? entry.packed_b : memory_over(entry.b, b.data())},
        {DNNL_ARG_DST, memory_over(entry.y, y.data())}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory_over(entry.bias, bias));
    entry.matmul.execute(stream, std::move(args));
    stream.wait();
}

// ---------------------------------------------------------------------------------------------
// MatMul

class MatMulKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<MatMulKernel>(info, std::move(reference));
    }

    MatMulKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          has_bias_(info.node.has_input(2)),
          trans_a_(info.node.get_attribute<int64_t>("transA", 0) == 1),  // FusedMatMul's; the
          trans_b_(info.node.get_attribute<int64_t>("transB", 0) == 1),  // reference kernel checked them
          attr_(base_attr()) {
        dnnl::post_ops post_ops;
        append_activation(post_ops, info.node);
        attr_.set_post_ops(post_ops);
        if (const Tensor* b = float_constant(info, 1)) {
            b_.emplace(*b);
            prepack_constant_b(*b_, b->shape(), trans_b_, attr_);
        }
    }

    bool reads_layout(size_t input) const override { return input == 1 && prepacked_input(1); }
    const Tensor* prepacked_input(size_t input) const override { return input == 1 && b_ ? b_->prepacked() : nullptr; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        const Tensor* bias = has_bias_ ? &ctx.input(2) : nullptr;
        if (a.dtype() != DType::Float32 || b.dtype() != DType::Float32 || a.ndim() == 0 || b.ndim() == 0 ||
            a.num_elements() == 0 || b.num_elements() == 0 || (trans_a_ && a.ndim() < 2) || (trans_b_ && b.ndim() < 2))
            return fallback(ctx);
        if (bias && (bias->dtype() != DType::Float32 || bias->ndim() != 1 || b.ndim() < 2 ||
                     bias->shape()[0] != b.shape().back()))
            return fallback(ctx);
        // Work: A's rows times B's columns, over B (which every row reads).
        const double rows = static_cast<double>(a.num_elements() / a.shape().back());
        const double cols = b.ndim() == 1 ? 1.0 : static_cast<double>(b.shape()[trans_b_ ? b.ndim() - 2 : b.ndim() - 1]);
        apply_thread_budget(threads_for_primitive(2.0 * rows * cols * static_cast<double>(a.shape().back()),
                                                  4.0 * static_cast<double>(a.num_elements() + b.num_elements()),
                                                  ctx.num_threads));
        std::vector<int64_t> key{static_cast<int64_t>(a.ndim())};
        key.insert(key.end(), a.shape().begin(), a.shape().end());
        key.insert(key.end(), b.shape().begin(), b.shape().end());
        const auto entry = cache_.get(key, [&] { return build(a.shape(), b.shape()); });
        if (!entry) return fallback(ctx);  // also for mismatched shapes: the reference kernel words the error
        Tensor y(entry->out_shape, DType::Float32);
        run_matmul(*entry, a, b, y, bias ? bias->data_ptr<float>() : nullptr);
        ctx.outputs[0] = std::move(y);
    }

private:
    std::shared_ptr<const MatMulEntry> build(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape) const {
        // numpy: a 1-D A is a row (1, K), a 1-D B a column (K, 1); both squeezed from the output.
        // A transposed operand (rank >= 2) is described by its logical dims, op(A) and op(B).
        std::vector<int64_t> as = a_shape, bs = b_shape;
        if (as.size() == 1) as.insert(as.begin(), 1);
        if (bs.size() == 1) bs.push_back(1);
        if (trans_a_) std::swap(as[as.size() - 1], as[as.size() - 2]);
        if (trans_b_) std::swap(bs[bs.size() - 1], bs[bs.size() - 2]);
        const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
        if (k != bs[bs.size() - 2]) return nullptr;
        const std::vector<int64_t> batch_a(as.begin(), as.end() - 2), batch_b(bs.begin(), bs.end() - 2);
        std::vector<int64_t> batch;
        try {
            batch = ops::broadcast_shapes(batch_a, batch_b);
        } catch (const ValidationError&) {
            return nullptr;
        }
        std::vector<int64_t> out_shape = batch;
        if (a_shape.size() > 1) out_shape.push_back(m);
        if (b_shape.size() > 1) out_shape.push_back(n);

        const int64_t count = num_elements_of(batch);
        Dims a_dims, b_dims, y_dims;
        if (num_elements_of(batch_b) == 1 && !trans_a_) {
            // One B for every batch: A's matrices are contiguous rows, so it is one (count*M, K) matrix.
            a_dims = {count * m, k};
            b_dims = {k, n};
            y_dims = {count * m, n};
        } else {
            // Both brought to the output's rank; oneDNN broadcasts batch dims of size 1.
            const size_t rank = batch.size() + 2;
            a_dims = to_dims(as);
            b_dims = to_dims(bs);
            a_dims.insert(a_dims.begin(), rank - as.size(), 1);
            b_dims.insert(b_dims.begin(), rank - bs.size(), 1);
            y_dims = to_dims(batch);
            y_dims.insert(y_dims.end(), {m, n});
        }
        // FusedMatMul's bias [N]: broadcast over every row of every matrix.
        dnnl::memory::desc bias;
        if (has_bias_) {
            Dims bias_dims(y_dims.size(), 1);
            bias_dims.back() = n;
            bias = plain_desc(bias_dims);
        }
        return build_matmul(out_shape, operand_desc(a_dims, trans_a_), operand_desc(b_dims, trans_b_),
                            plain_desc(y_dims), bias, b_, attr_);
    }

    bool has_bias_;                    // FusedMatMul's third input
    bool trans_a_, trans_b_;           // FusedMatMul's: op(A), op(B) read through strides
    dnnl::primitive_attr attr_;        // FusedMatMul's activation as a post-op
    std::optional<PackedConstant> b_;  // when B is an initializer
    ShapeCache<MatMulEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// Gemm: Y = alpha * op(A) * op(B) + beta * C. A C that is one row (N) or (1, N) becomes the
// primitive's bias, scaled by beta / alpha since alpha (a post-op) scales the biased product;
// any other C (M, N), (M, 1), scalar is broadcast into Y first and added by a sum post-op.

enum class CMode : int64_t { None, Bias, Sum };

class GemmKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        if (info.node.get_attribute<double>("alpha", 1.0) == 0.0) return reference;  // Y = beta * C: no product
        return std::make_unique<GemmKernel>(info, std::move(reference));
    }

    GemmKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          alpha_(static_cast<float>(info.node.get_attribute<double>("alpha", 1.0))),
          beta_(static_cast<float>(info.node.get_attribute<double>("beta", 1.0))),
          trans_a_(info.node.get_attribute<int64_t>("transA", 0) == 1),
          trans_b_(info.node.get_attribute<int64_t>("transB", 0) == 1),
          node_with_activation_(activation_of(info.node)) {
        if (const Tensor* b = float_constant(info, 1)) {
            b_.emplace(*b);
            prepack_constant_b(*b_, b->shape(), trans_b_, base_attr());
        }
        // A constant C (it is then the C of every run) is scaled for the bias once.
        if (const Tensor* c = float_constant(info, 2); c && beta_ != alpha_) {
            scaled_c_ = Tensor(c->shape(), DType::Float32);
            scale(*c, scaled_c_.data_ptr<float>());
        }
    }

    bool reads_layout(size_t input) const override { return input == 1 && prepacked_input(1); }
    const Tensor* prepacked_input(size_t input) const override { return input == 1 && b_ ? b_->prepacked() : nullptr; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        const Tensor* c = ctx.has_input(2) && beta_ != 0.0f ? &ctx.input(2) : nullptr;
        if (a.dtype() != DType::Float32 || b.dtype() != DType::Float32 || a.ndim() != 2 || b.ndim() != 2 ||
            a.num_elements() == 0 || b.num_elements() == 0 || (c && c->dtype() != DType::Float32))
            return fallback(ctx);
        const int64_t m = a.shape()[trans_a_ ? 1 : 0], k = a.shape()[trans_a_ ? 0 : 1];
        const int64_t n = b.shape()[trans_b_ ? 0 : 1];
        if (k != b.shape()[trans_b_ ? 1 : 0]) return fallback(ctx);
        // How C broadcasts to (M, N): `rows` is 1 or M, `cols` 1 or N.
        int64_t rows = 0, cols = 0;
        CMode mode = CMode::None;
        if (c) {
            rows = c->ndim() == 2 ? c->shape()[0] : 1;
            cols = c->ndim() == 0 ? 1 : c->shape().back();
            if (c->ndim() > 2 || (rows != 1 && rows != m) || (cols != 1 && cols != n)) return fallback(ctx);
            mode = rows == 1 && cols == n ? CMode::Bias : CMode::Sum;
        }
        apply_thread_budget(threads_for_primitive(2.0 * static_cast<double>(m * n * k),
                                                  4.0 * static_cast<double>(m * k + k * n + m * n), ctx.num_threads));
        const auto entry = cache_.get({m, k, n, static_cast<int64_t>(mode)}, [&] { return build(m, k, n, mode); });
        if (!entry) return fallback(ctx);

        Tensor y({m, n}, DType::Float32);
        const float* bias = nullptr;
        if (mode == CMode::Bias) {
            if (beta_ == alpha_) {
                bias = c->data_ptr<float>();
            } else if (!scaled_c_.empty()) {
                bias = scaled_c_.data_ptr<float>();
            } else {
                const dnnl::memory scaled = thread_memory(entry->bias, Buffer::Bias);
                scale(*c, static_cast<float*>(scaled.get_data_handle()));
                bias = static_cast<const float*>(scaled.get_data_handle());
            }
        } else if (mode == CMode::Sum) {
            const float* cd = c->data_ptr<float>();
            float* yd = y.data_ptr<float>();
            for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < n; ++j) yd[i * n + j] = cd[(rows == 1 ? 0 : i) * cols + (cols == 1 ? 0 : j)];
        }
        run_matmul(*entry, a, b, y, bias);
        ctx.outputs[0] = std::move(y);
    }

private:
    std::shared_ptr<const MatMulEntry> build(int64_t m, int64_t k, int64_t n, CMode mode) const {
        // A transposed operand is read in place through its strides.
        const dnnl::memory::desc a = operand_desc({m, k}, trans_a_), b = operand_desc({k, n}, trans_b_);
        dnnl::post_ops post_ops;
        if (alpha_ != 1.0f) post_ops.append_eltwise(dnnl::algorithm::eltwise_linear, alpha_, 0.0f);
        if (mode == CMode::Sum) post_ops.append_sum(beta_);
        append_activation(post_ops, node_with_activation_);  // FusedGemm
        dnnl::primitive_attr attr = base_attr();
        attr.set_post_ops(post_ops);
        const dnnl::memory::desc bias = mode == CMode::Bias ? plain_desc({1, n}) : dnnl::memory::desc();
        return build_matmul({m, n}, a, b, plain_desc({m, n}), bias, b_, attr);
    }

    void scale(const Tensor& c, float* out) const {
        const float s = beta_ / alpha_;
        std::transform(c.data_ptr<float>(), c.data_ptr<float>() + c.num_elements(), out, [s](float v) { return v * s; });
    }

    // The node's activation attributes only (kernels keep no node; this one is small).
    static Node activation_of(const Node& node) {
        Node act(node.op_type(), node.name(), {}, {});
        for (const char* key : {"activation", "activation_params"})
            if (node.has_attribute(key)) act.set_attribute(key, node.attributes().at(key));
        return act;
    }

    float alpha_, beta_;
    bool trans_a_, trans_b_;
    Node node_with_activation_;
    std::optional<PackedConstant> b_;  // when B is an initializer
    Tensor scaled_c_;                  // beta / alpha * C, when C is an initializer and beta != alpha
    ShapeCache<MatMulEntry> cache_;
};

}  // namespace

void add_matmul_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["::MatMul"] = factory<MatMulKernel>("MatMul");
    kernels["::Gemm"] = factory<GemmKernel>("Gemm");
    kernels["com.pyflame::FusedMatMul"] = factory<MatMulKernel>("FusedMatMul", "com.pyflame");
    kernels["com.pyflame::FusedGemm"] = factory<GemmKernel>("FusedGemm", "com.pyflame");
}

}  // namespace pyflame_rt::onednn
