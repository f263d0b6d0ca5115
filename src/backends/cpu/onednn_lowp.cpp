// bfloat16 and float16 Conv, MatMul and Gemm on oneDNN, and their fused forms (FusedConv with
// residual and activation, FusedMatMul, FusedGemm). Each
// wraps the kernel already registered for the op (the float32 oneDNN kernel, which itself falls
// back to the reference kernel) and takes only half-precision inputs.
//
// bfloat16 runs natively where the CPU has it (AVX512_BF16: f32 accumulation, bf16 in and out).
// Where oneDNN has no optimized half-precision implementation (float16 without AVX512_FP16),
// the same primitive runs in float32 and the reorders around it convert: weights once (packed),
// activations per call. Either way products accumulate in float32 and the output is rounded
// once, as the reference kernel computes.
#include <algorithm>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

using DataType = dnnl::memory::data_type;

std::optional<DataType> half_type(DType d) {
    if (d == DType::BFloat16) return DataType::bf16;
    if (d == DType::Float16) return DataType::f16;
    return std::nullopt;
}

// The primitive's compute type: the half type itself when oneDNN has an optimized kernel for
// it, else float32 with converting reorders. `make` builds the primitive descriptor for a type
// (nullopt when oneDNN has none).
template <typename Pd, typename Make>
std::optional<Pd> pick_compute_type(DataType half, Make&& make) {
    for (DataType t : {half, DataType::f32}) {
        try {
            std::optional<Pd> pd = make(t);
            if (pd && optimized(*pd)) return pd;
        } catch (const dnnl::error&) {
        }
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Conv / FusedConv

struct LowpConvEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc x_plain, w_plain, b_plain, y_plain, src, weights, bias, dst;
    Step conv;
    std::optional<Step> weights_reorder, bias_reorder;
    std::optional<ReorderInto> src_into;       // X, row-major or another primitive's layout
    std::optional<ReorderInto> residual_into;  // FusedConv's Z into dst's layout and type
    OutputLayout output;  // kept channels-last between half convolutions
    dnnl::memory packed_weights, packed_bias;
};

class LowpConvKernel final : public FastKernel {
public:
    LowpConvKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> inner)
        : FastKernel(info, std::move(inner)),
          window_(ops::WindowAttributes::parse(info.node, false)),
          group_(info.node.get_attribute<int64_t>("group", 1)),
          has_residual_(info.node.has_input(3)) {
        // FusedConv: act(conv + Z): the residual as a sum post-op (dst starts as Z), then the activation.
        dnnl::post_ops ops;
        if (has_residual_) ops.append_sum(1.0f);
        append_activation(ops, info.node);
        attr_ = base_attr();
        attr_.set_post_ops(ops);
        const Tensor* w = info.constant_input(1);
        if (w && half_type(w->dtype())) weights_.emplace(*w);
        const Tensor* b = info.constant_input(2);
        if (b && half_type(b->dtype())) bias_.emplace(*b);
    }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (!half_type(x.dtype())) return fallback(ctx);
        apply_thread_budget(ctx.num_threads);
        const Tensor& w = ctx.input(1);
        const Tensor* b = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        const size_t rank = x.ndim();
        if (w.dtype() != x.dtype() || rank < 3 || rank > 5 || w.ndim() != rank || x.num_elements() == 0 ||
            w.num_elements() == 0 || x.shape()[1] != w.shape()[1] * group_ || w.shape()[0] % group_ != 0 ||
            (b && (b->dtype() != x.dtype() || b->shape() != std::vector<int64_t>{w.shape()[0]})) ||
            (!window_.kernel_shape.empty() &&
             window_.kernel_shape != std::vector<int64_t>(w.shape().begin() + 2, w.shape().end())))
            return fallback(ctx);
        std::vector<int64_t> key = x.shape();
        key.insert(key.end(), w.shape().begin(), w.shape().end());
        key.push_back(static_cast<int64_t>(x.dtype()));
        key.push_back(b != nullptr);
        const auto entry = cache_.get(key, [&] { return build(x, w.shape(), b != nullptr); });
        if (!entry) return fallback(ctx);
        const Tensor* z = has_residual_ ? &ctx.input(3) : nullptr;
        if (z && (z->dtype() != x.dtype() || z->shape() != entry->out_shape)) return fallback(ctx);  // broadcasting

        // Written in the convolution's own layout (channels-last) when every reader takes it:
        // chains of half convolutions then never reorder between them.
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        dnnl::stream& stream = thread_stream();
        const dnnl::memory src = (*entry->src_into)(stream, memory_over(desc_of(x, entry->x_plain), x.data()), Buffer::Src);
        const dnnl::memory weights = entry->packed_weights ? entry->packed_weights
                                                           : relayout(stream, entry->weights_reorder,
                                                                      memory_over(entry->w_plain, w.data()),
                                                                      entry->weights, Buffer::Weights);
        if (z) entry->residual_into->into(stream, memory_over(desc_of(*z, entry->y_plain), z->data()), y.dst);
        ExecArgs args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, y.dst}};
        if (b) {
            args.emplace(DNNL_ARG_BIAS, entry->packed_bias ? entry->packed_bias
                                                           : relayout(stream, entry->bias_reorder,
                                                                      memory_over(entry->b_plain, b->data()), entry->bias,
                                                                      Buffer::Bias));
        }
        entry->conv.execute(stream, std::move(args));
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

    bool reads_layout(size_t input) const override { return input == 0 || (has_residual_ && input == 3); }
    bool writes_layout(size_t output) const override { return output == 0; }

private:
    std::shared_ptr<const LowpConvEntry> build(const Tensor& x, const std::vector<int64_t>& w_shape, bool has_bias) const {
        const std::vector<int64_t>& x_shape = x.shape();
        const ConvGeometry g = conv_geometry(window_, group_, x_shape, w_shape, node_);
        const int64_t maps = w_shape[0];
        auto entry = std::make_shared<LowpConvEntry>();
        entry->out_shape = g.out_shape;
        const Dims &strides = g.strides, &dilations = g.dilations, &pad_begin = g.pad_begin, &pad_end = g.pad_end;
        const Dims& w_dims = g.weight_dims;
        const DataType half = *half_type(x.dtype());
        entry->x_plain = plain_desc(to_dims(x_shape), half);
        entry->w_plain = plain_desc(w_dims, half);
        entry->y_plain = plain_desc(to_dims(entry->out_shape), half);
        entry->b_plain = has_bias ? plain_desc({maps}, half) : dnnl::memory::desc();
        const auto pd = pick_compute_type<dnnl::convolution_forward::primitive_desc>(half, [&](DataType t) {
            // bias in float32: exact for both half types, and what every implementation takes
            return std::optional<dnnl::convolution_forward::primitive_desc>(dnnl::convolution_forward::primitive_desc(
                *cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                any_desc(to_dims(x_shape), t), any_desc(w_dims, t),
                has_bias ? plain_desc({maps}, DataType::f32) : dnnl::memory::desc(), any_desc(to_dims(entry->out_shape), t),
                strides, dilations, pad_begin, pad_end, attr_));
        });
        if (!pd) return nullptr;
        entry->src = pd->src_desc();
        entry->weights = pd->weights_desc();
        entry->bias = pd->bias_desc();
        entry->dst = pd->dst_desc();
        entry->conv = Step{dnnl::convolution_forward(*pd), pd->scratchpad_desc()};
        entry->src_into.emplace(entry->src);
        entry->output = OutputLayout(entry->dst, entry->y_plain, x.dtype());
        if (has_residual_) entry->residual_into.emplace(entry->dst);
        if (weights_) entry->packed_weights = weights_->get(entry->w_plain, entry->weights);
        else entry->weights_reorder = reorder_if_needed(entry->w_plain, entry->weights);
        if (has_bias) {
            if (bias_) entry->packed_bias = bias_->get(entry->b_plain, entry->bias);
            else entry->bias_reorder = reorder_if_needed(entry->b_plain, entry->bias);
        }
        return entry;
    }

    ops::WindowAttributes window_;
    int64_t group_;
    bool has_residual_;
    dnnl::primitive_attr attr_;
    std::optional<PackedConstant> weights_, bias_;
    ShapeCache<LowpConvEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// MatMul (A of rank >= 2 against a 2-D B) and Gemm (alpha 1, C absent or one row of N), and
// their fused forms: FusedMatMul (+ bias [N]) and FusedGemm, with the activation as a post-op.

struct LowpMatMulEntry {
    dnnl::memory::desc a_plain, b_plain, c_plain, y_plain, a, b, bias, y;
    Step matmul;
    std::optional<Step> a_reorder, b_reorder, c_reorder, y_reorder;
    dnnl::memory packed_b, packed_c;
};

class LowpMatMulKernel final : public FastKernel {
public:
    LowpMatMulKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> inner)
        : FastKernel(info, std::move(inner)),
          gemm_(info.node.op_type() == "Gemm" || info.node.op_type() == "FusedGemm"),
          has_bias_(gemm_ || info.node.op_type() == "FusedMatMul"),
          trans_a_(info.node.get_attribute<int64_t>("transA", 0) == 1),  // Gemm's and FusedMatMul's
          trans_b_(info.node.get_attribute<int64_t>("transB", 0) == 1),
          supported_(!gemm_ || (info.node.get_attribute<double>("alpha", 1.0) == 1.0 &&
                                info.node.get_attribute<double>("beta", 1.0) == 1.0)) {
        dnnl::post_ops ops;
        append_activation(ops, info.node);
        attr_ = base_attr();
        attr_.set_post_ops(ops);
        const Tensor* b = info.constant_input(1);
        if (b && half_type(b->dtype())) b_.emplace(*b);
        const Tensor* c = has_bias_ ? info.constant_input(2) : nullptr;
        if (c && half_type(c->dtype())) c_.emplace(*c);
    }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        if (!supported_ || !half_type(a.dtype())) return fallback(ctx);
        apply_thread_budget(ctx.num_threads);
        const Tensor& b = ctx.input(1);
        const Tensor* c = has_bias_ && ctx.has_input(2) ? &ctx.input(2) : nullptr;
        if (b.dtype() != a.dtype() || b.ndim() != 2 || a.ndim() < 2 || ((gemm_ || trans_a_) && a.ndim() != 2) ||
            a.num_elements() == 0 || b.num_elements() == 0)
            return fallback(ctx);
        const int64_t k = trans_a_ ? a.shape()[0] : a.shape().back();
        const int64_t rows = trans_a_ ? a.shape()[1] : a.num_elements() / k;
        const int64_t n = trans_b_ ? b.shape()[0] : b.shape()[1];
        if ((trans_b_ ? b.shape()[1] : b.shape()[0]) != k) return fallback(ctx);
        if (c && (c->dtype() != a.dtype() || c->num_elements() != n || c->ndim() < 1 || c->ndim() > 2 ||
                  c->shape().back() != n))
            return fallback(ctx);
        const auto entry = cache_.get({rows, k, n, static_cast<int64_t>(a.dtype()), c != nullptr},
                                      [&] { return build(rows, k, n, *half_type(a.dtype()), c != nullptr); });
        if (!entry) return fallback(ctx);
        std::vector<int64_t> out_shape = gemm_ || trans_a_ ? std::vector<int64_t>{rows, n} : a.shape();
        out_shape.back() = n;
        Tensor y(out_shape, a.dtype());
        dnnl::stream& stream = thread_stream();
        ExecArgs args{
            {DNNL_ARG_SRC, relayout(stream, entry->a_reorder, memory_over(entry->a_plain, a.data()), entry->a, Buffer::Src)},
            {DNNL_ARG_WEIGHTS, entry->packed_b ? entry->packed_b
                                               : relayout(stream, entry->b_reorder, memory_over(entry->b_plain, b.data()),
                                                          entry->b, Buffer::Weights)}};
        if (c) {
            args.emplace(DNNL_ARG_BIAS, entry->packed_c ? entry->packed_c
                                                        : relayout(stream, entry->c_reorder, memory_over(entry->c_plain, c->data()),
                                                                   entry->bias, Buffer::Bias));
        }
        const dnnl::memory y_memory = memory_over(entry->y_plain, y.data());
        const dnnl::memory dst = entry->y_reorder ? thread_memory(entry->y, Buffer::Dst) : y_memory;
        args.emplace(DNNL_ARG_DST, dst);
        entry->matmul.execute(stream, std::move(args));
        if (entry->y_reorder) entry->y_reorder->execute(stream, {{DNNL_ARG_FROM, dst}, {DNNL_ARG_TO, y_memory}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    std::shared_ptr<const LowpMatMulEntry> build(int64_t m, int64_t k, int64_t n, DataType half, bool has_c) const {
        auto entry = std::make_shared<LowpMatMulEntry>();
        entry->a_plain = trans_a_ ? dnnl::memory::desc({m, k}, half, Dims{1, m}) : plain_desc({m, k}, half);
        entry->b_plain = trans_b_ ? dnnl::memory::desc({k, n}, half, Dims{1, k}) : plain_desc({k, n}, half);
        entry->c_plain = has_c ? plain_desc({1, n}, half) : dnnl::memory::desc();
        entry->y_plain = plain_desc({m, n}, half);
        const auto pd = pick_compute_type<dnnl::matmul::primitive_desc>(half, [&](DataType t) {
            // Operands already in the compute type are read in place (transposes as strides).
            const auto a = t == half ? entry->a_plain : plain_desc({m, k}, t);
            const auto b = b_ ? any_desc({k, n}, t) : t == half ? entry->b_plain : plain_desc({k, n}, t);
            const auto y = t == half ? entry->y_plain : plain_desc({m, n}, t);
            return std::optional<dnnl::matmul::primitive_desc>(dnnl::matmul::primitive_desc(
                *cpu_engine(), a, b, has_c ? plain_desc({1, n}, DataType::f32) : dnnl::memory::desc(), y, attr_));
        });
        if (!pd) return nullptr;
        entry->a = pd->src_desc();
        entry->b = pd->weights_desc();
        entry->bias = pd->bias_desc();
        entry->y = pd->dst_desc();
        entry->matmul = Step{dnnl::matmul(*pd), pd->scratchpad_desc()};
        entry->a_reorder = reorder_if_needed(entry->a_plain, entry->a);
        entry->y_reorder = reorder_if_needed(entry->y, entry->y_plain);
        if (b_) entry->packed_b = b_->get(entry->b_plain, entry->b);
        else entry->b_reorder = reorder_if_needed(entry->b_plain, entry->b);
        if (has_c) {
            if (c_) entry->packed_c = c_->get(entry->c_plain, entry->bias);
            else entry->c_reorder = reorder_if_needed(entry->c_plain, entry->bias);
        }
        return entry;
    }

    bool gemm_, has_bias_, trans_a_, trans_b_, supported_;
    dnnl::primitive_attr attr_;
    std::optional<PackedConstant> b_, c_;
    ShapeCache<LowpMatMulEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// MatMul of two activations (attention's Q·K' and P·V) in half precision: batched over the
// leading dimensions (broadcast where one side has 1) on oneDNN's bf16/f16 matmul. Wraps the
// kernel made for the node, which runs every other input (float32 graphs, layouts it reads).

struct LowpBatchedMatMulEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc a, b, y;
    Step matmul;
};

class LowpBatchedMatMulKernel final : public FastKernel {
public:
    LowpBatchedMatMulKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> inner)
        : FastKernel(info, nullptr), inner_(std::move(inner)) {}

    bool reads_layout(size_t input) const override { return inner_->reads_layout(input); }
    bool writes_layout(size_t output) const override { return inner_->writes_layout(output); }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        const auto half = half_type(a.dtype());
        if (!half || b.dtype() != a.dtype() || a.ndim() < 2 || a.ndim() != b.ndim() || a.ndim() > 6 || !a.is_plain() ||
            !b.is_plain() || a.num_elements() == 0 || b.num_elements() == 0)
            return inner_->compute(ctx);
        const size_t rank = a.ndim();
        if (a.shape()[rank - 1] != b.shape()[rank - 2]) return inner_->compute(ctx);
        for (size_t d = 0; d + 2 < rank; ++d)
            if (a.shape()[d] != b.shape()[d] && a.shape()[d] != 1 && b.shape()[d] != 1) return inner_->compute(ctx);
        apply_thread_budget(ctx.num_threads);
        std::vector<int64_t> key = a.shape();
        key.insert(key.end(), b.shape().begin(), b.shape().end());
        key.push_back(static_cast<int64_t>(a.dtype()));
        const auto entry = cache_.get(key, [&] { return build(a.shape(), b.shape(), *half); });
        if (!entry) return inner_->compute(ctx);
        Tensor y(entry->out_shape, a.dtype());
        dnnl::stream& stream = thread_stream();
        entry->matmul.execute(stream, {{DNNL_ARG_SRC, memory_over(entry->a, a.data())},
                                       {DNNL_ARG_WEIGHTS, memory_over(entry->b, b.data())},
                                       {DNNL_ARG_DST, memory_over(entry->y, y.data())}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    std::shared_ptr<const LowpBatchedMatMulEntry> build(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape,
                                                        DataType half) const {
        auto entry = std::make_shared<LowpBatchedMatMulEntry>();
        const size_t rank = a_shape.size();
        entry->out_shape = a_shape;
        for (size_t d = 0; d + 2 < rank; ++d) entry->out_shape[d] = std::max(a_shape[d], b_shape[d]);
        entry->out_shape[rank - 1] = b_shape[rank - 1];
        entry->a = plain_desc(to_dims(a_shape), half);
        entry->b = plain_desc(to_dims(b_shape), half);
        entry->y = plain_desc(to_dims(entry->out_shape), half);
        try {
            const dnnl::matmul::primitive_desc pd(*cpu_engine(), entry->a, entry->b, entry->y, base_attr());
            if (!optimized(pd)) return nullptr;  // no native half kernel: the wrapped kernel runs it
            entry->matmul = Step{dnnl::matmul(pd), pd.scratchpad_desc()};
        } catch (const dnnl::error&) {
            return nullptr;
        }
        return entry;
    }

    std::unique_ptr<ops::OpKernel> inner_;
    ShapeCache<LowpBatchedMatMulEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// Gelu and the binary arithmetic ops (Add, Sub, Mul, Div) on half-precision tensors: oneDNN's
// eltwise and binary primitives read and write the half type and compute in float32, one
// rounding per result (the reference kernels convert element by element). Wrap the kernel made
// for the node, which runs every other input.

struct LowpElementwiseEntry {
    dnnl::memory::desc a, b, y;
    std::vector<int64_t> out_shape;
    Step step;
};

class LowpElementwiseKernel final : public FastKernel {
public:
    LowpElementwiseKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> inner)
        : FastKernel(info, nullptr), inner_(std::move(inner)), op_(info.node.op_type()),
          gelu_tanh_(op_ == "Gelu" && info.node.get_attribute<std::string>("approximate", "none") == "tanh") {}

    bool reads_layout(size_t input) const override { return inner_->reads_layout(input); }
    bool writes_layout(size_t output) const override { return inner_->writes_layout(output); }

    void compute(ops::KernelContext& ctx) const override {
        const bool unary = op_ == "Gelu";
        const Tensor* a = &ctx.input(0);
        const Tensor* b = unary ? nullptr : &ctx.input(1);
        const auto half = half_type(a->dtype());
        // Small tensors (shape arithmetic, scalars) stay with the element loop: a primitive call
        // costs more than it saves there.
        constexpr int64_t kMinElements = 4096;
        if (!half || !a->is_plain() || (b && (b->dtype() != a->dtype() || !b->is_plain())) ||
            std::max(a->num_elements(), b ? b->num_elements() : 0) < kMinElements)
            return inner_->compute(ctx);
        std::vector<int64_t> out_shape = a->shape();
        if (b) {
            // oneDNN broadcasts the second source only: the full-shaped operand goes first
            // (Add and Mul commute; Sub and Div need it there already).
            const auto broadcast = broadcast_shape(a->shape(), b->shape());
            if (!broadcast) return inner_->compute(ctx);
            out_shape = *broadcast;
            if (a->shape() != out_shape) {
                if (b->shape() != out_shape || (op_ != "Add" && op_ != "Mul")) return inner_->compute(ctx);
                std::swap(a, b);
            }
        }
        apply_thread_budget(ctx.num_threads);
        std::vector<int64_t> key = a->shape();
        if (b) key.insert(key.end(), b->shape().begin(), b->shape().end());
        key.push_back(static_cast<int64_t>(a->dtype()));
        key.push_back(b ? static_cast<int64_t>(b->ndim()) : -1);
        const auto entry = cache_.get(key, [&] { return build(a->shape(), b ? &b->shape() : nullptr, *half); });
        if (!entry) return inner_->compute(ctx);
        Tensor y(entry->out_shape, a->dtype());
        dnnl::stream& stream = thread_stream();
        if (b)
            entry->step.execute(stream, {{DNNL_ARG_SRC_0, memory_over(entry->a, a->data())},
                                         {DNNL_ARG_SRC_1, memory_over(entry->b, b->data())},
                                         {DNNL_ARG_DST, memory_over(entry->y, y.data())}});
        else
            entry->step.execute(stream, {{DNNL_ARG_SRC, memory_over(entry->a, a->data())},
                                         {DNNL_ARG_DST, memory_over(entry->y, y.data())}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    static std::optional<std::vector<int64_t>> broadcast_shape(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
        const size_t rank = std::max(a.size(), b.size());
        std::vector<int64_t> out(rank);
        for (size_t i = 0; i < rank; ++i) {
            const int64_t da = i + a.size() >= rank ? a[i + a.size() - rank] : 1;
            const int64_t db = i + b.size() >= rank ? b[i + b.size() - rank] : 1;
            if (da != db && da != 1 && db != 1) return std::nullopt;
            out[i] = std::max(da, db);
        }
        return out;
    }

    std::shared_ptr<const LowpElementwiseEntry> build(const std::vector<int64_t>& a_shape, const std::vector<int64_t>* b_shape,
                                                      DataType half) const {
        auto entry = std::make_shared<LowpElementwiseEntry>();
        entry->out_shape = a_shape;
        entry->a = entry->y = plain_desc(to_dims(a_shape), half);
        try {
            if (!b_shape) {
                const dnnl::eltwise_forward::primitive_desc pd(
                    *cpu_engine(), dnnl::prop_kind::forward_inference,
                    gelu_tanh_ ? dnnl::algorithm::eltwise_gelu_tanh : dnnl::algorithm::eltwise_gelu_erf, entry->a, entry->y,
                    0.0f, 0.0f, base_attr());
                if (!optimized(pd)) return nullptr;
                entry->step = Step{dnnl::eltwise_forward(pd), pd.scratchpad_desc()};
                return entry;
            }
            Dims b_dims(a_shape.size(), 1);  // b's shape, right-aligned to a's rank
            for (size_t i = 0; i < b_shape->size(); ++i) b_dims[a_shape.size() - b_shape->size() + i] = (*b_shape)[i];
            entry->b = plain_desc(b_dims, half);
            const dnnl::algorithm alg = op_ == "Add"   ? dnnl::algorithm::binary_add
                                        : op_ == "Sub" ? dnnl::algorithm::binary_sub
                                        : op_ == "Mul" ? dnnl::algorithm::binary_mul
                                                       : dnnl::algorithm::binary_div;
            const dnnl::binary::primitive_desc pd(*cpu_engine(), alg, entry->a, entry->b, entry->y, base_attr());
            if (!optimized(pd)) return nullptr;
            entry->step = Step{dnnl::binary(pd), pd.scratchpad_desc()};
        } catch (const dnnl::error&) {
            return nullptr;
        }
        return entry;
    }

    std::unique_ptr<ops::OpKernel> inner_;
    std::string op_;
    bool gelu_tanh_;
    ShapeCache<LowpElementwiseEntry> cache_;
};

// Wraps the factory registered under `key`: nodes whose weights are a half-precision
// initializer (how FP16/BF16 graphs come) get the kernel here, over what that factory makes;
// every other node gets that factory's kernel untouched (its layout contract included).
template <typename Kernel>
void wrap(std::map<std::string, ops::KernelFactory>& kernels, const std::string& key) {
    ops::KernelFactory inner = kernels.at(key);
    kernels[key] = [inner](const ops::KernelInfo& info) -> std::unique_ptr<ops::OpKernel> {
        std::unique_ptr<ops::OpKernel> made = inner(info);
        const Tensor* w = info.constant_input(1);
        if (!cpu_engine() || !w || !half_type(w->dtype())) return made;
        return std::make_unique<Kernel>(info, std::move(made));
    };
}

}  // namespace

void add_lowp_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    wrap<LowpConvKernel>(kernels, "::Conv");
    wrap<LowpConvKernel>(kernels, "com.pyflame::FusedConv");
    wrap<LowpMatMulKernel>(kernels, "::MatMul");
    wrap<LowpMatMulKernel>(kernels, "::Gemm");
    for (const char* op : {"::Gelu", "::Add", "::Sub", "::Mul", "::Div"}) {
        auto it = kernels.find(op);
        if (it == kernels.end()) continue;
        ops::KernelFactory made_for = it->second;
        it->second = [made_for](const ops::KernelInfo& info) -> std::unique_ptr<ops::OpKernel> {
            std::unique_ptr<ops::OpKernel> made = made_for(info);
            if (!cpu_engine()) return made;
            return std::make_unique<LowpElementwiseKernel>(info, std::move(made));
        };
    }
    // MatMul of two computed inputs (no constant B): the batched half-precision kernel.
    ops::KernelFactory matmul = kernels.at("::MatMul");
    kernels["::MatMul"] = [matmul](const ops::KernelInfo& info) -> std::unique_ptr<ops::OpKernel> {
        std::unique_ptr<ops::OpKernel> made = matmul(info);
        if (!cpu_engine() || info.constant_input(0) || info.constant_input(1)) return made;
        return std::make_unique<LowpBatchedMatMulKernel>(info, std::move(made));
    };
    for (const char* fused : {"com.pyflame::FusedMatMul", "com.pyflame::FusedGemm"})
        if (kernels.count(fused)) wrap<LowpMatMulKernel>(kernels, fused);
}

}  // namespace pyflame_rt::onednn
