// MaxPool (with the optional Indices output), AveragePool and GlobalAveragePool; float32,
// 1-D/2-D/3-D. The window geometry (pads, auto_pad, ceil_mode) is shared with Conv (conv.cpp).
#include <algorithm>
#include <limits>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// The taps of one window along one axis: `count` input positions from `first`, dilation
// apart, that fall inside the input; `padded_count` also counts taps on explicit padding
// (what count_include_pad divides by).
struct AxisTaps {
    int64_t first = 0, count = 0, padded_count = 0;
};

std::vector<AxisTaps> taps_of(const WindowAxis& a) {
    std::vector<AxisTaps> taps(static_cast<size_t>(a.output));
    for (int64_t o = 0; o < a.output; ++o) {
        AxisTaps& t = taps[o];
        for (int64_t k = 0; k < a.kernel; ++k) {
            const int64_t pos = o * a.stride - a.pad_begin + k * a.dilation;
            if (pos >= 0 && pos < a.input && t.count++ == 0) t.first = pos;
            if (pos < a.input + a.pad_end) ++t.padded_count;  // pos >= -pad_begin always holds
        }
    }
    return taps;
}

// Calls visit(output_index, taps_d, taps_h, taps_w) for each output position of a 3-D window.
template <typename Visit>
void for_each_window(const std::array<std::vector<AxisTaps>, 3>& taps, Visit&& visit) {
    int64_t o = 0;
    for (const AxisTaps& d : taps[0])
        for (const AxisTaps& h : taps[1])
            for (const AxisTaps& w : taps[2]) visit(o++, d, h, w);
}

// Calls f(d, h, w) for each input position a window covers.
template <typename F>
void for_each_tap(const std::array<WindowAxis, 3>& g, const AxisTaps& d, const AxisTaps& h, const AxisTaps& w, F&& f) {
    for (int64_t i = 0, id = d.first; i < d.count; ++i, id += g[0].dilation)
        for (int64_t j = 0, ih = h.first; j < h.count; ++j, ih += g[1].dilation)
            for (int64_t k = 0, iw = w.first; k < w.count; ++k, iw += g[2].dilation) f(id, ih, iw);
}

// Attribute parsing and run-time geometry common to MaxPool and AveragePool.
class WindowPoolKernel : public NodeKernel {
protected:
    explicit WindowPoolKernel(const Node& node) : NodeKernel(node), window_(WindowAttributes::parse(node, true)) {
        if (window_.kernel_shape.empty()) fail("missing required attribute 'kernel_shape'");
        if (window_.kernel_shape.size() > 3)
            fail("kernel_shape " + shape_to_string(window_.kernel_shape) + ": only 1-D, 2-D and 3-D pooling is supported");
    }

    struct Geometry {
        std::vector<int64_t> out_shape;  // N, C, spatial...
        int64_t planes = 0, in_plane = 0, out_plane = 0;
        std::array<WindowAxis, 3> axes;
        std::array<std::vector<AxisTaps>, 3> taps;
    };

    Geometry geometry(const Tensor& x) const {
        require_dtype(node_, x, DType::Float32, "input X");
        const size_t spatial = window_.kernel_shape.size();
        if (x.ndim() != spatial + 2)
            fail("input X has shape " + shape_to_string(x.shape()) + "; kernel_shape " +
                 shape_to_string(window_.kernel_shape) + " needs rank " + std::to_string(spatial + 2));
        const std::vector<int64_t> in_spatial(x.shape().begin() + 2, x.shape().end());
        const std::vector<WindowAxis> axes = resolve_window(window_, window_.kernel_shape, in_spatial, node_);
        Geometry g;
        g.out_shape = {x.shape()[0], x.shape()[1]};
        for (const auto& a : axes) g.out_shape.push_back(a.output);
        g.planes = x.shape()[0] * x.shape()[1];
        g.in_plane = num_elements_of(in_spatial);
        g.out_plane = num_elements_of(std::vector<int64_t>(g.out_shape.begin() + 2, g.out_shape.end()));
        g.axes = as_3d(axes);
        for (size_t i = 0; i < 3; ++i) g.taps[i] = taps_of(g.axes[i]);
        return g;
    }

    WindowAttributes window_;
};

class MaxPoolKernel final : public WindowPoolKernel {
public:
    explicit MaxPoolKernel(const Node& node)
        : WindowPoolKernel(node),
          column_major_indices_(node.get_attribute<int64_t>("storage_order", 0) == 1),
          want_indices_(node.outputs().size() > 1 && !node.outputs()[1].empty()) {
        const int64_t order = node.get_attribute<int64_t>("storage_order", 0);
        if (order != 0 && order != 1)
            fail("attribute 'storage_order' is " + std::to_string(order) + "; expected 0 (row major) or 1 (column major)");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Geometry g = geometry(x);
        Tensor y(g.out_shape, DType::Float32);
        Tensor indices = want_indices_ ? Tensor(g.out_shape, DType::Int64) : Tensor();
        const auto& [d, h, w] = g.axes;
        for (int64_t p = 0; p < g.planes; ++p) {
            const float* plane = x.data_ptr<float>() + p * g.in_plane;
            float* out = y.data_ptr<float>() + p * g.out_plane;
            int64_t* out_index = want_indices_ ? indices.data_ptr<int64_t>() + p * g.out_plane : nullptr;
            for_each_window(g.taps, [&](int64_t o, const AxisTaps& td, const AxisTaps& th, const AxisTaps& tw) {
                float best = std::numeric_limits<float>::lowest();
                int64_t best_d = -1, best_h = -1, best_w = -1;
                for_each_tap(g.axes, td, th, tw, [&](int64_t id, int64_t ih, int64_t iw) {
                    const float v = plane[(id * h.input + ih) * w.input + iw];
                    if (v > best) {  // first maximum wins; NaN never replaces it (as ONNX Runtime)
                        best = v;
                        best_d = id, best_h = ih, best_w = iw;
                    }
                });
                out[o] = best;
                if (out_index) {
                    // Flat index into the whole input; storage_order only changes the spatial part.
                    const int64_t spatial = column_major_indices_ ? best_d + (best_h + best_w * h.input) * d.input
                                                                  : (best_d * h.input + best_h) * w.input + best_w;
                    out_index[o] = best_d < 0 ? -1 : p * g.in_plane + spatial;
                }
            });
        }
        ctx.outputs[0] = std::move(y);
        if (want_indices_) ctx.outputs[1] = std::move(indices);
    }

private:
    bool column_major_indices_;
    bool want_indices_;
};

class AveragePoolKernel final : public WindowPoolKernel {
public:
    explicit AveragePoolKernel(const Node& node)
        : WindowPoolKernel(node), count_include_pad_(node.get_attribute<int64_t>("count_include_pad", 0)) {
        if (count_include_pad_ != 0 && count_include_pad_ != 1)
            fail("attribute 'count_include_pad' is " + std::to_string(count_include_pad_) + "; expected 0 or 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Geometry g = geometry(x);
        Tensor y(g.out_shape, DType::Float32);
        const auto& [d, h, w] = g.axes;
        for (int64_t p = 0; p < g.planes; ++p) {
            const float* plane = x.data_ptr<float>() + p * g.in_plane;
            float* out = y.data_ptr<float>() + p * g.out_plane;
            for_each_window(g.taps, [&](int64_t o, const AxisTaps& td, const AxisTaps& th, const AxisTaps& tw) {
                float sum = 0;
                for_each_tap(g.axes, td, th, tw,
                             [&](int64_t id, int64_t ih, int64_t iw) { sum += plane[(id * h.input + ih) * w.input + iw]; });
                // Padding taps count only when asked; taps past the end padding (ceil_mode) never do.
                const int64_t divisor = count_include_pad_ ? td.padded_count * th.padded_count * tw.padded_count
                                                           : td.count * th.count * tw.count;
                out[o] = sum / static_cast<float>(divisor);
            });
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t count_include_pad_;
};

// Output (N, C, window dims...) of MaxPool/AveragePool; Indices (MaxPool) has the same shape.
void infer_window_pool(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.empty()) return;  // rank unknown
    const WindowAttributes attrs = WindowAttributes::parse(node, true);
    if (attrs.kernel_shape.empty()) fail_node(node, "missing required attribute 'kernel_shape'");
    if (x.shape.size() != attrs.kernel_shape.size() + 2)
        fail_node(node, "input X has shape " + shape_to_string(x.shape) + "; kernel_shape " +
                            shape_to_string(attrs.kernel_shape) + " needs rank " +
                            std::to_string(attrs.kernel_shape.size() + 2));
    Shape out{x.shape[0], x.shape[1]};
    const Shape spatial =
        infer_window_output(attrs, to_shape(attrs.kernel_shape), Shape(x.shape.begin() + 2, x.shape.end()), node);
    out.insert(out.end(), spatial.begin(), spatial.end());
    if (node.outputs().size() > 1 && !node.outputs()[1].empty()) ctx.set_output(1, DType::Int64, out);
    ctx.set_output(0, x.dtype, std::move(out));
}

class GlobalAveragePoolKernel final : public NodeKernel {
public:
    explicit GlobalAveragePoolKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_dtype(node_, x, DType::Float32, "input X");
        if (x.ndim() < 3) fail("input X has shape " + shape_to_string(x.shape()) + "; expected (N, C, spatial...)");
        std::vector<int64_t> out_shape(x.ndim(), 1);
        out_shape[0] = x.shape()[0];
        out_shape[1] = x.shape()[1];
        const int64_t planes = out_shape[0] * out_shape[1];
        const int64_t plane_size = planes == 0 ? 0 : x.num_elements() / planes;
        Tensor y(out_shape, DType::Float32);
        const float* xd = x.data_ptr<float>();
        float* yd = y.data_ptr<float>();
        for (int64_t p = 0; p < planes; ++p) {
            double sum = 0;  // planes can be large: accumulate in double
            for (int64_t i = 0; i < plane_size; ++i) sum += xd[p * plane_size + i];
            yd[p] = static_cast<float>(sum / static_cast<double>(plane_size));
        }
        ctx.outputs[0] = std::move(y);
    }
};

void infer_global_pool(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.empty()) return;  // rank unknown
    if (x.shape.size() < 3)
        fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, spatial...)");
    Shape out(x.shape.size(), int64_t{1});
    out[0] = x.shape[0];
    out[1] = x.shape[1];
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_pool_ops(OpTable& table) {
    table.add(OpSchema{"MaxPool", "", 1, 1, 1, 1, 2, infer_window_pool,
                       [](const KernelInfo& info) { return std::make_unique<MaxPoolKernel>(info.node); }});
    table.add(OpSchema{"AveragePool", "", 1, 1, 1, 1, 1, infer_window_pool,
                       [](const KernelInfo& info) { return std::make_unique<AveragePoolKernel>(info.node); }});
    table.add(OpSchema{"GlobalAveragePool", "", 1, 1, 1, 1, 1, infer_global_pool,
                       [](const KernelInfo& info) { return std::make_unique<GlobalAveragePoolKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
