// Integer kernels of the CPU backend: QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger on
// oneDNN's int8 convolution and matmul (u8/s8 activations, s8 weights, s32 accumulation, VNNI
// where the CPU has it), the optimizer's fused forms (com.pyflame FusedQLinearConv,
// DynamicQuantizeMatMul, QLinearAdd, QLinearConvAdd; see ops/fused_quant_ops.cpp), and vectorized per-tensor
// QuantizeLinear (also straight from a float convolution's oneDNN layout), DequantizeLinear and
// DynamicQuantizeLinear.
//
// Scales ride on the weights: the primitive's per-output-channel weight scale is
// x_scale * w_scale[m] / y_scale (rounded in float32 at each step, as the reference does), so
// the int32 accumulator is requantized in one multiply, and an int32 bias B becomes the float
// bias B * multiplier. Zero points of activations are oneDNN zero-point attributes; weights
// must have zero zero-points (anything else, and uint8 weights, stay on the reference kernel).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

using DataType = dnnl::memory::data_type;

std::optional<DataType> int8_type(DType d) {
    if (d == DType::Int8) return DataType::s8;
    if (d == DType::UInt8) return DataType::u8;
    return std::nullopt;
}

bool is_f32_scalar(const Tensor& t) { return t.dtype() == DType::Float32 && t.num_elements() == 1; }

// An 8-bit zero point's value (0 when absent); nullopt when it is not one 8-bit value of `dtype`.
std::optional<int32_t> scalar_zero_point(const Tensor* zp, DType dtype) {
    if (!zp) return 0;
    if (zp->dtype() != dtype || zp->num_elements() != 1) return std::nullopt;
    return dtype == DType::Int8 ? int32_t{zp->data_ptr<int8_t>()[0]} : int32_t{zp->data_ptr<uint8_t>()[0]};
}

bool all_zero(const Tensor* t) {
    if (!t) return true;
    const auto* p = static_cast<const uint8_t*>(t->data());
    return std::all_of(p, p + t->size_bytes(), [](uint8_t b) { return b == 0; });
}

// ---- 8-lane helpers (the library is built for x86-64-v3: AVX2) ----

template <typename T>
__m256 load8(const T* p) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<T, int8_t>) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    else return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
}

// round_half_even(v / scale) + zp, saturated to [lo, hi]; NaN lands on lo (as the reference).
inline __m256i quantize_lanes(__m256 v, __m256 scale, __m256 zp, __m256 lo, __m256 hi) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_add_ps(q, zp);
    q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);  // max_ps returns its second operand for NaN
    return _mm256_cvtps_epi32(q);
}

template <typename T>
void store8(__m256i v, T* out) {  // v already within T's range
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i bytes = std::is_same_v<T, int8_t> ? _mm_packs_epi16(words, words) : _mm_packus_epi16(words, words);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), bytes);
}

template <typename T>
constexpr float range_lo() { return std::is_same_v<T, int8_t> ? -128.0f : 0.0f; }
template <typename T>
constexpr float range_hi() { return std::is_same_v<T, int8_t> ? 127.0f : 255.0f; }

template <typename T>
T quantize_one(float v, float scale, float zp) {
    const float q = std::nearbyint(v / scale) + zp;
    return static_cast<T>(std::isnan(q) ? range_lo<T>() : std::clamp(q, range_lo<T>(), range_hi<T>()));
}

// y[i] = saturate(round(x[i] / scale) + zp) over [begin, end).
template <typename T>
void quantize_range(const float* x, T* y, int64_t begin, int64_t end, float scale, float zp) {
    const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zp);
    const __m256 lo = _mm256_set1_ps(range_lo<T>()), hi = _mm256_set1_ps(range_hi<T>());
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) store8(quantize_lanes(_mm256_loadu_ps(x + i), vs, vz, lo, hi), y + i);
    for (; i < end; ++i) y[i] = quantize_one<T>(x[i], scale, zp);
}

// Splits [0, n) over the session's threads when there is enough work to pay for them.
void parallel_elements(int64_t n, int num_threads, const std::function<void(int64_t, int64_t)>& fn) {
    const int threads = ops::threads_for_work(static_cast<double>(n) * 4, num_threads);
    if (threads <= 1) return fn(0, n);
    ops::parallel_for((n + 4095) / 4096, threads,
                      [&](int64_t b, int64_t e) { fn(b * 4096, std::min(n, e * 4096)); });
}

template <typename F>
void dispatch8(DType d, F&& fn) {
    if (d == DType::Int8) fn(int8_t{});
    else fn(uint8_t{});
}

// Two one-byte layouts that put every element at the same offset.
bool same_byte_order(const dnnl::memory::desc& a, const dnnl::memory::desc& b) {
    if (a == b) return true;
    return a.get_format_kind() == dnnl::memory::format_kind::blocked &&
           b.get_format_kind() == dnnl::memory::format_kind::blocked && a.get_dims() == b.get_dims() &&
           a.get_padded_dims() == b.get_padded_dims() && a.get_padded_offsets() == b.get_padded_offsets() &&
           a.get_strides() == b.get_strides() && a.get_inner_blks() == b.get_inner_blks() &&
           a.get_inner_idxs() == b.get_inner_idxs() && a.get_size() == b.get_size() &&
           a.get_submemory_offset() == b.get_submemory_offset();
}
// `desc` with another one-byte element type; nullopt when the layout has inner blocks (not
// expressible by strides alone) and the types differ.
std::optional<dnnl::memory::desc> with_type(const dnnl::memory::desc& desc, DataType type) {
    if (desc.get_data_type() == type) return desc;
    if (desc.get_format_kind() != dnnl::memory::format_kind::blocked || desc.get_inner_nblks() != 0 ||
        desc.get_padded_dims() != desc.get_dims() || desc.get_submemory_offset() != 0)
        return std::nullopt;
    return dnnl::memory::desc(desc.get_dims(), type, desc.get_strides());
}

// ---------------------------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear, per tensor, float32 <-> int8/uint8.

// Row k of the result holds lane k of every input row (a transposed 8x8 block of int32).
inline void transpose8x8(__m256i r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
        t[2 * i + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[2 * i]), _mm256_castsi256_ps(r[2 * i + 1]));
    }
    for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
        u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; ++k) {
        r[k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        r[k + 4] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

// A float32 layout whose element (n, c, spatial position s) lies at n * batch_stride +
// (c / block) * block_stride + s * block + c % block: one channel block (nChw8c, nChw16c) or
// channels-last (block = C). Its numbers, or nullopt for any other layout.
struct ChannelBlocks {
    int64_t batch, channels, spatial, block, batch_stride, block_stride;
};
std::optional<ChannelBlocks> channel_blocks(const dnnl::memory::desc& desc) {
    if (desc.get_format_kind() != dnnl::memory::format_kind::blocked || desc.get_data_type() != DataType::f32 ||
        desc.get_submemory_offset() != 0)
        return std::nullopt;
    const Dims dims = desc.get_dims(), padded = desc.get_padded_dims(), strides = desc.get_strides();
    if (dims.size() < 3) return std::nullopt;
    ChannelBlocks b{dims[0], dims[1], 1, 0, strides[0], strides[1]};
    for (size_t d = 2; d < dims.size(); ++d) b.spatial *= dims[d];
    if (desc.get_inner_nblks() == 1 && desc.get_inner_idxs()[0] == 1) {
        b.block = desc.get_inner_blks()[0];
    } else if (desc.get_inner_nblks() == 0 && strides[1] == 1 && padded[1] == dims[1]) {
        b.block = dims[1];
        b.block_stride = 0;
    } else {
        return std::nullopt;
    }
    int64_t expect = b.block;  // spatial dims dense, the last innermost, `block` elements apart
    for (size_t d = dims.size(); d-- > 2;) {
        if (padded[d] != dims[d] || (dims[d] > 1 && strides[d] != expect)) return std::nullopt;
        expect *= dims[d];
    }
    return b;
}

class QuantizeKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const Node& n = info.node;
        if (n.get_attribute<int64_t>("block_size", 0) != 0 || n.has_attribute("precision") || n.has_attribute("output_dtype"))
            return reference;
        return std::make_unique<QuantizeKernel>(info, std::move(reference));
    }
    QuantizeKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)) {}

    // A float convolution's blocked output (where the float part of a model meets its int8
    // part) is quantized straight into the row-major output: no float reorder first.
    bool reads_layout(size_t input) const override { return input == 0; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& scale = ctx.input(1);
        const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        // Without a zero point the output is uint8 (the reference words errors and odd types).
        if (x.dtype() != DType::Float32 || !is_f32_scalar(scale) || scale.ndim() > 1 || (zp && zp->ndim() > 1) ||
            (zp && !int8_type(zp->dtype())))
            return fallback(ctx);
        const DType out = zp ? zp->dtype() : DType::UInt8;
        const float s = scale.data_ptr<float>()[0];
        const float z = static_cast<float>(*scalar_zero_point(zp, out));
        Tensor y(x.shape(), out);
        std::optional<ChannelBlocks> blocks;
        if (const auto* layout = dynamic_cast<const OneDnnLayout*>(x.layout())) blocks = channel_blocks(layout->desc());
        if (blocks) {
            dispatch8(out, [&](auto tag) { quantize_blocked<decltype(tag)>(x, y, *blocks, s, z, ctx.num_threads); });
        } else {
            const Tensor plain = x.plain();
            dispatch8(out, [&](auto tag) {
                using T = decltype(tag);
                parallel_elements(plain.num_elements(), ctx.num_threads, [&](int64_t b, int64_t e) {
                    quantize_range(plain.data_ptr<float>(), y.data_ptr<T>(), b, e, s, z);
                });
            });
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    // Per (image, channel block): tiles of 8 positions x 8 channels, read contiguously from the
    // layout, quantized, transposed, and stored as 8 bytes of each channel's row-major plane.
    template <typename T>
    static void quantize_blocked(const Tensor& x, Tensor& y, const ChannelBlocks& b, float s, float z, int num_threads) {
        const int64_t block_count = (b.channels + b.block - 1) / b.block;
        const float* xd = x.data_ptr<float>();
        T* yd = y.data_ptr<T>();
        const int threads = std::max(1, ops::threads_for_work(static_cast<double>(x.num_elements()) * 4, num_threads));
        ops::parallel_for(b.batch * block_count, threads, [&](int64_t begin, int64_t end) {
            const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
            const __m256 lo = _mm256_set1_ps(range_lo<T>()), hi = _mm256_set1_ps(range_hi<T>());
            for (int64_t job = begin; job < end; ++job) {
                const int64_t n = job / block_count, c0 = job % block_count * b.block;
                const int64_t width = std::min(b.block, b.channels - c0);
                const float* src = xd + n * b.batch_stride + job % block_count * b.block_stride;
                T* dst = yd + (n * b.channels + c0) * b.spatial;
                const int64_t tiled_width = width / 8 * 8, tiled_spatial = b.spatial / 8 * 8;
                // Chunks of 64 positions: their values (up to 64 x C floats channels-last) stay
                // in cache while each group of 8 channels writes 64 bytes of its 8 planes.
                for (int64_t chunk = 0; chunk < tiled_spatial; chunk += 64)
                    for (int64_t c = 0; c < tiled_width; c += 8)
                        for (int64_t sp = chunk; sp < std::min(chunk + 64, tiled_spatial); sp += 8) {
                            __m256i rows[8];
                            for (int j = 0; j < 8; ++j)
                                rows[j] = quantize_lanes(_mm256_loadu_ps(src + (sp + j) * b.block + c), vs, vz, lo, hi);
                            transpose8x8(rows);
                            for (int k = 0; k < 8; ++k) store8(rows[k], dst + (c + k) * b.spatial + sp);
                        }
                for (int64_t c = 0; c < width; ++c)  // what the tiles left
                    for (int64_t sp = c < tiled_width ? tiled_spatial : 0; sp < b.spatial; ++sp)
                        dst[c * b.spatial + sp] = quantize_one<T>(src[sp * b.block + c], s, z);
            }
        });
    }
};

class DequantizeKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const Node& n = info.node;
        if (n.get_attribute<int64_t>("block_size", 0) != 0 || n.has_attribute("output_dtype")) return reference;
        return std::make_unique<DequantizeKernel>(info, std::move(reference));
    }
    DequantizeKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& scale = ctx.input(1);
        const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        if (!int8_type(x.dtype()) || !is_f32_scalar(scale) || scale.ndim() > 1 || (zp && zp->ndim() > 1) ||
            !scalar_zero_point(zp, x.dtype()))
            return fallback(ctx);
        const float s = scale.data_ptr<float>()[0];
        const float z = static_cast<float>(*scalar_zero_point(zp, x.dtype()));
        Tensor y(x.shape(), DType::Float32);
        float* yd = y.data_ptr<float>();
        dispatch8(x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* xd = x.data_ptr<T>();
            parallel_elements(x.num_elements(), ctx.num_threads, [&](int64_t b, int64_t e) {
                const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
                int64_t i = b;
                for (; i + 8 <= e; i += 8) _mm256_storeu_ps(yd + i, _mm256_mul_ps(_mm256_sub_ps(load8(xd + i), vz), vs));
                for (; i < e; ++i) yd[i] = (static_cast<float>(xd[i]) - z) * s;
            });
        });
        ctx.outputs[0] = std::move(y);
    }
};

// ---------------------------------------------------------------------------------------------
// DynamicQuantizeLinear: uint8 over [min(x, 0), max(x, 0)], exactly as the reference computes.

struct DynamicParams {
    float scale, zero_point;
};

DynamicParams dynamic_range(const float* x, int64_t n) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        lo = _mm256_min_ps(v, lo);  // second operand for NaN: NaN never becomes the bound
        hi = _mm256_max_ps(v, hi);
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, lo);
    _mm256_storeu_ps(h, hi);
    float mn = 0.0f, mx = 0.0f;
    for (int k = 0; k < 8; ++k) mn = std::min(mn, l[k]), mx = std::max(mx, h[k]);
    for (; i < n; ++i) mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
    const float scale = (mx == mn ? 1.0f : mx - mn) / 255.0f;
    return {scale, std::nearbyint(std::clamp(0.0f - mn / scale, 0.0f, 255.0f))};
}

class DynamicQuantizeKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<DynamicQuantizeKernel>(info, std::move(reference));
    }
    DynamicQuantizeKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.dtype() != DType::Float32) return fallback(ctx);
        const int64_t n = x.num_elements();
        const DynamicParams p = dynamic_range(x.data_ptr<float>(), n);
        Tensor y(x.shape(), DType::UInt8);
        // The reference maps NaN to 0 here (not to the low end, as QuantizeLinear does); the
        // vector path's NaN lands on lo = 0 too.
        parallel_elements(n, ctx.num_threads, [&](int64_t b, int64_t e) {
            quantize_range(x.data_ptr<float>(), y.data_ptr<uint8_t>(), b, e, p.scale, p.zero_point);
        });
        Tensor s({}, DType::Float32), z({}, DType::UInt8);
        *s.data_ptr<float>() = p.scale;
        *z.data_ptr<uint8_t>() = static_cast<uint8_t>(p.zero_point);
        ctx.outputs[0] = std::move(y);
        ctx.outputs[1] = std::move(s);
        ctx.outputs[2] = std::move(z);
    }
};

// ---------------------------------------------------------------------------------------------
// QLinearAdd (com.pyflame): C = Q(DQ(A) + DQ(B)) in one pass, same float32 steps as the parts.

class QLinearAddKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<QLinearAddKernel>(info, std::move(reference));
    }
    QLinearAddKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)) {}

    // Elementwise, so any layout works as long as both inputs share it: int8 channels-last
    // tensors from the convolutions around it pass through unchanged.
    bool reads_layout(size_t input) const override { return input == 0 || input == 3; }
    bool writes_layout(size_t output) const override { return output == 0; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor* a_in = &ctx.input(0);
        const Tensor* b_in = &ctx.input(3);
        const auto* a_layout = dynamic_cast<const OneDnnLayout*>(a_in->layout());
        const auto* b_layout = dynamic_cast<const OneDnnLayout*>(b_in->layout());
        const DType c_type = ctx.has_input(7) ? ctx.input(7).dtype() : DType::UInt8;
        // Over the shared layout when both inputs lie in it (int8 and uint8 alike: one byte per
        // element) and the output may too; else on row-major copies.
        std::optional<dnnl::memory::desc> c_desc;
        if (a_layout && b_layout && same_byte_order(a_layout->desc(), b_layout->desc()) && int8_type(c_type) &&
            ctx.may_write_layout(0))
            c_desc = with_type(a_layout->desc(), *int8_type(c_type));
        const bool in_layout = c_desc.has_value();
        Tensor a_plain, b_plain;
        if (!in_layout && !a_in->is_plain()) a_plain = a_in->plain(), a_in = &a_plain;
        if (!in_layout && !b_in->is_plain()) b_plain = b_in->plain(), b_in = &b_plain;
        const Tensor& a = *a_in;
        const Tensor& b = *b_in;
        const Tensor* zps[3] = {ctx.has_input(2) ? &ctx.input(2) : nullptr, ctx.has_input(5) ? &ctx.input(5) : nullptr,
                                ctx.has_input(7) ? &ctx.input(7) : nullptr};
        if (!int8_type(a.dtype()) || !int8_type(b.dtype()) || a.shape() != b.shape() || !zps[2] ||
            !int8_type(zps[2]->dtype()) || !is_f32_scalar(ctx.input(1)) || !is_f32_scalar(ctx.input(4)) ||
            !is_f32_scalar(ctx.input(6)) || !scalar_zero_point(zps[0], a.dtype()) || !scalar_zero_point(zps[1], b.dtype()) ||
            !scalar_zero_point(zps[2], zps[2]->dtype()))
            return fallback(ctx);  // (fallback reads row-major copies of layout inputs)
        const float as = ctx.input(1).data_ptr<float>()[0], bs = ctx.input(4).data_ptr<float>()[0];
        const float cs = ctx.input(6).data_ptr<float>()[0];
        const float az = static_cast<float>(*scalar_zero_point(zps[0], a.dtype()));
        const float bz = static_cast<float>(*scalar_zero_point(zps[1], b.dtype()));
        const float cz = static_cast<float>(*scalar_zero_point(zps[2], zps[2]->dtype()));
        Tensor c = in_layout ? Tensor(a.shape(), zps[2]->dtype(), output_layout(*c_desc))
                             : Tensor(a.shape(), zps[2]->dtype());
        // One byte per element: the storage, padding included, is the element range.
        const int64_t count = in_layout ? static_cast<int64_t>(a_layout->storage_bytes()) : a.num_elements();
        dispatch8(a.dtype(), [&](auto ta) {
            dispatch8(b.dtype(), [&](auto tb) {
                dispatch8(c.dtype(), [&](auto tc) {
                    using A = decltype(ta);
                    using B = decltype(tb);
                    using C = decltype(tc);
                    const A* ad = a.data_ptr<A>();
                    const B* bd = b.data_ptr<B>();
                    C* cd = c.data_ptr<C>();
                    parallel_elements(count, ctx.num_threads, [&](int64_t begin, int64_t end) {
                        const __m256 vas = _mm256_set1_ps(as), vbs = _mm256_set1_ps(bs), vcs = _mm256_set1_ps(cs);
                        const __m256 vaz = _mm256_set1_ps(az), vbz = _mm256_set1_ps(bz), vcz = _mm256_set1_ps(cz);
                        const __m256 lo = _mm256_set1_ps(range_lo<C>()), hi = _mm256_set1_ps(range_hi<C>());
                        int64_t i = begin;
                        // The empty asm statements keep each product rounded on its own, as
                        // the separate DequantizeLinear nodes round it (no fused multiply-add).
                        for (; i + 8 <= end; i += 8) {
                            __m256 x = _mm256_mul_ps(_mm256_sub_ps(load8(ad + i), vaz), vas);
                            __m256 y = _mm256_mul_ps(_mm256_sub_ps(load8(bd + i), vbz), vbs);
                            __asm__("" : "+x"(x), "+x"(y));
                            store8(quantize_lanes(_mm256_add_ps(x, y), vcs, vcz, lo, hi), cd + i);
                        }
                        for (; i < end; ++i) {
                            float x = (static_cast<float>(ad[i]) - az) * as;
                            float y = (static_cast<float>(bd[i]) - bz) * bs;
                            __asm__("" : "+x"(x), "+x"(y));
                            cd[i] = quantize_one<C>(x + y, cs, cz);
                        }
                    });
                });
            });
        });
        ctx.outputs[0] = std::move(c);
    }

private:
    // The output's layout object for an input layout, made once per layout (it owns a reorder).
    std::shared_ptr<const OneDnnLayout> output_layout(const dnnl::memory::desc& desc) const {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& layout : layouts_)
            if (layout->desc() == desc) return layout;
        layouts_.push_back(std::make_shared<OneDnnLayout>(desc));
        return layouts_.back();
    }

    mutable std::mutex mutex_;
    mutable std::vector<std::shared_ptr<const OneDnnLayout>> layouts_;
};

// ---------------------------------------------------------------------------------------------
// Requantization multipliers: f32(f32(x_scale * w_scale[m]) / y_scale), as the reference rounds
// float32 scales; without a y_scale (integer or float outputs) just the product.

std::vector<float> multipliers(float x_scale, const Tensor* w_scale, int64_t count, const float* y_scale) {
    std::vector<float> out(static_cast<size_t>(count));
    const float* ws = w_scale ? w_scale->data_ptr<float>() : nullptr;
    for (int64_t m = 0; m < count; ++m) {
        const float w = ws ? ws[w_scale->num_elements() == 1 ? 0 : m] : 1.0f;
        const float prod = x_scale * w;
        out[m] = y_scale ? prod / *y_scale : prod;
    }
    return out;
}

// The activation of a fused node as an eltwise post-op over v / y_scale (the primitive's value
// before the output zero point is added): Relu, or Clip(lo, hi) scaled by 1 / y_scale.
struct Activation {
    enum Kind { None, Relu, Clip } kind = None;
    float lo = 0, hi = 0;

    static Activation parse(const Node& node) {
        Activation a;
        if (!node.has_attribute("activation")) return a;
        const std::string op = node.get_attribute<std::string>("activation");
        const auto p = node.get_attribute<std::vector<double>>("activation_params", {});
        if (op == "Relu") a.kind = Relu;
        else if (op == "Clip" && p.size() == 2) a.kind = Clip, a.lo = static_cast<float>(p[0]), a.hi = static_cast<float>(p[1]);
        else ops::fail_node(node, "unsupported fused activation '" + op + "'");
        return a;
    }
    void append(dnnl::post_ops& ops, float y_scale) const {
        if (kind == Relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        if (kind == Clip) ops.append_eltwise(dnnl::algorithm::eltwise_clip, lo / y_scale, hi / y_scale);
    }
};

dnnl::memory scalar_s32(int32_t& value) { return memory_over(plain_desc({1}, DataType::s32), &value); }

// ---------------------------------------------------------------------------------------------
// Int8 convolution: QLinearConv, FusedQLinearConv (com.pyflame: + activation), ConvInteger.

struct QConvEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc x_plain, w_plain, y_plain, weights, dst, scales, bias;
    Step conv;
    std::optional<ReorderInto> src_into;             // X, row-major or another primitive's layout
    std::optional<Step> weights_reorder;             // non-constant weights
    OutputLayout output;  // kept int8 channels-last between int8 convolutions
    dnnl::memory packed_weights;
    dnnl::memory::desc sum_src, sum_dst;  // QLinearConvAdd: S as given, and S over dst's layout
    std::optional<Step> sum_reorder;      // when S's bytes are not already in dst's order
};

class QConvKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<QConvKernel>(info, std::move(reference));
    }

    QConvKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          integer_(info.node.op_type() == "ConvInteger"),
          sum_(info.node.op_type() == "QLinearConvAdd"),
          window_(ops::WindowAttributes::parse(info.node, false)),
          group_(info.node.get_attribute<int64_t>("group", 1)),
          activation_(Activation::parse(info.node)) {
        const Tensor* w = info.constant_input(integer_ ? 1 : 3);
        if (w && w->dtype() == DType::Int8) weights_.emplace(*w);
        if (const Tensor* ys = info.constant_input(6); !integer_ && ys && is_f32_scalar(*ys))
            constant_y_scale_ = ys->data_ptr<float>()[0];
        // Constant scales (and int32 bias), as QDQ models have them: the requantization
        // multipliers and the float bias are computed once, not on every run.
        const Tensor *xs = info.constant_input(1), *ws = info.constant_input(4), *b = info.constant_input(8);
        if (!integer_ && w && constant_y_scale_ && xs && is_f32_scalar(*xs) && ws && ws->dtype() == DType::Float32 &&
            (ws->num_elements() == 1 || ws->num_elements() == w->shape()[0])) {
            const int64_t maps = w->shape()[0];
            fixed_scales_ = multipliers(xs->data_ptr<float>()[0], ws, maps, &*constant_y_scale_);
            if (b && b->dtype() == DType::Int32 && b->num_elements() == maps)
                for (int64_t m = 0; m < maps; ++m) fixed_bias_.push_back(static_cast<float>(b->data_ptr<int32_t>()[m]) * fixed_scales_[m]);
            if (info.node.has_input(8) && fixed_bias_.empty()) fixed_scales_.clear();  // a bias computed per run
        }
        if (sum_) {
            // The sum post-op's scale and zero point are fixed when the primitive is made.
            const Tensor* ss = info.constant_input(10);
            const Tensor* sz = info.node.has_input(11) ? info.constant_input(11) : nullptr;
            if (constant_y_scale_ && ss && is_f32_scalar(*ss) && (!info.node.has_input(11) || (sz && int8_type(sz->dtype()))))
                sum_params_ = SumParams{ss->data_ptr<float>()[0] / *constant_y_scale_,
                                        sz ? *scalar_zero_point(sz, sz->dtype()) : 0};
        }
    }

    void compute(ops::KernelContext& ctx) const override {
        apply_thread_budget(ctx.num_threads);
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(integer_ ? 1 : 3);
        const Tensor* x_zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        const Tensor* w_zp = ctx.has_input(integer_ ? 3 : 5) ? &ctx.input(integer_ ? 3 : 5) : nullptr;
        const Tensor* bias = !integer_ && ctx.has_input(8) ? &ctx.input(8) : nullptr;
        const Tensor* y_zp = integer_ ? nullptr : &ctx.input(7);
        const std::optional<int32_t> xz = scalar_zero_point(x_zp, x.dtype());
        if (!int8_type(x.dtype()) || w.dtype() != DType::Int8 || !xz || !handles_shapes(x, w)) return fallback(ctx);
        if (w_zp && (w_zp->dtype() != DType::Int8 || !all_zero(w_zp))) return fallback(ctx);
        const int64_t maps = w.shape()[0];
        std::optional<int32_t> yz;
        if (!integer_) {
            const Tensor& ws = ctx.input(4);
            if (!is_f32_scalar(ctx.input(1)) || !is_f32_scalar(ctx.input(6)) || ws.dtype() != DType::Float32 ||
                (ws.num_elements() != 1 && ws.num_elements() != maps) || !int8_type(y_zp->dtype()))
                return fallback(ctx);
            yz = scalar_zero_point(y_zp, y_zp->dtype());
            if (!yz || (bias && (bias->dtype() != DType::Int32 || bias->num_elements() != maps))) return fallback(ctx);
            if (activation_.kind == Activation::Clip &&
                (!constant_y_scale_ || *constant_y_scale_ != ctx.input(6).data_ptr<float>()[0]))
                return fallback(ctx);  // the clip bounds were scaled by the session's y_scale
        }
        const DType out = integer_ ? DType::Int32 : y_zp->dtype();
        const Tensor* sum = sum_ ? &ctx.input(9) : nullptr;
        if (sum_ && (!sum_params_ || !int8_type(sum->dtype()) || *constant_y_scale_ != ctx.input(6).data_ptr<float>()[0] ||
                     (ctx.has_input(11) && ctx.input(11).dtype() != sum->dtype())))
            return fallback(ctx);
        std::vector<int64_t> key = x.shape();
        if (sum) {
            const dnnl::memory::desc sum_desc = desc_of(*sum, plain_desc(to_dims(sum->shape()), *int8_type(sum->dtype())));
            key.push_back(static_cast<int64_t>(sum->dtype()));
            for (int64_t k : layout_key(sum_desc)) key.push_back(k);
        }
        key.insert(key.end(), w.shape().begin(), w.shape().end());
        key.push_back(static_cast<int64_t>(x.dtype()));
        key.push_back(static_cast<int64_t>(out));
        key.push_back(bias != nullptr);
        // Zero points of 0 (uint8 after a Relu, symmetric int8) leave the attribute out: oneDNN
        // then skips the zero-point compensation (and for uint8 sources any compensation).
        const bool src_zp = *xz != 0, dst_zp = yz.value_or(0) != 0;
        key.push_back(src_zp);
        key.push_back(dst_zp);
        const auto entry = cache_.get(key, [&] { return build(x, w.shape(), out, bias != nullptr, src_zp, dst_zp, sum); });
        if (!entry) return fallback(ctx);
        if (sum && sum->shape() != entry->out_shape) return fallback(ctx);

        dnnl::stream& stream = thread_stream();
        const dnnl::memory src = (*entry->src_into)(stream, memory_over(desc_of(x, entry->x_plain), x.data()), Buffer::Src);
        const dnnl::memory weights = entry->packed_weights ? entry->packed_weights
                                                           : relayout(stream, entry->weights_reorder,
                                                                      memory_over(entry->w_plain, w.data()),
                                                                      entry->weights, Buffer::Weights);
        // Written in the convolution's own layout (int8 channels-last) when every reader takes
        // it: chains of int8 convolutions then never reorder between them.
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        const dnnl::memory& dst = y.dst;
        int32_t src_zero_point = *xz, dst_zero_point = yz.value_or(0);
        ExecArgs args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
        if (src_zp) args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, scalar_s32(src_zero_point));
        std::vector<float> scales, float_bias;  // only when the scales are not constant
        if (!integer_) {
            const bool fixed = !fixed_scales_.empty();
            if (!fixed) {
                const float ys = ctx.input(6).data_ptr<float>()[0];
                scales = multipliers(ctx.input(1).data_ptr<float>()[0], &ctx.input(4), maps, &ys);
            }
            const std::vector<float>& multiplier = fixed ? fixed_scales_ : scales;
            args.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, memory_over(entry->scales, multiplier.data()));
            if (dst_zp) args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, scalar_s32(dst_zero_point));
            if (bias && !fixed) {
                float_bias.resize(static_cast<size_t>(maps));
                for (int64_t m = 0; m < maps; ++m) float_bias[m] = static_cast<float>(bias->data_ptr<int32_t>()[m]) * scales[m];
            }
            if (bias) args.emplace(DNNL_ARG_BIAS, memory_over(entry->bias, fixed ? fixed_bias_.data() : float_bias.data()));
        }
        if (sum) {  // the sum post-op adds what dst holds: S, in dst's layout
            if (entry->sum_reorder)
                entry->sum_reorder->execute(stream, {{DNNL_ARG_FROM, memory_over(entry->sum_src, sum->data())},
                                                     {DNNL_ARG_TO, memory_over(entry->sum_dst, dst.get_data_handle())}});
            else
                std::memcpy(dst.get_data_handle(), sum->data(), entry->dst.get_size());
        }
        entry->conv.execute(stream, std::move(args));
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

    bool reads_layout(size_t input) const override { return input == 0 || (sum_ && input == 9); }
    bool writes_layout(size_t output) const override { return output == 0; }

private:
    struct SumParams {
        float scale;  // S_scale / y_scale: S's steps in output steps
        int32_t zero_point;
    };

    bool handles_shapes(const Tensor& x, const Tensor& w) const {
        const size_t rank = x.ndim();
        if (rank < 3 || rank > 5 || w.ndim() != rank || x.num_elements() == 0 || w.num_elements() == 0) return false;
        const int64_t maps = w.shape()[0];
        if (x.shape()[1] != w.shape()[1] * group_ || maps % group_ != 0) return false;
        return window_.kernel_shape.empty() ||
               window_.kernel_shape == std::vector<int64_t>(w.shape().begin() + 2, w.shape().end());
    }

    std::shared_ptr<const QConvEntry> build(const Tensor& x, const std::vector<int64_t>& w_shape, DType out,
                                            bool has_bias, bool src_zp, bool dst_zp, const Tensor* sum) const {
        const std::vector<int64_t>& x_shape = x.shape();
        const ConvGeometry g = conv_geometry(window_, group_, x_shape, w_shape, node_);
        const int64_t maps = w_shape[0];
        auto entry = std::make_shared<QConvEntry>();
        entry->out_shape = g.out_shape;
        const Dims &strides = g.strides, &dilations = g.dilations, &pad_begin = g.pad_begin, &pad_end = g.pad_end;
        const Dims& w_dims = g.weight_dims;
        const DataType x_type = *int8_type(x.dtype());
        const DataType y_type = out == DType::Int32 ? DataType::s32 : *int8_type(out);
        entry->x_plain = plain_desc(to_dims(x_shape), x_type);
        entry->w_plain = plain_desc(w_dims, DataType::s8);
        entry->y_plain = plain_desc(to_dims(entry->out_shape), y_type);
        entry->scales = plain_desc({maps});
        entry->bias = has_bias ? plain_desc({maps}) : dnnl::memory::desc();

        dnnl::primitive_attr attr = base_attr();
        if (src_zp) attr.set_zero_points_mask(DNNL_ARG_SRC, 0);
        if (!integer_) {
            attr.set_scales_mask(DNNL_ARG_WEIGHTS, group_ > 1 ? 3 : 1);  // per output channel
            if (dst_zp) attr.set_zero_points_mask(DNNL_ARG_DST, 0);
            dnnl::post_ops ops;
            if (sum) ops.append_sum(sum_params_->scale, sum_params_->zero_point, *int8_type(sum->dtype()));
            activation_.append(ops, constant_y_scale_.value_or(1.0f));
            attr.set_post_ops(ops);
        }
        std::optional<dnnl::convolution_forward::primitive_desc> pd;
        try {
            pd.emplace(*cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                       any_desc(to_dims(x_shape), x_type), any_desc(w_dims, DataType::s8), entry->bias,
                       any_desc(to_dims(entry->out_shape), y_type), strides, dilations, pad_begin, pad_end, attr);
        } catch (const dnnl::error&) {
            return nullptr;
        }
        if (!optimized(*pd)) return nullptr;
        entry->weights = pd->weights_desc();
        entry->dst = pd->dst_desc();
        entry->conv = Step{dnnl::convolution_forward(*pd), pd->scratchpad_desc()};
        entry->src_into.emplace(pd->src_desc());
        entry->output = OutputLayout(entry->dst, entry->y_plain, out);
        if (weights_) entry->packed_weights = weights_->get(entry->w_plain, entry->weights);
        else entry->weights_reorder = reorder_if_needed(entry->w_plain, entry->weights);
        if (sum) {
            const DataType sum_type = *int8_type(sum->dtype());
            const auto sum_dst = with_type(entry->dst, sum_type);
            if (!sum_dst) return nullptr;
            entry->sum_src = desc_of(*sum, plain_desc(to_dims(sum->shape()), sum_type));
            entry->sum_dst = *sum_dst;
            if (!same_byte_order(entry->sum_src, entry->sum_dst)) entry->sum_reorder = make_reorder(entry->sum_src, entry->sum_dst);
        }
        return entry;
    }

    bool integer_;
    bool sum_;  // QLinearConvAdd
    std::optional<SumParams> sum_params_;
    ops::WindowAttributes window_;
    int64_t group_;
    Activation activation_;
    std::optional<float> constant_y_scale_;
    std::vector<float> fixed_scales_, fixed_bias_;  // with constant scales (and bias): per output channel
    std::optional<PackedConstant> weights_;
    ShapeCache<QConvEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// Int8 matmul: QLinearMatMul, MatMulInteger, DynamicQuantizeMatMul and QGemm (com.pyflame). A (..., M, K)
// of any rank >= 2 is one (rows, K) matrix against a 2-D B (K, N).

struct QMatMulEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc a, b, y, scales, bias;
    Step matmul;
    dnnl::memory packed_b;
};

enum class QMatMulKind { QLinear, Integer, Dynamic, ToFloat };

class QMatMulKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<QMatMulKernel>(info, std::move(reference));
    }

    QMatMulKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          kind_(info.node.op_type() == "MatMulInteger"          ? QMatMulKind::Integer
                : info.node.op_type() == "QLinearMatMul"        ? QMatMulKind::QLinear
                : info.node.op_type() == "MatMulIntegerToFloat" ? QMatMulKind::ToFloat
                                                                : QMatMulKind::Dynamic) {
        // QGemm (com.pyflame) is QLinearMatMul with an int32 bias C before y_scale and y_zero_point.
        if (info.node.op_type() == "QGemm") {
            kind_ = QMatMulKind::QLinear;
            bias_index_ = 6;
            y_scale_index_ = 7;
        }
        const Tensor* b = info.constant_input(b_index());
        if (b && b->dtype() == DType::Int8) b_.emplace(*b);
    }

    void compute(ops::KernelContext& ctx) const override {
        apply_thread_budget(ctx.num_threads);
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(b_index());
        const size_t b_zp_index = kind_ == QMatMulKind::QLinear || kind_ == QMatMulKind::ToFloat ? 5 : 3;
        const Tensor* b_zp = ctx.has_input(b_zp_index) ? &ctx.input(b_zp_index) : nullptr;
        if (b.dtype() != DType::Int8 || b.ndim() != 2 || a.ndim() < 2 || a.shape().back() != b.shape()[0] ||
            a.num_elements() == 0 || b.num_elements() == 0)
            return fallback(ctx);
        if (b_zp && (b_zp->dtype() != DType::Int8 || !all_zero(b_zp))) return fallback(ctx);
        const int64_t k = b.shape()[0], n = b.shape()[1], rows = a.num_elements() / k;
        std::optional<int32_t> az;
        DType a_type = a.dtype(), out = DType::Int32;
        const Tensor* b_scale = nullptr;
        const Tensor* bias = nullptr;
        if (kind_ == QMatMulKind::Dynamic) {
            if (a.dtype() != DType::Float32) return fallback(ctx);
            a_type = DType::UInt8;
            out = DType::Float32;
            b_scale = &ctx.input(2);
            bias = ctx.has_input(4) ? &ctx.input(4) : nullptr;
            if (bias && (bias->dtype() != DType::Float32 || bias->num_elements() != n || bias->ndim() != 1))
                return fallback(ctx);
            az = 0;
        } else if (kind_ == QMatMulKind::ToFloat) {
            // MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp, bias): float32 out.
            az = scalar_zero_point(ctx.has_input(4) ? &ctx.input(4) : nullptr, a.dtype());
            if (!int8_type(a.dtype()) || !az || !is_f32_scalar(ctx.input(2))) return fallback(ctx);
            out = DType::Float32;
            b_scale = &ctx.input(3);
            bias = ctx.has_input(6) ? &ctx.input(6) : nullptr;
            if (bias && (bias->dtype() != DType::Float32 || bias->num_elements() != n || bias->ndim() != 1))
                return fallback(ctx);
        } else {
            az = scalar_zero_point(ctx.has_input(2) ? &ctx.input(2) : nullptr, a.dtype());
            if (!int8_type(a.dtype()) || !az) return fallback(ctx);
            if (kind_ == QMatMulKind::QLinear) {
                b_scale = &ctx.input(4);
                const Tensor& y_zp = ctx.input(y_scale_index_ + 1);
                if (!is_f32_scalar(ctx.input(1)) || !is_f32_scalar(ctx.input(y_scale_index_)) || !int8_type(y_zp.dtype()) ||
                    !scalar_zero_point(&y_zp, y_zp.dtype()))
                    return fallback(ctx);
                out = y_zp.dtype();
                if (bias_index_ && ctx.has_input(bias_index_)) {
                    bias = &ctx.input(bias_index_);
                    if (bias->dtype() != DType::Int32 || bias->num_elements() != n || bias->ndim() > 2 || a.ndim() != 2)
                        return fallback(ctx);
                }
            }
        }
        if (b_scale && (b_scale->dtype() != DType::Float32 || (b_scale->num_elements() != 1 && b_scale->num_elements() != n) ||
                        b_scale->ndim() > 1))
            return fallback(ctx);

        const std::vector<int64_t> key{rows, k, n, static_cast<int64_t>(a_type), static_cast<int64_t>(out), bias != nullptr};
        const auto entry = cache_.get(key, [&] { return build(rows, k, n, a_type, out, bias != nullptr); });
        if (!entry) return fallback(ctx);
        std::vector<int64_t> out_shape = a.shape();
        out_shape.back() = n;
        Tensor y(out_shape, out);

        dnnl::stream& stream = thread_stream();
        dnnl::memory src = memory_over(entry->a, a.data());
        std::vector<float> scales;
        if (kind_ == QMatMulKind::Dynamic) {
            // Quantize A now, into this thread's buffer, exactly as DynamicQuantizeLinear does.
            const DynamicParams p = dynamic_range(a.data_ptr<float>(), a.num_elements());
            src = thread_memory(entry->a, Buffer::Src);
            auto* q = static_cast<uint8_t*>(src.get_data_handle());
            parallel_elements(a.num_elements(), ctx.num_threads, [&](int64_t b0, int64_t e0) {
                quantize_range(a.data_ptr<float>(), q, b0, e0, p.scale, p.zero_point);
            });
            az = static_cast<int32_t>(p.zero_point);
            // The graph's Mul(Cast(acc), a_scale * b_scale): one float32 product per column.
            scales = multipliers(p.scale, b_scale, n, nullptr);
        } else if (kind_ == QMatMulKind::QLinear) {
            const float ys = ctx.input(y_scale_index_).data_ptr<float>()[0];
            scales = multipliers(ctx.input(1).data_ptr<float>()[0], b_scale, n, &ys);
        } else if (kind_ == QMatMulKind::ToFloat) {
            scales = multipliers(ctx.input(2).data_ptr<float>()[0], b_scale, n, nullptr);
        }
        std::vector<float> float_bias;
        if (bias && bias->dtype() == DType::Int32) {  // in units of a_scale * b_scale[n]: onto y's scale
            float_bias.resize(static_cast<size_t>(n));
            for (int64_t j = 0; j < n; ++j) float_bias[j] = static_cast<float>(bias->data_ptr<int32_t>()[j]) * scales[j];
        }
        int32_t src_zp = *az;
        int32_t dst_zp = kind_ == QMatMulKind::QLinear ? *scalar_zero_point(&ctx.input(y_scale_index_ + 1), out) : 0;
        ExecArgs args{
            {DNNL_ARG_SRC, src},
            {DNNL_ARG_WEIGHTS, entry->packed_b ? entry->packed_b : memory_over(entry->b, b.data())},
            {DNNL_ARG_DST, memory_over(entry->y, y.data())}};
        args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, scalar_s32(src_zp));
        if (!scales.empty()) args.emplace(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, memory_over(entry->scales, scales.data()));
        if (kind_ == QMatMulKind::QLinear) args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, scalar_s32(dst_zp));
        if (bias) args.emplace(DNNL_ARG_BIAS, memory_over(entry->bias, float_bias.empty() ? bias->data() : float_bias.data()));
        entry->matmul.execute(stream, std::move(args));
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    size_t b_index() const { return kind_ == QMatMulKind::QLinear ? 3 : 1; }

    std::shared_ptr<const QMatMulEntry> build(int64_t rows, int64_t k, int64_t n, DType a_type, DType out,
                                              bool has_bias) const {
        auto entry = std::make_shared<QMatMulEntry>();
        const DataType y_type = out == DType::Int32 ? DataType::s32 : out == DType::Float32 ? DataType::f32 : *int8_type(out);
        entry->a = plain_desc({rows, k}, *int8_type(a_type));
        entry->b = plain_desc({k, n}, DataType::s8);
        entry->y = plain_desc({rows, n}, y_type);
        entry->scales = plain_desc({n});
        entry->bias = has_bias ? plain_desc({1, n}) : dnnl::memory::desc();
        dnnl::primitive_attr attr = base_attr();
        attr.set_zero_points_mask(DNNL_ARG_SRC, 0);
        if (kind_ != QMatMulKind::Integer) attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1 << 1);  // per column
        if (kind_ == QMatMulKind::QLinear) attr.set_zero_points_mask(DNNL_ARG_DST, 0);
        std::optional<dnnl::matmul::primitive_desc> pd;
        try {
            pd.emplace(*cpu_engine(), entry->a, b_ ? any_desc({k, n}, DataType::s8) : entry->b, entry->bias, entry->y, attr);
        } catch (const dnnl::error&) {
            return nullptr;
        }
        if (!optimized(*pd)) return nullptr;
        entry->matmul = Step{dnnl::matmul(*pd), pd->scratchpad_desc()};
        if (b_) entry->packed_b = b_->get(entry->b, pd->weights_desc());
        return entry;
    }

    QMatMulKind kind_;
    size_t bias_index_ = 0;     // 0: none
    size_t y_scale_index_ = 6;  // QLinear kinds: y_scale, then y_zero_point
    std::optional<PackedConstant> b_;  // when B is an initializer
    ShapeCache<QMatMulEntry> cache_;
};

// ---------------------------------------------------------------------------------------------
// MaxPool on int8/uint8 (what the QDQ fusion leaves of DequantizeLinear -> MaxPool ->
// QuantizeLinear): wraps the kernel registered for MaxPool, which keeps every other input type
// (and its own layout contract). Reads the int8 layout a convolution wrote and writes the same.

struct Int8PoolEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc x, y, y_plain;
    Step pool;
    std::optional<Step> y_to_plain;
    std::shared_ptr<const OneDnnLayout> y_layout;
};

class Int8MaxPoolKernel final : public FastKernel {
public:
    Int8MaxPoolKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> inner)
        : FastKernel(info, nullptr), inner_(std::move(inner)), window_(ops::WindowAttributes::parse(info.node, true)) {}

    bool reads_layout(size_t input) const override { return inner_->reads_layout(input); }
    bool writes_layout(size_t output) const override { return inner_->writes_layout(output); }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto type = int8_type(x.dtype());
        if (!type || x.ndim() != window_.kernel_shape.size() + 2 || x.num_elements() == 0) return inner(ctx);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        std::vector<int64_t> key = shape_and_layout_key(x);
        key.push_back(static_cast<int64_t>(x.dtype()));
        const auto entry = cache_.get(key, [&] {
            return build(x.shape(), desc_of(x, plain_desc(to_dims(x.shape()), *type)), *type);
        });
        if (!entry) return inner(ctx);
        const bool write_layout = entry->y_layout && ctx.may_write_layout(0);
        Tensor y = write_layout ? Tensor(entry->out_shape, x.dtype(), entry->y_layout) : Tensor(entry->out_shape, x.dtype());
        dnnl::stream& stream = thread_stream();
        const dnnl::memory y_memory = memory_over(write_layout ? entry->y : entry->y_plain, y.data());
        const dnnl::memory dst = write_layout || !entry->y_layout ? y_memory : thread_memory(entry->y, Buffer::Dst);
        entry->pool.execute(stream, {{DNNL_ARG_SRC, memory_over(entry->x, x.data())}, {DNNL_ARG_DST, dst}});
        if (!write_layout && entry->y_layout) entry->y_to_plain->execute(stream, {{DNNL_ARG_FROM, dst}, {DNNL_ARG_TO, y_memory}});
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    // The wrapped kernel, with row-major copies of layout inputs it does not read.
    void inner(ops::KernelContext& ctx) const {
        std::vector<Tensor> row_major;
        const std::vector<const Tensor*> given = ctx.inputs;
        for (size_t i = 0; i < ctx.inputs.size(); ++i)
            if (ctx.inputs[i] && !ctx.inputs[i]->is_plain() && !inner_->reads_layout(i)) {
                row_major.reserve(ctx.inputs.size());
                ctx.inputs[i] = &row_major.emplace_back(ctx.inputs[i]->plain());
            }
        try {
            inner_->compute(ctx);
        } catch (...) {
            ctx.inputs = given;
            throw;
        }
        ctx.inputs = given;
    }

    // As the float32 pooling kernel: a ceil_mode output widens the end pad (max ignores pads).
    std::shared_ptr<const Int8PoolEntry> build(const std::vector<int64_t>& x_shape, const dnnl::memory::desc& x_desc,
                                               DataType type) const {
        const std::vector<int64_t> spatial(x_shape.begin() + 2, x_shape.end());
        const std::vector<ops::WindowAxis> axes = ops::resolve_window(window_, window_.kernel_shape, spatial, node_);
        auto entry = std::make_shared<Int8PoolEntry>();
        entry->out_shape = {x_shape[0], x_shape[1]};
        Dims strides, kernel, dilations, pad_begin, pad_end;
        for (const ops::WindowAxis& a : axes) {
            const int64_t extent = (a.kernel - 1) * a.dilation + 1;
            const int64_t needed_end = (a.output - 1) * a.stride + extent - a.input - a.pad_begin;
            entry->out_shape.push_back(a.output);
            strides.push_back(a.stride);
            kernel.push_back(a.kernel);
            dilations.push_back(a.dilation - 1);
            pad_begin.push_back(a.pad_begin);
            pad_end.push_back(std::max(a.pad_end, needed_end));
        }
        entry->x = x_desc;
        entry->y_plain = plain_desc(to_dims(entry->out_shape), type);
        try {
            const dnnl::pooling_forward::primitive_desc pd(*cpu_engine(), dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::pooling_max, x_desc,
                                                           any_desc(to_dims(entry->out_shape), type), strides, kernel,
                                                           dilations, pad_begin, pad_end, base_attr());
            if (!optimized(pd)) return nullptr;
            entry->pool = Step{dnnl::pooling_forward(pd), pd.scratchpad_desc()};
            entry->y = pd.dst_desc();
        } catch (const dnnl::error&) {
            return nullptr;
        }
        if (entry->y != entry->y_plain) {
            entry->y_to_plain = make_reorder(entry->y, entry->y_plain);
            entry->y_layout = std::make_shared<OneDnnLayout>(entry->y);
        }
        return entry;
    }

    std::unique_ptr<ops::OpKernel> inner_;
    ops::WindowAttributes window_;
    ShapeCache<Int8PoolEntry> cache_;
};

}  // namespace

void add_quant_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    if (auto it = kernels.find("::MaxPool"); it != kernels.end()) {
        ops::KernelFactory float_pool = it->second;
        it->second = [float_pool](const ops::KernelInfo& info) -> std::unique_ptr<ops::OpKernel> {
            std::unique_ptr<ops::OpKernel> made = float_pool(info);
            const auto& outputs = info.node.outputs();
            if (!cpu_engine() || (outputs.size() > 1 && !outputs[1].empty())) return made;  // Indices: not here
            return std::make_unique<Int8MaxPoolKernel>(info, std::move(made));
        };
    }
    kernels["::QuantizeLinear"] = factory<QuantizeKernel>("QuantizeLinear");
    kernels["::DequantizeLinear"] = factory<DequantizeKernel>("DequantizeLinear");
    kernels["::DynamicQuantizeLinear"] = factory<DynamicQuantizeKernel>("DynamicQuantizeLinear");
    kernels["::QLinearConv"] = factory<QConvKernel>("QLinearConv");
    kernels["::ConvInteger"] = factory<QConvKernel>("ConvInteger");
    kernels["::QLinearMatMul"] = factory<QMatMulKernel>("QLinearMatMul");
    kernels["::MatMulInteger"] = factory<QMatMulKernel>("MatMulInteger");
    kernels["com.pyflame::FusedQLinearConv"] = factory<QConvKernel>("FusedQLinearConv", "com.pyflame");
    kernels["com.pyflame::QLinearConvAdd"] = factory<QConvKernel>("QLinearConvAdd", "com.pyflame");
    kernels["com.pyflame::DynamicQuantizeMatMul"] = factory<QMatMulKernel>("DynamicQuantizeMatMul", "com.pyflame");
    kernels["com.pyflame::QLinearAdd"] = factory<QLinearAddKernel>("QLinearAdd", "com.pyflame");
    kernels["com.pyflame::QGemm"] = factory<QMatMulKernel>("QGemm", "com.pyflame");
    kernels["com.pyflame::MatMulIntegerToFloat"] = factory<QMatMulKernel>("MatMulIntegerToFloat", "com.pyflame");
}

}  // namespace pyflame_rt::onednn
