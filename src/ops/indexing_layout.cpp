// Shape, Size, Squeeze, Unsqueeze, Split, DepthToSpace, SpaceToDepth, ReverseSequence: any
// dtype. Squeeze and Unsqueeze share storage with their input.
#include <algorithm>
#include <numeric>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

Tensor int64_tensor(const std::vector<int64_t>& shape, const std::vector<int64_t>& values) {
    Tensor t(shape, DType::Int64);
    std::copy(values.begin(), values.end(), t.data_ptr<int64_t>());
    return t;
}

// ---------------------------------------------------------------------------------------------
// Shape (start/end since opset 15, clamped to [0, rank] after adding rank to negatives) and Size.

struct ShapeRange {
    int64_t start = 0;
    std::optional<int64_t> end;

    explicit ShapeRange(const Node& node) : start(node.get_attribute<int64_t>("start", 0)) {
        if (node.has_attribute("end")) end = node.get_attribute<int64_t>("end");
    }
    // [begin, end) of the dims for `rank`.
    std::pair<int64_t, int64_t> resolve(int64_t rank) const {
        auto clamp = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
        const int64_t b = clamp(start), e = end ? clamp(*end) : rank;
        return {b, std::max(b, e)};
    }
};

class ShapeKernel final : public NodeKernel {
public:
    explicit ShapeKernel(const Node& node) : NodeKernel(node), range_(node) {}
    void compute(KernelContext& ctx) const override {
        const auto& dims = ctx.input(0).shape();
        const auto [start, end] = range_.resolve(static_cast<int64_t>(dims.size()));
        ctx.outputs[0] = int64_tensor({end - start}, std::vector<int64_t>(dims.begin() + start, dims.begin() + end));
    }

private:
    ShapeRange range_;
};

void infer_shape(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return ctx.set_output(0, DType::Int64, {std::nullopt});
    const auto [start, end] = ShapeRange(ctx.node).resolve(static_cast<int64_t>(ctx.input(0).shape.size()));
    ctx.set_output(0, DType::Int64, {end - start});
}

class SizeKernel final : public NodeKernel {
public:
    explicit SizeKernel(const Node& node) : NodeKernel(node) {}
    void compute(KernelContext& ctx) const override { ctx.outputs[0] = int64_tensor({}, {ctx.input(0).num_elements()}); }
};

void infer_size(InferenceContext& ctx) { ctx.set_output(0, DType::Int64, {}); }

// ---------------------------------------------------------------------------------------------
// Squeeze (axes an attribute before opset 13, an optional input from 13; none: every 1).

class SqueezeKernel final : public NodeKernel {
public:
    SqueezeKernel(const Node& node, int64_t opset) : NodeKernel(node), axes_(node, opset, 13, "axes", 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        const auto axes = axes_.get(ctx, node_);
        std::vector<bool> drop(dims.size(), false);
        if (axes) {
            for (int64_t a : normalize_axes(*axes, static_cast<int64_t>(dims.size()), node_)) {
                if (dims[a] != 1)
                    fail("cannot squeeze axis " + std::to_string(a) + " of shape " + shape_to_string(dims) +
                         ": its size is not 1");
                drop[a] = true;
            }
        } else {
            for (size_t d = 0; d < dims.size(); ++d) drop[d] = dims[d] == 1;
        }
        std::vector<int64_t> out;
        for (size_t d = 0; d < dims.size(); ++d)
            if (!drop[d]) out.push_back(dims[d]);
        ctx.outputs[0] = x.reshape(out);
    }

private:
    IntsSource axes_;
};

void infer_squeeze(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const MaybeInts axes = ints_attr_or_input(ctx, 13, "axes", 1);
    if (!axes.known) return set_output_unknown_rank(ctx, 0, x.dtype);
    std::vector<bool> drop(x.shape.size(), false);
    if (axes.values) {
        for (int64_t a : normalize_axes(*axes.values, static_cast<int64_t>(x.shape.size()), ctx.node)) {
            if (x.shape[a] && *x.shape[a] != 1)
                fail_node(ctx.node, "cannot squeeze axis " + std::to_string(a) + " of shape " +
                                        shape_to_string(x.shape) + ": its size is not 1");
            drop[a] = true;
        }
    } else {
        for (size_t d = 0; d < x.shape.size(); ++d) {
            if (!x.shape[d]) return set_output_unknown_rank(ctx, 0, x.dtype);  // it may be a 1
            drop[d] = *x.shape[d] == 1;
        }
    }
    Shape out;
    for (size_t d = 0; d < x.shape.size(); ++d)
        if (!drop[d]) out.push_back(x.shape[d]);
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Unsqueeze (axes an attribute before opset 13, a required input from 13): axes index the
// output, whose rank is the input's plus the number of axes.

template <typename Dim>
std::vector<Dim> unsqueezed(const std::vector<Dim>& dims, const std::vector<int64_t>& axes_in, const Node& node) {
    const auto out_rank = static_cast<int64_t>(dims.size() + axes_in.size());
    std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
    for (int64_t a : normalize_axes(axes_in, out_rank, node)) inserted[a] = true;
    std::vector<Dim> out;
    size_t next = 0;
    for (int64_t d = 0; d < out_rank; ++d) out.push_back(inserted[d] ? Dim(1) : dims[next++]);
    return out;
}

class UnsqueezeKernel final : public NodeKernel {
public:
    UnsqueezeKernel(const Node& node, int64_t opset) : NodeKernel(node), axes_(node, opset, 13, "axes", 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto axes = axes_.get(ctx, node_);
        if (!axes) fail("axes are required");
        ctx.outputs[0] = x.reshape(unsqueezed(x.shape(), *axes, node_));
    }

private:
    IntsSource axes_;
};

void infer_unsqueeze(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const MaybeInts axes = ints_attr_or_input(ctx, 13, "axes", 1);
    if (axes.values) return ctx.set_output(0, x.dtype, unsqueezed(x.shape, *axes.values, ctx.node));
    const std::optional<int64_t> n = ctx.opset >= 13 ? known_length(ctx, 1) : std::nullopt;
    if (n) return ctx.set_output(0, x.dtype, unknown_dims(x.shape.size() + static_cast<size_t>(*n)));
    set_output_unknown_rank(ctx, 0, x.dtype);
}

// ---------------------------------------------------------------------------------------------
// Split along `axis`: by the `split` lengths (attribute before opset 13, input from 13), else
// into equal parts — one per output, or num_outputs (opset 18), where the last part may be
// smaller.

// `num_outputs` is the attribute (opset 18), nullopt when absent.
std::optional<int64_t> read_num_outputs(const Node& node, int64_t opset) {
    if (opset < 18 || !node.has_attribute("num_outputs")) return std::nullopt;
    return node.get_attribute<int64_t>("num_outputs");
}

std::vector<int64_t> split_sizes(const Node& node, int64_t opset, std::optional<std::vector<int64_t>> split,
                                 std::optional<int64_t> num_outputs, int64_t dim, size_t outputs) {
    if (split) {
        if (split->size() != outputs)
            fail_node(node, "split has " + std::to_string(split->size()) + " values for " + std::to_string(outputs) +
                                " outputs");
        int64_t total = 0;
        for (int64_t s : *split) {
            if (s < 0) fail_node(node, "split " + shape_to_string(*split) + " has a negative length");
            total += s;
        }
        if (total != dim)
            fail_node(node, "split " + shape_to_string(*split) + " sums to " + std::to_string(total) +
                                "; the axis has " + std::to_string(dim));
        if (num_outputs) fail_node(node, "takes either input 'split' or attribute 'num_outputs', not both");
        return *split;
    }
    auto n = static_cast<int64_t>(outputs);
    if (num_outputs) {
        n = *num_outputs;
        if (n < 1 || n != static_cast<int64_t>(outputs))
            fail_node(node, "attribute 'num_outputs' is " + std::to_string(n) + "; the node has " +
                                std::to_string(outputs) + " outputs");
    }
    if (opset < 18 && dim % n != 0)
        fail_node(node, "cannot split an axis of " + std::to_string(dim) + " into " + std::to_string(n) + " equal parts");
    const int64_t chunk = (dim + n - 1) / n;
    std::vector<int64_t> sizes(static_cast<size_t>(n), chunk);
    sizes.back() = dim - chunk * (n - 1);
    if (sizes.back() < 0)
        fail_node(node, "cannot split an axis of " + std::to_string(dim) + " into " + std::to_string(n) +
                            " parts of " + std::to_string(chunk));
    return sizes;
}

class SplitKernel final : public NodeKernel {
public:
    SplitKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          opset_(opset),
          axis_(node.get_attribute<int64_t>("axis", 0)),
          num_outputs_(read_num_outputs(node, opset)),
          split_(node, opset, 13, "split", 1) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() == 0) fail("cannot split a scalar");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, static_cast<int64_t>(x.ndim()), node_));
        const std::vector<int64_t> sizes =
            split_sizes(node_, opset_, split_.get(ctx, node_), num_outputs_, x.shape()[axis], ctx.outputs.size());
        int64_t begin = 0;
        for (size_t i = 0; i < sizes.size(); ++i) {
            std::vector<int64_t> indices(static_cast<size_t>(sizes[i]));
            std::iota(indices.begin(), indices.end(), begin);
            begin += sizes[i];
            ctx.outputs[i] = take_along_axis(x, axis, indices, ctx.num_threads);
        }
    }

private:
    int64_t opset_;
    int64_t axis_;
    std::optional<int64_t> num_outputs_;
    IntsSource split_;
};

void infer_split(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const size_t outputs = ctx.node.outputs().size();
    if (x.shape.empty()) fail_node(ctx.node, "cannot split a scalar");
    const auto axis = static_cast<size_t>(
        normalize_axis(ctx.node.get_attribute<int64_t>("axis", 0), static_cast<int64_t>(x.shape.size()), ctx.node));
    const MaybeInts split = ints_attr_or_input(ctx, 13, "split", 1);
    std::optional<std::vector<int64_t>> sizes;
    if (split.known && x.shape[axis]) {
        sizes = split_sizes(ctx.node, ctx.opset, split.values, read_num_outputs(ctx.node, ctx.opset), *x.shape[axis],
                            outputs);
    } else if (split.values) {  // the lengths are known even when the axis is not
        sizes = split.values;
        if (sizes->size() != outputs)
            fail_node(ctx.node, "split has " + std::to_string(sizes->size()) + " values for " +
                                    std::to_string(outputs) + " outputs");
    }
    for (size_t i = 0; i < outputs; ++i) {
        Shape out = x.shape;
        out[axis] = sizes ? std::optional<int64_t>((*sizes)[i]) : std::nullopt;
        ctx.set_output(i, x.dtype, std::move(out));
    }
}

// ---------------------------------------------------------------------------------------------
// DepthToSpace / SpaceToDepth: a reshape to 6-D, a transpose, a reshape back (the ONNX spec's
// own formulation).

int64_t read_blocksize(const Node& node) {
    const int64_t b = node.get_attribute<int64_t>("blocksize");
    if (b < 1) fail_node(node, "attribute 'blocksize' must be >= 1; got " + std::to_string(b));
    return b;
}

bool read_crd(const Node& node, int64_t opset, int64_t crd_since) {
    const std::string mode = node.get_attribute<std::string>("mode", "DCR");
    if (mode == "DCR") return false;
    if (mode == "CRD" && opset >= crd_since) return true;
    fail_node(node, "attribute 'mode' is '" + mode + "'; expected DCR or CRD (CRD needs opset " +
                        std::to_string(crd_since) + ")");
}

class DepthToSpaceKernel final : public NodeKernel {
public:
    DepthToSpaceKernel(const Node& node, int64_t opset)
        : NodeKernel(node), blocksize_(read_blocksize(node)), crd_(read_crd(node, opset, 11)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 4) fail("input must be 4-D (N, C, H, W); got " + shape_to_string(x.shape()));
        const int64_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], w = x.shape()[3], b = blocksize_;
        if (c % (b * b) != 0)
            fail("channels " + std::to_string(c) + " are not divisible by blocksize^2 = " + std::to_string(b * b));
        const int64_t oc = c / (b * b);
        const Tensor y = crd_ ? permute_axes(x, {n, oc, b, b, h, w}, {0, 1, 4, 2, 5, 3}, ctx.num_threads)
                              : permute_axes(x, {n, b, b, oc, h, w}, {0, 3, 4, 1, 5, 2}, ctx.num_threads);
        ctx.outputs[0] = y.reshape({n, oc, h * b, w * b});
    }

private:
    int64_t blocksize_;
    bool crd_;
};

class SpaceToDepthKernel final : public NodeKernel {
public:
    SpaceToDepthKernel(const Node& node, int64_t opset)
        : NodeKernel(node), blocksize_(read_blocksize(node)), crd_(read_crd(node, opset, 28)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 4) fail("input must be 4-D (N, C, H, W); got " + shape_to_string(x.shape()));
        const int64_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], w = x.shape()[3], b = blocksize_;
        if (h % b != 0 || w % b != 0)
            fail("height " + std::to_string(h) + " and width " + std::to_string(w) + " must be divisible by blocksize " +
                 std::to_string(b));
        const std::vector<int64_t> dims = {n, c, h / b, b, w / b, b};
        const Tensor y = crd_ ? permute_axes(x, dims, {0, 1, 3, 5, 2, 4}, ctx.num_threads)
                              : permute_axes(x, dims, {0, 3, 5, 1, 2, 4}, ctx.num_threads);
        ctx.outputs[0] = y.reshape({n, c * b * b, h / b, w / b});
    }

private:
    int64_t blocksize_;
    bool crd_;
};

// Output dims of DepthToSpace (to_space) or SpaceToDepth from known input dims.
void infer_depth_space(InferenceContext& ctx, bool to_space) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 4) fail_node(ctx.node, "input must be 4-D (N, C, H, W); got " + shape_to_string(x.shape));
    const int64_t b = read_blocksize(ctx.node);
    auto scale = [](const std::optional<int64_t>& d, int64_t mul, int64_t div) -> std::optional<int64_t> {
        if (!d) return std::nullopt;
        return *d * mul / div;
    };
    const auto& s = x.shape;
    if (to_space) {
        if (s[1] && *s[1] % (b * b) != 0)
            fail_node(ctx.node, "channels " + std::to_string(*s[1]) + " are not divisible by blocksize^2");
        ctx.set_output(0, x.dtype, {s[0], scale(s[1], 1, b * b), scale(s[2], b, 1), scale(s[3], b, 1)});
    } else {
        if ((s[2] && *s[2] % b != 0) || (s[3] && *s[3] % b != 0))
            fail_node(ctx.node, "height and width must be divisible by blocksize " + std::to_string(b));
        ctx.set_output(0, x.dtype, {s[0], scale(s[1], b * b, 1), scale(s[2], 1, b), scale(s[3], 1, b)});
    }
}

// ---------------------------------------------------------------------------------------------
// ReverseSequence: along time_axis, the first sequence_lens[b] elements of batch b reversed.

class ReverseSequenceKernel final : public NodeKernel {
public:
    explicit ReverseSequenceKernel(const Node& node)
        : NodeKernel(node),
          batch_axis_(node.get_attribute<int64_t>("batch_axis", 1)),
          time_axis_(node.get_attribute<int64_t>("time_axis", 0)) {
        if ((batch_axis_ != 0 && batch_axis_ != 1) || (time_axis_ != 0 && time_axis_ != 1) || batch_axis_ == time_axis_)
            fail("batch_axis and time_axis must be 0 and 1 in either order; got " + std::to_string(batch_axis_) +
                 " and " + std::to_string(time_axis_));
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() < 2) fail("input must have rank >= 2; got " + shape_to_string(x.shape()));
        const int64_t batch = x.shape()[batch_axis_], time = x.shape()[time_axis_];
        const Tensor& lens_t = ctx.input(1);
        const std::vector<int64_t> lens = int_values(lens_t, node_, "sequence_lens");
        if (lens_t.ndim() != 1 || static_cast<int64_t>(lens.size()) != batch)
            fail("sequence_lens " + shape_to_string(lens_t.shape()) + " must be 1-D with one length per batch (" +
                 std::to_string(batch) + ")");
        for (int64_t l : lens)
            if (l < 0 || l > time)
                fail("sequence length " + std::to_string(l) + " is outside [0, " + std::to_string(time) + "]");
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        const int64_t st_b = strides[batch_axis_], st_t = strides[time_axis_];
        const int64_t total = x.num_elements();
        Tensor y(x.shape(), x.dtype());
        dispatch_by_width(x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = x.data_ptr<T>();
            T* dst = y.data_ptr<T>();
            parallel_for(total, threads_for_copy(total, ctx.num_threads), [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) {
                    const int64_t t = (i / st_t) % time, len = lens[static_cast<size_t>((i / st_b) % batch)];
                    dst[i] = src[t < len ? i + (len - 1 - 2 * t) * st_t : i];
                }
            });
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t batch_axis_, time_axis_;
};

void infer_like_input0(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

}  // namespace

void register_indexing_layout_ops(OpTable& table) {
    table.add(OpSchema{"Shape", "", 15, 1, 1, 1, 1, infer_shape,
                       [](const KernelInfo& info) { return std::make_unique<ShapeKernel>(info.node); }});
    table.add(OpSchema{"Size", "", 13, 1, 1, 1, 1, infer_size,
                       [](const KernelInfo& info) { return std::make_unique<SizeKernel>(info.node); }});
    table.add(OpSchema{"Squeeze", "", 13, 1, 2, 1, 1, infer_squeeze,
                       [](const KernelInfo& info) { return std::make_unique<SqueezeKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Unsqueeze", "", 13, 1, 2, 1, 1, infer_unsqueeze,
                       [](const KernelInfo& info) { return std::make_unique<UnsqueezeKernel>(info.node, info.opset); }});
    table.add(OpSchema{"Split", "", 18, 1, 2, 1, -1, infer_split,
                       [](const KernelInfo& info) { return std::make_unique<SplitKernel>(info.node, info.opset); }});
    table.add(OpSchema{"DepthToSpace", "", 13, 1, 1, 1, 1, [](InferenceContext& ctx) { infer_depth_space(ctx, true); },
                       [](const KernelInfo& info) { return std::make_unique<DepthToSpaceKernel>(info.node, info.opset); }});
    table.add(OpSchema{"SpaceToDepth", "", 13, 1, 1, 1, 1, [](InferenceContext& ctx) { infer_depth_space(ctx, false); },
                       [](const KernelInfo& info) { return std::make_unique<SpaceToDepthKernel>(info.node, info.opset); }});
    table.add(OpSchema{"ReverseSequence", "", 10, 2, 2, 1, 1, infer_like_input0,
                       [](const KernelInfo& info) { return std::make_unique<ReverseSequenceKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
