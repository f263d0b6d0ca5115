// Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare over any set of
// axes (one iterator for all), ArgMax/ArgMin along one axis, CumSum/CumProd, and
// MeanVarianceNormalization (which reduces with the same iterator).
// Every numeric dtype (and bool for ReduceMax/ReduceMin, as opset 20 allows). Floating inputs
// accumulate in double; integers in 64 bits, so a narrower type's sum that overflows wraps as
// it would in its own type once cast back.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/nn_common.hpp"

namespace pyflame_rt::ops {
namespace {

// The type a reduction accumulates T in.
template <typename T>
using Acc = std::conditional_t<is_floating_v<T>, double,
                               std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

// Integer sums and products wrap (done in unsigned arithmetic: signed overflow is undefined).
template <typename A>
A wrap_add(A a, A b) {
    if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
    else return a + b;
}
template <typename A>
A wrap_mul(A a, A b) {
    if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
    else return a * b;
}

// A double result as T; for integer T truncated and saturated (NaN gives 0), so a log or sqrt
// of an integer reduction never converts out of range.
template <typename T>
T from_double(double v) {
    if constexpr (is_floating_v<T>) {
        return static_cast<T>(v);
    } else {
        if (std::isnan(v)) return T(0);
        if (v <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
        if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
        return static_cast<T>(v);
    }
}

// ---------------------------------------------------------------------------------------------
// The reduction iterator shared by all Reduce* ops

// The input's dims with runs of adjacent reduced (or adjacent kept) axes merged, and each
// merged dim's stride in the output (0 for reduced dims).
struct ReducePlan {
    std::vector<int64_t> out_shape;
    std::vector<int64_t> dims, out_strides;
    int64_t out_size = 1, in_size = 1, count = 1;  // count: input elements per output
};

ReducePlan plan_reduce(const std::vector<int64_t>& shape, const std::vector<bool>& reduced, bool keepdims) {
    ReducePlan p;
    std::vector<bool> run_reduced;
    for (size_t i = 0; i < shape.size(); ++i) {
        p.in_size *= shape[i];
        if (reduced[i]) {
            p.count *= shape[i];
            if (keepdims) p.out_shape.push_back(1);
        } else {
            p.out_shape.push_back(shape[i]);
            p.out_size *= shape[i];
        }
        if (shape[i] == 1) continue;  // size-1 axes change no index
        if (!run_reduced.empty() && run_reduced.back() == reduced[i]) {
            p.dims.back() *= shape[i];
        } else {
            p.dims.push_back(shape[i]);
            run_reduced.push_back(reduced[i]);
        }
    }
    p.out_strides.assign(p.dims.size(), 0);
    for (size_t i = p.dims.size(), s = 1; i-- > 0;) {
        if (run_reduced[i]) continue;
        p.out_strides[i] = static_cast<int64_t>(s);
        s *= static_cast<size_t>(p.dims[i]);
    }
    return p;
}

// Calls f(input_index, output_index) for every input element, in input order.
template <typename F>
void for_each_reduced(const ReducePlan& p, F&& f) {
    if (p.in_size == 0) return;
    if (p.dims.empty()) {  // every axis has size 1
        f(int64_t{0}, int64_t{0});
        return;
    }
    const size_t last = p.dims.size() - 1;
    const int64_t inner = p.dims[last], inner_stride = p.out_strides[last];
    std::vector<int64_t> index(last, 0);
    int64_t in = 0, out = 0;
    while (true) {
        for (int64_t j = 0; j < inner; ++j) f(in++, out + j * inner_stride);
        size_t d = last;  // odometer step over the outer dims
        while (d > 0) {
            --d;
            out += p.out_strides[d];
            if (++index[d] < p.dims[d]) break;
            out -= p.out_strides[d] * p.dims[d];
            index[d] = 0;
            if (d == 0) return;
        }
        if (last == 0) return;
    }
}

enum class ReduceOp { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

struct ReduceDef {
    const char* name;
    ReduceOp op;
    int axes_input_since;  // the opset from which axes is an input, not an attribute
};

constexpr ReduceDef kReduceDefs[] = {
    {"ReduceSum", ReduceOp::Sum, 13},          {"ReduceMean", ReduceOp::Mean, 18},
    {"ReduceMax", ReduceOp::Max, 18},          {"ReduceMin", ReduceOp::Min, 18},
    {"ReduceProd", ReduceOp::Prod, 18},        {"ReduceL1", ReduceOp::L1, 18},
    {"ReduceL2", ReduceOp::L2, 18},            {"ReduceLogSum", ReduceOp::LogSum, 18},
    {"ReduceLogSumExp", ReduceOp::LogSumExp, 18}, {"ReduceSumSquare", ReduceOp::SumSquare, 18},
};

template <typename T>
void reduce_typed(ReduceOp op, const T* x, const ReducePlan& p, T* y) {
    using A = Acc<T>;
    constexpr bool floating = is_floating_v<T>;
    auto lowest = [] {
        if constexpr (floating) return -std::numeric_limits<double>::infinity();
        else return static_cast<A>(std::numeric_limits<T>::lowest());
    };
    auto highest = [] {
        if constexpr (floating) return std::numeric_limits<double>::infinity();
        else return static_cast<A>(std::numeric_limits<T>::max());
    };
    // Empty reductions yield these identities (-inf for LogSum/LogSumExp: log of 0).
    A init = 0;
    if (op == ReduceOp::Prod) init = 1;
    else if (op == ReduceOp::Max) init = lowest();
    else if (op == ReduceOp::Min) init = highest();
    std::vector<A> acc(static_cast<size_t>(p.out_size), init);
    auto is_nan = [](A v) {
        if constexpr (floating) return std::isnan(v);
        else return false;
    };

    switch (op) {
        case ReduceOp::Sum:
        case ReduceOp::Mean:
        case ReduceOp::LogSum:
            for_each_reduced(p, [&](int64_t i, int64_t o) { acc[o] = wrap_add(acc[o], static_cast<A>(x[i])); });
            break;
        case ReduceOp::Prod:
            for_each_reduced(p, [&](int64_t i, int64_t o) { acc[o] = wrap_mul(acc[o], static_cast<A>(x[i])); });
            break;
        case ReduceOp::Max:  // NaN, once met, stays (as numpy)
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                const A v = static_cast<A>(x[i]);
                if (v > acc[o] || is_nan(v)) acc[o] = v;
            });
            break;
        case ReduceOp::Min:
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                const A v = static_cast<A>(x[i]);
                if (v < acc[o] || is_nan(v)) acc[o] = v;
            });
            break;
        case ReduceOp::L1:
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                const A v = static_cast<A>(x[i]);
                if constexpr (std::is_unsigned_v<A>) acc[o] = wrap_add(acc[o], v);
                else acc[o] = wrap_add(acc[o], v < 0 ? wrap_mul(v, A(-1)) : v);
            });
            break;
        case ReduceOp::L2:
        case ReduceOp::SumSquare:
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                const A v = static_cast<A>(x[i]);
                acc[o] = wrap_add(acc[o], wrap_mul(v, v));
            });
            break;
        case ReduceOp::LogSumExp: {
            // Shifted by the maximum so exp() cannot overflow.
            std::vector<double> max(static_cast<size_t>(p.out_size), -std::numeric_limits<double>::infinity());
            for_each_reduced(p, [&](int64_t i, int64_t o) { max[o] = std::max(max[o], static_cast<double>(x[i])); });
            std::vector<double> sum(static_cast<size_t>(p.out_size), 0.0);
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                if (std::isfinite(max[o])) sum[o] += std::exp(static_cast<double>(x[i]) - max[o]);
            });
            for (int64_t o = 0; o < p.out_size; ++o) {
                // An infinite maximum (or an empty set: -inf) is the result itself.
                const double r = std::isfinite(max[o]) ? std::log(sum[o]) + max[o] : max[o];
                y[o] = from_double<T>(r);
            }
            return;
        }
    }

    for (int64_t o = 0; o < p.out_size; ++o) {
        const A a = acc[o];
        switch (op) {
            case ReduceOp::Mean:
                if constexpr (floating) y[o] = static_cast<T>(a / static_cast<double>(p.count));
                else y[o] = p.count == 0 ? T(0) : static_cast<T>(a / static_cast<A>(p.count));
                break;
            case ReduceOp::L2: y[o] = from_double<T>(std::sqrt(static_cast<double>(a))); break;
            case ReduceOp::LogSum: y[o] = from_double<T>(std::log(static_cast<double>(a))); break;
            default: y[o] = static_cast<T>(a); break;
        }
    }
}

// Which axes a Reduce* node reduces.
struct AxesChoice {
    bool known = true;          // false: a non-constant axes input (shape inference only)
    bool noop = false;          // empty axes with noop_with_empty_axes: the output is the input
    std::vector<int64_t> axes;  // empty (and !noop): all axes
};

class ReduceAttrs {
public:
    ReduceAttrs(const ReduceDef& def, const Node& node, int64_t opset)
        : axes_from_input_(opset <= 0 || opset >= def.axes_input_since),
          keepdims_(node.get_attribute<int64_t>("keepdims", 1) != 0),
          noop_(axes_from_input_ && node.get_attribute<int64_t>("noop_with_empty_axes", 0) != 0) {
        if (axes_from_input_) {
            if (node.has_attribute("axes"))
                fail_node(node, "attribute 'axes' is not allowed from opset " + std::to_string(def.axes_input_since) +
                                    " on: axes is input 1");
        } else {
            if (node.has_input(1))
                fail_node(node, "input 1 (axes) needs opset " + std::to_string(def.axes_input_since) +
                                    "; this model's opset is " + std::to_string(opset));
            attr_axes_ = node.get_attribute<std::vector<int64_t>>("axes", {});
        }
    }

    bool keepdims() const { return keepdims_; }

    // `axes_input`: the value of input 1 when given (nullptr when omitted); `input_given`
    // false with a null value means the value is unknown (shape inference).
    AxesChoice choose(const Tensor* axes_input, bool input_given, const Node& node) const {
        AxesChoice c;
        if (!axes_from_input_) {
            c.axes = attr_axes_;
        } else if (axes_input) {
            if (axes_input->ndim() > 1)
                fail_node(node, "axes input has shape " + shape_to_string(axes_input->shape()) + "; expected 1-D");
            c.axes = int_values(*axes_input, node, "axes input");
        } else if (input_given) {
            c.known = false;
            return c;
        }
        c.noop = c.axes.empty() && noop_;
        return c;
    }

    // The mask of reduced axes for `rank`; ValidationError for bad or repeated axes.
    static std::vector<bool> mask(const AxesChoice& c, int64_t rank, const Node& node) {
        std::vector<bool> reduced(static_cast<size_t>(rank), c.axes.empty());
        for (int64_t a : c.axes) {
            const int64_t axis = normalize_axis(a, rank, node);
            if (reduced[axis]) fail_node(node, "axis " + std::to_string(a) + " is repeated in axes");
            reduced[axis] = true;
        }
        return reduced;
    }

private:
    bool axes_from_input_;
    bool keepdims_;
    bool noop_;
    std::vector<int64_t> attr_axes_;
};

class ReduceKernel final : public NodeKernel {
public:
    ReduceKernel(const ReduceDef& def, const Node& node, int64_t opset)
        : NodeKernel(node), op_(def.op), attrs_(def, node, opset) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const AxesChoice c = attrs_.choose(ctx.has_input(1) ? &ctx.input(1) : nullptr, false, node_);
        if (c.noop) {
            ctx.outputs[0] = x;  // shares the storage; kernels never write their inputs
            return;
        }
        const std::vector<bool> reduced = ReduceAttrs::mask(c, static_cast<int64_t>(x.ndim()), node_);
        const ReducePlan p = plan_reduce(x.shape(), reduced, attrs_.keepdims());
        Tensor y(p.out_shape, x.dtype());
        const bool minmax = op_ == ReduceOp::Max || op_ == ReduceOp::Min;
        if (x.dtype() == DType::Bool && minmax) {  // bool is stored as one byte 0/1
            reduce_typed<uint8_t>(op_, x.data_ptr<uint8_t>(), p, y.data_ptr<uint8_t>());
        } else {
            dispatch_numeric(x.dtype(), node_, [&](auto t) {
                using T = decltype(t);
                reduce_typed<T>(op_, x.data_ptr<T>(), p, y.data_ptr<T>());
            });
        }
        ctx.outputs[0] = std::move(y);
    }

private:
    ReduceOp op_;
    ReduceAttrs attrs_;
};

void infer_reduce(const ReduceDef& def, InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const ReduceAttrs attrs(def, ctx.node, ctx.opset);
    const bool given = ctx.node.has_input(1);
    const AxesChoice c = attrs.choose(given ? ctx.constant(1) : nullptr, given, ctx.node);
    if (x.dtype == DType::Bool && def.op != ReduceOp::Max && def.op != ReduceOp::Min)
        fail_node(ctx.node, "dtype Bool is not supported");
    if (c.noop) return ctx.set_output(0, x.dtype, x.shape);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (!c.known) {
        // Which axes go is unknown: with keepdims the rank stays, else nothing is known.
        if (attrs.keepdims()) return ctx.set_output(0, x.dtype, Shape(x.shape.size()));
        return set_output_rank_unknown(ctx, 0, x.dtype);
    }
    const std::vector<bool> reduced = ReduceAttrs::mask(c, rank, ctx.node);
    Shape out;
    for (int64_t i = 0; i < rank; ++i) {
        if (!reduced[i]) out.push_back(x.shape[i]);
        else if (attrs.keepdims()) out.push_back(int64_t{1});
    }
    ctx.set_output(0, x.dtype, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// ArgMax / ArgMin

class ArgReduceKernel final : public NodeKernel {
public:
    ArgReduceKernel(const Node& node, bool is_max)
        : NodeKernel(node),
          is_max_(is_max),
          axis_(node.get_attribute<int64_t>("axis", 0)),
          keepdims_(node.get_attribute<int64_t>("keepdims", 1) != 0),
          select_last_(node.get_attribute<int64_t>("select_last_index", 0) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const int64_t rank = static_cast<int64_t>(x.ndim());
        // A scalar reads as a 1-element vector (axis 0 or -1), as numpy does.
        const int64_t axis = rank == 0 ? (normalize_axis(axis_, 1, node_), 0) : normalize_axis(axis_, rank, node_);
        const AxisSplit s = rank == 0 ? AxisSplit{} : split_at(x.shape(), axis);
        if (s.n == 0 && s.outer * s.inner > 0)
            fail("cannot take the arg" + std::string(is_max_ ? "max" : "min") + " of an empty axis " +
                 std::to_string(axis) + " of input " + shape_to_string(x.shape()));
        std::vector<int64_t> out_shape = x.shape();
        if (rank > 0) {
            if (keepdims_) out_shape[axis] = 1;
            else out_shape.erase(out_shape.begin() + axis);
        }
        Tensor y(out_shape, DType::Int64);
        int64_t* out = y.data_ptr<int64_t>();
        auto run = [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            for (int64_t o = 0; o < s.outer; ++o)
                for (int64_t i = 0; i < s.inner; ++i) {
                    const T* v = xd + o * s.n * s.inner + i;
                    int64_t best = 0;
                    for (int64_t j = 1; j < s.n; ++j) {
                        if (better(v[j * s.inner], v[best * s.inner])) best = j;
                    }
                    out[o * s.inner + i] = best;
                }
        };
        if (x.dtype() == DType::Bool) run(uint8_t{});
        else dispatch_numeric(x.dtype(), node_, run);
        ctx.outputs[0] = std::move(y);
    }

private:
    // Whether `a` (later along the axis) replaces the current best `b`. NaN counts as the
    // extreme, its first (or with select_last_index, last) occurrence winning, as numpy.
    template <typename T>
    bool better(T a, T b) const {
        if constexpr (is_floating_v<T>) {
            const bool a_nan = std::isnan(static_cast<double>(a)), b_nan = std::isnan(static_cast<double>(b));
            if (a_nan || b_nan) return a_nan && (select_last_ || !b_nan);
        }
        if (select_last_) return is_max_ ? !(a < b) : !(b < a);
        return is_max_ ? b < a : a < b;
    }

    bool is_max_;
    int64_t axis_;
    bool keepdims_;
    bool select_last_;
};

void infer_arg_reduce(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    const int64_t axis = normalize_axis(ctx.node.get_attribute<int64_t>("axis", 0), std::max<int64_t>(rank, 1), ctx.node);
    Shape out = x.shape;
    if (rank > 0) {
        if (ctx.node.get_attribute<int64_t>("keepdims", 1) != 0) out[axis] = int64_t{1};
        else out.erase(out.begin() + axis);
    }
    ctx.set_output(0, DType::Int64, std::move(out));
}

// ---------------------------------------------------------------------------------------------
// CumSum / CumProd

class CumulativeKernel final : public NodeKernel {
public:
    CumulativeKernel(const Node& node, bool product)
        : NodeKernel(node),
          product_(product),
          exclusive_(node.get_attribute<int64_t>("exclusive", 0) != 0),
          reverse_(node.get_attribute<int64_t>("reverse", 0) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& axis_t = ctx.input(1);
        if (axis_t.num_elements() != 1 || axis_t.ndim() > 1)
            fail("axis input has shape " + shape_to_string(axis_t.shape()) + "; expected a scalar");
        const int64_t rank = static_cast<int64_t>(x.ndim());
        if (rank == 0) fail("input is a scalar; expected rank >= 1");
        const int64_t axis = normalize_axis(int_values(axis_t, node_, "axis input")[0], rank, node_);
        const AxisSplit s = split_at(x.shape(), axis);
        Tensor y(x.shape(), x.dtype());
        dispatch_numeric(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            using A = Acc<T>;
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            for (int64_t o = 0; o < s.outer; ++o)
                for (int64_t i = 0; i < s.inner; ++i) {
                    const int64_t base = o * s.n * s.inner + i;
                    A acc = product_ ? A(1) : A(0);
                    for (int64_t k = 0; k < s.n; ++k) {
                        const int64_t j = base + (reverse_ ? s.n - 1 - k : k) * s.inner;
                        const A v = static_cast<A>(xd[j]);
                        if (!exclusive_) acc = product_ ? wrap_mul(acc, v) : wrap_add(acc, v);
                        yd[j] = static_cast<T>(acc);
                        if (exclusive_) acc = product_ ? wrap_mul(acc, v) : wrap_add(acc, v);
                    }
                }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    bool product_;
    bool exclusive_;
    bool reverse_;
};

void infer_cumulative(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.dtype == DType::Bool) fail_node(ctx.node, "dtype Bool is not supported");
    if (ctx.has_input(1) && !is_integer_dtype(ctx.input(1).dtype))
        fail_node(ctx.node, "axis input is " + dtype_to_string(ctx.input(1).dtype) + "; expected Int64 or Int32");
    if (const Tensor* axis = ctx.constant(1); axis && axis->num_elements() == 1 && !x.shape.empty())
        normalize_axis(int_values(*axis, ctx.node, "axis input")[0], static_cast<int64_t>(x.shape.size()), ctx.node);
    ctx.set_output(0, x.dtype, x.shape);
}

// ---------------------------------------------------------------------------------------------
// MeanVarianceNormalization: (x - mean) / (std + 1e-9) over `axes` (default 0, 2, 3), the
// ONNX function's formula. Here because it reduces over any axes with the iterator above.

class MeanVarianceNormKernel final : public NodeKernel {
public:
    explicit MeanVarianceNormKernel(const Node& node)
        : NodeKernel(node), axes_(node.get_attribute<std::vector<int64_t>>("axes", {0, 2, 3})) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        AxesChoice c;
        c.axes = axes_;
        if (axes_.empty()) fail("attribute 'axes' is empty");
        const ReducePlan p = plan_reduce(x.shape(), ReduceAttrs::mask(c, static_cast<int64_t>(x.ndim()), node_), true);
        Tensor y(x.shape(), x.dtype());
        dispatch_float_types(x.dtype(), node_, [&](auto t) {
            using T = decltype(t);
            const T* xd = x.data_ptr<T>();
            T* yd = y.data_ptr<T>();
            const double count = static_cast<double>(p.count);
            std::vector<double> mean(static_cast<size_t>(p.out_size), 0.0), var(mean.size(), 0.0);
            for_each_reduced(p, [&](int64_t i, int64_t o) { mean[o] += static_cast<double>(xd[i]); });
            for (double& m : mean) m /= count;
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                const double d = static_cast<double>(xd[i]) - mean[o];
                var[o] += d * d;
            });
            for (double& v : var) v = std::sqrt(v / count) + 1e-9;
            for_each_reduced(p, [&](int64_t i, int64_t o) {
                yd[i] = static_cast<T>((static_cast<double>(xd[i]) - mean[o]) / var[o]);
            });
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    std::vector<int64_t> axes_;
};

void infer_mean_variance_norm(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    require_float_type(ctx.node, x.dtype, "input");
    AxesChoice c;
    c.axes = ctx.node.get_attribute<std::vector<int64_t>>("axes", {0, 2, 3});
    ReduceAttrs::mask(c, static_cast<int64_t>(x.shape.size()), ctx.node);
    ctx.set_output(0, x.dtype, x.shape);
}

}  // namespace

void register_reduce_ops(OpTable& table) {
    for (const ReduceDef& def : kReduceDefs) {
        table.add(OpSchema{def.name, "", 1, 1, 2, 1, 1, [&def](InferenceContext& ctx) { infer_reduce(def, ctx); },
                           [&def](const KernelInfo& info) {
                               return std::make_unique<ReduceKernel>(def, info.node, info.opset);
                           }});
    }
    table.add(OpSchema{"ArgMax", "", 1, 1, 1, 1, 1, infer_arg_reduce,
                       [](const KernelInfo& info) { return std::make_unique<ArgReduceKernel>(info.node, true); }});
    table.add(OpSchema{"ArgMin", "", 1, 1, 1, 1, 1, infer_arg_reduce,
                       [](const KernelInfo& info) { return std::make_unique<ArgReduceKernel>(info.node, false); }});
    table.add(OpSchema{"CumSum", "", 11, 2, 2, 1, 1, infer_cumulative,
                       [](const KernelInfo& info) { return std::make_unique<CumulativeKernel>(info.node, false); }});
    table.add(OpSchema{"CumProd", "", 26, 2, 2, 1, 1, infer_cumulative,
                       [](const KernelInfo& info) { return std::make_unique<CumulativeKernel>(info.node, true); }});
    table.add(OpSchema{"MeanVarianceNormalization", "", 9, 1, 1, 1, 1, infer_mean_variance_norm,
                       [](const KernelInfo& info) { return std::make_unique<MeanVarianceNormKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
