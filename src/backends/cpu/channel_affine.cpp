#include "backends/cpu/channel_affine.hpp"

#include "backends/cpu/simd.hpp"

namespace pyflame_rt::onednn {
namespace {

using namespace simd;  // the kernels' vocabulary: Vec, load, store, kLanes

struct Affine {
    const float* x;
    float* y;
    const float* scale;
    const float* shift;
    int64_t channels, spatial;
};

// `count` values of one channel.
[[gnu::always_inline]] inline void one_channel(const float* x, float* y, float s, float t, int64_t count) {
    const Vec vs = Vec{} + s, vt = Vec{} + t;
    int64_t i = 0;
    for (; i + kLanes <= count; i += kLanes) store(y + i, load(x + i) * vs + vt);
    for (; i < count; ++i) y[i] = x[i] * s + t;
}

// Rows [first, last) of the layout's natural unit: a channel plane (Planar), a pixel
// (ChannelsLast) or a 16-channel block plane (Blocked16).
template <ChannelLayout kLayout>
[[gnu::always_inline]] inline void rows_body(const Affine& a, int64_t first, int64_t last) {
    const int64_t C = a.channels, S = a.spatial;
    for (int64_t r = first; r < last; ++r) {
        if (kLayout == ChannelLayout::Planar) {
            const int64_t c = r % C;
            one_channel(a.x + r * S, a.y + r * S, a.scale[c], a.shift[c], S);
        } else if (kLayout == ChannelLayout::ChannelsLast) {
            const float* x = a.x + r * C;
            float* y = a.y + r * C;
            int64_t c = 0;
            for (; c + kLanes <= C; c += kLanes) store(y + c, load(x + c) * load(a.scale + c) + load(a.shift + c));
            for (; c < C; ++c) y[c] = x[c] * a.scale[c] + a.shift[c];
        } else {
            const int64_t c0 = (r % (C / kLanes)) * kLanes;
            const Vec vs = load(a.scale + c0), vt = load(a.shift + c0);
            const float* x = a.x + r * S * kLanes;
            float* y = a.y + r * S * kLanes;
            for (int64_t p = 0; p < S; ++p) store(y + p * kLanes, load(x + p * kLanes) * vs + vt);
        }
    }
}

template <ChannelLayout kLayout>
[[gnu::target("avx512f")]] void rows_avx512(const Affine& a, int64_t first, int64_t last) {
    rows_body<kLayout>(a, first, last);
}
template <ChannelLayout kLayout>
void rows_baseline(const Affine& a, int64_t first, int64_t last) {
    rows_body<kLayout>(a, first, last);
}

template <ChannelLayout kLayout>
void run(const Affine& a, int64_t rows) {
    const bool wide = has_avx512();
    parallel_range(rows, [&](int64_t first, int64_t last) {
        wide ? rows_avx512<kLayout>(a, first, last) : rows_baseline<kLayout>(a, first, last);
    });
}

}  // namespace

void channel_affine(const float* x, float* y, const float* scale, const float* shift, int64_t batch, int64_t channels,
                    int64_t spatial, ChannelLayout layout) {
    const Affine a{x, y, scale, shift, channels, spatial};
    switch (layout) {
        case ChannelLayout::Planar: return run<ChannelLayout::Planar>(a, batch * channels);
        case ChannelLayout::ChannelsLast: return run<ChannelLayout::ChannelsLast>(a, batch * spatial);
        case ChannelLayout::Blocked16: return run<ChannelLayout::Blocked16>(a, batch * (channels / kLanes));
    }
}

}  // namespace pyflame_rt::onednn
