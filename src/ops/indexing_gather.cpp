// Gather, GatherElements, GatherND, Compress, Scatter (the deprecated alias of
// ScatterElements), ScatterElements, ScatterND, TensorScatter. Any dtype (elements are moved by
// width; strings copied by assignment); scatter reductions need numeric types.
#include <algorithm>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

// ---------------------------------------------------------------------------------------------
// Gather: output = data[:axis] + indices.shape + data[axis+1:].

class GatherKernel final : public NodeKernel {
public:
    explicit GatherKernel(const Node& node) : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", 0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const Tensor& indices = ctx.input(1);
        const int64_t rank = static_cast<int64_t>(data.ndim());
        if (rank == 0) fail("data must have rank >= 1");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, rank, node_));
        std::vector<int64_t> idx = int_values(indices, node_, "indices");
        for (int64_t& v : idx) v = normalize_index(v, data.shape()[axis], node_, "index");
        const Tensor taken = take_along_axis(data, axis, idx, ctx.num_threads);
        std::vector<int64_t> out_shape(data.shape().begin(), data.shape().begin() + static_cast<std::ptrdiff_t>(axis));
        out_shape.insert(out_shape.end(), indices.shape().begin(), indices.shape().end());
        out_shape.insert(out_shape.end(), data.shape().begin() + static_cast<std::ptrdiff_t>(axis) + 1, data.shape().end());
        ctx.outputs[0] = taken.reshape(out_shape);
    }

private:
    int64_t axis_;
};

void infer_gather(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& data = ctx.input(0);
    if (!ctx.has_input(1)) return set_output_unknown_rank(ctx, 0, data.dtype);
    const TensorInfo& indices = ctx.input(1);
    const int64_t rank = static_cast<int64_t>(data.shape.size());
    if (rank == 0) fail_node(ctx.node, "data must have rank >= 1");
    const auto axis = static_cast<size_t>(normalize_axis(ctx.node.get_attribute<int64_t>("axis", 0), rank, ctx.node));
    Shape out(data.shape.begin(), data.shape.begin() + static_cast<std::ptrdiff_t>(axis));
    out.insert(out.end(), indices.shape.begin(), indices.shape.end());
    out.insert(out.end(), data.shape.begin() + static_cast<std::ptrdiff_t>(axis) + 1, data.shape.end());
    ctx.set_output(0, data.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// GatherElements / ScatterElements share their addressing: element i of `indices` names, along
// `axis`, an element of `data` whose other coordinates are i's own.

// Offsets into `data` of every element of `indices` (validated).
std::vector<int64_t> element_offsets(const Tensor& data, const Tensor& indices, size_t axis, const Node& node) {
    const auto& dshape = data.shape();
    const auto& ishape = indices.shape();
    if (ishape.size() != dshape.size())
        fail_node(node, "indices " + shape_to_string(ishape) + " must have the rank of data " + shape_to_string(dshape));
    for (size_t d = 0; d < dshape.size(); ++d)
        if (d != axis && ishape[d] > dshape[d])
            fail_node(node, "indices " + shape_to_string(ishape) + " exceed data " + shape_to_string(dshape) +
                                " on axis " + std::to_string(d));
    const std::vector<int64_t> idx = int_values(indices, node, "indices");
    const std::vector<int64_t> strides = row_major_strides(dshape);
    std::vector<int64_t> offsets(idx.size());
    size_t flat = 0;
    for_each_index(ishape, [&](const std::vector<int64_t>& index) {
        int64_t off = 0;
        for (size_t d = 0; d < index.size(); ++d)
            off += (d == axis ? normalize_index(idx[flat], dshape[d], node, "index") : index[d]) * strides[d];
        offsets[flat++] = off;
    });
    return offsets;
}

// out[i] = in[offsets[i]] for any dtype.
Tensor gather_offsets(const Tensor& in, const std::vector<int64_t>& offsets, const std::vector<int64_t>& out_shape) {
    Tensor out(out_shape, in.dtype());
    dispatch_by_width(in.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* src = in.data_ptr<T>();
        T* dst = out.data_ptr<T>();
        for (size_t i = 0; i < offsets.size(); ++i) dst[i] = src[offsets[i]];
    });
    return out;
}

class GatherElementsKernel final : public NodeKernel {
public:
    explicit GatherElementsKernel(const Node& node)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", 0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const Tensor& indices = ctx.input(1);
        if (data.ndim() == 0) fail("data must have rank >= 1");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, static_cast<int64_t>(data.ndim()), node_));
        ctx.outputs[0] = gather_offsets(data, element_offsets(data, indices, axis, node_), indices.shape());
    }

private:
    int64_t axis_;
};

void infer_gather_elements(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const DType dtype = ctx.input(0).dtype;
    if (!ctx.has_input(1)) return set_output_unknown_rank(ctx, 0, dtype);
    ctx.set_output(0, dtype, ctx.input(1).shape);
}

// ---------------------------------------------------------------------------------------------
// GatherND / ScatterND: the last dim of `indices` (k) addresses the leading dims of `data`
// (after batch_dims b); each tuple selects a slice data[b.., i0, .., ik-1, ...].

struct NdAddressing {
    std::vector<int64_t> offsets;  // per index tuple: element offset of its slice in data
    int64_t slice = 1;             // elements per slice
    std::vector<int64_t> out_shape;  // indices.shape[:-1] + data.shape[b+k:]
};

NdAddressing nd_addressing(const Tensor& data, const Tensor& indices, int64_t batch_dims, const Node& node) {
    const auto& dshape = data.shape();
    const auto& ishape = indices.shape();
    const auto r = static_cast<int64_t>(dshape.size()), q = static_cast<int64_t>(ishape.size());
    if (r < 1 || q < 1) fail_node(node, "data and indices must have rank >= 1");
    if (batch_dims < 0 || batch_dims >= std::min(r, q))
        fail_node(node, "batch_dims " + std::to_string(batch_dims) + " must be below the ranks of data (" +
                            std::to_string(r) + ") and indices (" + std::to_string(q) + ")");
    const int64_t k = ishape.back();
    if (k < 1 || batch_dims + k > r)
        fail_node(node, "the last dimension of indices " + shape_to_string(ishape) + " must be 1.." +
                            std::to_string(r - batch_dims) + " for data " + shape_to_string(dshape));
    for (int64_t d = 0; d < batch_dims; ++d)
        if (dshape[d] != ishape[d])
            fail_node(node, "batch dimensions of data " + shape_to_string(dshape) + " and indices " +
                                shape_to_string(ishape) + " differ");
    NdAddressing a;
    const std::vector<int64_t> strides = row_major_strides(dshape);
    a.slice = num_elements_of(std::vector<int64_t>(dshape.begin() + batch_dims + k, dshape.end()));
    a.out_shape.assign(ishape.begin(), ishape.end() - 1);
    a.out_shape.insert(a.out_shape.end(), dshape.begin() + batch_dims + k, dshape.end());
    const std::vector<int64_t> idx = int_values(indices, node, "indices");
    const int64_t batches = num_elements_of(std::vector<int64_t>(dshape.begin(), dshape.begin() + batch_dims));
    const int64_t tuples = static_cast<int64_t>(idx.size()) / k;
    const int64_t per_batch = batches ? tuples / batches : 0;
    const int64_t batch_stride = batch_dims > 0 ? strides[batch_dims - 1] : 0;
    a.offsets.resize(static_cast<size_t>(tuples));
    for (int64_t t = 0; t < tuples; ++t) {
        int64_t off = (per_batch ? t / per_batch : 0) * batch_stride;
        for (int64_t j = 0; j < k; ++j)
            off += normalize_index(idx[t * k + j], dshape[batch_dims + j], node, "index") * strides[batch_dims + j];
        a.offsets[t] = off;
    }
    return a;
}

class GatherNDKernel final : public NodeKernel {
public:
    explicit GatherNDKernel(const Node& node)
        : NodeKernel(node), batch_dims_(node.get_attribute<int64_t>("batch_dims", 0)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const NdAddressing a = nd_addressing(data, ctx.input(1), batch_dims_, node_);
        Tensor out(a.out_shape, data.dtype());
        dispatch_by_width(data.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = data.data_ptr<T>();
            T* dst = out.data_ptr<T>();
            for (size_t t = 0; t < a.offsets.size(); ++t)
                std::copy(src + a.offsets[t], src + a.offsets[t] + a.slice, dst + static_cast<int64_t>(t) * a.slice);
        });
        ctx.outputs[0] = std::move(out);
    }

private:
    int64_t batch_dims_;
};

void infer_gather_nd(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& data = ctx.input(0);
    if (!ctx.has_input(1)) return set_output_unknown_rank(ctx, 0, data.dtype);
    const Shape& ishape = ctx.input(1).shape;
    if (ishape.empty()) fail_node(ctx.node, "indices must have rank >= 1");
    if (!ishape.back()) return set_output_unknown_rank(ctx, 0, data.dtype);
    const int64_t k = *ishape.back();
    const int64_t b = ctx.node.get_attribute<int64_t>("batch_dims", 0);
    const auto r = static_cast<int64_t>(data.shape.size());
    if (b < 0 || k < 1 || b + k > r)
        fail_node(ctx.node, "indices " + shape_to_string(ishape) + " with batch_dims " + std::to_string(b) +
                                " do not fit data " + shape_to_string(data.shape));
    Shape out(ishape.begin(), ishape.end() - 1);
    for (size_t d = 0; d < static_cast<size_t>(b) && d < out.size(); ++d)
        if (!out[d]) out[d] = data.shape[d];  // batch dims are shared
    out.insert(out.end(), data.shape.begin() + b + k, data.shape.end());
    ctx.set_output(0, data.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Scatter family: output = copy of data, then updates written (or reduced) at the addressed
// places in index order, so with reduction "none" the last of duplicate indices wins.

enum class Reduction { None, Add, Mul, Max, Min };

Reduction read_reduction(const Node& node) {
    const std::string r = node.get_attribute<std::string>("reduction", "none");
    if (r == "none") return Reduction::None;
    if (r == "add") return Reduction::Add;
    if (r == "mul") return Reduction::Mul;
    if (r == "max") return Reduction::Max;
    if (r == "min") return Reduction::Min;
    fail_node(node, "attribute 'reduction' is '" + r + "'; expected none, add, mul, max or min");
}

template <typename T>
bool is_nan_value(const T& v) {
    if constexpr (std::is_integral_v<T>) return false;
    else return !(v == v);
}

template <typename T>
void reduce_into(T& dst, const T& src, Reduction r) {
    switch (r) {
        case Reduction::None: dst = src; break;
        case Reduction::Add: dst = static_cast<T>(dst + src); break;  // bool: logical or
        case Reduction::Mul: dst = static_cast<T>(dst * src); break;  // bool: logical and
        case Reduction::Max:  // NaN propagates, as numpy.maximum
            if (is_nan_value(src) || src > dst) dst = src;
            break;
        case Reduction::Min:
            if (is_nan_value(src) || src < dst) dst = src;
            break;
    }
}

// out[targets[u] + e] (op)= updates[u * slice + e] for every unit u and e < slice.
void scatter_units(Tensor& out, const Tensor& updates, const std::vector<int64_t>& targets, int64_t slice,
                   Reduction reduction, const Node& node) {
    if (updates.dtype() != out.dtype())
        fail_node(node, "updates are " + dtype_to_string(updates.dtype()) + "; data is " + dtype_to_string(out.dtype()));
    auto apply = [&](auto tag, auto&& op) {
        using T = decltype(tag);
        T* dst = out.data_ptr<T>();
        const T* src = updates.data_ptr<T>();
        for (size_t u = 0; u < targets.size(); ++u)
            for (int64_t e = 0; e < slice; ++e) op(dst[targets[u] + e], src[static_cast<int64_t>(u) * slice + e]);
    };
    if (reduction == Reduction::None) {
        dispatch_by_width(out.dtype(), [&](auto tag) {
            apply(tag, [](auto& d, const auto& s) { d = s; });
        });
        return;
    }
    dispatch_numeric(
        out.dtype(), node,
        [&](auto tag) {
            using T = decltype(tag);
            apply(tag, [reduction](T& d, const T& s) { reduce_into(d, s, reduction); });
        },
        /*with_bool=*/true);
}

class ScatterElementsKernel final : public NodeKernel {
public:
    ScatterElementsKernel(const Node& node, bool legacy)
        : NodeKernel(node),
          axis_(node.get_attribute<int64_t>("axis", 0)),
          reduction_(legacy ? Reduction::None : read_reduction(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const Tensor& indices = ctx.input(1);
        const Tensor& updates = ctx.input(2);
        if (data.ndim() == 0) fail("data must have rank >= 1");
        if (updates.shape() != indices.shape())
            fail("updates " + shape_to_string(updates.shape()) + " must have the shape of indices " +
                 shape_to_string(indices.shape()));
        const auto axis = static_cast<size_t>(normalize_axis(axis_, static_cast<int64_t>(data.ndim()), node_));
        const std::vector<int64_t> targets = element_offsets(data, indices, axis, node_);
        Tensor out = data.clone();
        scatter_units(out, updates, targets, 1, reduction_, node_);
        ctx.outputs[0] = std::move(out);
    }

private:
    int64_t axis_;
    Reduction reduction_;
};

class ScatterNDKernel final : public NodeKernel {
public:
    explicit ScatterNDKernel(const Node& node) : NodeKernel(node), reduction_(read_reduction(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& data = ctx.input(0);
        const Tensor& updates = ctx.input(2);
        const NdAddressing a = nd_addressing(data, ctx.input(1), 0, node_);
        if (updates.shape() != a.out_shape)
            fail("updates " + shape_to_string(updates.shape()) + " must have shape " + shape_to_string(a.out_shape) +
                 " (indices.shape[:-1] + data.shape[k:])");
        Tensor out = data.clone();
        scatter_units(out, updates, a.offsets, a.slice, reduction_, node_);
        ctx.outputs[0] = std::move(out);
    }

private:
    Reduction reduction_;
};

void infer_like_input0(InferenceContext& ctx) {
    if (ctx.has_input(0)) ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// TensorScatter (KV-cache update): for each prefix index p over past.shape[:axis], update's
// sequence positions s go to cache position write_indices[p[0]] + s (mod max length when
// mode is "circular").

class TensorScatterKernel final : public NodeKernel {
public:
    explicit TensorScatterKernel(const Node& node)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", -2)) {
        const std::string mode = node.get_attribute<std::string>("mode", "linear");
        if (mode != "linear" && mode != "circular")
            fail("attribute 'mode' is '" + mode + "'; expected linear or circular");
        circular_ = mode == "circular";
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& past = ctx.input(0);
        const Tensor& update = ctx.input(1);
        const auto& pshape = past.shape();
        const auto& ushape = update.shape();
        const auto rank = static_cast<int64_t>(pshape.size());
        if (rank < 2) fail("past_cache must have rank >= 2 (batch and sequence axes)");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, rank, node_));
        if (axis == 0) fail("axis must not be the batch axis 0");
        if (update.dtype() != past.dtype())
            fail("update is " + dtype_to_string(update.dtype()) + "; past_cache is " + dtype_to_string(past.dtype()));
        bool fits = ushape.size() == pshape.size();
        for (size_t d = 0; fits && d < pshape.size(); ++d) fits = d == axis ? ushape[d] <= pshape[d] : ushape[d] == pshape[d];
        if (!fits)
            fail("update " + shape_to_string(ushape) + " does not fit past_cache " + shape_to_string(pshape) +
                 " (only axis " + std::to_string(axis) + " may be shorter)");
        const int64_t batch = pshape[0], max_len = pshape[axis], seq_len = ushape[axis];
        std::vector<int64_t> write(static_cast<size_t>(batch), 0);
        if (ctx.has_input(2)) {
            write = int_values(ctx.input(2), node_, "write_indices");
            if (static_cast<int64_t>(write.size()) != batch)
                fail("write_indices has " + std::to_string(write.size()) + " values; the batch is " + std::to_string(batch));
        }
        for (int64_t w : write) {
            if (circular_) continue;
            if (w < 0 || w + seq_len > max_len)
                fail("write index " + std::to_string(w) + " with " + std::to_string(seq_len) +
                     " updates exceeds the cache length " + std::to_string(max_len) + " (mode linear)");
        }
        const int64_t inner = num_elements_of(std::vector<int64_t>(pshape.begin() + axis + 1, pshape.end()));
        const std::vector<int64_t> prefix(pshape.begin(), pshape.begin() + axis);
        const int64_t per_batch = batch ? num_elements_of(prefix) / batch : 0;
        Tensor out = past.clone();
        dispatch_by_width(past.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = update.data_ptr<T>();
            T* dst = out.data_ptr<T>();
            const int64_t rows = num_elements_of(prefix);
            for (int64_t p = 0; p < rows; ++p) {
                const int64_t w = write[static_cast<size_t>(p / per_batch)];
                for (int64_t s = 0; s < seq_len; ++s) {
                    int64_t pos = w + s;
                    if (circular_) pos = ((pos % max_len) + max_len) % max_len;
                    std::copy(src + (p * seq_len + s) * inner, src + (p * seq_len + s + 1) * inner,
                              dst + (p * max_len + pos) * inner);
                }
            }
        });
        ctx.outputs[0] = std::move(out);
    }

private:
    int64_t axis_;
    bool circular_ = false;
};

// ---------------------------------------------------------------------------------------------
// Compress: the slices along `axis` (or the elements of the flattened input) whose condition
// entry is true. A condition shorter than the axis selects nothing beyond its end.

class CompressKernel final : public NodeKernel {
public:
    explicit CompressKernel(const Node& node) : NodeKernel(node) {
        if (node.has_attribute("axis")) axis_ = node.get_attribute<int64_t>("axis");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& cond = ctx.input(1);
        if (cond.dtype() != DType::Bool || cond.ndim() != 1)
            fail("condition must be a 1-D Bool tensor; got " + dtype_to_string(cond.dtype()) + " " +
                 shape_to_string(cond.shape()));
        if (axis_ && x.ndim() == 0) fail("input must have rank >= 1 when 'axis' is given");
        const Tensor in = axis_ ? x : x.reshape({x.num_elements()});
        const auto axis = static_cast<size_t>(axis_ ? normalize_axis(*axis_, static_cast<int64_t>(in.ndim()), node_) : 0);
        const int64_t dim = in.shape()[axis];
        std::vector<int64_t> selected;
        const bool* c = cond.data_ptr<bool>();
        for (int64_t i = 0; i < cond.num_elements(); ++i) {
            if (!c[i]) continue;
            if (i >= dim)
                fail("condition selects index " + std::to_string(i) + " of an axis of size " + std::to_string(dim));
            selected.push_back(i);
        }
        ctx.outputs[0] = take_along_axis(in, axis, selected, ctx.num_threads);
    }

private:
    std::optional<int64_t> axis_;
};

void infer_compress(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    std::optional<int64_t> count;  // selected entries, when the condition is constant
    if (const Tensor* c = ctx.constant(1); c && c->dtype() == DType::Bool)
        count = std::count(c->data_ptr<bool>(), c->data_ptr<bool>() + c->num_elements(), true);
    if (!ctx.node.has_attribute("axis")) return ctx.set_output(0, x.dtype, {count});
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail_node(ctx.node, "input must have rank >= 1 when 'axis' is given");
    const auto axis = static_cast<size_t>(normalize_axis(ctx.node.get_attribute<int64_t>("axis"), rank, ctx.node));
    Shape out = x.shape;
    out[axis] = count;
    ctx.set_output(0, x.dtype, std::move(out));
}

}  // namespace

void register_indexing_gather_ops(OpTable& table) {
    table.add(OpSchema{"Gather", "", 13, 2, 2, 1, 1, infer_gather,
                       [](const KernelInfo& info) { return std::make_unique<GatherKernel>(info.node); }});
    table.add(OpSchema{"GatherElements", "", 13, 2, 2, 1, 1, infer_gather_elements,
                       [](const KernelInfo& info) { return std::make_unique<GatherElementsKernel>(info.node); }});
    table.add(OpSchema{"GatherND", "", 13, 2, 2, 1, 1, infer_gather_nd,
                       [](const KernelInfo& info) { return std::make_unique<GatherNDKernel>(info.node); }});
    table.add(OpSchema{"Scatter", "", 11, 3, 3, 1, 1, infer_like_input0, [](const KernelInfo& info) {
                           return std::make_unique<ScatterElementsKernel>(info.node, /*legacy=*/true);
                       }});
    table.add(OpSchema{"ScatterElements", "", 18, 3, 3, 1, 1, infer_like_input0, [](const KernelInfo& info) {
                           return std::make_unique<ScatterElementsKernel>(info.node, /*legacy=*/false);
                       }});
    table.add(OpSchema{"ScatterND", "", 18, 3, 3, 1, 1, infer_like_input0,
                       [](const KernelInfo& info) { return std::make_unique<ScatterNDKernel>(info.node); }});
    table.add(OpSchema{"TensorScatter", "", 24, 2, 3, 1, 1, infer_like_input0,
                       [](const KernelInfo& info) { return std::make_unique<TensorScatterKernel>(info.node); }});
    table.add(OpSchema{"Compress", "", 11, 2, 2, 1, 1, infer_compress,
                       [](const KernelInfo& info) { return std::make_unique<CompressKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
