#pragma once
// Depthwise 3x3 convolution (one group per channel, one map per group), channels-last, stride 1
// or 2: MobileNet-style networks' second layer of every block. oneDNN 3.2's channels-last kernel
// for it (brdgmm_dw) ran 2-2.5x slower than a plain loop at MobileNetV2's widest layers (32-96
// channels at 112x112), where the tensors stream from L2/L3 and the work is a few loads and
// multiply-adds per value. The input and output stay in the channels-last layout of the 1x1
// convolutions around it, so no reorder separates them.
#include <cstdint>
#include <vector>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {

struct DepthwiseGeometry : Conv2dSizes {
    int64_t stride = 1;  // the same on both axes
};

class DepthwiseConv {
public:
    // Whether this kernel runs the geometry: channels a multiple of 16, stride 1 or 2. The
    // caller checks for a 3x3 window, no dilation and group == channels == maps.
    static bool handles(const DepthwiseGeometry& g);

    // `weights`: ONNX's (C, 1, 3, 3).
    DepthwiseConv(const DepthwiseGeometry& g, const Tensor& weights, FusedActivation activation);

    // The layouts run() reads X in: channels-last, or as it is, oneDNN's nChw16c (what its
    // kernels for a first layer of few channels write).
    const dnnl::memory::desc& src_desc() const { return src_desc_; }
    const dnnl::memory::desc& blocked_src_desc() const { return blocked_src_desc_; }
    // The channels-last layout of Y (and the residual) that run() writes.
    const dnnl::memory::desc& dst_desc() const { return dst_desc_; }

    // y = act(conv(x) + bias + residual); x in src_desc(), or blocked_src_desc() when
    // `x_blocked`; bias and residual (in dst_desc()) may be null.
    void run(const float* x, bool x_blocked, const float* bias, const float* residual, float* y) const;

    // One output row (OW x C, channels-last) from the three input rows the window covers
    // (W x C each; nullptr for a row above or below the image), on the calling thread.
    void run_row(const float* const in[3], const float* bias, float* out) const;

private:
    DepthwiseGeometry g_;
    FusedActivation activation_;
    std::vector<float> taps_;       // (9, C): tap-major, so 16 channels of a tap are one load
    std::vector<float> zero_row_;   // W x C zeros: the rows above and below the image
    dnnl::memory::desc src_desc_, blocked_src_desc_, dst_desc_;
};

}  // namespace pyflame_rt::onednn
