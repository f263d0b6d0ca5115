#include "backends/cpu/winograd.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "backends/cpu/simd.hpp"

namespace pyflame_rt::onednn {
namespace {

using namespace simd;  // the kernels' vocabulary: Vec, load, store, kLanes

// The interpolation points are 0, -1, 1, 1/2, -2 (and infinity) rather than Lavin's 0, ±1, ±2:
// the same cost, and about half the float32 error (Barabasz et al., "Error analysis and
// improving the accuracy of Winograd convolution for deep neural networks", 2020).

// Bᵀ·d for one line of 6 input values.
[[gnu::always_inline]] inline void input_line(const Vec d[6], Vec r[6]) {
    r[0] = d[0] - 1.5f * d[1] - 2.0f * d[2] + 1.5f * d[3] + d[4];
    r[1] = d[1] - 2.5f * d[2] + 0.5f * d[3] + d[4];
    r[2] = 0.5f * d[2] - d[1] + 2.5f * d[3] + d[4];
    r[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
    r[4] = 0.5f * (d[1] - d[3]) - d[2] + d[4];
    r[5] = d[1] - 1.5f * d[2] - 2.0f * d[3] + 1.5f * d[4] + d[5];
}

// Aᵀ·m for one line of 6 products.
[[gnu::always_inline]] inline void output_line(const Vec m[6], Vec o[4]) {
    const Vec sum12 = m[1] + m[2], diff21 = m[2] - m[1];
    o[0] = sum12 + m[0] + m[3] + m[4];
    o[1] = diff21 + 0.5f * m[3] - 2.0f * m[4];
    o[2] = sum12 + 0.25f * m[3] + 4.0f * m[4];
    o[3] = diff21 + 0.125f * m[3] - 8.0f * m[4] + m[5];
}

struct Layout {
    int64_t H, W, C, K, OH, OW, pad_top, pad_left, tiles_y, tiles_x, tiles;
};

// V[e][tile][c] = (Bᵀ d B)[e] for tiles [first, last), all channels; zeros outside the image.
[[gnu::always_inline]] inline void transform_input_body(const Layout& s, const float* x, float* v, int64_t first,
                                                        int64_t last) {
    const Vec zero = {};
    for (int64_t t = first; t < last; ++t) {
        const int64_t n = t / (s.tiles_y * s.tiles_x), rest = t % (s.tiles_y * s.tiles_x);
        const int64_t y0 = (rest / s.tiles_x) * 4 - s.pad_top, x0 = (rest % s.tiles_x) * 4 - s.pad_left;
        const float* image = x + n * s.H * s.W * s.C;
        for (int64_t c = 0; c < s.C; c += kLanes) {
            Vec d[6][6], col[6], r[6], tmp[6][6];
            for (int i = 0; i < 6; ++i)
                for (int j = 0; j < 6; ++j) {
                    const int64_t yy = y0 + i, xx = x0 + j;
                    d[i][j] = (yy >= 0 && yy < s.H && xx >= 0 && xx < s.W) ? load(image + (yy * s.W + xx) * s.C + c)
                                                                              : zero;
                }
            for (int j = 0; j < 6; ++j) {  // columns: Bᵀ d
                for (int i = 0; i < 6; ++i) col[i] = d[i][j];
                input_line(col, r);
                for (int i = 0; i < 6; ++i) tmp[i][j] = r[i];
            }
            for (int i = 0; i < 6; ++i) {  // rows: (Bᵀ d) B
                input_line(tmp[i], r);
                for (int j = 0; j < 6; ++j) store(v + ((i * 6 + j) * s.tiles + t) * s.C + c, r[j]);
            }
        }
    }
}

// Y = act(Aᵀ M A + bias + Z) for tiles [first, last), all maps; writes only inside the image.
[[gnu::always_inline]] inline void transform_output_body(const Layout& s, const float* m, const float* bias,
                                                         const float* z, const FusedActivation& act, float* y,
                                                         int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
        const int64_t n = t / (s.tiles_y * s.tiles_x), rest = t % (s.tiles_y * s.tiles_x);
        const int64_t y0 = (rest / s.tiles_x) * 4, x0 = (rest % s.tiles_x) * 4;
        const int64_t image = n * s.OH * s.OW * s.K;
        for (int64_t k = 0; k < s.K; k += kLanes) {
            Vec p[6][6], col[6], o[4], tmp[4][6];
            for (int e = 0; e < 36; ++e) p[e / 6][e % 6] = load(m + (e * s.tiles + t) * s.K + k);
            for (int j = 0; j < 6; ++j) {  // columns: Aᵀ M
                for (int i = 0; i < 6; ++i) col[i] = p[i][j];
                output_line(col, o);
                for (int i = 0; i < 4; ++i) tmp[i][j] = o[i];
            }
            const Vec b = bias ? load(bias + k) : Vec{};
            for (int i = 0; i < 4; ++i) {  // rows: (Aᵀ M) A
                const int64_t yy = y0 + i;
                if (yy >= s.OH) break;
                output_line(tmp[i], o);
                for (int j = 0; j < 4; ++j) {
                    const int64_t xx = x0 + j;
                    if (xx >= s.OW) break;
                    const int64_t at = image + (yy * s.OW + xx) * s.K + k;
                    Vec value = o[j] + b;
                    if (z) value += load(z + at);
                    value = simd::activate(act, value);
                    store(y + at, value);
                }
            }
        }
    }
}

// Each body twice: for AVX-512 where the CPU has it, and for the library's baseline (AVX2).
[[gnu::target("avx512f")]] void transform_input_avx512(const Layout& s, const float* x, float* v, int64_t first,
                                                       int64_t last) {
    transform_input_body(s, x, v, first, last);
}
void transform_input_baseline(const Layout& s, const float* x, float* v, int64_t first, int64_t last) {
    transform_input_body(s, x, v, first, last);
}
[[gnu::target("avx512f")]] void transform_output_avx512(const Layout& s, const float* m, const float* bias,
                                                        const float* z, const FusedActivation& act, float* y,
                                                        int64_t first, int64_t last) {
    transform_output_body(s, m, bias, z, act, y, first, last);
}
void transform_output_baseline(const Layout& s, const float* m, const float* bias, const float* z,
                               const FusedActivation& act, float* y, int64_t first, int64_t last) {
    transform_output_body(s, m, bias, z, act, y, first, last);
}

}  // namespace

bool WinogradConv::pays(const WinogradGeometry& g) {
    if (g.channels % kLanes != 0 || g.maps % kLanes != 0) return false;
    const int64_t tiles = g.batch * ((g.out_height + 3) / 4) * ((g.out_width + 3) / 4);
    // The 36 products are tiles x C by C x M: with few tiles they stream the (4x larger)
    // transformed weights for little work, and oneDNN's direct kernel is faster. The widest
    // layers (ResNets' last stage) keep the direct kernel too: their transformed weights would
    // cost 36 MiB each for a few percent of the run.
    // And the transformed input and products (36 x tiles x channels each) must stay modest:
    // a large image or batch keeps the direct kernel rather than claim gigabytes.
    constexpr int64_t kMaxTransformedBytes = int64_t{64} << 20;
    const int64_t transformed_bytes = 36 * tiles * std::max(g.channels, g.maps) * int64_t{sizeof(float)};
    return tiles >= 16 && g.channels * g.maps <= 256 * 256 && transformed_bytes <= kMaxTransformedBytes;
}

Tensor WinogradConv::transform_weights(const Tensor& weights) {
    static constexpr double G[6][3] = {{1, 0, 0},
                                       {-1.0 / 3, 1.0 / 3, -1.0 / 3},
                                       {1.0 / 3, 1.0 / 3, 1.0 / 3},
                                       {-16.0 / 15, -8.0 / 15, -4.0 / 15},
                                       {1.0 / 15, -2.0 / 15, 4.0 / 15},
                                       {0, 0, 1}};
    const int64_t maps = weights.shape()[0], channels = weights.shape()[1];
    Tensor u({36, channels, maps}, DType::Float32);
    const float* w = static_cast<const float*>(weights.data());
    float* out = static_cast<float*>(u.data());
    for (int64_t k = 0; k < maps; ++k)
        for (int64_t c = 0; c < channels; ++c) {
            const float* g = w + (k * channels + c) * 9;
            double gg[6][3];  // G g, in double so the transformed weights are correctly rounded
            for (int a = 0; a < 6; ++a)
                for (int j = 0; j < 3; ++j) gg[a][j] = G[a][0] * g[j] + G[a][1] * g[3 + j] + G[a][2] * g[6 + j];
            for (int a = 0; a < 6; ++a)
                for (int b = 0; b < 6; ++b)
                    out[((a * 6 + b) * channels + c) * maps + k] =
                        static_cast<float>(gg[a][0] * G[b][0] + gg[a][1] * G[b][1] + gg[a][2] * G[b][2]);
        }
    return u;
}

WinogradConv::WinogradConv(const WinogradGeometry& g, PackedConstant& transformed_weights, FusedActivation activation)
    : g_(g), activation_(activation) {
    tiles_y_ = (g.out_height + 3) / 4;
    tiles_x_ = (g.out_width + 3) / 4;
    tiles_ = g.batch * tiles_y_ * tiles_x_;
    using tag = dnnl::memory::format_tag;
    const auto f32 = dnnl::memory::data_type::f32;
    src_desc_ = dnnl::memory::desc({g.batch, g.channels, g.height, g.width}, f32, tag::nhwc);
    dst_desc_ = dnnl::memory::desc({g.batch, g.maps, g.out_height, g.out_width}, f32, tag::nhwc);
    transformed_desc_ = plain_desc({36, tiles_, g.channels});
    product_desc_ = plain_desc({36, tiles_, g.maps});
    // Every batch size reads the weights in the layout the first one packed them in, when its
    // kernel takes that layout: one copy of them for all.
    std::optional<dnnl::matmul::primitive_desc> pd;
    if (const Tensor* packed = transformed_weights.prepacked()) try {
            pd.emplace(*cpu_engine(), transformed_desc_, desc_of(*packed, plain_desc({36, g.channels, g.maps})),
                       product_desc_, base_attr());
            if (!optimized(*pd)) pd.reset();
        } catch (const dnnl::error&) {
            pd.reset();
        }
    if (!pd) pd.emplace(*cpu_engine(), transformed_desc_, any_desc({36, g.channels, g.maps}), product_desc_, base_attr());
    products_ = Step{dnnl::matmul(*pd), pd->scratchpad_desc()};
    const dnnl::memory::desc plain = plain_desc({36, g.channels, g.maps});
    transformed_weights.prepack(plain, pd->weights_desc());  // no-op after the first shape
    packed_weights_ = transformed_weights.get(plain, pd->weights_desc());
}

void WinogradConv::run(dnnl::stream& stream, const float* x, const float* bias, const float* residual, float* y) const {
    const Layout s{g_.height, g_.width,   g_.channels, g_.maps, g_.out_height, g_.out_width,
                   g_.pad_top, g_.pad_left, tiles_y_,   tiles_x_, tiles_};
    const dnnl::memory transformed = thread_memory(transformed_desc_, Buffer::Transformed);
    const dnnl::memory products = thread_memory(product_desc_, Buffer::Products);
    float* v = static_cast<float*>(transformed.get_data_handle());
    const float* m = static_cast<const float*>(products.get_data_handle());
    const bool wide = simd::has_avx512();
    simd::parallel_range(tiles_, [&](int64_t first, int64_t last) {
        wide ? transform_input_avx512(s, x, v, first, last) : transform_input_baseline(s, x, v, first, last);
    });
    products_.execute(stream, {{DNNL_ARG_SRC, transformed}, {DNNL_ARG_WEIGHTS, packed_weights_},
                               {DNNL_ARG_DST, products}});
    stream.wait();
    simd::parallel_range(tiles_, [&](int64_t first, int64_t last) {
        wide ? transform_output_avx512(s, m, bias, residual, activation_, y, first, last)
             : transform_output_baseline(s, m, bias, residual, activation_, y, first, last);
    });
}

}  // namespace pyflame_rt::onednn
