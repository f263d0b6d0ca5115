// Conv (1-D/2-D/3-D, float32) and the sliding-window geometry it shares with the pools.
#include <algorithm>
#include <vector>

#include "ops/op.hpp"

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
// Conv

namespace {

// Unfolds `channels` planes (3-D normalized) into col: one row per (channel, kernel offset),
// one column per output position; zero where the window reads padding.
void im2col(const float* x, int64_t channels, const std::array<WindowAxis, 3>& g, float* col) {
    const auto& [d, h, w] = g;
    const int64_t out_plane = d.output * h.output * w.output;
    for (int64_t c = 0; c < channels; ++c) {
        const float* plane = x + c * d.input * h.input * w.input;
        for (int64_t kd = 0; kd < d.kernel; ++kd)
            for (int64_t kh = 0; kh < h.kernel; ++kh)
                for (int64_t kw = 0; kw < w.kernel; ++kw) {
                    float* dst = col;
                    col += out_plane;
                    for (int64_t od = 0; od < d.output; ++od) {
                        const int64_t id = od * d.stride - d.pad_begin + kd * d.dilation;
                        if (id < 0 || id >= d.input) {
                            dst = std::fill_n(dst, h.output * w.output, 0.0f);
                            continue;
                        }
                        for (int64_t oh = 0; oh < h.output; ++oh) {
                            const int64_t ih = oh * h.stride - h.pad_begin + kh * h.dilation;
                            if (ih < 0 || ih >= h.input) {
                                dst = std::fill_n(dst, w.output, 0.0f);
                                continue;
                            }
                            const float* row = plane + (id * h.input + ih) * w.input;
                            for (int64_t ow = 0; ow < w.output; ++ow) {
                                const int64_t iw = ow * w.stride - w.pad_begin + kw * w.dilation;
                                *dst++ = iw >= 0 && iw < w.input ? row[iw] : 0.0f;
                            }
                        }
                    }
                }
    }
}

std::vector<int64_t> tail(const std::vector<int64_t>& dims, size_t from) {
    return std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(from), dims.end());
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
        require_dtype(node_, x, DType::Float32, "input X");
        require_dtype(node_, w, DType::Float32, "weight W");
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
        const float* bias = nullptr;
        if (ctx.has_input(2)) {
            const Tensor& b = ctx.input(2);
            require_dtype(node_, b, DType::Float32, "bias B");
            if (b.shape() != std::vector<int64_t>{maps})
                fail("bias B has shape " + shape_to_string(b.shape()) + "; expected [" + std::to_string(maps) + "]");
            bias = b.data_ptr<float>();
        }

        const std::vector<WindowAxis> axes = resolve_window(window_, kernel, tail(x.shape(), 2), node_);
        std::vector<int64_t> out_shape{batch, maps};
        for (const auto& a : axes) out_shape.push_back(a.output);
        Tensor y(out_shape, DType::Float32);

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

        const float* xd = x.data_ptr<float>();
        const float* wd = w.data_ptr<float>();
        float* yd = y.data_ptr<float>();
        // One task per (image, group): y_g (group_maps x out_plane) = W_g (group_maps x patch) * col.
        auto run_task = [&](int64_t task, int gemm_threads, std::vector<float>& col) {
            const int64_t n = task / group_, grp = task % group_;
            const float* x_g = xd + (n * channels + grp * group_channels) * in_plane;
            float* y_g = yd + (n * maps + grp * group_maps) * out_plane;
            const float* cols = x_g;
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
            gemm(false, false, group_maps, out_plane, patch, 1.0f, wd + grp * group_maps * patch, cols,
                 bias ? 1.0f : 0.0f, y_g, gemm_threads);
        };

        const int64_t tasks = batch * group_;
        const double flops = 2.0 * static_cast<double>(tasks) * group_maps * out_plane * patch;
        const int threads = threads_for_work(flops, ctx.num_threads);
        if (tasks >= threads) {
            parallel_for(tasks, threads, [&](int64_t begin, int64_t end) {
                std::vector<float> col;
                for (int64_t t = begin; t < end; ++t) run_task(t, 1, col);
            });
        } else {
            std::vector<float> col;
            for (int64_t t = 0; t < tasks; ++t) run_task(t, threads, col);
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    WindowAttributes window_;
    int64_t group_;
};

void infer_conv(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const Node& node = ctx.node;
    const TensorInfo& x = ctx.input(0);
    const size_t rank = x.shape.size();
    if (rank == 0) return;  // rank unknown
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

}  // namespace

void register_conv_ops(OpTable& table) {
    table.add(OpSchema{"Conv", "", 1, 2, 3, 1, 1, infer_conv,
                       [](const KernelInfo& info) { return std::make_unique<ConvKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
