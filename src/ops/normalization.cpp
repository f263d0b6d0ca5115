// Softmax, LogSoftmax, Hardmax; LayerNormalization, RMSNormalization, GroupNormalization,
// InstanceNormalization, LpNormalization, LRN. Floating types (float, double, float16,
// bfloat16); statistics are computed in double and rounded once to the output type.
// (MeanVarianceNormalization, which reduces over any axes, lives in reduce.cpp.)
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/nn_common.hpp"

namespace pyflame_rt::ops {
namespace {

// For each flat position of `target`, the flat index into `param` broadcast to it
// (unidirectional numpy broadcasting); ValidationError when `param` does not broadcast.
std::vector<int64_t> broadcast_index(const std::vector<int64_t>& param, const std::vector<int64_t>& target,
                                     const Node& node, const char* what) {
    auto mismatch = [&] {
        fail_node(node, std::string(what) + " has shape " + shape_to_string(param) +
                            ", which does not broadcast to " + shape_to_string(target));
    };
    std::vector<int64_t> p(param);
    while (p.size() > target.size()) {  // extra leading dims must be 1
        if (p.front() != 1) mismatch();
        p.erase(p.begin());
    }
    p.insert(p.begin(), target.size() - p.size(), 1);
    std::vector<int64_t> strides(p.size(), 0);
    for (size_t i = p.size(), s = 1; i-- > 0;) {
        if (p[i] != target[i] && p[i] != 1) mismatch();
        if (p[i] != 1) strides[i] = static_cast<int64_t>(s);
        s *= static_cast<size_t>(p[i]);
    }
    const int64_t total = num_elements_of(target);
    std::vector<int64_t> index(static_cast<size_t>(total));
    std::vector<int64_t> pos(target.size(), 0);
    int64_t at = 0;
    for (int64_t i = 0; i < total; ++i) {
        index[i] = at;
        for (size_t d = target.size(); d-- > 0;) {  // odometer step
            at += strides[d];
            if (++pos[d] < target[d]) break;
            at -= strides[d] * target[d];
            pos[d] = 0;
        }
    }
    return index;
}

DType stash_dtype(const Node& node) {
    const int64_t code = node.get_attribute<int64_t>("stash_type", 1);
    DType d = DType::Float32;
    try {
        d = dtype_from_onnx(static_cast<int>(code));
    } catch (const ValidationError&) {
        fail_node(node, "attribute 'stash_type' is " + std::to_string(code) + "; expected a floating type code");
    }
    if (d != DType::Float32 && d != DType::Float64 && d != DType::Float16 && d != DType::BFloat16)
        fail_node(node, "attribute 'stash_type' is " + std::to_string(code) + "; expected a floating type code");
    return d;
}

void infer_same_float(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    require_float_type(ctx.node, ctx.input(0).dtype, "input");
    ctx.set_output(0, ctx.input(0).dtype, ctx.input(0).shape);
}

// ---------------------------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax

enum class SoftmaxKind { Softmax, LogSoftmax, Hardmax };

// Opset >= 13: along `axis` (default -1). Before 13: the input is seen as a matrix
// (prod(dims[:axis]), prod(dims[axis:])) and each row is one group (axis default 1).
class SoftmaxKernel final : public NodeKernel {
public:
    SoftmaxKernel(const Node& node, int64_t opset, SoftmaxKind kind)
        : NodeKernel(node),
          kind_(kind),
          legacy_(opset > 0 && opset < 13),
          axis_(node.get_attribute<int64_t>("axis", legacy_ ? 1 : -1)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        const int64_t rank = static_cast<int64_t>(dims.size());
        if (rank == 0) fail("input is a scalar; expected rank >= 1");
        const int64_t axis = normalize_axis(axis_, rank, node_);
        AxisSplit s = split_at(dims, axis);
        if (legacy_) s = AxisSplit{dims_product(dims, 0, axis), dims_product(dims, axis, dims.size()), 1};
        Tensor y(dims, x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            run(x.data_ptr<T>(), y.data_ptr<T>(), s);
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    template <typename T>
    void run(const T* x, T* y, const AxisSplit& s) const {
        std::vector<double> e(static_cast<size_t>(s.n));
        for (int64_t o = 0; o < s.outer; ++o)
            for (int64_t i = 0; i < s.inner; ++i) {
                const T* xs = x + o * s.n * s.inner + i;
                T* ys = y + o * s.n * s.inner + i;
                if (kind_ == SoftmaxKind::Hardmax) {
                    int64_t best = 0;  // first maximum; NaN wins, as numpy's argmax
                    for (int64_t j = 1; j < s.n; ++j) {
                        const double v = static_cast<double>(xs[j * s.inner]), b = static_cast<double>(xs[best * s.inner]);
                        if (!std::isnan(b) && (v > b || std::isnan(v))) best = j;
                    }
                    for (int64_t j = 0; j < s.n; ++j) ys[j * s.inner] = T(j == best ? 1.0f : 0.0f);
                    continue;
                }
                double max = -std::numeric_limits<double>::infinity();
                for (int64_t j = 0; j < s.n; ++j) max = std::max(max, static_cast<double>(xs[j * s.inner]));
                double sum = 0;  // subtracting the max keeps exp() <= 1: no overflow
                for (int64_t j = 0; j < s.n; ++j) sum += e[j] = std::exp(static_cast<double>(xs[j * s.inner]) - max);
                if (kind_ == SoftmaxKind::Softmax) {
                    for (int64_t j = 0; j < s.n; ++j) ys[j * s.inner] = static_cast<T>(e[j] / sum);
                } else {
                    const double shift = max + std::log(sum);
                    for (int64_t j = 0; j < s.n; ++j) ys[j * s.inner] = static_cast<T>(static_cast<double>(xs[j * s.inner]) - shift);
                }
            }
    }

    SoftmaxKind kind_;
    bool legacy_;
    int64_t axis_;
};

void infer_softmax(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail_node(ctx.node, "input is a scalar; expected rank >= 1");
    const bool legacy = ctx.opset > 0 && ctx.opset < 13;
    normalize_axis(ctx.node.get_attribute<int64_t>("axis", legacy ? 1 : -1), rank, ctx.node);
    ctx.set_output(0, x.dtype, x.shape);
}

OpSchema softmax_schema(const char* name, SoftmaxKind kind) {
    return OpSchema{name, "", 1, 1, 1, 1, 1, infer_softmax, [kind](const KernelInfo& info) {
                        return std::make_unique<SoftmaxKernel>(info.node, info.opset, kind);
                    }};
}

// ---------------------------------------------------------------------------------------------
// Normalization over contiguous blocks: LayerNormalization, RMSNormalization,
// GroupNormalization and InstanceNormalization all normalize `rows` blocks of `block`
// consecutive elements, then apply a per-element scale and bias.

struct BlockStats {
    std::vector<double> mean, inv_std;  // per row; mean 0 when not centered (RMS)
};

template <typename T>
BlockStats block_stats(const T* x, int64_t rows, int64_t block, double epsilon, bool center) {
    BlockStats st;
    st.mean.assign(static_cast<size_t>(rows), 0.0);
    st.inv_std.assign(static_cast<size_t>(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
        const T* v = x + r * block;
        double mean = 0;
        if (center) {
            for (int64_t c = 0; c < block; ++c) mean += static_cast<double>(v[c]);
            mean /= static_cast<double>(block);
        }
        double sq = 0;  // two passes: no cancellation as with E[x^2] - E[x]^2
        for (int64_t c = 0; c < block; ++c) {
            const double d = static_cast<double>(v[c]) - mean;
            sq += d * d;
        }
        st.mean[r] = mean;
        st.inv_std[r] = 1.0 / std::sqrt(sq / static_cast<double>(block) + epsilon);
    }
    return st;
}

// y = (x - mean[row]) * inv_std[row] * scale(row, c) + bias(row, c), c the position in the block.
template <typename T, typename Scale, typename Bias>
void apply_block_norm(const T* x, T* y, int64_t rows, int64_t block, const BlockStats& st, Scale&& scale, Bias&& bias) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < block; ++c) {
            const int64_t i = r * block + c;
            y[i] = static_cast<T>((static_cast<double>(x[i]) - st.mean[r]) * st.inv_std[r] * scale(r, c) + bias(r, c));
        }
}

// LayerNormalization (center) and RMSNormalization (no center, no bias): normalized over
// dims[axis:], Scale (and B) broadcast to those dims.
class LayerNormKernel final : public NodeKernel {
public:
    LayerNormKernel(const Node& node, bool rms)
        : NodeKernel(node),
          rms_(rms),
          axis_(node.get_attribute<int64_t>("axis", -1)),
          epsilon_(node.get_attribute<double>("epsilon", 1e-5)),
          stash_(stash_dtype(node)),
          want_mean_(!rms && node.outputs().size() > 1 && !node.outputs()[1].empty()),
          want_inv_std_(!rms && node.outputs().size() > 2 && !node.outputs()[2].empty()) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        const int64_t rank = static_cast<int64_t>(dims.size());
        if (rank == 0) fail("input X is a scalar; expected rank >= 1");
        const int64_t axis = normalize_axis(axis_, rank, node_);
        const std::vector<int64_t> norm_shape(dims.begin() + axis, dims.end());
        const int64_t rows = dims_product(dims, 0, static_cast<size_t>(axis));
        const int64_t block = num_elements_of(norm_shape);
        const std::vector<double> scale = float_values(ctx.input(1), node_);
        const std::vector<int64_t> scale_at = broadcast_index(ctx.input(1).shape(), norm_shape, node_, "Scale");
        std::vector<double> bias;
        std::vector<int64_t> bias_at;
        if (!rms_ && ctx.has_input(2)) {
            bias = float_values(ctx.input(2), node_);
            bias_at = broadcast_index(ctx.input(2).shape(), norm_shape, node_, "B");
        }
        Tensor y(dims, x.dtype());
        BlockStats st;
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            st = block_stats(x.data_ptr<T>(), rows, block, epsilon_, !rms_);
            apply_block_norm(
                x.data_ptr<T>(), y.data_ptr<T>(), rows, block, st, [&](int64_t, int64_t c) { return scale[scale_at[c]]; },
                [&](int64_t, int64_t c) { return bias.empty() ? 0.0 : bias[bias_at[c]]; });
        });
        ctx.outputs[0] = std::move(y);
        std::vector<int64_t> stat_shape(dims.begin(), dims.begin() + axis);
        stat_shape.resize(dims.size(), 1);
        if (want_mean_) ctx.outputs[1] = stats_tensor(stat_shape, st.mean);
        if (want_inv_std_) ctx.outputs[2] = stats_tensor(stat_shape, st.inv_std);
    }

private:
    Tensor stats_tensor(const std::vector<int64_t>& shape, const std::vector<double>& values) const {
        return float_tensor(shape, stash_, values, node_);
    }

    bool rms_;
    int64_t axis_;
    double epsilon_;
    DType stash_;
    bool want_mean_, want_inv_std_;
};

void infer_layer_norm(InferenceContext& ctx, bool rms) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail_node(ctx.node, "input X is a scalar; expected rank >= 1");
    const int64_t axis = normalize_axis(ctx.node.get_attribute<int64_t>("axis", -1), rank, ctx.node);
    const DType stash = stash_dtype(ctx.node);
    ctx.set_output(0, x.dtype, x.shape);
    if (rms) return;
    Shape stat(x.shape.begin(), x.shape.begin() + axis);
    stat.resize(x.shape.size(), int64_t{1});
    for (size_t i = 1; i < 3 && i < ctx.node.outputs().size(); ++i)
        if (!ctx.node.outputs()[i].empty()) ctx.set_output(i, stash, stat);
}

// GroupNormalization (num_groups; scale/bias per channel from opset 21, per group before)
// and InstanceNormalization (one group per channel, scale/bias per channel).
class GroupNormKernel final : public NodeKernel {
public:
    GroupNormKernel(const Node& node, int64_t opset, bool instance)
        : NodeKernel(node),
          instance_(instance),
          groups_(instance ? 0 : node.get_attribute<int64_t>("num_groups")),
          per_channel_params_(instance || opset <= 0 || opset >= 21),
          epsilon_(node.get_attribute<double>("epsilon", 1e-5)) {
        if (!instance && groups_ < 1) fail("attribute 'num_groups' is " + std::to_string(groups_) + "; expected >= 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        if (dims.size() < 2) fail("input X has shape " + shape_to_string(dims) + "; expected (N, C, ...)");
        const int64_t batch = dims[0], channels = dims[1];
        const int64_t groups = instance_ ? channels : groups_;
        if (channels % groups != 0)
            fail("input X has " + std::to_string(channels) + " channels, not divisible by num_groups=" +
                 std::to_string(groups));
        const int64_t spatial = dims_product(dims, 2, dims.size());
        const int64_t group_channels = channels / groups;
        const int64_t params = per_channel_params_ ? channels : groups;
        const std::vector<double> scale = float_values(ctx.input(1), node_);
        const std::vector<double> bias = float_values(ctx.input(2), node_);
        for (const auto& [v, name] : {std::pair{&scale, "scale"}, std::pair{&bias, "bias"}})
            if (static_cast<int64_t>(v->size()) != params)
                fail(std::string("input ") + name + " has " + std::to_string(v->size()) + " values; expected " +
                     std::to_string(params) + (per_channel_params_ ? " (one per channel)" : " (one per group)"));
        const int64_t rows = batch * groups, block = group_channels * spatial;
        // The parameter index of element c of row r.
        auto param = [&](int64_t r, int64_t c) {
            const int64_t g = r % groups;
            return per_channel_params_ ? g * group_channels + c / std::max<int64_t>(spatial, 1) : g;
        };
        Tensor y(dims, x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const BlockStats st = block_stats(x.data_ptr<T>(), rows, block, epsilon_, true);
            apply_block_norm(
                x.data_ptr<T>(), y.data_ptr<T>(), rows, block, st, [&](int64_t r, int64_t c) { return scale[param(r, c)]; },
                [&](int64_t r, int64_t c) { return bias[param(r, c)]; });
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    bool instance_;
    int64_t groups_;
    bool per_channel_params_;
    double epsilon_;
};

void infer_group_norm(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input X");
    if (x.shape.size() < 2) fail_node(ctx.node, "input X has shape " + shape_to_string(x.shape) + "; expected (N, C, ...)");
    ctx.set_output(0, x.dtype, x.shape);
}

// ---------------------------------------------------------------------------------------------
// LpNormalization: x / ||x||_p along axis (p 1 or 2); a zero norm gives 0.

class LpNormKernel final : public NodeKernel {
public:
    explicit LpNormKernel(const Node& node)
        : NodeKernel(node), axis_(node.get_attribute<int64_t>("axis", -1)), p_(node.get_attribute<int64_t>("p", 2)) {
        if (p_ != 1 && p_ != 2) fail("attribute 'p' is " + std::to_string(p_) + "; expected 1 or 2");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const int64_t rank = static_cast<int64_t>(x.ndim());
        if (rank == 0) fail("input is a scalar; expected rank >= 1");
        const AxisSplit s = split_at(x.shape(), normalize_axis(axis_, rank, node_));
        Tensor y(x.shape(), x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t o = 0; o < s.outer; ++o)
                for (int64_t i = 0; i < s.inner; ++i) {
                    const int64_t base = o * s.n * s.inner + i;
                    double norm = 0;
                    for (int64_t j = 0; j < s.n; ++j) {
                        const double v = static_cast<double>(xd[base + j * s.inner]);
                        norm += p_ == 1 ? std::abs(v) : v * v;
                    }
                    if (p_ == 2) norm = std::sqrt(norm);
                    for (int64_t j = 0; j < s.n; ++j)
                        yd[base + j * s.inner] = static_cast<T>(norm == 0 ? 0.0 : static_cast<double>(xd[base + j * s.inner]) / norm);
                }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t axis_;
    int64_t p_;
};

// ---------------------------------------------------------------------------------------------
// LRN: y = x / (bias + alpha / size * sum of x^2 over the neighbouring channels)^beta.

class LrnKernel final : public NodeKernel {
public:
    explicit LrnKernel(const Node& node)
        : NodeKernel(node),
          size_(node.get_attribute<int64_t>("size")),
          alpha_(node.get_attribute<double>("alpha", 1e-4)),
          beta_(node.get_attribute<double>("beta", 0.75)),
          bias_(node.get_attribute<double>("bias", 1.0)) {
        if (size_ < 1) fail("attribute 'size' is " + std::to_string(size_) + "; expected >= 1");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto& dims = x.shape();
        if (dims.size() < 3) fail("input X has shape " + shape_to_string(dims) + "; expected (N, C, D1, ...)");
        const AxisSplit s = split_at(dims, 1);
        const int64_t before = (size_ - 1) / 2, after = size_ - 1 - before;  // floor and ceil of (size-1)/2
        Tensor y(dims, x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t n = 0; n < s.outer; ++n)
                for (int64_t c = 0; c < s.n; ++c)
                    for (int64_t i = 0; i < s.inner; ++i) {
                        double sq = 0;
                        for (int64_t k = std::max<int64_t>(0, c - before); k <= std::min(s.n - 1, c + after); ++k) {
                            const double v = static_cast<double>(xd[(n * s.n + k) * s.inner + i]);
                            sq += v * v;
                        }
                        const int64_t at = (n * s.n + c) * s.inner + i;
                        yd[at] = static_cast<T>(static_cast<double>(xd[at]) /
                                                std::pow(bias_ + alpha_ / static_cast<double>(size_) * sq, beta_));
                    }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t size_;
    double alpha_, beta_, bias_;
};

}  // namespace

void register_normalization_ops(OpTable& table) {
    table.add(softmax_schema("Softmax", SoftmaxKind::Softmax));
    table.add(softmax_schema("LogSoftmax", SoftmaxKind::LogSoftmax));
    table.add(softmax_schema("Hardmax", SoftmaxKind::Hardmax));
    table.add(OpSchema{"LayerNormalization", "", 17, 2, 3, 1, 3, [](InferenceContext& ctx) { infer_layer_norm(ctx, false); },
                       [](const KernelInfo& info) { return std::make_unique<LayerNormKernel>(info.node, false); }});
    table.add(OpSchema{"RMSNormalization", "", 23, 2, 2, 1, 1, [](InferenceContext& ctx) { infer_layer_norm(ctx, true); },
                       [](const KernelInfo& info) { return std::make_unique<LayerNormKernel>(info.node, true); }});
    table.add(OpSchema{"GroupNormalization", "", 18, 3, 3, 1, 1, infer_group_norm, [](const KernelInfo& info) {
                           return std::make_unique<GroupNormKernel>(info.node, info.opset, false);
                       }});
    table.add(OpSchema{"InstanceNormalization", "", 6, 3, 3, 1, 1, infer_group_norm, [](const KernelInfo& info) {
                           return std::make_unique<GroupNormKernel>(info.node, info.opset, true);
                       }});
    table.add(OpSchema{"LpNormalization", "", 1, 1, 1, 1, 1, infer_same_float,
                       [](const KernelInfo& info) { return std::make_unique<LpNormKernel>(info.node); }});
    table.add(OpSchema{"LRN", "", 1, 1, 1, 1, 1, infer_same_float,
                       [](const KernelInfo& info) { return std::make_unique<LrnKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
