// MaxPool (with the optional Indices output), AveragePool, LpPool, GlobalAveragePool,
// GlobalMaxPool, GlobalLpPool (1-D/2-D/3-D windows) and MaxUnpool. MaxPool takes the floating
// types, int8 and uint8; the others the floating types (float, double, float16, bfloat16),
// summing in double. The window geometry (pads, auto_pad, ceil_mode) is shared with Conv
// (conv.cpp).
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/nn_common.hpp"

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

// Attribute parsing and run-time geometry common to MaxPool, AveragePool and LpPool.
class WindowPoolKernel : public NodeKernel {
public:
    struct Geometry {
        std::vector<int64_t> out_shape;  // N, C, spatial...
        int64_t planes = 0, in_plane = 0, out_plane = 0;
        std::array<WindowAxis, 3> axes;
        std::array<std::vector<AxisTaps>, 3> taps;
    };

protected:
    explicit WindowPoolKernel(const Node& node) : NodeKernel(node), window_(WindowAttributes::parse(node, true)) {
        if (window_.kernel_shape.empty()) fail("missing required attribute 'kernel_shape'");
        if (window_.kernel_shape.size() > 3)
            fail("kernel_shape " + shape_to_string(window_.kernel_shape) + ": only 1-D, 2-D and 3-D pooling is supported");
    }

    Geometry geometry(const Tensor& x) const {
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

// Splits the planes over threads when the pooling work is large enough.
template <typename F>
void for_each_plane(int64_t planes, double work, int num_threads, F&& f) {
    parallel_for(planes, threads_for_work(work, num_threads), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) f(p);
    });
}

double window_work(const WindowPoolKernel::Geometry& g) {
    double taps = 1;
    for (const auto& a : g.axes) taps *= static_cast<double>(a.kernel);
    return static_cast<double>(g.planes) * static_cast<double>(g.out_plane) * taps;
}

class MaxPoolKernel final : public WindowPoolKernel {
public:
    explicit MaxPoolKernel(const Node& node)
        : WindowPoolKernel(node),
          column_major_indices_(node.get_attribute<int64_t>("storage_order", 0) == 1),
          want_indices_(wants_output(node, 1)) {
        const int64_t order = node.get_attribute<int64_t>("storage_order", 0);
        if (order != 0 && order != 1)
            fail("attribute 'storage_order' is " + std::to_string(order) + "; expected 0 (row major) or 1 (column major)");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const DType dt = x.dtype();
        if (!is_float_type(dt) && dt != DType::Int8 && dt != DType::UInt8)
            fail("input X is " + dtype_to_string(dt) + "; MaxPool takes Float32, Float64, Float16, BFloat16, Int8 or UInt8");
        const Geometry g = geometry(x);
        Tensor y(g.out_shape, dt);
        Tensor indices = want_indices_ ? Tensor(g.out_shape, DType::Int64) : Tensor();
        dispatch_numeric(dt, node_, [&](auto t) {
            using T = decltype(t);
            run<T>(x, g, y, want_indices_ ? indices.data_ptr<int64_t>() : nullptr, ctx.num_threads);
        });
        ctx.outputs[0] = std::move(y);
        if (want_indices_) ctx.outputs[1] = std::move(indices);
    }

private:
    template <typename T>
    void run(const Tensor& x, const Geometry& g, Tensor& y, int64_t* indices, int num_threads) const {
        const auto& [d, h, w] = g.axes;
        for_each_plane(g.planes, window_work(g), num_threads, [&](int64_t p) {
            const T* plane = x.data_ptr<T>() + p * g.in_plane;
            T* out = y.data_ptr<T>() + p * g.out_plane;
            int64_t* out_index = indices ? indices + p * g.out_plane : nullptr;
            for_each_window(g.taps, [&](int64_t o, const AxisTaps& td, const AxisTaps& th, const AxisTaps& tw) {
                T best = std::numeric_limits<T>::lowest();
                int64_t best_d = -1, best_h = -1, best_w = -1;
                for_each_tap(g.axes, td, th, tw, [&](int64_t id, int64_t ih, int64_t iw) {
                    const T v = plane[(id * h.input + ih) * w.input + iw];
                    // First maximum wins; NaN never becomes it (as ONNX Runtime). `v == v` is false for NaN.
                    if (best_d < 0 ? v == v : v > best) {
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
        });
    }

    bool column_major_indices_;
    bool want_indices_;
};

// AveragePool and LpPool: a function of the sum over each window's taps (padding adds 0).
class SumPoolKernel final : public WindowPoolKernel {
public:
    SumPoolKernel(const Node& node, bool lp)
        : WindowPoolKernel(node),
          lp_(lp),
          p_(lp ? node.get_attribute<int64_t>("p", 2) : 1),
          count_include_pad_(lp ? 0 : node.get_attribute<int64_t>("count_include_pad", 0)) {
        if (count_include_pad_ != 0 && count_include_pad_ != 1)
            fail("attribute 'count_include_pad' is " + std::to_string(count_include_pad_) + "; expected 0 or 1");
        if (p_ < 1) fail("attribute 'p' is " + std::to_string(p_) + "; expected >= 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input X");
        const Geometry g = geometry(x);
        Tensor y(g.out_shape, x.dtype());
        const auto& [d, h, w] = g.axes;
        const double p = static_cast<double>(p_);
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            for_each_plane(g.planes, window_work(g), ctx.num_threads, [&](int64_t pl) {
                const T* plane = x.data_ptr<T>() + pl * g.in_plane;
                T* out = y.data_ptr<T>() + pl * g.out_plane;
                for_each_window(g.taps, [&](int64_t o, const AxisTaps& td, const AxisTaps& th, const AxisTaps& tw) {
                    double sum = 0;
                    for_each_tap(g.axes, td, th, tw, [&](int64_t id, int64_t ih, int64_t iw) {
                        const double v = static_cast<double>(plane[(id * h.input + ih) * w.input + iw]);
                        sum += !lp_ ? v : p_ == 1 ? std::abs(v) : p_ == 2 ? v * v : std::pow(std::abs(v), p);
                    });
                    if (lp_) {
                        out[o] = static_cast<T>(p_ == 1 ? sum : p_ == 2 ? std::sqrt(sum) : std::pow(sum, 1.0 / p));
                        return;
                    }
                    // Padding taps count only when asked; taps past the end padding (ceil_mode) never do.
                    const int64_t divisor = count_include_pad_ ? td.padded_count * th.padded_count * tw.padded_count
                                                               : td.count * th.count * tw.count;
                    out[o] = static_cast<T>(sum / static_cast<double>(divisor));
                });
            });
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    bool lp_;
    int64_t p_;
    int64_t count_include_pad_;
};

// Output (N, C, window dims...) of MaxPool/AveragePool/LpPool; Indices (MaxPool) has the same shape.
void infer_window_pool(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& x = ctx.input(0);
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
    if (wants_output(node, 1)) ctx.set_output(1, DType::Int64, out);
    ctx.set_output(0, x.dtype, std::move(out));
}

// GlobalAveragePool, GlobalMaxPool, GlobalLpPool: one value per (N, C) plane.
enum class GlobalMode { Average, Max, Lp };

class GlobalPoolKernel final : public NodeKernel {
public:
    GlobalPoolKernel(const Node& node, GlobalMode mode)
        : NodeKernel(node), mode_(mode), p_(mode == GlobalMode::Lp ? node.get_attribute<int64_t>("p", 2) : 1) {
        if (p_ < 1) fail("attribute 'p' is " + std::to_string(p_) + "; expected >= 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        require_float_type(node_, x.dtype(), "input X");
        if (x.ndim() < 3) fail("input X has shape " + shape_to_string(x.shape()) + "; expected (N, C, spatial...)");
        std::vector<int64_t> out_shape(x.ndim(), 1);
        out_shape[0] = x.shape()[0];
        out_shape[1] = x.shape()[1];
        const int64_t planes = out_shape[0] * out_shape[1];
        const int64_t size = dims_product(x.shape(), 2, x.ndim());
        Tensor y(out_shape, x.dtype());
        const double p = static_cast<double>(p_);
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t pl = 0; pl < planes; ++pl) {
                const T* v = xd + pl * size;
                double r = mode_ == GlobalMode::Max ? -std::numeric_limits<double>::infinity() : 0.0;
                for (int64_t i = 0; i < size; ++i) {  // accumulated in double: planes can be large
                    const double e = static_cast<double>(v[i]);
                    if (mode_ == GlobalMode::Max) r = (e > r || std::isnan(e)) && !std::isnan(r) ? e : r;
                    else if (mode_ == GlobalMode::Average) r += e;
                    else r += std::pow(std::abs(e), p);
                }
                if (mode_ == GlobalMode::Average) r /= static_cast<double>(size);
                if (mode_ == GlobalMode::Lp) r = std::pow(r, 1.0 / p);
                yd[pl] = static_cast<T>(r);
            }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    GlobalMode mode_;
    int64_t p_;
};

void infer_global_pool(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() < 3)
        fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, spatial...)");
    Shape out(x.shape.size(), int64_t{1});
    out[0] = x.shape[0];
    out[1] = x.shape[1];
    ctx.set_output(0, x.dtype, std::move(out));
}

// MaxUnpool: scatters X into zeros at MaxPool's flat Indices. The output's spatial dims are
// (in - 1) * stride + kernel - pads, or the output_shape input.
struct UnpoolAttrs {
    std::vector<int64_t> kernel, strides, pads;

    explicit UnpoolAttrs(const Node& node)
        : kernel(node.get_attribute<std::vector<int64_t>>("kernel_shape")),
          strides(node.get_attribute<std::vector<int64_t>>("strides", std::vector<int64_t>(kernel.size(), 1))),
          pads(node.get_attribute<std::vector<int64_t>>("pads", std::vector<int64_t>(2 * kernel.size(), 0))) {
        if (strides.size() != kernel.size() || pads.size() != 2 * kernel.size())
            fail_node(node, "attributes strides " + shape_to_string(strides) + " and pads " + shape_to_string(pads) +
                                " do not fit kernel_shape " + shape_to_string(kernel));
        for (size_t i = 0; i < kernel.size(); ++i)
            if (kernel[i] < 1 || strides[i] < 1 || pads[i] < 0 || pads[i + kernel.size()] < 0)
                fail_node(node, "attributes kernel_shape, strides must be >= 1 and pads >= 0");
    }

    std::optional<int64_t> output_dim(size_t i, std::optional<int64_t> in) const {
        if (!in) return std::nullopt;
        return (*in - 1) * strides[i] + kernel[i] - pads[i] - pads[i + kernel.size()];
    }
};

class MaxUnpoolKernel final : public NodeKernel {
public:
    explicit MaxUnpoolKernel(const Node& node) : NodeKernel(node), attrs_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& idx = ctx.input(1);
        require_float_type(node_, x.dtype(), "input X");
        if (x.ndim() != attrs_.kernel.size() + 2)
            fail("input X has shape " + shape_to_string(x.shape()) + "; kernel_shape " + shape_to_string(attrs_.kernel) +
                 " needs rank " + std::to_string(attrs_.kernel.size() + 2));
        if (idx.shape() != x.shape())
            fail("input I has shape " + shape_to_string(idx.shape()) + "; expected X's shape " + shape_to_string(x.shape()));
        std::vector<int64_t> shape{x.shape()[0], x.shape()[1]};  // the shape the indices address
        for (size_t i = 0; i < attrs_.kernel.size(); ++i) shape.push_back(*attrs_.output_dim(i, x.shape()[i + 2]));
        for (int64_t d : shape)
            if (d < 0) fail("output shape " + shape_to_string(shape) + " has a negative dimension");
        std::vector<int64_t> out_shape = shape;
        if (ctx.has_input(2)) {
            out_shape = int_values(ctx.input(2), node_, "output_shape");
            if (out_shape.size() != x.ndim())
                fail("output_shape " + shape_to_string(out_shape) + " must have rank " + std::to_string(x.ndim()));
            for (size_t i = 0; i < shape.size(); ++i)
                if (out_shape[i] < shape[i])
                    fail("output_shape " + shape_to_string(out_shape) + " is smaller than the unpooled shape " +
                         shape_to_string(shape));
        }
        Tensor y = Tensor::zeros(out_shape, x.dtype());
        const std::vector<int64_t> where = int_values(idx, node_, "input I");
        const int64_t total = num_elements_of(shape);
        // The indices address the unpooled shape; a larger output_shape holds it in its leading
        // corner (as the ONNX reference and its tests do).
        std::vector<int64_t> out_strides(shape.size(), 1), in_strides(shape.size(), 1);
        for (size_t d = shape.size() - 1; d-- > 0;) {
            out_strides[d] = out_strides[d + 1] * out_shape[d + 1];
            in_strides[d] = in_strides[d + 1] * shape[d + 1];
        }
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (size_t i = 0; i < where.size(); ++i) {
                int64_t at = where[i];
                if (at < 0 || at >= total)
                    fail("index " + std::to_string(at) + " in input I is out of range for the unpooled shape " +
                         shape_to_string(shape));
                int64_t out = 0;
                for (size_t d = 0; d < shape.size(); ++d) {
                    out += at / in_strides[d] * out_strides[d];
                    at %= in_strides[d];
                }
                yd[out] = xd[i];
            }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    UnpoolAttrs attrs_;
};

void infer_max_unpool(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const UnpoolAttrs attrs(ctx.node);
    if (x.shape.size() != attrs.kernel.size() + 2)
        fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; kernel_shape " +
                                shape_to_string(attrs.kernel) + " needs rank " + std::to_string(attrs.kernel.size() + 2));
    Shape out{x.shape[0], x.shape[1]};
    for (size_t i = 0; i < attrs.kernel.size(); ++i) out.push_back(attrs.output_dim(i, x.shape[i + 2]));
    if (ctx.node.has_input(2)) {
        if (const Tensor* given = ctx.constant(2)) out = to_shape(int_values(*given, ctx.node, "output_shape"));
        else out = Shape(x.shape.size());  // rank as X, values unknown
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_pool_ops(OpTable& table) {
    table.add(OpSchema{"MaxPool", "", 1, 1, 1, 1, 2, infer_window_pool,
                       [](const KernelInfo& info) { return std::make_unique<MaxPoolKernel>(info.node); }});
    table.add(OpSchema{"AveragePool", "", 1, 1, 1, 1, 1, infer_window_pool,
                       [](const KernelInfo& info) { return std::make_unique<SumPoolKernel>(info.node, false); }});
    table.add(OpSchema{"LpPool", "", 1, 1, 1, 1, 1, infer_window_pool,
                       [](const KernelInfo& info) { return std::make_unique<SumPoolKernel>(info.node, true); }});
    table.add(OpSchema{"GlobalAveragePool", "", 1, 1, 1, 1, 1, infer_global_pool, [](const KernelInfo& info) {
                           return std::make_unique<GlobalPoolKernel>(info.node, GlobalMode::Average);
                       }});
    table.add(OpSchema{"GlobalMaxPool", "", 1, 1, 1, 1, 1, infer_global_pool, [](const KernelInfo& info) {
                           return std::make_unique<GlobalPoolKernel>(info.node, GlobalMode::Max);
                       }});
    table.add(OpSchema{"GlobalLpPool", "", 2, 1, 1, 1, 1, infer_global_pool, [](const KernelInfo& info) {
                           return std::make_unique<GlobalPoolKernel>(info.node, GlobalMode::Lp);
                       }});
    table.add(OpSchema{"MaxUnpool", "", 9, 2, 3, 1, 1, infer_max_unpool,
                       [](const KernelInfo& info) { return std::make_unique<MaxUnpoolKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
