#include "backends/cpu/depthwise.hpp"

#include <algorithm>

#include "backends/cpu/simd.hpp"

namespace pyflame_rt::onednn {
namespace {

using namespace simd;  // the kernels' vocabulary: Vec, load, store, kLanes

struct Layout {
    int64_t H, W, C, OH, OW, pad_top, pad_left;
    int64_t interior_first, interior_last;  // the output columns whose 3 taps all lie inside the image
    // Where X's value (c, h, w) lies in an image, in floats: c % 16 + h * row + w * pixel +
    // (c - c % 16) * block. Channels-last: pixel C, block 1; nChw16c: pixel 16, block H*W.
    int64_t pixel, row, block;
};

// One output row's sources and destination.
struct Row {
    const float* in[3];  // the three input rows the window covers (nullptr: outside the image)
    const float* zero_row;
    float* out;
    const float* residual;  // or nullptr
};

// Output columns [ow, ow + kCount) of 16 channels from c. kChecked: some tap may fall left or
// right of the image (it is skipped); rows outside it read zeros.
template <int kStride, int kCount, bool kChecked>
[[gnu::always_inline]] inline void columns(const Layout& s, const Row& row, const float* taps, const float* bias,
                                           const FusedActivation& act, int64_t ow, int64_t c) {
    const float* in[3];
    for (int kh = 0; kh < 3; ++kh) in[kh] = row.in[kh] ? row.in[kh] + c * s.block : row.zero_row;
    const Vec b = bias ? load(bias + c) : Vec{};
    Vec acc[kCount];
    for (int j = 0; j < kCount; ++j) acc[j] = b;
    const int64_t iw0 = ow * kStride - s.pad_left;
    for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw) {
            const Vec w = load(taps + (kh * 3 + kw) * s.C + c);
            for (int j = 0; j < kCount; ++j) {
                const int64_t iw = iw0 + j * kStride + kw;
                if (kChecked && (iw < 0 || iw >= s.W)) continue;
                acc[j] += load(in[kh] + iw * s.pixel) * w;
            }
        }
    for (int j = 0; j < kCount; ++j) {
        const int64_t at = (ow + j) * s.C + c;
        if (row.residual) acc[j] += load(row.residual + at);
        store(row.out + at, simd::activate(act, acc[j]));
    }
}

// One output row, all channels. Each group of columns is done for all channels before the
// next: X is then read in address order (a channel-block-outer order re-fetched wide rows from
// L2 once per block).
template <int kStride>
[[gnu::always_inline]] inline void row_body(const Layout& s, const Row& row, const float* taps, const float* bias,
                                            const FusedActivation& act) {
    const int64_t C = s.C;
    int64_t ow = 0;
    for (; ow < s.interior_first; ++ow)
        for (int64_t c = 0; c < C; c += kLanes) columns<kStride, 1, true>(s, row, taps, bias, act, ow, c);
    // Four columns at a time: neighbouring outputs share input columns (loaded once).
    for (; ow + 4 <= s.interior_last; ow += 4)
        for (int64_t c = 0; c < C; c += kLanes) columns<kStride, 4, false>(s, row, taps, bias, act, ow, c);
    for (; ow < s.interior_last; ++ow)
        for (int64_t c = 0; c < C; c += kLanes) columns<kStride, 1, false>(s, row, taps, bias, act, ow, c);
    for (; ow < s.OW; ++ow)
        for (int64_t c = 0; c < C; c += kLanes) columns<kStride, 1, true>(s, row, taps, bias, act, ow, c);
}

using RowFn = void (*)(const Layout&, const Row&, const float*, const float*, const FusedActivation&);

template <int kStride>
[[gnu::target("avx512f")]] void row_avx512(const Layout& s, const Row& row, const float* taps, const float* bias,
                                           const FusedActivation& act) {
    row_body<kStride>(s, row, taps, bias, act);
}
template <int kStride>
void row_baseline(const Layout& s, const Row& row, const float* taps, const float* bias, const FusedActivation& act) {
    row_body<kStride>(s, row, taps, bias, act);
}

RowFn row_function(int64_t stride) {
    const bool wide = simd::has_avx512();
    return stride == 1 ? (wide ? row_avx512<1> : row_baseline<1>) : (wide ? row_avx512<2> : row_baseline<2>);
}

Layout layout_of(const DepthwiseGeometry& g, bool x_blocked) {
    Layout s{g.height, g.width, g.channels, g.out_height, g.out_width, g.pad_top, g.pad_left, 0, 0, 0, 0, 0};
    s.pixel = x_blocked ? kLanes : s.C;
    s.row = s.W * s.pixel;
    s.block = x_blocked ? s.H * s.W : 1;
    // ow is interior when ow*stride - pad_left >= 0 and ow*stride - pad_left + 2 < W.
    s.interior_first = std::min(s.OW, (s.pad_left + g.stride - 1) / g.stride);
    const int64_t last_start = s.W - 3 + s.pad_left;
    s.interior_last = last_start < 0 ? 0 : std::min(s.OW, last_start / g.stride + 1);
    s.interior_last = std::max(s.interior_last, s.interior_first);
    return s;
}

}  // namespace

bool DepthwiseConv::handles(const DepthwiseGeometry& g) {
    return g.channels % kLanes == 0 && (g.stride == 1 || g.stride == 2) && g.out_height > 0 && g.out_width > 0;
}

DepthwiseConv::DepthwiseConv(const DepthwiseGeometry& g, const Tensor& weights, FusedActivation activation)
    : g_(g), activation_(activation), taps_(9 * g.channels), zero_row_(g.width * g.channels, 0.0f) {
    const Tensor plain = weights.is_plain() ? weights : weights.plain();
    const float* w = static_cast<const float*>(plain.data());
    for (int64_t c = 0; c < g.channels; ++c)
        for (int t = 0; t < 9; ++t) taps_[t * g.channels + c] = w[c * 9 + t];
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    src_desc_ = dnnl::memory::desc({g.batch, g.channels, g.height, g.width}, f32, tag::nhwc);
    blocked_src_desc_ = dnnl::memory::desc({g.batch, g.channels, g.height, g.width}, f32, tag::nChw16c);
    dst_desc_ = dnnl::memory::desc({g.batch, g.channels, g.out_height, g.out_width}, f32, tag::nhwc);
}

void DepthwiseConv::run(const float* x, bool x_blocked, const float* bias, const float* residual, float* y) const {
    const Layout s = layout_of(g_, x_blocked);
    const RowFn row_fn = row_function(g_.stride);
    simd::parallel_range(g_.batch * g_.out_height, [&](int64_t first, int64_t last) {
        for (int64_t r = first; r < last; ++r) {
            const int64_t n = r / s.OH, oh = r % s.OH;
            const float* image = x + n * s.H * s.W * s.C;
            Row row{{}, zero_row_.data(), y + r * s.OW * s.C, residual ? residual + r * s.OW * s.C : nullptr};
            for (int kh = 0; kh < 3; ++kh) {
                const int64_t ih = oh * g_.stride - s.pad_top + kh;
                row.in[kh] = ih >= 0 && ih < s.H ? image + ih * s.row : nullptr;
            }
            row_fn(s, row, taps_.data(), bias, activation_);
        }
    });
}

void DepthwiseConv::run_row(const float* const in[3], const float* bias, float* out) const {
    const Layout s = layout_of(g_, false);
    const Row row{{in[0], in[1], in[2]}, zero_row_.data(), out, nullptr};
    row_function(g_.stride)(s, row, taps_.data(), bias, activation_);
}

}  // namespace pyflame_rt::onednn
