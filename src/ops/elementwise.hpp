#pragma once
// Shared machinery of the elementwise ops (elementwise.cpp, math.cpp, activation.cpp):
// dtype lists with their dispatch, the numpy broadcasting iteration every multi-input op uses,
// the unary kernel template, and shape/type inference helpers.
#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/dispatch.hpp"
#include "ops/float_formats.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {

// ---- dtype lists ----

template <typename T>
constexpr DType dtype_for() {
    if constexpr (std::is_same_v<T, Eigen::half>) return DType::Float16;
    else if constexpr (std::is_same_v<T, Eigen::bfloat16>) return DType::BFloat16;
    else return dtype_of<T>::value;
}

template <typename... Ts>
struct TypeList {};

template <typename... Lists>
struct ConcatLists;
template <typename... A>
struct ConcatLists<TypeList<A...>> {
    using type = TypeList<A...>;
};
template <typename... A, typename... B, typename... Rest>
struct ConcatLists<TypeList<A...>, TypeList<B...>, Rest...> {
    using type = typename ConcatLists<TypeList<A..., B...>, Rest...>::type;
};
template <typename... Lists>
using Concat = typename ConcatLists<Lists...>::type;

using FloatTypes = TypeList<float, double, Eigen::half, Eigen::bfloat16>;
using SignedIntTypes = TypeList<int8_t, int16_t, int32_t, int64_t>;
using UnsignedIntTypes = TypeList<uint8_t, uint16_t, uint32_t, uint64_t>;
using IntTypes = Concat<SignedIntTypes, UnsignedIntTypes>;
using SignedTypes = Concat<FloatTypes, SignedIntTypes>;
using NumericTypes = Concat<FloatTypes, IntTypes>;
using BoolTypes = TypeList<bool>;

template <typename... Ts>
bool list_contains(TypeList<Ts...>, DType dtype) {
    return ((dtype == dtype_for<Ts>()) || ...);
}

template <typename... Ts>
std::string list_names(TypeList<Ts...>) {
    std::string out;
    ((out += (out.empty() ? "" : ", ") + dtype_to_string(dtype_for<Ts>())), ...);
    return out;
}

// ValidationError naming the node unless `dtype` is in the list; `what` names the input.
template <typename List>
void check_dtype_in(List list, DType dtype, const Node& node, const std::string& what = "input") {
    if (!list_contains(list, dtype))
        fail_node(node, what + " is " + dtype_to_string(dtype) + "; " + node.op_type() + " takes " + list_names(list));
}

// Calls fn(T{}) for the T of `dtype` in the list; ValidationError naming the node otherwise.
template <typename... Ts, typename F>
void dispatch_list(TypeList<Ts...> list, DType dtype, const Node& node, F&& fn, const std::string& what = "input") {
    const bool found = ((dtype == dtype_for<Ts>() ? (fn(Ts{}), true) : false) || ...);
    if (!found) check_dtype_in(list, dtype, node, what);
}

// The type arithmetic on T is done in: float for the 16-bit floats (one rounding per op, as
// numpy and ONNX Runtime do), T itself otherwise.
template <typename T>
using Compute = std::conditional_t<std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>, float, T>;

template <typename T>
constexpr bool is_floating_v = std::is_floating_point_v<T> || std::is_same_v<T, Eigen::half> ||
                               std::is_same_v<T, Eigen::bfloat16>;

// Integer arithmetic wraps (two's complement) like ONNX Runtime: done in an unsigned type at
// least as wide as int, since signed overflow (and uint16 * uint16 promoted to int) is UB.
template <typename T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <typename T>
bool is_nan(const T& x) {
    if constexpr (is_floating_v<T>) return x != x;
    else return false;
}

// double -> integer T as numpy's astype does for in-range values (truncation); NaN and values
// beyond int64 (undefined in ONNX) saturate instead of being UB, then wrap to T's width.
template <typename T>
T truncate_to_int(double v) {
    if (!(v == v)) return T(0);
    if constexpr (std::is_same_v<T, uint64_t>)
        if (v >= 9.2233720368547758e18 && v < 1.8446744073709552e19) return static_cast<T>(v);
    if (v >= 9.2233720368547758e18) return static_cast<T>(std::numeric_limits<int64_t>::max());
    if (v <= -9.2233720368547758e18) return static_cast<T>(std::numeric_limits<int64_t>::min());
    return static_cast<T>(static_cast<int64_t>(v));
}

// ---- broadcasting ----

// The output's dims with each input's element strides over them (0 where an input is
// broadcast), adjacent dims merged where every input walks them contiguously, so the innermost
// run is as long as possible. `dims` is never empty.
template <size_t N>
struct BroadcastPlan {
    std::vector<int64_t> dims;
    std::array<std::vector<int64_t>, N> strides;
    int64_t count = 1;  // output elements
};

// Each input shape must broadcast to `out` (callers check; see broadcast_all).
template <size_t N>
BroadcastPlan<N> plan_broadcast(const std::vector<int64_t>& out, const std::array<const std::vector<int64_t>*, N>& in) {
    std::array<std::vector<int64_t>, N> s;
    for (size_t k = 0; k < N; ++k) {
        s[k].assign(out.size(), 0);
        const std::vector<int64_t>& shape = *in[k];
        const size_t skip = out.size() - shape.size();
        int64_t stride = 1;
        for (size_t i = shape.size(); i-- > 0;) {
            if (shape[i] != 1) s[k][skip + i] = stride;
            stride *= shape[i];
        }
    }
    BroadcastPlan<N> plan;
    for (size_t i = 0; i < out.size(); ++i) {
        plan.count *= out[i];
        if (out[i] == 1) continue;
        bool merge = !plan.dims.empty();
        for (size_t k = 0; k < N && merge; ++k) merge = plan.strides[k].back() == s[k][i] * out[i];
        if (merge) {
            plan.dims.back() *= out[i];
            for (size_t k = 0; k < N; ++k) plan.strides[k].back() = s[k][i];
        } else {
            plan.dims.push_back(out[i]);
            for (size_t k = 0; k < N; ++k) plan.strides[k].push_back(s[k][i]);
        }
    }
    if (plan.dims.empty()) {
        plan.dims = {plan.count};  // 1, or 0 for an empty output
        for (size_t k = 0; k < N; ++k) plan.strides[k] = {0};
    }
    return plan;
}

namespace detail {

// One run of `n` outputs along the innermost dim; in[k] already points at the run's start.
template <typename Op, typename Out, typename Ptrs, size_t... K>
void broadcast_run(const Op& op, Out* out, int64_t n, const Ptrs& in, const std::array<int64_t, sizeof...(K)>& s,
                   std::index_sequence<K...>) {
    // The common stride patterns get their own loops so the compiler can vectorize them.
    if (((s[K] == 1) && ...)) {
        for (int64_t j = 0; j < n; ++j) out[j] = op(std::get<K>(in)[j]...);
        return;
    }
    if constexpr (sizeof...(K) == 2) {
        if (s[0] == 0 && s[1] == 1) {
            const auto a = std::get<0>(in)[0];
            const auto* b = std::get<1>(in);
            for (int64_t j = 0; j < n; ++j) out[j] = op(a, b[j]);
            return;
        }
        if (s[0] == 1 && s[1] == 0) {
            const auto* a = std::get<0>(in);
            const auto b = std::get<1>(in)[0];
            for (int64_t j = 0; j < n; ++j) out[j] = op(a[j], b);
            return;
        }
    }
    for (int64_t j = 0; j < n; ++j) out[j] = op(std::get<K>(in)[j * s[K]]...);
}

template <size_t N, typename Op, typename Out, typename... In, size_t... K>
void broadcast_span(const BroadcastPlan<N>& plan, int64_t begin, int64_t end, const Op& op, Out* out,
                    std::index_sequence<K...> seq, const In*... in) {
    const size_t rank = plan.dims.size();
    const int64_t inner = plan.dims.back();
    const std::array<int64_t, N> inner_strides{plan.strides[K].back()...};
    // Position of `begin`: index per dim and each input's element offset.
    std::vector<int64_t> index(rank, 0);
    std::array<int64_t, N> offset{};
    int64_t rest = begin;
    for (size_t d = rank; d-- > 0;) {
        index[d] = rest % plan.dims[d];
        rest /= plan.dims[d];
        for (size_t k = 0; k < N; ++k) offset[k] += index[d] * plan.strides[k][d];
    }
    int64_t pos = begin;
    while (pos < end) {
        const int64_t n = std::min(inner - index[rank - 1], end - pos);
        broadcast_run(op, out + pos, n, std::make_tuple((in + offset[K])...), inner_strides, seq);
        pos += n;
        for (size_t k = 0; k < N; ++k) offset[k] += n * inner_strides[k];
        index[rank - 1] += n;
        // Odometer step over the outer dims once the inner run is done.
        for (size_t d = rank - 1; index[d] == plan.dims[d] && d > 0; --d) {
            for (size_t k = 0; k < N; ++k) offset[k] += plan.strides[k][d - 1] - plan.strides[k][d] * plan.dims[d];
            index[d] = 0;
            ++index[d - 1];
        }
    }
}

}  // namespace detail

// out[i] = op(in_0[...], in_1[...], ...) over the broadcast output described by `plan`, split
// over up to num_threads threads when big enough (`cost`: rough flops per element). `op` is
// called concurrently and must be stateless (const).
template <size_t N, typename Op, typename Out, typename... In>
void broadcast_apply(const BroadcastPlan<N>& plan, int num_threads, const Op& op, Out* out, const In*... in) {
    static_assert(sizeof...(In) == N, "one pointer per planned input");
    if (plan.count == 0) return;
    const int threads = threads_for_work(static_cast<double>(plan.count) * 4.0, num_threads);
    parallel_for(plan.count, threads, [&](int64_t begin, int64_t end) {
        detail::broadcast_span(plan, begin, end, op, out, std::make_index_sequence<N>{}, in...);
    });
}

// Same-shape map: out[i] = op(in[i]).
template <typename Op, typename Out, typename In>
void map_elements(int64_t n, int num_threads, const Op& op, Out* out, const In* in) {
    const std::vector<int64_t> shape{n};
    broadcast_apply(plan_broadcast<1>(shape, {&shape}), num_threads, op, out, in);
}

// The broadcast shape of several shapes; ValidationError naming the node if incompatible.
std::vector<int64_t> broadcast_all(const Node& node, const std::vector<const std::vector<int64_t>*>& shapes);

// ---- shape/type inference ----

// Output 0 = broadcast of all present inputs with dtype `dtype` (left unknown when an input
// is unknown). ValidationError naming the node when known shapes cannot broadcast.
void infer_broadcast_output(InferenceContext& ctx, DType dtype);
// ValidationError unless every known input among `indices` has the same dtype; returns it
// (nullopt when none is known).
std::optional<DType> common_input_dtype(const InferenceContext& ctx, const std::vector<size_t>& indices);

// ---- the unary kernel ----
// Fn: `name`, `since`, `Types` (accepted input dtypes), `bool_output` (output dtype Bool, else
// the input's), a constructor from `const KernelInfo&` (parses attributes; ValidationError for
// bad ones), and `template <typename T> R operator()(T x) const`. When Fn::accepts_float8
// (IsInf, IsNaN), float8 inputs are decoded to float32 first and Fn sees floats.

template <typename Fn, typename = void>
struct AcceptsFloat8 : std::false_type {};
template <typename Fn>
struct AcceptsFloat8<Fn, std::void_t<decltype(Fn::accepts_float8)>> : std::bool_constant<Fn::accepts_float8> {};

template <typename Fn>
class UnaryKernel final : public NodeKernel {
public:
    explicit UnaryKernel(const KernelInfo& info) : NodeKernel(info.node), fn_(info) {}

    void compute(KernelContext& ctx) const override {
        const Tensor* x = &ctx.input(0);
        Tensor decoded;
        if constexpr (AcceptsFloat8<Fn>::value) {
            if (is_float8_dtype(x->dtype())) {
                decoded = decode_narrow_to_float32(*x);
                x = &decoded;
            }
        }
        dispatch_list(typename Fn::Types{}, x->dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            using R = std::conditional_t<Fn::bool_output, bool, T>;
            Tensor y(x->shape(), Fn::bool_output ? DType::Bool : x->dtype());
            map_elements(x->num_elements(), ctx.num_threads, fn_, y.data_ptr<R>(), x->data_ptr<T>());
            ctx.outputs[0] = std::move(y);
        });
    }

private:
    const Fn fn_;
};

template <typename Fn>
void infer_unary(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (!(AcceptsFloat8<Fn>::value && is_float8_dtype(x.dtype))) check_dtype_in(typename Fn::Types{}, x.dtype, ctx.node);
    ctx.set_output(0, Fn::bool_output ? DType::Bool : x.dtype, x.shape);
}

template <typename Fn>
OpSchema unary_schema() {
    return OpSchema{Fn::name, "", Fn::since, 1, 1, 1, 1,
                    [](InferenceContext& ctx) {
                        infer_unary<Fn>(ctx);
                        const KernelInfo info{ctx.node, ctx.opset, {}, {}};
                        Fn check(info);  // attribute errors at session creation
                        (void)check;
                    },
                    [](const KernelInfo& info) { return std::make_unique<UnaryKernel<Fn>>(info); }};
}

// Float math in Compute<T>: Derived supplies `template <typename C> C f(C x) const`.
template <typename Derived>
struct FloatUnary {
    static constexpr bool bool_output = false;
    using Types = FloatTypes;
    template <typename T>
    T operator()(T x) const {
        return T(static_cast<const Derived&>(*this).f(static_cast<Compute<T>>(x)));
    }
};

// A float attribute as the float32 ONNX stores it.
inline float float_attribute(const Node& node, const std::string& name, float default_value) {
    return static_cast<float>(node.get_attribute<double>(name, default_value));
}

}  // namespace pyflame_rt::ops
