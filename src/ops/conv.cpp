// Conv, ConvTranspose (1-D/2-D/3-D) and DeformConv (2-D), and the sliding-window geometry Conv
// shares with the pools. Float32 and Float64 compute in their own type; Float16 and BFloat16
// are widened to float once and the result rounded once.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/nn_common.hpp"

namespace pyflame_rt::ops {

// ---------------------------------------------------------------------------------------------
// Window geometry (declared in op.hpp)

namespace {

void require_all(const Node& node, const char* name, const std::vector<int64_t>& values, int64_t min) {
    for (int64_t v : values)
        if (v < min)
            fail_node(node, std::string("attribute '") + name + "' " + shape_to_string(values) + " must be >= " +
                                std::to_string(min));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

WindowAttributes WindowAttributes::parse(const Node& node, bool has_ceil_mode) {
    WindowAttributes attrs;
    attrs.kernel_shape = node.get_attribute<std::vector<int64_t>>("kernel_shape", {});
    attrs.strides = node.get_attribute<std::vector<int64_t>>("strides", {});
    attrs.dilations = node.get_attribute<std::vector<int64_t>>("dilations", {});
    attrs.pads = node.get_attribute<std::vector<int64_t>>("pads", {});
    require_all(node, "kernel_shape", attrs.kernel_shape, 1);
    require_all(node, "strides", attrs.strides, 1);
    require_all(node, "dilations", attrs.dilations, 1);
    require_all(node, "pads", attrs.pads, 0);
    if (attrs.pads.size() % 2 != 0)
        fail_node(node, "attribute 'pads' " + shape_to_string(attrs.pads) + " must hold a begin and an end per axis");

    const std::string auto_pad = node.get_attribute<std::string>("auto_pad", "NOTSET");
    if (auto_pad == "NOTSET" || auto_pad.empty()) attrs.auto_pad = AutoPad::NotSet;
    else if (auto_pad == "VALID") attrs.auto_pad = AutoPad::Valid;
    else if (auto_pad == "SAME_UPPER") attrs.auto_pad = AutoPad::SameUpper;
    else if (auto_pad == "SAME_LOWER") attrs.auto_pad = AutoPad::SameLower;
    else fail_node(node, "attribute 'auto_pad' is '" + auto_pad + "'; expected NOTSET, VALID, SAME_UPPER or SAME_LOWER");

    if (has_ceil_mode) {
        const int64_t ceil_mode = node.get_attribute<int64_t>("ceil_mode", 0);
        if (ceil_mode != 0 && ceil_mode != 1)
            fail_node(node, "attribute 'ceil_mode' is " + std::to_string(ceil_mode) + "; expected 0 or 1");
        attrs.ceil_mode = ceil_mode == 1;
    }
    if (!attrs.kernel_shape.empty()) attrs.check_rank(attrs.kernel_shape.size(), node);
    return attrs;
}

void WindowAttributes::check_rank(size_t spatial_rank, const Node& node) const {
    auto check = [&](const char* name, const std::vector<int64_t>& values, size_t per_axis) {
        if (!values.empty() && values.size() != per_axis * spatial_rank)
            fail_node(node, std::string("attribute '") + name + "' " + shape_to_string(values) + " has " +
                                std::to_string(values.size()) + " values; the input has " +
                                std::to_string(spatial_rank) + " spatial axes, so expected " +
                                std::to_string(per_axis * spatial_rank));
    };
    check("kernel_shape", kernel_shape, 1);
    check("strides", strides, 1);
    check("dilations", dilations, 1);
    check("pads", pads, 2);
}

WindowAxis resolve_window_axis(const WindowAttributes& attrs, size_t axis, size_t spatial_rank, int64_t kernel,
                               int64_t input, const Node& node) {
    WindowAxis w;
    w.kernel = kernel;
    w.input = input;
    w.stride = attrs.strides.empty() ? 1 : attrs.strides[axis];
    w.dilation = attrs.dilations.empty() ? 1 : attrs.dilations[axis];
    const int64_t extent = (kernel - 1) * w.dilation + 1;  // input span one window covers

    if (attrs.auto_pad == AutoPad::SameUpper || attrs.auto_pad == AutoPad::SameLower) {
        // SAME: output = ceil(input / stride); the padding that needs is split evenly, the odd
        // cell going to the end (UPPER) or the beginning (LOWER).
        w.output = ceil_div(input, w.stride);
        const int64_t total = std::max<int64_t>(0, (w.output - 1) * w.stride + extent - input);
        w.pad_begin = attrs.auto_pad == AutoPad::SameUpper ? total / 2 : total - total / 2;
        w.pad_end = total - w.pad_begin;
    } else {
        if (attrs.auto_pad == AutoPad::NotSet && !attrs.pads.empty()) {
            w.pad_begin = attrs.pads[axis];
            w.pad_end = attrs.pads[axis + spatial_rank];
        }
        const int64_t span = input + w.pad_begin + w.pad_end - extent;
        if (span < 0) {
            w.output = 0;
        } else if (attrs.ceil_mode) {
            w.output = ceil_div(span, w.stride) + 1;
            // A last window that would start in the end padding is dropped (ONNX, PyTorch).
            if ((w.output - 1) * w.stride >= input + w.pad_begin) --w.output;
        } else {
            w.output = span / w.stride + 1;
        }
    }
    if (w.output < 1)
        fail_node(node, "spatial axis " + std::to_string(axis) + " has size " + std::to_string(input) +
                            " (padding " + std::to_string(w.pad_begin) + "+" + std::to_string(w.pad_end) +
                            "), smaller than the window extent " + std::to_string(extent));
    return w;
}

std::vector<WindowAxis> resolve_window(const WindowAttributes& attrs, const std::vector<int64_t>& kernel,
                                       const std::vector<int64_t>& input_spatial, const Node& node) {
    attrs.check_rank(input_spatial.size(), node);
    std::vector<WindowAxis> axes;
    for (size_t i = 0; i < input_spatial.size(); ++i)
        axes.push_back(resolve_window_axis(attrs, i, input_spatial.size(), kernel[i], input_spatial[i], node));
    return axes;
}

Shape infer_window_output(const WindowAttributes& attrs, const Shape& kernel, const Shape& input_spatial,
                          const Node& node) {
    attrs.check_rank(input_spatial.size(), node);
    Shape out(input_spatial.size());
    for (size_t i = 0; i < input_spatial.size(); ++i)
        if (kernel[i] && input_spatial[i])
            out[i] = resolve_window_axis(attrs, i, input_spatial.size(), *kernel[i], *input_spatial[i], node).output;
    return out;
}

std::array<WindowAxis, 3> as_3d(const std::vector<WindowAxis>& axes) {
    std::array<WindowAxis, 3> out{};  // identity axes: kernel 1, stride 1, no padding, size 1
    std::copy(axes.begin(), axes.end(), out.begin() + (3 - axes.size()));
    return out;
}

// ---------------------------------------------------------------------------------------------
// ConvTransposeAttributes (op.hpp)
ConvTransposeAttributes::ConvTransposeAttributes(const Node& node)
    : window(WindowAttributes::parse(node, false)),
      output_padding(node.get_attribute<std::vector<int64_t>>("output_padding", {})),
      output_shape(node.get_attribute<std::vector<int64_t>>("output_shape", {})),
      group(node.get_attribute<int64_t>("group", 1)) {
    if (group < 1) fail_node(node, "attribute 'group' is " + std::to_string(group) + "; expected >= 1");
    for (int64_t v : output_padding)
        if (v < 0) fail_node(node, "attribute 'output_padding' " + shape_to_string(output_padding) + " must be >= 0");
}

WindowAxis ConvTransposeAttributes::axis(size_t i, size_t spatial, int64_t kernel, int64_t in, const Node& node) const {
    if (!output_padding.empty() && output_padding.size() != spatial)
        fail_node(node, "attribute 'output_padding' " + shape_to_string(output_padding) + " does not have " +
                            std::to_string(spatial) + " values");
    std::vector<int64_t> shape = output_shape;
    if (shape.size() == spatial + 2) shape.erase(shape.begin(), shape.begin() + 2);  // (N, C, spatial...) given
    if (!shape.empty() && shape.size() != spatial)
        fail_node(node, "attribute 'output_shape' " + shape_to_string(output_shape) + " does not have " +
                            std::to_string(spatial) + " values");
    WindowAxis a;
    a.kernel = kernel;
    a.output = in;
    a.stride = window.strides.empty() ? 1 : window.strides[i];
    a.dilation = window.dilations.empty() ? 1 : window.dilations[i];
    const int64_t adj = output_padding.empty() ? 0 : output_padding[i];
    const int64_t full = a.stride * (in - 1) + adj + (kernel - 1) * a.dilation + 1;
    const bool same = window.auto_pad == AutoPad::SameUpper || window.auto_pad == AutoPad::SameLower;
    if (!shape.empty() || same) {
        a.input = !shape.empty() ? shape[i] : in * a.stride;
        // A requested size past the full one is zero-extended at the end (as ONNX Runtime).
        const int64_t total = std::max<int64_t>(0, full - a.input);
        a.pad_begin = window.auto_pad == AutoPad::SameUpper ? total / 2 : total - total / 2;
        a.pad_end = total - a.pad_begin;
    } else {
        if (window.auto_pad == AutoPad::NotSet && !window.pads.empty()) {
            a.pad_begin = window.pads[i];
            a.pad_end = window.pads[i + spatial];
        }
        a.input = full - a.pad_begin - a.pad_end;
    }
    if (a.input < 0)
        fail_node(node, "spatial axis " + std::to_string(i) + " would have output size " + std::to_string(a.input));
    return a;
}

// Conv, ConvTranspose, DeformConv

namespace {

// The compute type of a floating dtype: double for Float64, float for the others.
template <typename F>
void dispatch_compute(DType dtype, const Node& node, const char* what, F&& fn) {
    require_float_type(node, dtype, what);
    if (dtype == DType::Float64) fn(double{});
    else fn(float{});
}

// `t`'s values as compute type C: its own data when it already is C, else a widened copy.
template <typename C>
const C* widen(const Tensor& t, std::vector<C>& storage, const Node& node) {
    if (t.dtype() == dtype_of<C>::value) return t.data_ptr<C>();
    storage.resize(static_cast<size_t>(t.num_elements()));
    dispatch_float_types(t.dtype(), node, [&](auto v) {
        using T = decltype(v);
        std::transform(t.data_ptr<T>(), t.data_ptr<T>() + storage.size(), storage.begin(),
                       [](T e) { return static_cast<C>(static_cast<float>(e)); });
    });
    return storage.data();
}

// `y` (compute type) as a tensor of `dtype` (rounded when narrower).
Tensor narrow(Tensor y, DType dtype, const Node& node) {
    if (y.dtype() == dtype) return y;
    Tensor out(y.shape(), dtype);
    const float* src = y.data_ptr<float>();  // only float is ever narrowed
    dispatch_float_types(dtype, node, [&](auto v) {
        using T = decltype(v);
        std::transform(src, src + y.num_elements(), out.data_ptr<T>(), [](float e) { return static_cast<T>(e); });
    });
    return out;
}

std::vector<int64_t> tail(const std::vector<int64_t>& dims, size_t from) {
    return std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(from), dims.end());
}

// Unfolds `channels` planes (3-D normalized) into col: one row per (channel, kernel offset),
// one column per output position; zero where the window reads padding.
template <typename C>
void im2col(const C* x, int64_t channels, const std::array<WindowAxis, 3>& g, C* col) {
    const auto& [d, h, w] = g;
    const int64_t out_plane = d.output * h.output * w.output;
    for (int64_t c = 0; c < channels; ++c) {
        const C* plane = x + c * d.input * h.input * w.input;
        for (int64_t kd = 0; kd < d.kernel; ++kd)
            for (int64_t kh = 0; kh < h.kernel; ++kh)
                for (int64_t kw = 0; kw < w.kernel; ++kw) {
                    C* dst = col;
                    col += out_plane;
                    for (int64_t od = 0; od < d.output; ++od) {
                        const int64_t id = od * d.stride - d.pad_begin + kd * d.dilation;
                        if (id < 0 || id >= d.input) {
                            dst = std::fill_n(dst, h.output * w.output, C(0));
                            continue;
                        }
                        for (int64_t oh = 0; oh < h.output; ++oh) {
                            const int64_t ih = oh * h.stride - h.pad_begin + kh * h.dilation;
                            if (ih < 0 || ih >= h.input) {
                                dst = std::fill_n(dst, w.output, C(0));
                                continue;
                            }
                            const C* row = plane + (id * h.input + ih) * w.input;
                            for (int64_t ow = 0; ow < w.output; ++ow) {
                                const int64_t iw = ow * w.stride - w.pad_begin + kw * w.dilation;
                                *dst++ = iw >= 0 && iw < w.input ? row[iw] : C(0);
                            }
                        }
                    }
                }
    }
}

// The inverse scatter of im2col: adds each column entry onto the output position its window
// tap reads (ConvTranspose). `g`'s "input" is the output image here, its "output" the input.
template <typename C>
void col2im(const C* col, int64_t channels, const std::array<WindowAxis, 3>& g, C* y) {
    const auto& [d, h, w] = g;
    const int64_t col_plane = d.output * h.output * w.output;
    for (int64_t c = 0; c < channels; ++c) {
        C* plane = y + c * d.input * h.input * w.input;
        for (int64_t kd = 0; kd < d.kernel; ++kd)
            for (int64_t kh = 0; kh < h.kernel; ++kh)
                for (int64_t kw = 0; kw < w.kernel; ++kw) {
                    const C* src = col;
                    col += col_plane;
                    for (int64_t od = 0; od < d.output; ++od) {
                        const int64_t id = od * d.stride - d.pad_begin + kd * d.dilation;
                        if (id < 0 || id >= d.input) {
                            src += h.output * w.output;
                            continue;
                        }
                        for (int64_t oh = 0; oh < h.output; ++oh) {
                            const int64_t ih = oh * h.stride - h.pad_begin + kh * h.dilation;
                            if (ih < 0 || ih >= h.input) {
                                src += w.output;
                                continue;
                            }
                            C* row = plane + (id * h.input + ih) * w.input;
                            for (int64_t ow = 0; ow < w.output; ++ow, ++src) {
                                const int64_t iw = ow * w.stride - w.pad_begin + kw * w.dilation;
                                if (iw >= 0 && iw < w.input) row[iw] += *src;
                            }
                        }
                    }
                }
    }
}

// Checks the optional bias input (M values) and returns it widened, or nullptr.
template <typename C>
const C* bias_of(const KernelContext& ctx, size_t i, int64_t maps, std::vector<C>& storage, const Node& node) {
    if (!ctx.has_input(i)) return nullptr;
    const Tensor& b = ctx.input(i);
    if (b.shape() != std::vector<int64_t>{maps})
        fail_node(node, "bias B has shape " + shape_to_string(b.shape()) + "; expected [" + std::to_string(maps) + "]");
    return widen<C>(b, storage, node);
}

// Inputs X (N, C, spatial...), W (M, C/group, kernel...), optional B (M).
class ConvKernel final : public NodeKernel {
public:
    explicit ConvKernel(const Node& node)
        : NodeKernel(node), window_(WindowAttributes::parse(node, false)), group_(node.get_attribute<int64_t>("group", 1)) {
        if (group_ < 1) fail("attribute 'group' is " + std::to_string(group_) + "; expected >= 1");
        if (!window_.kernel_shape.empty() && window_.kernel_shape.size() > 3)
            fail("kernel_shape " + shape_to_string(window_.kernel_shape) + ": only 1-D, 2-D and 3-D convolutions are supported");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(1);
        dispatch_compute(x.dtype(), node_, "input X", [&](auto c) {
            using C = decltype(c);
            ctx.outputs[0] = narrow(run<C>(ctx, x, w), x.dtype(), node_);
        });
    }

private:
    template <typename C>
    Tensor run(const KernelContext& ctx, const Tensor& x, const Tensor& w) const {
        if (w.dtype() != x.dtype())
            fail("weight W is " + dtype_to_string(w.dtype()) + "; expected " + dtype_to_string(x.dtype()) + " like input X");
        const size_t rank = x.ndim();
        if (rank < 3 || rank > 5)
            fail("input X has shape " + shape_to_string(x.shape()) +
                 "; expected (N, C, D1[, D2[, D3]]), rank 3 to 5");
        if (w.ndim() != rank)
            fail("weight W has shape " + shape_to_string(w.shape()) + "; expected rank " + std::to_string(rank) +
                 " like input X " + shape_to_string(x.shape()));
        const int64_t batch = x.shape()[0], channels = x.shape()[1];
        const int64_t maps = w.shape()[0], group_channels = w.shape()[1];
        if (channels != group_channels * group_)
            fail("input X has " + std::to_string(channels) + " channels; weight W " + shape_to_string(w.shape()) +
                 " with group=" + std::to_string(group_) + " expects " + std::to_string(group_channels * group_));
        if (maps % group_ != 0)
            fail("weight W has " + std::to_string(maps) + " output channels, not divisible by group=" +
                 std::to_string(group_));
        const std::vector<int64_t> kernel = tail(w.shape(), 2);
        if (!window_.kernel_shape.empty() && window_.kernel_shape != kernel)
            fail("attribute kernel_shape " + shape_to_string(window_.kernel_shape) + " does not match weight W " +
                 shape_to_string(w.shape()));
        std::vector<C> xs, ws, bs;
        const C* bias = bias_of<C>(ctx, 2, maps, bs, node_);

        const std::vector<WindowAxis> axes = resolve_window(window_, kernel, tail(x.shape(), 2), node_);
        std::vector<int64_t> out_shape{batch, maps};
        for (const auto& a : axes) out_shape.push_back(a.output);
        Tensor y(out_shape, dtype_of<C>::value);

        const std::array<WindowAxis, 3> g = as_3d(axes);
        const int64_t in_plane = num_elements_of(tail(x.shape(), 2));
        const int64_t out_plane = num_elements_of(tail(out_shape, 2));
        const int64_t group_maps = maps / group_;
        const int64_t kernel_volume = num_elements_of(kernel);
        const int64_t patch = group_channels * kernel_volume;  // GEMM inner dimension
        // A 1x1 window with unit stride and no padding reads the input as is: skip im2col.
        const bool pointwise = std::all_of(axes.begin(), axes.end(), [](const WindowAxis& a) {
            return a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.pad_end == 0;
        });

        const C* xd = widen<C>(x, xs, node_);
        const C* wd = widen<C>(w, ws, node_);
        C* yd = y.data_ptr<C>();
        // One task per (image, group): y_g (group_maps x out_plane) = W_g (group_maps x patch) * col.
        auto run_task = [&](int64_t task, int gemm_threads, std::vector<C>& col) {
            const int64_t n = task / group_, grp = task % group_;
            const C* x_g = xd + (n * channels + grp * group_channels) * in_plane;
            C* y_g = yd + (n * maps + grp * group_maps) * out_plane;
            const C* cols = x_g;
            if (!pointwise) {
                col.resize(static_cast<size_t>(patch * out_plane));
                // Threads left for the GEMM also share the unfolding, a channel range each.
                parallel_for(group_channels, gemm_threads, [&](int64_t c_begin, int64_t c_end) {
                    im2col(x_g + c_begin * in_plane, c_end - c_begin, g, col.data() + c_begin * kernel_volume * out_plane);
                });
                cols = col.data();
            }
            if (bias)  // start from the bias and accumulate the product onto it
                for (int64_t m = 0; m < group_maps; ++m)
                    std::fill_n(y_g + m * out_plane, out_plane, bias[grp * group_maps + m]);
            gemm(false, false, group_maps, out_plane, patch, C(1), wd + grp * group_maps * patch, cols,
                 bias ? C(1) : C(0), y_g, gemm_threads);
        };

        const int64_t tasks = batch * group_;
        const double flops = 2.0 * static_cast<double>(tasks) * group_maps * out_plane * patch;
        const int threads = threads_for_work(flops, ctx.num_threads);
        if (tasks >= threads) {
            parallel_for(tasks, threads, [&](int64_t begin, int64_t end) {
                std::vector<C> col;
                for (int64_t t = begin; t < end; ++t) run_task(t, 1, col);
            });
        } else {
            std::vector<C> col;
            for (int64_t t = 0; t < tasks; ++t) run_task(t, threads, col);
        }
        return y;
    }

    WindowAttributes window_;
    int64_t group_;
};

void infer_conv(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& x = ctx.input(0);
    const size_t rank = x.shape.size();
    if (rank < 3) fail_node(node, "input X has shape " + shape_to_string(x.shape) + "; expected rank 3 to 5");
    const WindowAttributes attrs = WindowAttributes::parse(node, false);
    const int64_t group = node.get_attribute<int64_t>("group", 1);
    if (group < 1) fail_node(node, "attribute 'group' is " + std::to_string(group) + "; expected >= 1");
    attrs.check_rank(rank - 2, node);

    Shape kernel(rank - 2);
    std::optional<int64_t> maps;
    if (ctx.has_input(1)) {
        const TensorInfo& w = ctx.input(1);
        if (w.shape.size() != rank)
            fail_node(node, "weight W has shape " + shape_to_string(w.shape) + "; expected rank " +
                                std::to_string(rank) + " like input X " + shape_to_string(x.shape));
        maps = w.shape[0];
        kernel.assign(w.shape.begin() + 2, w.shape.end());
        if (x.shape[1] && w.shape[1] && *x.shape[1] != *w.shape[1] * group)
            fail_node(node, "input X " + shape_to_string(x.shape) + " has " + std::to_string(*x.shape[1]) +
                                " channels; weight W " + shape_to_string(w.shape) + " with group=" +
                                std::to_string(group) + " expects " + std::to_string(*w.shape[1] * group));
        if (maps && *maps % group != 0)
            fail_node(node, "weight W " + shape_to_string(w.shape) + " has output channels not divisible by group=" +
                                std::to_string(group));
    }
    for (size_t i = 0; i < attrs.kernel_shape.size(); ++i) {
        if (kernel[i] && *kernel[i] != attrs.kernel_shape[i])
            fail_node(node, "attribute kernel_shape " + shape_to_string(attrs.kernel_shape) +
                                " does not match the weight's spatial dims " + shape_to_string(kernel));
        kernel[i] = attrs.kernel_shape[i];
    }
    Shape out{x.shape[0], maps};
    const Shape spatial = infer_window_output(attrs, kernel, Shape(x.shape.begin() + 2, x.shape.end()), node);
    out.insert(out.end(), spatial.begin(), spatial.end());
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose (geometry: ConvTransposeAttributes in op.hpp), by GEMM and col2im.
class ConvTransposeKernel final : public NodeKernel {
public:
    explicit ConvTransposeKernel(const Node& node) : NodeKernel(node), attrs_(node) {
        if (!attrs_.window.kernel_shape.empty() && attrs_.window.kernel_shape.size() > 3)
            fail("kernel_shape " + shape_to_string(attrs_.window.kernel_shape) + ": only 1-D, 2-D and 3-D are supported");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        dispatch_compute(x.dtype(), node_, "input X", [&](auto c) {
            using C = decltype(c);
            ctx.outputs[0] = narrow(run<C>(ctx, x, ctx.input(1)), x.dtype(), node_);
        });
    }

private:
    template <typename C>
    Tensor run(const KernelContext& ctx, const Tensor& x, const Tensor& w) const {
        const size_t rank = x.ndim();
        if (rank < 3 || rank > 5)
            fail("input X has shape " + shape_to_string(x.shape()) + "; expected (N, C, D1[, D2[, D3]]), rank 3 to 5");
        if (w.ndim() != rank || w.dtype() != x.dtype())
            fail("weight W is " + dtype_to_string(w.dtype()) + " " + shape_to_string(w.shape()) + "; expected " +
                 dtype_to_string(x.dtype()) + " of rank " + std::to_string(rank) + " like input X");
        const int64_t group = attrs_.group;
        const int64_t batch = x.shape()[0], channels = x.shape()[1];
        if (w.shape()[0] != channels || channels % group != 0)
            fail("weight W has shape " + shape_to_string(w.shape()) + "; expected " + std::to_string(channels) +
                 " input channels (divisible by group=" + std::to_string(group) + ") like input X " +
                 shape_to_string(x.shape()));
        const int64_t group_maps = w.shape()[1], maps = group_maps * group, group_channels = channels / group;
        const std::vector<int64_t> kernel = tail(w.shape(), 2);
        if (!attrs_.window.kernel_shape.empty() && attrs_.window.kernel_shape != kernel)
            fail("attribute kernel_shape " + shape_to_string(attrs_.window.kernel_shape) + " does not match weight W " +
                 shape_to_string(w.shape()));
        attrs_.window.check_rank(rank - 2, node_);
        std::vector<C> xs, ws, bs;
        const C* bias = bias_of<C>(ctx, 2, maps, bs, node_);

        std::vector<WindowAxis> axes;
        std::vector<int64_t> out_shape{batch, maps};
        for (size_t i = 0; i + 2 < rank; ++i) {
            axes.push_back(attrs_.axis(i, rank - 2, kernel[i], x.shape()[i + 2], node_));
            out_shape.push_back(axes.back().input);
        }
        const std::array<WindowAxis, 3> g = as_3d(axes);
        const int64_t in_plane = num_elements_of(tail(x.shape(), 2));
        const int64_t out_plane = num_elements_of(tail(out_shape, 2));
        const int64_t rows = group_maps * num_elements_of(kernel);  // col rows per group

        const C* xd = widen<C>(x, xs, node_);
        const C* wd = widen<C>(w, ws, node_);
        Tensor y(out_shape, dtype_of<C>::value);
        C* yd = y.data_ptr<C>();
        const int64_t tasks = batch * group;
        const double flops = 2.0 * static_cast<double>(tasks) * rows * in_plane * group_channels;
        const int threads = threads_for_work(flops, ctx.num_threads);
        // One task per (image, group): col = W_g^T (rows x group_channels) * X_g, then scattered.
        parallel_for(tasks, threads, [&](int64_t begin, int64_t end) {
            std::vector<C> col(static_cast<size_t>(rows * in_plane));
            for (int64_t t = begin; t < end; ++t) {
                const int64_t n = t / group, grp = t % group;
                C* y_g = yd + (n * maps + grp * group_maps) * out_plane;
                for (int64_t m = 0; m < group_maps; ++m)
                    std::fill_n(y_g + m * out_plane, out_plane, bias ? bias[grp * group_maps + m] : C(0));
                gemm(true, false, rows, in_plane, group_channels, C(1), wd + grp * group_channels * rows,
                     xd + (n * channels + grp * group_channels) * in_plane, C(0), col.data(), 1);
                col2im(col.data(), group_maps, g, y_g);
            }
        });
        return y;
    }

    ConvTransposeAttributes attrs_;
};

void infer_conv_transpose(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& x = ctx.input(0);
    const size_t rank = x.shape.size();
    if (rank < 3) fail_node(node, "input X has shape " + shape_to_string(x.shape) + "; expected rank 3 to 5");
    const ConvTransposeAttributes attrs(node);
    attrs.window.check_rank(rank - 2, node);
    Shape kernel(rank - 2);
    std::optional<int64_t> maps;
    if (ctx.has_input(1)) {
        const TensorInfo& w = ctx.input(1);
        if (w.shape.size() != rank)
            fail_node(node, "weight W has shape " + shape_to_string(w.shape) + "; expected rank " + std::to_string(rank));
        if (w.shape[1]) maps = *w.shape[1] * attrs.group;
        kernel.assign(w.shape.begin() + 2, w.shape.end());
    }
    for (size_t i = 0; i < attrs.window.kernel_shape.size(); ++i) kernel[i] = attrs.window.kernel_shape[i];
    Shape out{x.shape[0], maps};
    for (size_t i = 0; i + 2 < rank; ++i) {
        if (kernel[i] && x.shape[i + 2]) out.push_back(attrs.axis(i, rank - 2, *kernel[i], *x.shape[i + 2], node).input);
        else out.push_back(std::nullopt);
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// DeformConv (2-D): Conv whose taps are moved by per-position offsets (N, offset_group *
// kH * kW * 2, oH, oW) and scaled by an optional mask (N, offset_group * kH * kW, oH, oW); the
// input is read bilinearly at the moved positions, zero outside.

class DeformConvKernel final : public NodeKernel {
public:
    explicit DeformConvKernel(const Node& node)
        : NodeKernel(node),
          window_(WindowAttributes::parse(node, false)),
          group_(node.get_attribute<int64_t>("group", 1)),
          offset_group_(node.get_attribute<int64_t>("offset_group", 1)) {
        if (group_ < 1 || offset_group_ < 1) fail("attributes 'group' and 'offset_group' must be >= 1");
        if (window_.auto_pad != AutoPad::NotSet) fail("attribute 'auto_pad' is not part of DeformConv");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        dispatch_compute(x.dtype(), node_, "input X", [&](auto c) {
            using C = decltype(c);
            ctx.outputs[0] = narrow(run<C>(ctx, x), x.dtype(), node_);
        });
    }

private:
    template <typename C>
    Tensor run(const KernelContext& ctx, const Tensor& x) const {
        const Tensor& w = ctx.input(1);
        const Tensor& offset = ctx.input(2);
        if (x.ndim() != 4 || w.ndim() != 4)
            fail("input X " + shape_to_string(x.shape()) + " and weight W " + shape_to_string(w.shape()) +
                 " must have rank 4: only 2-D DeformConv is supported");
        const int64_t batch = x.shape()[0], channels = x.shape()[1], height = x.shape()[2], width = x.shape()[3];
        const int64_t maps = w.shape()[0], group_channels = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3];
        if (channels != group_channels * group_ || maps % group_ != 0)
            fail("weight W " + shape_to_string(w.shape()) + " does not fit input X " + shape_to_string(x.shape()) +
                 " with group=" + std::to_string(group_));
        if (channels % offset_group_ != 0)
            fail("input X has " + std::to_string(channels) + " channels, not divisible by offset_group=" +
                 std::to_string(offset_group_));
        const std::vector<int64_t> kernel{kh, kw};
        if (!window_.kernel_shape.empty() && window_.kernel_shape != kernel)
            fail("attribute kernel_shape " + shape_to_string(window_.kernel_shape) + " does not match weight W " +
                 shape_to_string(w.shape()));
        const std::vector<WindowAxis> axes = resolve_window(window_, kernel, {height, width}, node_);
        const int64_t oh = axes[0].output, ow = axes[1].output, out_plane = oh * ow, taps = kh * kw;
        const std::vector<int64_t> offset_shape{batch, offset_group_ * taps * 2, oh, ow};
        if (offset.shape() != offset_shape)
            fail("input offset has shape " + shape_to_string(offset.shape()) + "; expected " + shape_to_string(offset_shape));
        const std::vector<int64_t> mask_shape{batch, offset_group_ * taps, oh, ow};
        if (ctx.has_input(4) && ctx.input(4).shape() != mask_shape)
            fail("input mask has shape " + shape_to_string(ctx.input(4).shape()) + "; expected " + shape_to_string(mask_shape));
        std::vector<C> xs, ws, bs, os, ms;
        const C* bias = bias_of<C>(ctx, 3, maps, bs, node_);
        const C* xd = widen<C>(x, xs, node_);
        const C* wd = widen<C>(w, ws, node_);
        const C* od = widen<C>(offset, os, node_);
        const C* md = ctx.has_input(4) ? widen<C>(ctx.input(4), ms, node_) : nullptr;

        Tensor y({batch, maps, oh, ow}, dtype_of<C>::value);
        C* yd = y.data_ptr<C>();
        const int64_t group_maps = maps / group_, channels_per_offset = channels / offset_group_;
        const int64_t patch = group_channels * taps;
        std::vector<C> col(static_cast<size_t>(channels * taps * out_plane));
        for (int64_t n = 0; n < batch; ++n) {
            // col row (c, i, j): channel c read at tap (i, j) moved by its offset, for each position.
            for (int64_t c = 0; c < channels; ++c) {
                const C* plane = xd + (n * channels + c) * height * width;
                const int64_t og = c / channels_per_offset;
                for (int64_t t = 0; t < taps; ++t) {
                    const int64_t i = t / kw, j = t % kw;
                    const C* off_h = od + ((n * offset_group_ + og) * taps * 2 + t * 2) * out_plane;
                    const C* off_w = off_h + out_plane;
                    const C* mask = md ? md + ((n * offset_group_ + og) * taps + t) * out_plane : nullptr;
                    C* dst = col.data() + (c * taps + t) * out_plane;
                    for (int64_t p = 0; p < out_plane; ++p) {
                        const double h = static_cast<double>((p / ow) * axes[0].stride - axes[0].pad_begin + i * axes[0].dilation) + off_h[p];
                        const double v = static_cast<double>((p % ow) * axes[1].stride - axes[1].pad_begin + j * axes[1].dilation) + off_w[p];
                        const double sample = bilinear_zero(plane, height, width, h, v);
                        dst[p] = static_cast<C>(mask ? sample * static_cast<double>(mask[p]) : sample);
                    }
                }
            }
            for (int64_t grp = 0; grp < group_; ++grp) {
                C* y_g = yd + (n * maps + grp * group_maps) * out_plane;
                for (int64_t m = 0; m < group_maps; ++m)
                    std::fill_n(y_g + m * out_plane, out_plane, bias ? bias[grp * group_maps + m] : C(0));
                gemm(false, false, group_maps, out_plane, patch, C(1), wd + grp * group_maps * patch,
                     col.data() + grp * patch * out_plane, C(1), y_g, ctx.num_threads);
            }
        }
        return y;
    }

    // Bilinear read of a plane at (h, w); taps outside the plane read 0.
    template <typename C>
    static double bilinear_zero(const C* plane, int64_t height, int64_t width, double h, double w) {
        const double h0 = std::floor(h), w0 = std::floor(w);
        const double lh = h - h0, lw = w - w0;
        double sum = 0;
        for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) {
                const double yy = h0 + dy, xx = w0 + dx;
                // Written so a NaN position (NaN offsets) is outside too.
                if (!(yy >= 0 && yy < static_cast<double>(height) && xx >= 0 && xx < static_cast<double>(width))) continue;
                const double weight = (dy ? lh : 1 - lh) * (dx ? lw : 1 - lw);
                sum += weight * static_cast<double>(plane[static_cast<int64_t>(yy) * width + static_cast<int64_t>(xx)]);
            }
        return sum;
    }

    WindowAttributes window_;
    int64_t group_;
    int64_t offset_group_;
};

void infer_deform_conv(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() != 4) fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected rank 4");
    Shape out{x.shape[0], std::nullopt, std::nullopt, std::nullopt};
    if (ctx.has_input(1) && ctx.input(1).shape.size() == 4) out[1] = ctx.input(1).shape[0];
    if (ctx.has_input(2) && ctx.input(2).shape.size() == 4) {  // the offsets have the output's spatial dims
        out[2] = ctx.input(2).shape[2];
        out[3] = ctx.input(2).shape[3];
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_conv_ops(OpTable& table) {
    table.add(OpSchema{"Conv", "", 1, 2, 3, 1, 1, infer_conv,
                       [](const KernelInfo& info) { return std::make_unique<ConvKernel>(info.node); }});
    table.add(OpSchema{"ConvTranspose", "", 1, 2, 3, 1, 1, infer_conv_transpose,
                       [](const KernelInfo& info) { return std::make_unique<ConvTransposeKernel>(info.node); }});
    table.add(OpSchema{"DeformConv", "", 19, 3, 5, 1, 1, infer_deform_conv,
                       [](const KernelInfo& info) { return std::make_unique<DeformConvKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
