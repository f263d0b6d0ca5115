// Ops that compare or select by value: Unique, TopK, NonZero.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "ops/dispatch.hpp"
#include "ops/indexing_common.hpp"

namespace pyflame_rt::ops {
namespace {

// A strict total order (NaN after every number and equal to NaN, as numpy sorts) so std::sort
// stays well defined on floating data.
template <typename T>
bool is_nan_value(const T& v) {
    if constexpr (std::is_integral_v<T> || std::is_same_v<T, std::string>) return false;
    else return !(v == v);
}
template <typename T>
bool total_less(const T& a, const T& b) {
    const bool na = is_nan_value(a), nb = is_nan_value(b);
    if (na || nb) return !na && nb;
    return a < b;
}
template <typename T>
bool total_equal(const T& a, const T& b) {
    return a == b || (is_nan_value(a) && is_nan_value(b));
}

// Numeric, Bool and String dtypes: the ones with an order.
template <typename F>
void dispatch_ordered(DType dtype, const Node& node, F&& fn) {
    if (dtype == DType::String) return fn(std::string{});
    dispatch_numeric(dtype, node, fn, /*with_bool=*/true);
}

Tensor int64_tensor(const std::vector<int64_t>& values) {
    Tensor t({static_cast<int64_t>(values.size())}, DType::Int64);
    std::copy(values.begin(), values.end(), t.data_ptr<int64_t>());
    return t;
}

// ---------------------------------------------------------------------------------------------
// Unique: distinct elements (or distinct slices along `axis`), sorted ascending or in order of
// first occurrence; also each one's first index, each input entry's position in the result,
// and the counts.

class UniqueKernel final : public NodeKernel {
public:
    explicit UniqueKernel(const Node& node) : NodeKernel(node), sorted_(node.get_attribute<int64_t>("sorted", 1) != 0) {
        if (node.has_attribute("axis")) axis_ = node.get_attribute<int64_t>("axis");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (axis_ && x.ndim() == 0) fail("input must have rank >= 1 when 'axis' is given");
        // Entries compared: slices j of the [outer, m, inner] view (single elements without axis).
        const Tensor view = axis_ ? x : x.reshape({x.num_elements()});
        const auto axis = static_cast<size_t>(axis_ ? normalize_axis(*axis_, static_cast<int64_t>(x.ndim()), node_) : 0);
        const auto& dims = view.shape();
        const int64_t m = dims[axis];
        const int64_t outer = num_elements_of(std::vector<int64_t>(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(axis)));
        const int64_t inner = num_elements_of(std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(axis) + 1, dims.end()));

        std::vector<int64_t> order(static_cast<size_t>(m));
        std::iota(order.begin(), order.end(), 0);
        std::vector<int64_t> group_of(static_cast<size_t>(m));  // group (in sorted order) of each entry
        std::vector<int64_t> firsts;                          // per group: its first entry
        std::vector<int64_t> counts;
        dispatch_ordered(view.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            const T* v = view.data_ptr<T>();
            // Lexicographic over the slice's elements in row-major order, as numpy.unique(axis=).
            auto compare = [&](int64_t a, int64_t b) -> int {
                for (int64_t o = 0; o < outer; ++o)
                    for (int64_t i = 0; i < inner; ++i) {
                        const T& va = v[(o * m + a) * inner + i];
                        const T& vb = v[(o * m + b) * inner + i];
                        if (total_less(va, vb)) return -1;
                        if (total_less(vb, va)) return 1;
                    }
                return 0;
            };
            // Stable: within a group the first entry comes first.
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return compare(a, b) < 0; });
            for (size_t s = 0; s < order.size(); ++s) {
                if (s == 0 || compare(order[s - 1], order[s]) != 0) {
                    firsts.push_back(order[s]);
                    counts.push_back(0);
                }
                group_of[order[s]] = static_cast<int64_t>(firsts.size()) - 1;
                ++counts.back();
            }
        });

        // Output position of each group.
        std::vector<int64_t> position(firsts.size());
        std::iota(position.begin(), position.end(), 0);
        if (!sorted_) {
            std::vector<int64_t> by_first(firsts.size());
            std::iota(by_first.begin(), by_first.end(), 0);
            std::sort(by_first.begin(), by_first.end(), [&](int64_t a, int64_t b) { return firsts[a] < firsts[b]; });
            for (size_t p = 0; p < by_first.size(); ++p) position[by_first[p]] = static_cast<int64_t>(p);
        }
        std::vector<int64_t> indices(firsts.size()), out_counts(firsts.size()), inverse(static_cast<size_t>(m));
        for (size_t g = 0; g < firsts.size(); ++g) {
            indices[position[g]] = firsts[g];
            out_counts[position[g]] = counts[g];
        }
        for (int64_t j = 0; j < m; ++j) inverse[j] = position[group_of[j]];

        ctx.outputs[0] = take_along_axis(view, axis, indices, ctx.num_threads);
        if (ctx.outputs.size() > 1) ctx.outputs[1] = int64_tensor(indices);
        if (ctx.outputs.size() > 2) ctx.outputs[2] = int64_tensor(inverse);
        if (ctx.outputs.size() > 3) ctx.outputs[3] = int64_tensor(out_counts);
    }

private:
    std::optional<int64_t> axis_;
    bool sorted_;
};

void infer_unique(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    std::optional<int64_t> entries;  // length of inverse_indices
    if (ctx.node.has_attribute("axis")) {
        const int64_t rank = static_cast<int64_t>(x.shape.size());
        if (rank == 0) fail_node(ctx.node, "input must have rank >= 1 when 'axis' is given");
        const auto axis = static_cast<size_t>(normalize_axis(ctx.node.get_attribute<int64_t>("axis"), rank, ctx.node));
        Shape y = x.shape;
        y[axis] = std::nullopt;
        ctx.set_output(0, x.dtype, std::move(y));
        entries = x.shape[axis];
    } else {
        ctx.set_output(0, x.dtype, {std::nullopt});
        entries = 1;
        for (const auto& d : x.shape) entries = entries && d ? std::optional<int64_t>(*entries * *d) : std::nullopt;
    }
    const size_t outputs = ctx.node.outputs().size();
    if (outputs > 1) ctx.set_output(1, DType::Int64, {std::nullopt});
    if (outputs > 2) ctx.set_output(2, DType::Int64, {entries});
    if (outputs > 3) ctx.set_output(3, DType::Int64, {std::nullopt});
}

// ---------------------------------------------------------------------------------------------
// TopK: the k largest (or smallest) entries along `axis`, sorted, ties broken by the lower
// index; k an attribute before opset 10, input K from 10; `largest`/`sorted` since 11.

class TopKKernel final : public NodeKernel {
public:
    TopKKernel(const Node& node, int64_t opset)
        : NodeKernel(node),
          opset_(opset),
          axis_(node.get_attribute<int64_t>("axis", -1)),
          largest_(node.get_attribute<int64_t>("largest", 1) != 0) {
        if (opset < 10) k_attr_ = node.get_attribute<int64_t>("k");  // ValidationError when missing
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() == 0) fail("input must have rank >= 1");
        const auto axis = static_cast<size_t>(normalize_axis(axis_, static_cast<int64_t>(x.ndim()), node_));
        const int64_t k = opset_ < 10 ? k_attr_ : read_k(ctx);
        const auto& dims = x.shape();
        const int64_t n = dims[axis];
        if (k < 0 || k > n)
            fail("k = " + std::to_string(k) + " is outside [0, " + std::to_string(n) + "] (axis " + std::to_string(axis) +
                 " of " + shape_to_string(dims) + ")");
        const int64_t outer = num_elements_of(std::vector<int64_t>(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(axis)));
        const int64_t inner = num_elements_of(std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(axis) + 1, dims.end()));
        std::vector<int64_t> out_dims = dims;
        out_dims[axis] = k;
        Tensor values(out_dims, x.dtype());
        Tensor indices(out_dims, DType::Int64);
        dispatch_numeric(x.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            const T* src = x.data_ptr<T>();
            T* val = values.data_ptr<T>();
            int64_t* idx = indices.data_ptr<int64_t>();
            const int64_t lines = outer * inner;
            parallel_for(lines, threads_for_work(static_cast<double>(x.num_elements()) * 8, ctx.num_threads),
                         [&](int64_t begin, int64_t end) {
                std::vector<int64_t> order(static_cast<size_t>(n));
                for (int64_t line = begin; line < end; ++line) {
                    const int64_t o = line / inner, r = line % inner;
                    const T* v = src + o * n * inner + r;  // v[i * inner]: entry i of the line
                    std::iota(order.begin(), order.end(), 0);
                    auto before = [&](int64_t a, int64_t b) {
                        const T& va = v[a * inner];
                        const T& vb = v[b * inner];
                        if (largest_ ? total_less(vb, va) : total_less(va, vb)) return true;
                        return total_equal(va, vb) && a < b;
                    };
                    std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
                    for (int64_t j = 0; j < k; ++j) {
                        const int64_t at = (o * k + j) * inner + r;
                        val[at] = v[order[j] * inner];
                        idx[at] = order[j];
                    }
                }
            });
        });
        ctx.outputs[0] = std::move(values);
        if (ctx.outputs.size() > 1) ctx.outputs[1] = std::move(indices);
    }

private:
    int64_t read_k(const KernelContext& ctx) const {
        const Tensor& k = ctx.input(1);
        if (k.dtype() != DType::Int64) fail("K is " + dtype_to_string(k.dtype()) + "; expected Int64");
        return int_scalar(k, node_, "K");
    }

    int64_t opset_;
    int64_t axis_;
    bool largest_;
    int64_t k_attr_ = 0;
};

void infer_top_k(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.empty()) fail_node(ctx.node, "input must have rank >= 1");
    const auto axis = static_cast<size_t>(
        normalize_axis(ctx.node.get_attribute<int64_t>("axis", -1), static_cast<int64_t>(x.shape.size()), ctx.node));
    std::optional<int64_t> k;
    if (ctx.opset < 10) k = ctx.node.get_attribute<int64_t>("k");
    else if (const Tensor* kt = ctx.constant(1)) k = int_scalar(*kt, ctx.node, "K");
    if (k && x.shape[axis] && (*k < 0 || *k > *x.shape[axis]))
        fail_node(ctx.node, "k = " + std::to_string(*k) + " is outside [0, " + std::to_string(*x.shape[axis]) + "]");
    Shape out = x.shape;
    out[axis] = k;
    ctx.set_output(0, x.dtype, out);
    if (ctx.node.outputs().size() > 1) ctx.set_output(1, DType::Int64, out);
}

// ---------------------------------------------------------------------------------------------
// NonZero: [rank, count] coordinates of the non-zero elements in row-major order. Every dtype:
// floating types are tested on their bits (sign masked, so -0 is zero; NaN is non-zero);
// strings are non-zero when not empty.

template <typename Word>
void collect_nonzero(const Tensor& x, Word mask, std::vector<int64_t>& flat) {
    const Word* p = x.data_ptr<Word>();
    for (int64_t i = 0; i < x.num_elements(); ++i)
        if (p[i] & mask) flat.push_back(i);
}

std::vector<int64_t> nonzero_flat_indices(const Tensor& x, const Node& node) {
    std::vector<int64_t> flat;
    switch (x.dtype()) {
        case DType::String: {
            const auto* s = x.data_ptr<std::string>();
            for (int64_t i = 0; i < x.num_elements(); ++i)
                if (!s[i].empty()) flat.push_back(i);
            return flat;
        }
        case DType::Float32: collect_nonzero<uint32_t>(x, 0x7fffffffu, flat); return flat;
        case DType::Float64: collect_nonzero<uint64_t>(x, 0x7fffffffffffffffull, flat); return flat;
        case DType::Float16:
        case DType::BFloat16: collect_nonzero<uint16_t>(x, 0x7fff, flat); return flat;
        case DType::Complex64: collect_nonzero<uint64_t>(x, 0x7fffffff7fffffffull, flat); return flat;
        case DType::Complex128: {
            const auto* p = x.data_ptr<uint64_t>();
            for (int64_t i = 0; i < x.num_elements(); ++i)
                if ((p[2 * i] | p[2 * i + 1]) & 0x7fffffffffffffffull) flat.push_back(i);
            return flat;
        }
        case DType::Float8E4M3FN:
        case DType::Float8E5M2: collect_nonzero<uint8_t>(x, 0x7f, flat); return flat;
        case DType::Float4E2M1: collect_nonzero<uint8_t>(x, 0x07, flat); return flat;
        case DType::Float8E8M0:  // no zero: every code is a power of two (or NaN)
            flat.resize(static_cast<size_t>(x.num_elements()));
            std::iota(flat.begin(), flat.end(), 0);
            return flat;
        default: break;  // integers, Bool, the FNUZ floats (0x80 is NaN, not -0): any bit set
    }
    switch (dtype_size(x.dtype())) {
        case 1: collect_nonzero<uint8_t>(x, 0xff, flat); return flat;
        case 2: collect_nonzero<uint16_t>(x, 0xffff, flat); return flat;
        case 4: collect_nonzero<uint32_t>(x, 0xffffffffu, flat); return flat;
        case 8: collect_nonzero<uint64_t>(x, ~0ull, flat); return flat;
        default: fail_node(node, "dtype " + dtype_to_string(x.dtype()) + " is not supported");
    }
}

class NonZeroKernel final : public NodeKernel {
public:
    explicit NonZeroKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::vector<int64_t> flat = nonzero_flat_indices(x, node_);
        const auto rank = static_cast<int64_t>(x.ndim());
        const auto count = static_cast<int64_t>(flat.size());
        Tensor out({rank, count}, DType::Int64);
        int64_t* y = out.data_ptr<int64_t>();
        const std::vector<int64_t> strides = row_major_strides(x.shape());
        for (int64_t i = 0; i < count; ++i)
            for (int64_t d = 0; d < rank; ++d) y[d * count + i] = flat[i] / strides[d] % x.shape()[d];
        ctx.outputs[0] = std::move(out);
    }
};

void infer_nonzero(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return ctx.set_output(0, DType::Int64, {std::nullopt, std::nullopt});
    std::optional<int64_t> count;
    if (const Tensor* c = ctx.constant(0)) count = static_cast<int64_t>(nonzero_flat_indices(*c, ctx.node).size());
    ctx.set_output(0, DType::Int64, {static_cast<int64_t>(ctx.input(0).shape.size()), count});
}

}  // namespace

void register_indexing_sort_ops(OpTable& table) {
    table.add(OpSchema{"Unique", "", 11, 1, 1, 1, 4, infer_unique,
                       [](const KernelInfo& info) { return std::make_unique<UniqueKernel>(info.node); }});
    table.add(OpSchema{"TopK", "", 11, 1, 2, 2, 2, infer_top_k,
                       [](const KernelInfo& info) { return std::make_unique<TopKKernel>(info.node, info.opset); }});
    table.add(OpSchema{"NonZero", "", 13, 1, 1, 1, 1, infer_nonzero,
                       [](const KernelInfo& info) { return std::make_unique<NonZeroKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
