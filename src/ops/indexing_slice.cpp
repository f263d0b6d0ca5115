// Slice, Pad, Expand, Tile, CenterCropPad: each builds per-axis index maps and hands them to
// copy_by_axis_maps (indexing.cpp), so any dtype works, strings included.
#include <algorithm>
#include <limits>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

// ---------------------------------------------------------------------------------------------
// Slice (attributes starts/ends/axes before opset 10, inputs starts/ends/axes/steps from 10).

struct SliceAxis {
    int64_t start = 0, step = 1, length = 0;
};

// ONNX's clamping: negative start/end count from the end; then start and end are clamped to
// [0, dim] for positive steps and to [0, dim-1] / [-1, dim-1] for negative ones.
SliceAxis resolve_slice(int64_t start, int64_t end, int64_t step, int64_t dim) {
    if (dim == 0) return {0, step, 0};  // (and the clamps below need dim >= 1)
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    // A step longer than the axis takes one element at most; clamping it keeps j*step in range.
    step = std::clamp(step, -std::max<int64_t>(dim, 1), std::max<int64_t>(dim, 1));
    SliceAxis s;
    s.step = step;
    if (step > 0) {
        start = std::clamp<int64_t>(start, 0, dim);
        end = std::clamp<int64_t>(end, 0, dim);
        s.length = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
        start = std::clamp<int64_t>(start, 0, dim - 1);
        end = std::clamp<int64_t>(end, -1, dim - 1);
        s.length = start > end ? (start - end - 1) / -step + 1 : 0;
    }
    s.start = start;
    return s;
}

struct SliceParams {
    std::vector<int64_t> starts, ends, axes, steps;  // axes normalized
};

// Checks lengths, fills default axes and steps; `rank` normalizes the axes.
SliceParams slice_params(const Node& node, std::vector<int64_t> starts, std::vector<int64_t> ends,
                         std::optional<std::vector<int64_t>> axes, std::optional<std::vector<int64_t>> steps,
                         int64_t rank) {
    SliceParams p;
    const size_t n = starts.size();
    if (ends.size() != n)
        fail_node(node, "starts has " + std::to_string(n) + " values, ends " + std::to_string(ends.size()));
    if (axes && axes->size() != n)
        fail_node(node, "axes has " + std::to_string(axes->size()) + " values; starts has " + std::to_string(n));
    if (steps && steps->size() != n)
        fail_node(node, "steps has " + std::to_string(steps->size()) + " values; starts has " + std::to_string(n));
    if (!axes) {
        if (static_cast<int64_t>(n) > rank)
            fail_node(node, "starts has " + std::to_string(n) + " values for an input of rank " + std::to_string(rank));
        axes.emplace(n);
        for (size_t i = 0; i < n; ++i) (*axes)[i] = static_cast<int64_t>(i);
    }
    p.axes = normalize_axes(*axes, rank, node);
    p.steps = steps ? *steps : std::vector<int64_t>(n, 1);
    for (int64_t s : p.steps)
        if (s == 0) fail_node(node, "steps must not be 0");
    p.starts = std::move(starts);
    p.ends = std::move(ends);
    return p;
}

class SliceKernel final : public NodeKernel {
public:
    SliceKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          starts_(node, opset, 10, "starts", 1),
          ends_(node, opset, 10, "ends", 2),
          axes_(node, opset, 10, "axes", 3) {
        if (opset < 10 && (!node.has_attribute("starts") || !node.has_attribute("ends")))
            fail("attributes 'starts' and 'ends' are required before opset 10");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto rank = static_cast<int64_t>(x.ndim());
        auto starts = starts_.get(ctx, node_);
        auto ends = ends_.get(ctx, node_);
        if (!starts || !ends) fail("starts and ends are required");
        auto axes = axes_.get(ctx, node_);
        std::optional<std::vector<int64_t>> steps;
        if (ctx.has_input(4)) steps = int_values(ctx.input(4), node_, "input 'steps'");
        const SliceParams p = slice_params(node_, *starts, *ends, axes, steps, rank);

        const std::vector<int64_t> strides = row_major_strides(x.shape());
        std::vector<int64_t> out_dims = x.shape();
        AxisMaps maps(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) maps[d] = identity_map(x.shape()[d], strides[d]);
        for (size_t i = 0; i < p.axes.size(); ++i) {
            const auto d = static_cast<size_t>(p.axes[i]);
            const SliceAxis s = resolve_slice(p.starts[i], p.ends[i], p.steps[i], x.shape()[d]);
            out_dims[d] = s.length;
            maps[d].resize(static_cast<size_t>(s.length));
            for (int64_t j = 0; j < s.length; ++j) maps[d][j] = (s.start + j * s.step) * strides[d];
        }
        ctx.outputs[0] = copy_by_axis_maps(x, out_dims, maps, nullptr, ctx.num_threads);
    }

private:
    IntsSource starts_, ends_, axes_;
};

void infer_slice(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const auto rank = static_cast<int64_t>(x.shape.size());
    const MaybeInts starts = ints_attr_or_input(ctx, 10, "starts", 1);
    const MaybeInts ends = ints_attr_or_input(ctx, 10, "ends", 2);
    const MaybeInts axes = ints_attr_or_input(ctx, 10, "axes", 3);
    std::optional<std::vector<int64_t>> steps = constant_ints(ctx, 4, "input 'steps'");
    const bool steps_known = !ctx.node.has_input(4) || steps;
    Shape out = x.shape;
    if (!axes.known) {  // any axis may be sliced
        ctx.set_output(0, x.dtype, unknown_dims(x.shape.size()));
        return;
    }
    if (!starts.known || !ends.known || !steps_known || !starts.values || !ends.values) {
        // The sliced axes are known, their lengths are not.
        if (axes.values) {
            for (int64_t a : normalize_axes(*axes.values, rank, ctx.node)) out[a] = std::nullopt;
        } else {
            out = unknown_dims(x.shape.size());
        }
        ctx.set_output(0, x.dtype, std::move(out));
        return;
    }
    const SliceParams p = slice_params(ctx.node, *starts.values, *ends.values, axes.values, steps, rank);
    for (size_t i = 0; i < p.axes.size(); ++i) {
        const auto d = static_cast<size_t>(p.axes[i]);
        out[d] = x.shape[d] ? std::optional<int64_t>(resolve_slice(p.starts[i], p.ends[i], p.steps[i], *x.shape[d]).length)
                            : std::nullopt;
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Pad: pads = [begin of each axis..., end of each axis...] (negative values crop); modes
// constant (the value), edge, reflect (mirror without repeating the edge), wrap (periodic).
// Cropping happens first, so edge/reflect/wrap read the cropped input as numpy.pad would.

enum class PadMode { Constant, Reflect, Edge, Wrap };

PadMode read_pad_mode(const Node& node, int64_t opset) {
    const std::string m = node.get_attribute<std::string>("mode", "constant");
    if (m == "constant") return PadMode::Constant;
    if (m == "reflect") return PadMode::Reflect;
    if (m == "edge") return PadMode::Edge;
    if (m == "wrap" && opset >= 19) return PadMode::Wrap;
    fail_node(node, "attribute 'mode' is '" + m + "'; expected constant, reflect, edge" +
                        (opset >= 19 ? " or wrap" : " (wrap needs opset 19)"));
}

// Map of one padded axis of input size n with pads (begin, end); ValidationError when the
// pads crop more than the axis holds or a non-constant mode has nothing to copy from.
std::vector<int64_t> pad_map(int64_t n, int64_t begin, int64_t end, int64_t stride, PadMode mode, const Node& node) {
    const int64_t lo = std::max<int64_t>(0, -begin);
    const int64_t kept = n - lo - std::max<int64_t>(0, -end);
    if (kept < 0)
        fail_node(node, "pads (" + std::to_string(begin) + ", " + std::to_string(end) + ") crop more than the " +
                            std::to_string(n) + " elements of the axis");
    const int64_t pb = std::max<int64_t>(0, begin);
    const int64_t out = pb + kept + std::max<int64_t>(0, end);
    if (kept == 0 && out > 0 && mode != PadMode::Constant)
        fail_node(node, "cannot pad an empty axis in mode edge, reflect or wrap");
    std::vector<int64_t> map(static_cast<size_t>(out));
    for (int64_t j = 0; j < out; ++j) {
        int64_t i = j - pb;
        if (i < 0 || i >= kept) {
            switch (mode) {
                case PadMode::Constant: map[j] = kPadding; continue;
                case PadMode::Edge: i = std::clamp<int64_t>(i, 0, kept - 1); break;
                case PadMode::Wrap: i = ((i % kept) + kept) % kept; break;
                case PadMode::Reflect: {
                    const int64_t period = 2 * (kept - 1);
                    if (period == 0) {
                        i = 0;
                        break;
                    }
                    i = ((i % period) + period) % period;
                    if (i >= kept) i = period - i;
                    break;
                }
            }
        }
        map[j] = (lo + i) * stride;
    }
    return map;
}

// pads per axis of `rank` from the raw list and optional axes.
std::vector<std::pair<int64_t, int64_t>> pads_per_axis(const std::vector<int64_t>& pads,
                                                       const std::optional<std::vector<int64_t>>& axes, int64_t rank,
                                                       const Node& node) {
    std::vector<int64_t> ax;
    if (axes) {
        ax = normalize_axes(*axes, rank, node);
    } else {
        for (int64_t i = 0; i < rank; ++i) ax.push_back(i);
    }
    if (pads.size() != 2 * ax.size())
        fail_node(node, "pads has " + std::to_string(pads.size()) + " values; expected " +
                            std::to_string(2 * ax.size()) + " (begin and end for each of " + std::to_string(ax.size()) +
                            " axes)");
    for (int64_t p : pads)  // far beyond any real tensor; keeps dim + pads from overflowing
        if (p < -(int64_t{1} << 62) || p > (int64_t{1} << 62))
            fail_node(node, "pads " + shape_to_string(pads) + " are out of range");
    std::vector<std::pair<int64_t, int64_t>> per_axis(static_cast<size_t>(rank), {0, 0});
    for (size_t i = 0; i < ax.size(); ++i) per_axis[ax[i]] = {pads[i], pads[i + ax.size()]};
    return per_axis;
}

class PadKernel final : public NodeKernel {
public:
    PadKernel(const Node& node, int64_t opset)
        : NodeKernel(node), opset_(opset), mode_(read_pad_mode(node, opset)), pads_(node, opset, 11, "pads", 1) {
        if (opset < 11) {
            if (!node.has_attribute("pads")) fail("attribute 'pads' is required before opset 11");
            value_attr_ = node.get_attribute<double>("value", 0.0);
        }
        if (opset < 18 && node.has_input(3)) fail("input 'axes' needs opset 18");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto rank = static_cast<int64_t>(x.ndim());
        const auto pads = pads_.get(ctx, node_);
        if (!pads) fail("pads are required");
        std::optional<std::vector<int64_t>> axes;
        if (ctx.has_input(3)) axes = int_values(ctx.input(3), node_, "input 'axes'");
        const auto per_axis = pads_per_axis(*pads, axes, rank, node_);

        Tensor fill = constant_value(ctx, x.dtype());
        std::vector<int64_t> padded(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) padded[d] = x.shape()[d] + per_axis[d].first + per_axis[d].second;
        check_output_size(padded, node_);  // before building maps of that size
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        std::vector<int64_t> out_dims(x.ndim());
        AxisMaps maps(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) {
            maps[d] = pad_map(x.shape()[d], per_axis[d].first, per_axis[d].second, strides[d], mode_, node_);
            out_dims[d] = static_cast<int64_t>(maps[d].size());
        }
        ctx.outputs[0] = copy_by_axis_maps(x, out_dims, maps, fill.empty() ? nullptr : fill.data(), ctx.num_threads);
    }

private:
    // The fill element (a default Tensor means zero).
    Tensor constant_value(const KernelContext& ctx, DType dtype) const {
        if (mode_ != PadMode::Constant) return Tensor();
        if (opset_ < 11) {
            if (value_attr_ == 0.0) return Tensor();
            Tensor v({}, dtype);
            dispatch_float_types(dtype, node_, [&](auto tag) {
                using T = decltype(tag);
                if constexpr (std::is_same_v<T, double>) *v.data_ptr<T>() = value_attr_;
                else *v.data_ptr<T>() = static_cast<T>(static_cast<float>(value_attr_));
            });
            return v;
        }
        if (!ctx.has_input(2)) return Tensor();
        const Tensor& v = ctx.input(2);
        if (v.num_elements() == 0) return Tensor();  // an empty tensor, as onnxruntime reads it: zero
        if (v.dtype() != dtype)
            fail("constant_value is " + dtype_to_string(v.dtype()) + "; data is " + dtype_to_string(dtype));
        if (v.num_elements() != 1)
            fail("constant_value must hold one value; got shape " + shape_to_string(v.shape()));
        return v;
    }

    int64_t opset_;
    PadMode mode_;
    IntsSource pads_;
    double value_attr_ = 0.0;
};

void infer_pad(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const auto rank = static_cast<int64_t>(x.shape.size());
    read_pad_mode(ctx.node, ctx.opset);
    const MaybeInts pads = ints_attr_or_input(ctx, 11, "pads", 1);
    std::optional<std::vector<int64_t>> axes = constant_ints(ctx, 3, "input 'axes'");
    if (!pads.values || (ctx.node.has_input(3) && !axes)) {
        ctx.set_output(0, x.dtype, unknown_dims(x.shape.size()));
        return;
    }
    const auto per_axis = pads_per_axis(*pads.values, axes, rank, ctx.node);
    Shape out = x.shape;
    for (size_t d = 0; d < out.size(); ++d) {
        if (!out[d]) continue;
        const int64_t v = *out[d] + per_axis[d].first + per_axis[d].second;
        if (v < 0) fail_node(ctx.node, "pads crop axis " + std::to_string(d) + " below zero elements");
        out[d] = v;
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Expand: broadcast the input with the shape input (either side may be 1).

class ExpandKernel final : public NodeKernel {
public:
    explicit ExpandKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& shape = ctx.input(1);
        if (shape.ndim() != 1) fail("shape must be 1-D; got " + shape_to_string(shape.shape()));
        const std::vector<int64_t> target = int_values(shape, node_, "shape");
        for (int64_t v : target)
            if (v < 0) fail("shape " + shape_to_string(target) + " has a negative dimension");
        std::vector<int64_t> out_dims;
        try {
            out_dims = broadcast_shapes(x.shape(), target);
        } catch (const ValidationError&) {
            fail("cannot expand input " + shape_to_string(x.shape()) + " to " + shape_to_string(target));
        }
        check_output_size(out_dims, node_);
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        const size_t lead = out_dims.size() - x.ndim();
        AxisMaps maps(out_dims.size());
        for (size_t d = 0; d < out_dims.size(); ++d) {
            const bool broadcast = d < lead || x.shape()[d - lead] != out_dims[d];  // stride 0
            maps[d] = identity_map(out_dims[d], broadcast ? 0 : strides[d - lead]);
        }
        ctx.outputs[0] = copy_by_axis_maps(x, out_dims, maps, nullptr, ctx.num_threads);
    }
};

void infer_expand(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (auto target = constant_ints(ctx, 1, "shape")) {
        try {
            ctx.set_output(0, x.dtype, broadcast_shapes(x.shape, to_shape(*target)));
        } catch (const ValidationError&) {
            fail_node(ctx.node, "cannot expand input " + shape_to_string(x.shape) + " to " + shape_to_string(*target));
        }
        return;
    }
    const std::optional<int64_t> n = known_length(ctx, 1);
    if (!n) return set_output_unknown_rank(ctx, 0, x.dtype);
    // A known input dim other than 1 is the output's (the target there must be 1 or equal).
    const size_t rank = std::max(x.shape.size(), static_cast<size_t>(*n));
    Shape out(rank);
    for (size_t i = 0; i < x.shape.size(); ++i) {
        const auto& d = x.shape[i];
        if (d && *d != 1) out[rank - x.shape.size() + i] = d;
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Tile: out dim d = in dim d * repeats[d]; element j reads j mod in dim.

class TileKernel final : public NodeKernel {
public:
    explicit TileKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& r = ctx.input(1);
        const std::vector<int64_t> repeats = int_values(r, node_, "repeats");
        if (r.ndim() != 1 || repeats.size() != x.ndim())
            fail("repeats " + shape_to_string(r.shape()) + " must be 1-D with one value per input axis (rank " +
                 std::to_string(x.ndim()) + ")");
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        std::vector<int64_t> out_dims(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) {
            if (repeats[d] < 0) fail("repeats " + shape_to_string(repeats) + " has a negative value");
            if (x.shape()[d] > 0 && repeats[d] > std::numeric_limits<int64_t>::max() / x.shape()[d])
                fail("repeats " + shape_to_string(repeats) + " are too large");
            out_dims[d] = x.shape()[d] * repeats[d];
        }
        check_output_size(out_dims, node_);
        AxisMaps maps(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) {
            const int64_t n = x.shape()[d];
            maps[d].resize(static_cast<size_t>(out_dims[d]));
            for (int64_t j = 0; j < out_dims[d]; ++j) maps[d][j] = (j % n) * strides[d];
        }
        ctx.outputs[0] = copy_by_axis_maps(x, out_dims, maps, nullptr, ctx.num_threads);
    }
};

void infer_tile(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const auto repeats = constant_ints(ctx, 1, "repeats");
    if (!repeats) return ctx.set_output(0, x.dtype, unknown_dims(x.shape.size()));
    if (repeats->size() != x.shape.size())
        fail_node(ctx.node, "repeats has " + std::to_string(repeats->size()) + " values for an input of rank " +
                                std::to_string(x.shape.size()));
    Shape out(x.shape.size());
    for (size_t d = 0; d < out.size(); ++d) {
        if ((*repeats)[d] < 0) fail_node(ctx.node, "repeats " + shape_to_string(*repeats) + " has a negative value");
        if ((*repeats)[d] == 0) out[d] = 0;
        else if (x.shape[d]) out[d] = *x.shape[d] * (*repeats)[d];
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// CenterCropPad: each listed axis is center-cropped or zero-padded to its target length (the
// odd element goes to the end, as the ONNX reference does).

// `axes_attr` is the node's attribute (nullopt: every axis).
std::vector<int64_t> crop_pad_axes(const Node& node, const std::optional<std::vector<int64_t>>& axes_attr, int64_t rank,
                                   size_t shape_len) {
    std::vector<int64_t> axes;
    if (axes_attr) {
        axes = normalize_axes(*axes_attr, rank, node);
    } else {
        for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
    }
    if (axes.size() != shape_len)
        fail_node(node, "shape has " + std::to_string(shape_len) + " values for " + std::to_string(axes.size()) + " axes");
    return axes;
}

class CenterCropPadKernel final : public NodeKernel {
public:
    explicit CenterCropPadKernel(const Node& node) : NodeKernel(node) {
        if (node.has_attribute("axes")) axes_attr_ = node.get_attribute<std::vector<int64_t>>("axes");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::vector<int64_t> target = int_values(ctx.input(1), node_, "shape");
        const std::vector<int64_t> axes = crop_pad_axes(node_, axes_attr_, static_cast<int64_t>(x.ndim()), target.size());
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        std::vector<int64_t> out_dims = x.shape();
        for (size_t i = 0; i < axes.size(); ++i) out_dims[axes[i]] = target[i];
        check_output_size(out_dims, node_);
        AxisMaps maps(x.ndim());
        for (size_t d = 0; d < x.ndim(); ++d) maps[d] = identity_map(x.shape()[d], strides[d]);
        for (size_t i = 0; i < axes.size(); ++i) {
            const auto d = static_cast<size_t>(axes[i]);
            const int64_t n = x.shape()[d], t = target[i];
            // Output j reads input j + shift: shift > 0 crops, shift < 0 pads.
            const int64_t shift = t <= n ? (n - t) / 2 : -((t - n) / 2);
            out_dims[d] = t;
            maps[d].resize(static_cast<size_t>(t));
            for (int64_t j = 0; j < t; ++j) {
                const int64_t i_in = j + shift;
                maps[d][j] = i_in >= 0 && i_in < n ? i_in * strides[d] : kPadding;
            }
        }
        ctx.outputs[0] = copy_by_axis_maps(x, out_dims, maps, nullptr, ctx.num_threads);
    }

private:
    std::optional<std::vector<int64_t>> axes_attr_;
};

void infer_center_crop_pad(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const auto target = constant_ints(ctx, 1, "shape");
    Shape out = x.shape;
    if (!target) {
        if (ctx.node.has_attribute("axes")) {
            for (int64_t a : normalize_axes(ctx.node.get_attribute<std::vector<int64_t>>("axes"),
                                            static_cast<int64_t>(x.shape.size()), ctx.node))
                out[a] = std::nullopt;
        } else {
            out = unknown_dims(x.shape.size());
        }
        return ctx.set_output(0, x.dtype, std::move(out));
    }
    std::optional<std::vector<int64_t>> axes_attr;
    if (ctx.node.has_attribute("axes")) axes_attr = ctx.node.get_attribute<std::vector<int64_t>>("axes");
    const auto axes = crop_pad_axes(ctx.node, axes_attr, static_cast<int64_t>(x.shape.size()), target->size());
    for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = (*target)[i];
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_indexing_slice_ops(OpTable& table) {
    table.add(OpSchema{"Slice", "", 13, 1, 5, 1, 1, infer_slice,
                       [](const KernelInfo& info) { return std::make_unique<SliceKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Pad", "", 19, 1, 4, 1, 1, infer_pad,
                       [](const KernelInfo& info) { return std::make_unique<PadKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Expand", "", 13, 2, 2, 1, 1, infer_expand,
                       [](const KernelInfo& info) { return std::make_unique<ExpandKernel>(info.node); }});
    table.add(OpSchema{"Tile", "", 13, 2, 2, 1, 1, infer_tile,
                       [](const KernelInfo& info) { return std::make_unique<TileKernel>(info.node); }});
    table.add(OpSchema{"CenterCropPad", "", 18, 2, 2, 1, 1, infer_center_crop_pad,
                       [](const KernelInfo& info) { return std::make_unique<CenterCropPadKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
