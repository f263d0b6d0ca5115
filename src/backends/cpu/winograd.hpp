#pragma once
// 3x3 convolution by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks"): each 4x4 block of outputs costs 36 multiply-adds per
// (channel, map) pair instead of 144. oneDNN 3.x has no float32 Winograd on x86, and its direct
// kernels are what ResNet-style networks spend most of their time in.
//
// The input is cut into overlapping 6x6 tiles and transformed (V = Bᵀ d B), the weights once at
// creation (U = G g Gᵀ); then 36 independent products M[e] = V[e] · U[e] (tiles x channels by
// channels x maps) run as one batched oneDNN matmul, and the output transform (Y = Aᵀ M A) adds
// bias, residual and activation as it writes. Tensors are channels-last (nhwc), the layout
// oneDNN's own convolutions pick here, so no reorder separates them from their neighbours.
//
// Numerics: the transforms magnify rounding error; with the interpolation points chosen in
// winograd.cpp, a layer's float32 error stays within a few 1e-6 of its output scale,
// and whole ResNets stay within 1e-4 of torch (tests/python/test_model_zoo.py).
#include <cstdint>
#include <memory>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {

struct WinogradGeometry : Conv2dSizes {
    int64_t maps = 0;  // output (N, maps, OH, OW)
};

class WinogradConv {
public:
    // Whether a convolution of this geometry, with 3x3 window, stride 1, dilation 1 and one
    // group (checked by the caller), runs faster this way than oneDNN's direct kernels, and
    // costs no more memory than is worth it (the transformed weights are 4x the originals).
    static bool pays(const WinogradGeometry& g);

    // ONNX's (M, C, 3, 3) weights transformed: (36, C, M), U[e][c][m] = (G g Gᵀ)[e].
    static Tensor transform_weights(const Tensor& weights);

    // `transformed_weights` holds transform_weights(W); it is packed (in place, the first
    // time) into the layout the products read.
    WinogradConv(const WinogradGeometry& g, PackedConstant& transformed_weights, FusedActivation activation);

    // The channels-last layouts of X and Y that run() reads and writes.
    const dnnl::memory::desc& src_desc() const { return src_desc_; }
    const dnnl::memory::desc& dst_desc() const { return dst_desc_; }

    // y = act(conv(x) + bias + residual); bias and residual (in dst_desc()) may be null.
    void run(dnnl::stream& stream, const float* x, const float* bias, const float* residual, float* y) const;

private:
    WinogradGeometry g_;
    FusedActivation activation_;
    int64_t tiles_y_ = 0, tiles_x_ = 0, tiles_ = 0;
    dnnl::memory::desc src_desc_, dst_desc_, transformed_desc_, product_desc_;
    Step products_;
    dnnl::memory packed_weights_;
};

}  // namespace pyflame_rt::onednn
