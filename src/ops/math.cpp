// Unary math: Abs, Neg, Sign, Ceil, Floor, Round, Reciprocal, Sqrt, Exp, Log, Erf, the
// trigonometric and hyperbolic functions and their inverses, IsInf, IsNaN, Not, BitwiseNot.
// Float16/BFloat16 are computed in float and rounded once (elementwise.hpp's Compute).
#include <cmath>

#include "ops/elementwise.hpp"

namespace pyflame_rt::ops {
namespace {

struct NoAttributes {
    static constexpr bool bool_output = false;
    explicit NoAttributes(const KernelInfo&) {}
};

struct AbsFn : NoAttributes {
    static constexpr const char* name = "Abs";
    static constexpr int since = 6;
    using Types = NumericTypes;
    using NoAttributes::NoAttributes;
    template <typename T> T operator()(T x) const {
        if constexpr (std::is_unsigned_v<T>) return x;
        else if constexpr (std::is_integral_v<T>) return x < 0 ? static_cast<T>(WrapType<T>(0) - WrapType<T>(x)) : x;
        else return T(std::abs(Compute<T>(x)));
    }
};

struct NegFn : NoAttributes {
    static constexpr const char* name = "Neg";
    static constexpr int since = 6;
    using Types = SignedTypes;
    using NoAttributes::NoAttributes;
    template <typename T> T operator()(T x) const {
        if constexpr (std::is_integral_v<T>) return static_cast<T>(WrapType<T>(0) - WrapType<T>(x));  // -INT_MIN wraps
        else return T(-Compute<T>(x));
    }
};

struct SignFn : NoAttributes {
    static constexpr const char* name = "Sign";
    static constexpr int since = 9;
    using Types = NumericTypes;
    using NoAttributes::NoAttributes;
    template <typename T> T operator()(T x) const {
        if (is_nan(x)) return x;  // numpy: sign(NaN) is NaN
        const Compute<T> v = static_cast<Compute<T>>(x);
        return T(v > 0 ? 1 : v < 0 ? -1 : 0);
    }
};

// Float-only functions: f(x) computed in Compute<T>.
#define PYFLAME_FLOAT_UNARY(NAME, OP, SINCE, EXPR)                       \
    struct NAME : FloatUnary<NAME> {                                     \
        static constexpr const char* name = OP;                          \
        static constexpr int since = SINCE;                              \
        explicit NAME(const KernelInfo&) {}                              \
        template <typename C> C f(C x) const { return EXPR; }            \
    };

PYFLAME_FLOAT_UNARY(CeilFn, "Ceil", 6, std::ceil(x))
PYFLAME_FLOAT_UNARY(FloorFn, "Floor", 6, std::floor(x))
PYFLAME_FLOAT_UNARY(RoundFn, "Round", 11, std::nearbyint(x))  // default rounding mode: half to even
PYFLAME_FLOAT_UNARY(ReciprocalFn, "Reciprocal", 6, C(1) / x)
PYFLAME_FLOAT_UNARY(SqrtFn, "Sqrt", 6, std::sqrt(x))
PYFLAME_FLOAT_UNARY(ExpFn, "Exp", 6, std::exp(x))
PYFLAME_FLOAT_UNARY(LogFn, "Log", 6, std::log(x))
PYFLAME_FLOAT_UNARY(SinFn, "Sin", 7, std::sin(x))
PYFLAME_FLOAT_UNARY(CosFn, "Cos", 7, std::cos(x))
PYFLAME_FLOAT_UNARY(TanFn, "Tan", 7, std::tan(x))
PYFLAME_FLOAT_UNARY(AsinFn, "Asin", 7, std::asin(x))
PYFLAME_FLOAT_UNARY(AcosFn, "Acos", 7, std::acos(x))
PYFLAME_FLOAT_UNARY(AtanFn, "Atan", 7, std::atan(x))
PYFLAME_FLOAT_UNARY(SinhFn, "Sinh", 9, std::sinh(x))
PYFLAME_FLOAT_UNARY(CoshFn, "Cosh", 9, std::cosh(x))
PYFLAME_FLOAT_UNARY(AsinhFn, "Asinh", 9, std::asinh(x))
PYFLAME_FLOAT_UNARY(AcoshFn, "Acosh", 9, std::acosh(x))
PYFLAME_FLOAT_UNARY(AtanhFn, "Atanh", 9, std::atanh(x))
#undef PYFLAME_FLOAT_UNARY

// Erf also takes integers (the result truncated back, as numpy's astype does).
struct ErfFn : NoAttributes {
    static constexpr const char* name = "Erf";
    static constexpr int since = 9;
    using Types = NumericTypes;
    using NoAttributes::NoAttributes;
    template <typename T> T operator()(T x) const {
        if constexpr (std::is_integral_v<T>) return truncate_to_int<T>(std::erf(static_cast<double>(x)));
        else return T(std::erf(Compute<T>(x)));
    }
};

struct IsInfFn {
    static constexpr const char* name = "IsInf";
    static constexpr int since = 10;
    static constexpr bool bool_output = true;
    static constexpr bool accepts_float8 = true;  // opset 20
    using Types = FloatTypes;
    explicit IsInfFn(const KernelInfo& info)
        : positive_(flag(info.node, "detect_positive")), negative_(flag(info.node, "detect_negative")) {}
    template <typename T> bool operator()(T x) const {
        const Compute<T> v = static_cast<Compute<T>>(x);
        return std::isinf(v) && (v > 0 ? positive_ : negative_);
    }

private:
    static bool flag(const Node& node, const char* name) {
        const int64_t v = node.get_attribute<int64_t>(name, 1);
        if (v != 0 && v != 1) fail_node(node, std::string("attribute ") + name + " must be 0 or 1, got " + std::to_string(v));
        return v == 1;
    }
    bool positive_, negative_;
};

struct IsNaNFn : NoAttributes {
    static constexpr const char* name = "IsNaN";
    static constexpr int since = 9;
    static constexpr bool bool_output = true;
    static constexpr bool accepts_float8 = true;  // opset 20
    using Types = FloatTypes;
    using NoAttributes::NoAttributes;
    template <typename T> bool operator()(T x) const { return is_nan(x); }
};

struct NotFn : NoAttributes {
    static constexpr const char* name = "Not";
    static constexpr int since = 1;
    using Types = BoolTypes;
    using NoAttributes::NoAttributes;
    bool operator()(bool x) const { return !x; }
};

struct BitwiseNotFn : NoAttributes {
    static constexpr const char* name = "BitwiseNot";
    static constexpr int since = 18;
    using Types = IntTypes;
    using NoAttributes::NoAttributes;
    template <typename T> T operator()(T x) const { return static_cast<T>(~x); }
};

}  // namespace

void register_math_ops(OpTable& table) {
    table.add(unary_schema<AbsFn>());
    table.add(unary_schema<NegFn>());
    table.add(unary_schema<SignFn>());
    table.add(unary_schema<CeilFn>());
    table.add(unary_schema<FloorFn>());
    table.add(unary_schema<RoundFn>());
    table.add(unary_schema<ReciprocalFn>());
    table.add(unary_schema<SqrtFn>());
    table.add(unary_schema<ExpFn>());
    table.add(unary_schema<LogFn>());
    table.add(unary_schema<ErfFn>());
    table.add(unary_schema<SinFn>());
    table.add(unary_schema<CosFn>());
    table.add(unary_schema<TanFn>());
    table.add(unary_schema<AsinFn>());
    table.add(unary_schema<AcosFn>());
    table.add(unary_schema<AtanFn>());
    table.add(unary_schema<SinhFn>());
    table.add(unary_schema<CoshFn>());
    table.add(unary_schema<AsinhFn>());
    table.add(unary_schema<AcoshFn>());
    table.add(unary_schema<AtanhFn>());
    table.add(unary_schema<IsInfFn>());
    table.add(unary_schema<IsNaNFn>());
    table.add(unary_schema<NotFn>());
    table.add(unary_schema<BitwiseNotFn>());
}

}  // namespace pyflame_rt::ops
