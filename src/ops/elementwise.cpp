// The broadcasting elementwise ops: Add, Sub, Mul, Div, Pow, Mod, And, Or, Xor, Equal, Greater,
// GreaterOrEqual, Less, LessOrEqual, BitShift, BitwiseAnd/Or/Xor, the variadic Max, Min, Mean,
// Sum, and Where. All iterate with broadcast_apply (elementwise.hpp). Integer arithmetic wraps
// like ONNX Runtime; integer Div truncates; integer division by zero raises.
#include <algorithm>
#include <cmath>

#include "ops/elementwise.hpp"

namespace pyflame_rt::ops {

// ---- helpers declared in elementwise.hpp ----

std::vector<int64_t> broadcast_all(const Node& node, const std::vector<const std::vector<int64_t>*>& shapes) {
    std::vector<int64_t> out;
    for (const auto* s : shapes) {
        try {
            out = broadcast_shapes(out, *s);
        } catch (const ValidationError&) {
            std::string list;
            for (const auto* t : shapes) list += (list.empty() ? "" : ", ") + shape_to_string(*t);
            fail_node(node, "input shapes " + list + " cannot be broadcast");
        }
    }
    return out;
}

void infer_broadcast_output(InferenceContext& ctx, DType dtype) {
    Shape out;
    for (size_t i = 0; i < ctx.node.inputs().size(); ++i) {
        if (!ctx.node.has_input(i)) continue;
        if (!ctx.has_input(i)) return;  // an unknown input leaves the output unknown
        try {
            out = broadcast_shapes(out, ctx.input(i).shape);
        } catch (const ValidationError&) {
            std::string list;
            for (size_t j = 0; j < ctx.inputs.size(); ++j)
                if (ctx.has_input(j)) list += (list.empty() ? "" : ", ") + shape_to_string(ctx.input(j).shape);
            fail_node(ctx.node, "input shapes " + list + " cannot be broadcast");
        }
    }
    ctx.set_output(0, dtype, std::move(out));
}

std::optional<DType> common_input_dtype(const InferenceContext& ctx, const std::vector<size_t>& indices) {
    std::optional<DType> dtype;
    for (size_t i : indices) {
        if (!ctx.has_input(i)) continue;
        const DType d = ctx.input(i).dtype;
        if (dtype && *dtype != d)
            fail_node(ctx.node, "inputs have different dtypes: " + dtype_to_string(*dtype) + " and " + dtype_to_string(d));
        dtype = d;
    }
    return dtype;
}

namespace {

template <typename T>
T wrap_neg(T a) {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(WrapType<T>(0) - WrapType<T>(a));
    else return T(-static_cast<Compute<T>>(a));
}

// ---- binary ops ----
// Op: name, since, Types (input dtypes), bool_output, a constructor from the node (parses
// attributes), template <T> operator()(T a, T b). Optional: `integer_divisor` (B must not
// hold 0 for integer T), validate(dtype, node) (dtype/attribute combinations).

struct AddOp {
    static constexpr const char* name = "Add";
    static constexpr int since = 7;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit AddOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(WrapType<T>(a) + WrapType<T>(b));
        else return T(Compute<T>(a) + Compute<T>(b));
    }
};

struct SubOp {
    static constexpr const char* name = "Sub";
    static constexpr int since = 7;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit SubOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(WrapType<T>(a) - WrapType<T>(b));
        else return T(Compute<T>(a) - Compute<T>(b));
    }
};

struct MulOp {
    static constexpr const char* name = "Mul";
    static constexpr int since = 7;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit MulOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(WrapType<T>(a) * WrapType<T>(b));
        else return T(Compute<T>(a) * Compute<T>(b));
    }
};

struct DivOp {
    static constexpr const char* name = "Div";
    static constexpr int since = 7;
    static constexpr bool bool_output = false;
    static constexpr bool integer_divisor = true;
    using Types = NumericTypes;
    explicit DivOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) {
            if constexpr (std::is_signed_v<T>)
                if (b == -1) return wrap_neg(a);  // INT_MIN / -1 traps on x86
            return static_cast<T>(a / b);
        } else {
            return T(Compute<T>(a) / Compute<T>(b));
        }
    }
};

// fmod=1: C's fmod (the remainder takes the dividend's sign); fmod=0 (integers only): the
// divisor's sign, like Python's %.
struct ModOp {
    static constexpr const char* name = "Mod";
    static constexpr int since = 10;
    static constexpr bool bool_output = false;
    static constexpr bool integer_divisor = true;
    using Types = NumericTypes;
    explicit ModOp(const Node& node) : fmod_(node.get_attribute<int64_t>("fmod", 0)) {
        if (fmod_ != 0 && fmod_ != 1) fail_node(node, "attribute fmod must be 0 or 1, got " + std::to_string(fmod_));
    }
    void validate(DType dtype, const Node& node) const {
        if (!fmod_ && list_contains(FloatTypes{}, dtype))
            fail_node(node, "fmod must be 1 for floating-point inputs (" + dtype_to_string(dtype) + ")");
    }
    template <typename T> T operator()(T a, T b) const {
        if constexpr (std::is_integral_v<T>) {
            if constexpr (std::is_signed_v<T>) {
                if (b == -1) return T(0);  // INT_MIN % -1 traps on x86
                T r = static_cast<T>(a % b);
                if (!fmod_ && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
                return r;
            } else {
                return static_cast<T>(a % b);
            }
        } else {
            return T(std::fmod(Compute<T>(a), Compute<T>(b)));
        }
    }

private:
    int64_t fmod_;
};

template <typename Derived>
struct LogicOp {
    static constexpr int since = 7;
    static constexpr bool bool_output = true;
    using Types = BoolTypes;
    explicit LogicOp(const Node&) {}
};
struct AndOp : LogicOp<AndOp> {
    static constexpr const char* name = "And";
    using LogicOp::LogicOp;
    bool operator()(bool a, bool b) const { return a && b; }
};
struct OrOp : LogicOp<OrOp> {
    static constexpr const char* name = "Or";
    using LogicOp::LogicOp;
    bool operator()(bool a, bool b) const { return a || b; }
};
struct XorOp : LogicOp<XorOp> {
    static constexpr const char* name = "Xor";
    using LogicOp::LogicOp;
    bool operator()(bool a, bool b) const { return a != b; }
};

struct CompareBase {
    static constexpr bool bool_output = true;
    using Types = NumericTypes;
    explicit CompareBase(const Node&) {}
};
struct EqualOp : CompareBase {
    static constexpr const char* name = "Equal";
    static constexpr int since = 7;
    using Types = Concat<NumericTypes, BoolTypes, TypeList<std::string>>;
    using CompareBase::CompareBase;
    template <typename T> bool operator()(const T& a, const T& b) const { return a == b; }
};
struct GreaterOp : CompareBase {
    static constexpr const char* name = "Greater";
    static constexpr int since = 7;
    using CompareBase::CompareBase;
    template <typename T> bool operator()(T a, T b) const { return a > b; }
};
struct GreaterOrEqualOp : CompareBase {
    static constexpr const char* name = "GreaterOrEqual";
    static constexpr int since = 12;
    using CompareBase::CompareBase;
    template <typename T> bool operator()(T a, T b) const { return a >= b; }
};
struct LessOp : CompareBase {
    static constexpr const char* name = "Less";
    static constexpr int since = 7;
    using CompareBase::CompareBase;
    template <typename T> bool operator()(T a, T b) const { return a < b; }
};
struct LessOrEqualOp : CompareBase {
    static constexpr const char* name = "LessOrEqual";
    static constexpr int since = 12;
    using CompareBase::CompareBase;
    template <typename T> bool operator()(T a, T b) const { return a <= b; }
};

struct BitShiftOp {
    static constexpr const char* name = "BitShift";
    static constexpr int since = 11;
    static constexpr bool bool_output = false;
    using Types = UnsignedIntTypes;
    explicit BitShiftOp(const Node& node) {
        const std::string direction = node.get_attribute<std::string>("direction");
        if (direction != "LEFT" && direction != "RIGHT")
            fail_node(node, "attribute direction must be \"LEFT\" or \"RIGHT\", got \"" + direction + "\"");
        left_ = direction == "LEFT";
    }
    template <typename T> T operator()(T a, T b) const {
        if (b >= sizeof(T) * 8) return T(0);  // shifting by the width or more is UB in C++
        return static_cast<T>(left_ ? WrapType<T>(a) << b : WrapType<T>(a) >> b);
    }

private:
    bool left_ = true;
};

struct BitwiseBase {
    static constexpr int since = 18;
    static constexpr bool bool_output = false;
    using Types = IntTypes;
    explicit BitwiseBase(const Node&) {}
};
struct BitwiseAndOp : BitwiseBase {
    static constexpr const char* name = "BitwiseAnd";
    using BitwiseBase::BitwiseBase;
    template <typename T> T operator()(T a, T b) const { return static_cast<T>(a & b); }
};
struct BitwiseOrOp : BitwiseBase {
    static constexpr const char* name = "BitwiseOr";
    using BitwiseBase::BitwiseBase;
    template <typename T> T operator()(T a, T b) const { return static_cast<T>(a | b); }
};
struct BitwiseXorOp : BitwiseBase {
    static constexpr const char* name = "BitwiseXor";
    using BitwiseBase::BitwiseBase;
    template <typename T> T operator()(T a, T b) const { return static_cast<T>(a ^ b); }
};

// Max and Min propagate NaN, like numpy's maximum/minimum (the ONNX reference).
struct MaxOp {
    static constexpr const char* name = "Max";
    static constexpr int since = 8;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit MaxOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if (is_nan(a)) return a;
        return (b > a || is_nan(b)) ? b : a;
    }
};
struct MinOp {
    static constexpr const char* name = "Min";
    static constexpr int since = 8;
    static constexpr bool bool_output = false;
    using Types = NumericTypes;
    explicit MinOp(const Node&) {}
    template <typename T> T operator()(T a, T b) const {
        if (is_nan(a)) return a;
        return (b < a || is_nan(b)) ? b : a;
    }
};
struct SumOp : AddOp {
    static constexpr const char* name = "Sum";
    static constexpr int since = 8;
    using Types = FloatTypes;
    using AddOp::AddOp;
};
struct MeanOp : AddOp {  // the sum, divided by the input count afterwards
    static constexpr const char* name = "Mean";
    static constexpr int since = 8;
    using Types = FloatTypes;
    using AddOp::AddOp;
};

template <typename Op, typename = void>
struct HasValidate : std::false_type {};
template <typename Op>
struct HasValidate<Op, std::void_t<decltype(std::declval<const Op&>().validate(DType{}, std::declval<const Node&>()))>>
    : std::true_type {};

template <typename Op, typename = void>
struct IntegerDivisor : std::false_type {};
template <typename Op>
struct IntegerDivisor<Op, std::void_t<decltype(Op::integer_divisor)>> : std::bool_constant<Op::integer_divisor> {};

// Opset < 7 broadcast only B, by attribute: broadcast=1 aligns B's dims with A's starting at
// `axis` (default: B's dims are A's trailing ones). Returned as the numpy-broadcastable shape
// of B (trailing 1s appended); nullopt when the node does not use it.
struct LegacyBroadcast {
    bool enabled = false;
    std::optional<int64_t> axis;

    explicit LegacyBroadcast(const Node& node) {
        const int64_t b = node.get_attribute<int64_t>("broadcast", 0);
        if (b != 0 && b != 1) fail_node(node, "attribute broadcast must be 0 or 1, got " + std::to_string(b));
        enabled = b == 1;
        if (node.has_attribute("axis")) axis = node.get_attribute<int64_t>("axis");
    }

    template <typename ShapeT>
    ShapeT b_shape(const ShapeT& a, const ShapeT& b, const Node& node) const {
        if (!enabled) return b;
        const int64_t rank_a = static_cast<int64_t>(a.size()), rank_b = static_cast<int64_t>(b.size());
        const int64_t start = axis ? normalize_axis(*axis, std::max<int64_t>(rank_a, 1), node) : rank_a - rank_b;
        if (start < 0 || start + rank_b > rank_a)
            fail_node(node, "legacy broadcast: B " + shape_to_string(b) + " does not fit A " + shape_to_string(a) +
                                " at axis " + std::to_string(start));
        ShapeT out = b;
        out.resize(static_cast<size_t>(rank_a - start), typename ShapeT::value_type(1));
        return out;
    }
};

void infer_binary_output(InferenceContext& ctx, DType out) {
    const LegacyBroadcast legacy(ctx.node);
    if (legacy.enabled && ctx.has_input(0) && ctx.has_input(1)) {
        const Shape b = legacy.b_shape(ctx.input(0).shape, ctx.input(1).shape, ctx.node);
        try {
            return ctx.set_output(0, out, broadcast_shapes(ctx.input(0).shape, b));
        } catch (const ValidationError&) {
            fail_node(ctx.node, "input shapes " + shape_to_string(ctx.input(0).shape) + " and " +
                                    shape_to_string(ctx.input(1).shape) + " cannot be broadcast");
        }
    }
    infer_broadcast_output(ctx, out);
}

std::string dtype_mismatch(const Tensor& a, const Tensor& b) {
    return "inputs have different dtypes: " + dtype_to_string(a.dtype()) + " and " + dtype_to_string(b.dtype());
}

template <typename Op>
class BinaryKernel final : public NodeKernel {
public:
    explicit BinaryKernel(const Node& node) : NodeKernel(node), op_(node), legacy_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        if (a.dtype() != b.dtype()) fail(dtype_mismatch(a, b));
        if constexpr (HasValidate<Op>::value) op_.validate(a.dtype(), node_);
        dispatch_list(typename Op::Types{}, a.dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            using R = std::conditional_t<Op::bool_output, bool, T>;
            if constexpr (IntegerDivisor<Op>::value && std::is_integral_v<T>) {
                const T* bd = b.data_ptr<T>();
                if (std::find(bd, bd + b.num_elements(), T(0)) != bd + b.num_elements())
                    fail("integer division by zero (divisor " + shape_to_string(b.shape()) + " contains 0)");
            }
            const std::vector<int64_t> b_shape = legacy_.b_shape(a.shape(), b.shape(), node_);
            const std::vector<int64_t> shape = broadcast_all(node_, {&a.shape(), &b_shape});
            Tensor y(shape, Op::bool_output ? DType::Bool : a.dtype());
            broadcast_apply(plan_broadcast<2>(shape, {&a.shape(), &b_shape}), ctx.num_threads, op_, y.data_ptr<R>(),
                            a.data_ptr<T>(), b.data_ptr<T>());
            ctx.outputs[0] = std::move(y);
        });
    }

private:
    const Op op_;
    const LegacyBroadcast legacy_;
};

template <typename Op>
void infer_same_type_inputs(InferenceContext& ctx) {
    std::vector<size_t> all(ctx.node.inputs().size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    const std::optional<DType> dtype = common_input_dtype(ctx, all);
    if (!dtype) return;
    check_dtype_in(typename Op::Types{}, *dtype, ctx.node);
    const Op op(ctx.node);
    if constexpr (HasValidate<Op>::value) op.validate(*dtype, ctx.node);
    infer_binary_output(ctx, Op::bool_output ? DType::Bool : *dtype);
}

template <typename Op>
OpSchema binary_schema() {
    return OpSchema{Op::name, "", Op::since, 2, 2, 1, 1, infer_same_type_inputs<Op>,
                    [](const KernelInfo& info) { return std::make_unique<BinaryKernel<Op>>(info.node); }};
}

// ---- variadic ops: fold the inputs into the broadcast output ----

template <typename Op>
class VariadicKernel final : public NodeKernel {
public:
    explicit VariadicKernel(const Node& node) : NodeKernel(node), op_(node) {}

    void compute(KernelContext& ctx) const override {
        std::vector<const Tensor*> in;
        std::vector<const std::vector<int64_t>*> shapes;
        for (size_t i = 0; i < ctx.inputs.size(); ++i) {
            if (!ctx.has_input(i)) continue;
            in.push_back(ctx.inputs[i]);
            shapes.push_back(&ctx.inputs[i]->shape());
            if (in.back()->dtype() != in.front()->dtype()) fail(dtype_mismatch(*in.front(), *in.back()));
        }
        if (in.empty()) fail("needs at least one input");
        const std::vector<int64_t> shape = broadcast_all(node_, shapes);
        dispatch_list(typename Op::Types{}, in[0]->dtype(), node_, [&](auto tag) {
            using T = decltype(tag);
            Tensor y(shape, in[0]->dtype());
            T* out = y.data_ptr<T>();
            broadcast_apply(plan_broadcast<1>(shape, {shapes[0]}), ctx.num_threads, [](T v) { return v; }, out,
                            in[0]->data_ptr<T>());
            for (size_t k = 1; k < in.size(); ++k)  // in place: each output element reads only itself
                broadcast_apply(plan_broadcast<2>(shape, {&shape, shapes[k]}), ctx.num_threads, op_, out,
                                static_cast<const T*>(out), in[k]->data_ptr<T>());
            if constexpr (std::is_same_v<Op, MeanOp>) {
                const Compute<T> n = static_cast<Compute<T>>(in.size());
                map_elements(y.num_elements(), ctx.num_threads, [n](T v) { return T(Compute<T>(v) / n); }, out,
                             static_cast<const T*>(out));
            }
            ctx.outputs[0] = std::move(y);
        });
    }

private:
    const Op op_;
};

template <typename Op>
OpSchema variadic_schema() {
    return OpSchema{Op::name, "", Op::since, 1, -1, 1, 1, infer_same_type_inputs<Op>,
                    [](const KernelInfo& info) { return std::make_unique<VariadicKernel<Op>>(info.node); }};
}

// ---- Pow: the exponent may have another type; the result has the base's ----

using PowBaseTypes = Concat<FloatTypes, TypeList<int32_t, int64_t>>;
using PowExponentTypes = NumericTypes;

struct PowFn {
    template <typename B, typename E>
    B operator()(B base, E exponent) const {
        if constexpr (std::is_integral_v<B> && std::is_integral_v<E>) {
            if constexpr (std::is_signed_v<E>) {
                if (exponent < 0) {  // the truncated real result: only |base| == 1 survives
                    if (base == 1) return B(1);
                    if (base == -1) return (exponent % 2) ? B(-1) : B(1);
                    return B(0);
                }
            }
            // Exponentiation by squaring, wrapping like repeated Mul.
            using W = WrapType<B>;
            W result = 1, factor = static_cast<W>(base);
            for (uint64_t e = static_cast<uint64_t>(exponent); e; e >>= 1) {
                if (e & 1) result = static_cast<W>(result * factor);
                factor = static_cast<W>(factor * factor);
            }
            return static_cast<B>(result);
        } else {
            // In double, as numpy promotes mixed types, then back to the base type.
            const double r = std::pow(static_cast<double>(static_cast<Compute<B>>(base)),
                                      static_cast<double>(static_cast<Compute<E>>(exponent)));
            if constexpr (std::is_integral_v<B>) return truncate_to_int<B>(r);
            else return B(static_cast<Compute<B>>(r));
        }
    }
};

class PowKernel final : public NodeKernel {
public:
    explicit PowKernel(const Node& node) : NodeKernel(node), legacy_(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& a = ctx.input(0);
        const Tensor& b = ctx.input(1);
        const std::vector<int64_t> b_shape = legacy_.b_shape(a.shape(), b.shape(), node_);
        const std::vector<int64_t> shape = broadcast_all(node_, {&a.shape(), &b_shape});
        Tensor y(shape, a.dtype());
        const auto plan = plan_broadcast<2>(shape, {&a.shape(), &b_shape});
        dispatch_list(PowBaseTypes{}, a.dtype(), node_, [&](auto base_tag) {
            using B = decltype(base_tag);
            dispatch_list(PowExponentTypes{}, b.dtype(), node_, [&](auto exp_tag) {
                using E = decltype(exp_tag);
                broadcast_apply(plan, ctx.num_threads, PowFn{}, y.data_ptr<B>(), a.data_ptr<B>(), b.data_ptr<E>());
            }, "exponent Y");
        }, "base X");
        ctx.outputs[0] = std::move(y);
    }

private:
    const LegacyBroadcast legacy_;
};

void infer_pow(InferenceContext& ctx) {
    if (ctx.has_input(1)) check_dtype_in(PowExponentTypes{}, ctx.input(1).dtype, ctx.node, "exponent Y");
    if (!ctx.has_input(0)) return;
    check_dtype_in(PowBaseTypes{}, ctx.input(0).dtype, ctx.node, "base X");
    infer_binary_output(ctx, ctx.input(0).dtype);
}

// ---- Where ----

class WhereKernel final : public NodeKernel {
public:
    explicit WhereKernel(const Node& node) : NodeKernel(node) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& c = ctx.input(0);
        const Tensor& x = ctx.input(1);
        const Tensor& y = ctx.input(2);
        if (c.dtype() != DType::Bool) fail("condition is " + dtype_to_string(c.dtype()) + "; it must be Bool");
        if (x.dtype() != y.dtype()) fail(dtype_mismatch(x, y));
        const std::vector<int64_t> shape = broadcast_all(node_, {&c.shape(), &x.shape(), &y.shape()});
        Tensor out(shape, x.dtype());
        const auto plan = plan_broadcast<3>(shape, {&c.shape(), &x.shape(), &y.shape()});
        // Only moves elements: dispatch by width (strings are copied by assignment).
        dispatch_by_width(x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            broadcast_apply(plan, ctx.num_threads, [](bool cond, const T& a, const T& b) { return cond ? a : b; },
                            out.data_ptr<T>(), c.data_ptr<bool>(), x.data_ptr<T>(), y.data_ptr<T>());
        });
        ctx.outputs[0] = std::move(out);
    }
};

void infer_where(InferenceContext& ctx) {
    if (ctx.has_input(0) && ctx.input(0).dtype != DType::Bool)
        fail_node(ctx.node, "condition is " + dtype_to_string(ctx.input(0).dtype) + "; it must be Bool");
    const std::optional<DType> dtype = common_input_dtype(ctx, {1, 2});
    if (dtype) infer_broadcast_output(ctx, *dtype);
}

}  // namespace

void register_elementwise_ops(OpTable& table) {
    table.add(binary_schema<AddOp>());
    table.add(binary_schema<SubOp>());
    table.add(binary_schema<MulOp>());
    table.add(binary_schema<DivOp>());
    table.add(binary_schema<ModOp>());
    table.add(binary_schema<AndOp>());
    table.add(binary_schema<OrOp>());
    table.add(binary_schema<XorOp>());
    table.add(binary_schema<EqualOp>());
    table.add(binary_schema<GreaterOp>());
    table.add(binary_schema<GreaterOrEqualOp>());
    table.add(binary_schema<LessOp>());
    table.add(binary_schema<LessOrEqualOp>());
    table.add(binary_schema<BitShiftOp>());
    table.add(binary_schema<BitwiseAndOp>());
    table.add(binary_schema<BitwiseOrOp>());
    table.add(binary_schema<BitwiseXorOp>());
    table.add(variadic_schema<MaxOp>());
    table.add(variadic_schema<MinOp>());
    table.add(variadic_schema<SumOp>());
    table.add(variadic_schema<MeanOp>());
    table.add(OpSchema{"Pow", "", 7, 2, 2, 1, 1, infer_pow,
                       [](const KernelInfo& info) { return std::make_unique<PowKernel>(info.node); }});
    table.add(OpSchema{"Where", "", 9, 3, 3, 1, 1, infer_where,
                       [](const KernelInfo& info) { return std::make_unique<WhereKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
