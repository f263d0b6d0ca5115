// Gemm and MatMul (float32, float64), plus the Eigen GEMM and the thread splitting they share
// with Conv.
#include <Eigen/Core>
#include <algorithm>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#include "ops/dispatch.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {

// ---------------------------------------------------------------------------------------------
// Shared helpers (declared in op.hpp)

int threads_for_work(double flops, int num_threads) {
    constexpr double kMinFlopsPerThread = 4.0e6;  // ~0.1 ms of GEMM: well above a thread's start-up cost
    const double wanted = std::max(1.0, flops / kMinFlopsPerThread);
    return static_cast<int>(std::min<double>(std::max(1, num_threads), wanted));
}

void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t chunks = std::min<int64_t>(n, std::max(1, num_threads));
    if (chunks <= 1) {
        if (n > 0) fn(0, n);
        return;
    }
    auto bound = [&](int64_t i) { return n * i / chunks; };
    std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
    auto run_chunk = [&](int64_t i) {
        try {
            fn(bound(i), bound(i + 1));
        } catch (...) {
            errors[static_cast<size_t>(i)] = std::current_exception();
        }
    };
    std::vector<std::thread> threads;
    std::vector<int64_t> inline_chunks{0};
    for (int64_t i = 1; i < chunks; ++i) {
        try {
            threads.emplace_back(run_chunk, i);
        } catch (const std::system_error&) {
            inline_chunks.push_back(i);  // no thread available: run it here instead
        }
    }
    for (int64_t i : inline_chunks) run_chunk(i);
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
}

namespace {

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T, typename AExpr, typename BExpr>
void gemm_into(Eigen::Map<RowMajor<T>>& c, const AExpr& a, const BExpr& b, T alpha, T beta) {
    if (beta == T(0)) {
        c.noalias() = alpha * a * b;
    } else {
        if (beta != T(1)) c *= beta;
        c.noalias() += alpha * a * b;
    }
}

template <typename T>
void gemm_rows(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b,
               T beta, T* c, int64_t row_begin, int64_t row_end) {
    using ConstMap = Eigen::Map<const RowMajor<T>>;
    const int64_t rows = row_end - row_begin;
    Eigen::Map<RowMajor<T>> c_rows(c + row_begin * n, rows, n);
    if (k == 0) {  // empty product: only the beta * c term is left
        if (beta == T(0)) c_rows.setZero();
        else c_rows *= beta;
        return;
    }
    const ConstMap a_full(a, trans_a ? k : m, trans_a ? m : k);
    const ConstMap b_full(b, trans_b ? n : k, trans_b ? k : n);
    if (trans_a) {
        const auto a_rows = a_full.middleCols(row_begin, rows).transpose();
        if (trans_b) gemm_into(c_rows, a_rows, b_full.transpose(), alpha, beta);
        else gemm_into(c_rows, a_rows, b_full, alpha, beta);
    } else {
        const auto a_rows = a_full.middleRows(row_begin, rows);
        if (trans_b) gemm_into(c_rows, a_rows, b_full.transpose(), alpha, beta);
        else gemm_into(c_rows, a_rows, b_full, alpha, beta);
    }
}

template <typename T>
void gemm_impl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b,
               T beta, T* c, int num_threads) {
    if (m == 0 || n == 0) return;
    const int threads = static_cast<int>(
        std::min<int64_t>(m, threads_for_work(2.0 * static_cast<double>(m) * n * k, num_threads)));
    parallel_for(m, threads, [&](int64_t begin, int64_t end) {
        gemm_rows(trans_a, trans_b, m, n, k, alpha, a, b, beta, c, begin, end);
    });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b,
          float beta, float* c, int num_threads) {
    gemm_impl(trans_a, trans_b, m, n, k, alpha, a, b, beta, c, num_threads);
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          const double* b, double beta, double* c, int num_threads) {
    gemm_impl(trans_a, trans_b, m, n, k, alpha, a, b, beta, c, num_threads);
}

namespace {

std::vector<int64_t> slice(const std::vector<int64_t>& v, size_t begin, size_t end) {
    return std::vector<int64_t>(v.begin() + static_cast<std::ptrdiff_t>(begin),
                                v.begin() + static_cast<std::ptrdiff_t>(end));
}

// `t` converted element by element to `to` (between float32 and the half types).
Tensor convert_float(const Tensor& t, DType to, const Node& node) {
    Tensor out(t.shape(), to);
    dispatch_float_types(t.dtype(), node, [&](auto from_value) {
        using From = decltype(from_value);
        dispatch_float_types(to, node, [&](auto to_value) {
            using To = decltype(to_value);
            const From* src = t.data_ptr<From>();
            To* dst = out.data_ptr<To>();
            for (int64_t i = 0; i < t.num_elements(); ++i) dst[i] = static_cast<To>(static_cast<float>(src[i]));
        });
    });
    return out;
}

// Calls run<float> or run<double> on the kernel. Float16 and BFloat16 inputs are computed in
// float32 and the result rounded once to the input type (as oneDNN's half kernels accumulate).
// Other dtypes are rejected.
template <typename Kernel>
void dispatch_float(const Kernel& kernel, DType dtype, KernelContext& ctx, const Node& node) {
    switch (dtype) {
        case DType::Float32: return kernel.template run<float>(ctx);
        case DType::Float64: return kernel.template run<double>(ctx);
        case DType::Float16:
        case DType::BFloat16: {
            std::vector<Tensor> widened;
            widened.reserve(ctx.inputs.size());
            KernelContext wide = ctx;
            for (const Tensor*& t : wide.inputs) {
                if (!t) continue;
                if (t->dtype() != dtype) kernel.reject_dtype(t->dtype());
                t = &widened.emplace_back(convert_float(*t, DType::Float32, node));
            }
            kernel.template run<float>(wide);
            ctx.outputs[0] = convert_float(wide.outputs[0], dtype, node);
            return;
        }
        default: kernel.reject_dtype(dtype);
    }
}

// ---------------------------------------------------------------------------------------------
// Gemm: Y = alpha * op(A) * op(B) + beta * C, with C unidirectionally broadcast to (M, N).

// Rows and columns of C as it broadcasts to (M, N); nullopt when it cannot.
std::optional<std::pair<int64_t, int64_t>> gemm_bias_layout(const std::vector<int64_t>& c, int64_t m, int64_t n) {
    if (c.size() > 2) return std::nullopt;
    const int64_t rows = c.size() == 2 ? c[0] : 1;
    const int64_t cols = c.empty() ? 1 : c.back();
    if ((rows != 1 && rows != m) || (cols != 1 && cols != n)) return std::nullopt;
    return std::make_pair(rows, cols);
}

class GemmKernel final : public NodeKernel {
public:
    explicit GemmKernel(const Node& node)
        : NodeKernel(node),
          alpha_(node.get_attribute<double>("alpha", 1.0)),
          beta_(node.get_attribute<double>("beta", 1.0)),
          trans_a_(read_flag(node, "transA")),
          trans_b_(read_flag(node, "transB")) {}

    static bool read_flag(const Node& node, const char* name) {
        const int64_t v = node.get_attribute<int64_t>(name, 0);
        if (v != 0 && v != 1) fail_node(node, std::string("attribute '") + name + "' is " + std::to_string(v) + "; expected 0 or 1");
        return v == 1;
    }

    void compute(KernelContext& ctx) const override { dispatch_float(*this, ctx.input(0).dtype(), ctx, node_); }

    [[noreturn]] void reject_dtype(DType dtype) const {
        fail("input A is " + dtype_to_string(dtype) + "; this kernel takes Float32, Float64, Float16 or BFloat16 "
             "(every input the same type)");
    }

    template <typename T>
    void run(KernelContext& ctx) const {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        require_dtype(node_, b, a.dtype(), "input B");
        if (a.ndim() != 2 || b.ndim() != 2)
            fail("inputs must be matrices; got A " + shape_to_string(a.shape()) + " and B " + shape_to_string(b.shape()));
        const int64_t m = a.shape()[trans_a_ ? 1 : 0], k = a.shape()[trans_a_ ? 0 : 1];
        const int64_t kb = b.shape()[trans_b_ ? 1 : 0], n = b.shape()[trans_b_ ? 0 : 1];
        if (k != kb)
            fail("inner dimensions differ: op(A) is " + shape_to_string(std::vector<int64_t>{m, k}) + ", op(B) is " +
                 shape_to_string(std::vector<int64_t>{kb, n}) + " (transA=" + std::to_string(trans_a_) + ", transB=" +
                 std::to_string(trans_b_) + ")");
        Tensor y({m, n}, a.dtype());
        T* yd = y.data_ptr<T>();
        T beta = 0;
        if (ctx.has_input(2) && beta_ != 0.0) {
            const Tensor& c = ctx.input(2);
            require_dtype(node_, c, a.dtype(), "input C");
            const auto layout = gemm_bias_layout(c.shape(), m, n);
            if (!layout)
                fail("input C " + shape_to_string(c.shape()) + " cannot be broadcast to " + shape_to_string(std::vector<int64_t>{m, n}));
            const auto [rows, cols] = *layout;
            const T* cd = c.data_ptr<T>();
            for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < n; ++j) yd[i * n + j] = cd[(rows == 1 ? 0 : i) * cols + (cols == 1 ? 0 : j)];
            beta = static_cast<T>(beta_);
        }
        gemm(trans_a_, trans_b_, m, n, k, static_cast<T>(alpha_), a.data_ptr<T>(), b.data_ptr<T>(), beta, yd,
             ctx.num_threads);
        ctx.outputs[0] = std::move(y);
    }

private:
    double alpha_, beta_;
    bool trans_a_, trans_b_;
};

void infer_gemm(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return;
    const Node& node = ctx.node;
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.dtype != b.dtype)
        fail_node(node, "inputs A and B have different dtypes: " + dtype_to_string(a.dtype) + " and " +
                            dtype_to_string(b.dtype));
    if (a.shape.empty() || b.shape.empty()) return;  // rank unknown
    if (a.shape.size() != 2 || b.shape.size() != 2)
        fail_node(node, "inputs must be matrices; got A " + shape_to_string(a.shape) + " and B " + shape_to_string(b.shape));
    const bool ta = GemmKernel::read_flag(node, "transA"), tb = GemmKernel::read_flag(node, "transB");
    const auto m = a.shape[ta ? 1 : 0], k = a.shape[ta ? 0 : 1];
    const auto kb = b.shape[tb ? 1 : 0], n = b.shape[tb ? 0 : 1];
    if (k && kb && *k != *kb)
        fail_node(node, "inner dimensions differ: A " + shape_to_string(a.shape) + ", B " + shape_to_string(b.shape) +
                            " (transA=" + std::to_string(ta) + ", transB=" + std::to_string(tb) + ")");
    if (ctx.has_input(2) && m && n && is_static(ctx.input(2).shape)) {
        std::vector<int64_t> c;
        for (const auto& d : ctx.input(2).shape) c.push_back(*d);
        if (!gemm_bias_layout(c, *m, *n))
            fail_node(node, "input C " + shape_to_string(c) + " cannot be broadcast to " + shape_to_string(std::vector<int64_t>{*m, *n}));
    }
    ctx.set_output(0, a.dtype, {m, n});
}

// ---------------------------------------------------------------------------------------------
// MatMul: numpy semantics (1-D operands promoted then squeezed, batch dims broadcast).

}  // namespace

std::vector<int64_t> batch_offsets(const std::vector<int64_t>& batch, const std::vector<int64_t>& dims) {
    const size_t skip = batch.size() - dims.size();
    std::vector<int64_t> strides(batch.size(), 0);
    for (int64_t i = static_cast<int64_t>(dims.size()) - 1, s = 1; i >= 0; --i) {
        if (dims[i] != 1) strides[skip + i] = s;
        s *= dims[i];
    }
    std::vector<int64_t> offsets(static_cast<size_t>(num_elements_of(batch)));
    std::vector<int64_t> index(batch.size(), 0);
    int64_t offset = 0;
    for (auto& o : offsets) {
        o = offset;
        for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {  // odometer step
            offset += strides[d];
            if (++index[d] < batch[d]) break;
            offset -= strides[d] * batch[d];
            index[d] = 0;
        }
    }
    return offsets;
}

namespace {

class MatMulKernel final : public NodeKernel {
public:
    explicit MatMulKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override { dispatch_float(*this, ctx.input(0).dtype(), ctx, node_); }

    [[noreturn]] void reject_dtype(DType dtype) const {
        fail("input A is " + dtype_to_string(dtype) + "; this kernel takes Float32, Float64, Float16 or BFloat16 "
             "(every input the same type)");
    }

    template <typename T>
    void run(KernelContext& ctx) const {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        require_dtype(node_, b, a.dtype(), "input B");
        if (a.ndim() == 0 || b.ndim() == 0)
            fail("inputs must have rank >= 1; got A " + shape_to_string(a.shape()) + " and B " + shape_to_string(b.shape()));
        std::vector<int64_t> as = a.shape(), bs = b.shape();
        if (as.size() == 1) as.insert(as.begin(), 1);
        if (bs.size() == 1) bs.push_back(1);
        const int64_t m = as[as.size() - 2], k = as.back(), kb = bs[bs.size() - 2], n = bs.back();
        if (k != kb)
            fail("inner dimensions differ: A " + shape_to_string(a.shape()) + " and B " + shape_to_string(b.shape()));
        const std::vector<int64_t> batch_a = slice(as, 0, as.size() - 2), batch_b = slice(bs, 0, bs.size() - 2);
        std::vector<int64_t> batch;
        try {
            batch = broadcast_shapes(batch_a, batch_b);
        } catch (const ValidationError&) {
            fail("batch dimensions of A " + shape_to_string(a.shape()) + " and B " + shape_to_string(b.shape()) +
                 " cannot be broadcast");
        }
        std::vector<int64_t> out_shape = batch;
        if (a.ndim() > 1) out_shape.push_back(m);
        if (b.ndim() > 1) out_shape.push_back(n);
        Tensor y(out_shape, a.dtype());

        const T* ad = a.data_ptr<T>();
        const T* bd = b.data_ptr<T>();
        T* yd = y.data_ptr<T>();
        const int64_t count = num_elements_of(batch);
        const int threads = threads_for_work(2.0 * static_cast<double>(count) * m * n * k, ctx.num_threads);
        if (num_elements_of(batch_b) == 1) {
            // One B for every batch: A's matrices are contiguous, so stack them into one GEMM.
            gemm(false, false, count * m, n, k, T(1), ad, bd, T(0), yd, threads);
        } else {
            const std::vector<int64_t> a_off = batch_offsets(batch, batch_a), b_off = batch_offsets(batch, batch_b);
            auto multiply = [&](int64_t t, int gemm_threads) {
                gemm(false, false, m, n, k, T(1), ad + a_off[t] * m * k, bd + b_off[t] * k * n, T(0), yd + t * m * n,
                     gemm_threads);
            };
            if (count >= threads) {
                parallel_for(count, threads, [&](int64_t begin, int64_t end) {
                    for (int64_t t = begin; t < end; ++t) multiply(t, 1);
                });
            } else {
                for (int64_t t = 0; t < count; ++t) multiply(t, threads);
            }
        }
        ctx.outputs[0] = std::move(y);
    }
};

void infer_matmul(InferenceContext& ctx) {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return;
    const Node& node = ctx.node;
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.dtype != b.dtype)
        fail_node(node, "inputs A and B have different dtypes: " + dtype_to_string(a.dtype) + " and " +
                            dtype_to_string(b.dtype));
    if (a.shape.empty() || b.shape.empty()) return;  // rank unknown
    Shape as = a.shape, bs = b.shape;
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const auto k = as.back(), kb = bs[bs.size() - 2];
    if (k && kb && *k != *kb)
        fail_node(node, "inner dimensions differ: A " + shape_to_string(a.shape) + " and B " + shape_to_string(b.shape));
    Shape out;
    try {
        out = broadcast_shapes(Shape(as.begin(), as.end() - 2), Shape(bs.begin(), bs.end() - 2));
    } catch (const ValidationError&) {
        fail_node(node, "batch dimensions of A " + shape_to_string(a.shape) + " and B " + shape_to_string(b.shape) +
                            " cannot be broadcast");
    }
    if (a.shape.size() > 1) out.push_back(as[as.size() - 2]);
    if (b.shape.size() > 1) out.push_back(bs.back());
    ctx.set_output(0, a.dtype, std::move(out));
}

}  // namespace

void register_matmul_ops(OpTable& table) {
    table.add(OpSchema{"Gemm", "", 7, 2, 3, 1, 1, infer_gemm,
                       [](const KernelInfo& info) { return std::make_unique<GemmKernel>(info.node); }});
    table.add(OpSchema{"MatMul", "", 1, 2, 2, 1, 1, infer_matmul,
                       [](const KernelInfo& info) { return std::make_unique<MatMulKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
