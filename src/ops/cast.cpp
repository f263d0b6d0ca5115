// Cast and CastLike between every dtype but the complex ones, and the narrow float formats'
// converters (float_formats.hpp).
//
// A cast runs in blocks: the source is loaded into a wide value (double for floating types,
// int64 for signed integers, uint64 for unsigned ones and bool), which is then stored as the
// target. Every source value is exact in its wide form, so each conversion rounds at most once
// (except int64 beyond 2^53 to floats narrower than double). Strings are parsed into the wide
// form the target needs and numbers are printed like ONNX Runtime does ("%.8g", "NaN", "INF",
// "-INF"; integers in decimal).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "ops/elementwise.hpp"
#include "ops/float_formats.hpp"

namespace pyflame_rt::ops {

// ---- narrow float formats ----
namespace {

// How a format spends its special encodings.
enum class Special {
    Ieee,    // exponent all ones: inf (mantissa 0) or NaN (E5M2, float16, bfloat16)
    Fn,      // no inf; S.1111.111 is NaN (E4M3FN)
    Uz,      // no inf, no -0; 0x80 is the only NaN (the FNUZ formats)
    None,    // no inf, no NaN (E2M1)
};

struct FloatFormat {
    int exp_bits, man_bits, bias;
    Special special;
    uint32_t max_bits;  // largest finite magnitude

    uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
    double decode_magnitude(uint32_t bits) const {
        const uint32_t e = bits >> man_bits, m = bits & ((1u << man_bits) - 1);
        if (e == 0) return std::ldexp(static_cast<double>(m), 1 - bias - man_bits);
        return std::ldexp(static_cast<double>(m | (1u << man_bits)), static_cast<int>(e) - bias - man_bits);
    }
    double max_value() const { return decode_magnitude(max_bits); }
};

constexpr FloatFormat kE4M3FN{4, 3, 7, Special::Fn, 0x7E};
constexpr FloatFormat kE4M3FNUZ{4, 3, 8, Special::Uz, 0x7F};
constexpr FloatFormat kE5M2{5, 2, 15, Special::Ieee, 0x7B};
constexpr FloatFormat kE5M2FNUZ{5, 2, 16, Special::Uz, 0x7F};
constexpr FloatFormat kE2M1{2, 1, 1, Special::None, 0x7};
constexpr FloatFormat kFloat16{5, 10, 15, Special::Ieee, 0x7BFF};

const FloatFormat& float8_format(DType format) {
    switch (format) {
        case DType::Float8E4M3FN: return kE4M3FN;
        case DType::Float8E4M3FNUZ: return kE4M3FNUZ;
        case DType::Float8E5M2: return kE5M2;
        case DType::Float8E5M2FNUZ: return kE5M2FNUZ;
        default: throw ValidationError(dtype_to_string(format) + " is not a float8 format");
    }
}

// x rounded to nearest even in format f. saturate: overflow and infinities give +-max.
uint32_t encode(double x, const FloatFormat& f, bool saturate) {
    const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0;
    const uint32_t exp_ones = ((1u << f.exp_bits) - 1) << f.man_bits;
    if (std::isnan(x)) {
        switch (f.special) {
            case Special::Ieee: return sign | exp_ones | (1u << (f.man_bits - 1));  // quiet NaN
            case Special::Fn: return sign | exp_ones | ((1u << f.man_bits) - 1);
            case Special::Uz: return f.sign_bit();
            case Special::None: return sign ^ f.sign_bit();  // no NaN: ml_dtypes gives -0 for +NaN
        }
    }
    auto overflow = [&]() -> uint32_t {
        if (saturate || f.special == Special::None) return sign | f.max_bits;
        switch (f.special) {
            case Special::Ieee: return sign | exp_ones;  // inf
            case Special::Fn: return sign | exp_ones | ((1u << f.man_bits) - 1);
            default: return f.sign_bit();  // Uz: NaN
        }
    };
    if (std::isinf(x)) return overflow();
    const double a = std::fabs(x);
    const uint32_t zero = f.special == Special::Uz ? 0 : sign;  // no -0 in the FNUZ formats
    if (a == 0) return zero;
    // Round with an unbounded exponent range, then compare with the largest finite value.
    int e2 = 0;
    std::frexp(a, &e2);  // a = m * 2^e2, m in [0.5, 1): unbiased exponent e2 - 1
    const int min_exp = 1 - f.bias;
    int quantum = std::max(e2 - 1, min_exp) - f.man_bits;  // exponent of the last mantissa bit
    double n = std::nearbyint(std::ldexp(a, -quantum));     // ties to even (default rounding mode)
    if (std::ldexp(n, quantum) > f.max_value()) return overflow();
    if (n == 0) return zero;
    const double implicit = std::ldexp(1.0, f.man_bits);
    if (n < implicit) return sign | static_cast<uint32_t>(n);  // subnormal
    if (n >= 2 * implicit) {  // rounding carried into the next binade
        n /= 2;
        ++quantum;
    }
    const uint32_t exp_field = static_cast<uint32_t>(quantum + f.man_bits + f.bias);
    return sign | (exp_field << f.man_bits) | static_cast<uint32_t>(n - implicit);
}

float decode(uint32_t bits, const FloatFormat& f) {
    const bool negative = (bits & f.sign_bit()) != 0;
    const uint32_t magnitude = bits & (f.sign_bit() - 1);
    const uint32_t exp_ones = ((1u << f.exp_bits) - 1) << f.man_bits;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    switch (f.special) {
        case Special::Ieee:
            if ((magnitude & exp_ones) == exp_ones)
                return (magnitude & ~exp_ones) ? nan : (negative ? -1.0f : 1.0f) * std::numeric_limits<float>::infinity();
            break;
        case Special::Fn:
            if (magnitude == (exp_ones | ((1u << f.man_bits) - 1))) return negative ? -nan : nan;
            break;
        case Special::Uz:
            if (bits == f.sign_bit()) return nan;
            break;
        case Special::None: break;
    }
    const float v = static_cast<float>(f.decode_magnitude(magnitude));
    return negative ? -v : v;
}

// Decoded values of every bit pattern, built once: index 0..3 the float8s, 4 E8M0, 5 E2M1.
struct DecodeTables {
    float table[6][256];
    DecodeTables() {
        const FloatFormat* formats[] = {&kE4M3FN, &kE4M3FNUZ, &kE5M2, &kE5M2FNUZ};
        for (int t = 0; t < 4; ++t)
            for (uint32_t b = 0; b < 256; ++b) table[t][b] = decode(b, *formats[t]);
        for (uint32_t b = 0; b < 256; ++b)
            table[4][b] = b == 0xFF ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, static_cast<int>(b) - 127);
        for (uint32_t b = 0; b < 256; ++b) table[5][b] = decode(b & 0xF, kE2M1);
    }
};

const float* decode_table(DType format) {
    static const DecodeTables tables;
    switch (format) {
        case DType::Float8E4M3FN: return tables.table[0];
        case DType::Float8E4M3FNUZ: return tables.table[1];
        case DType::Float8E5M2: return tables.table[2];
        case DType::Float8E5M2FNUZ: return tables.table[3];
        case DType::Float8E8M0: return tables.table[4];
        case DType::Float4E2M1: return tables.table[5];
        default: throw ValidationError(dtype_to_string(format) + " is not a narrow float format");
    }
}

// double -> float16 with one rounding (as numpy): through float (Eigen, RNE) when the value is
// a float already (every float32/float16 source), else straight from the double. bfloat16 goes
// through float like ml_dtypes and ONNX Runtime do (two roundings for float64 sources).
template <typename H>
H half_from_double(double d) {
    const float f = static_cast<float>(d);
    if constexpr (std::is_same_v<H, Eigen::half>) {
        if (static_cast<double>(f) != d && !std::isnan(d))
            return Eigen::half(Eigen::half_impl::raw_uint16_to_half(static_cast<uint16_t>(encode(d, kFloat16, false))));
    }
    return H(f);
}

}  // namespace

bool is_float8_dtype(DType dtype) {
    return dtype == DType::Float8E4M3FN || dtype == DType::Float8E4M3FNUZ || dtype == DType::Float8E5M2 ||
           dtype == DType::Float8E5M2FNUZ;
}

bool is_narrow_float_dtype(DType dtype) {
    return is_float8_dtype(dtype) || dtype == DType::Float8E8M0 || dtype == DType::Float4E2M1;
}

uint8_t float_to_float8(double x, DType format, bool saturate) {
    return static_cast<uint8_t>(encode(x, float8_format(format), saturate));
}

float float8_to_float(uint8_t bits, DType format) {
    float8_format(format);  // validates
    return decode_table(format)[bits];
}

uint8_t float_to_float4e2m1(double x) { return static_cast<uint8_t>(encode(x, kE2M1, true)); }
float float4e2m1_to_float(uint8_t bits) { return decode_table(DType::Float4E2M1)[bits & 0xF]; }

uint8_t float_to_float8e8m0(float x, bool saturate, E8M0Rounding rounding) {
    // The ONNX reference's algorithm on the float32 bits (the sign is ignored: negative inputs
    // are undefined in the spec).
    uint32_t bits = 0;
    std::memcpy(&bits, &x, sizeof(bits));
    uint32_t exponent = (bits >> 23) & 0xFF;
    if (exponent == 0xFF) return 0xFF;  // inf, NaN
    bool round_up = false;
    if (rounding == E8M0Rounding::Up) {
        round_up = (bits & 0x7FFFFF) != 0;
    } else if (rounding == E8M0Rounding::Nearest) {
        const bool guard = bits & 0x400000, round = bits & 0x200000, sticky = bits & 0x1FFFFF;
        round_up = guard && (round || sticky || exponent > 0);
    }
    if (round_up && !(saturate && exponent == 0xFE)) ++exponent;  // 0xFE + 1 = 0xFF: NaN
    return static_cast<uint8_t>(exponent);
}

float float8e8m0_to_float(uint8_t bits) { return decode_table(DType::Float8E8M0)[bits]; }

uint8_t float_to_narrow(double x, DType format, bool saturate) {
    if (format == DType::Float4E2M1) return float_to_float4e2m1(x);
    if (format == DType::Float8E8M0) return float_to_float8e8m0(static_cast<float>(x), saturate);
    return float_to_float8(x, format, saturate);
}

float narrow_to_float(uint8_t bits, DType format) { return decode_table(format)[bits]; }

Tensor decode_narrow_to_float32(const Tensor& t) {
    const float* table = decode_table(t.dtype());
    Tensor out(t.shape(), DType::Float32);
    const uint8_t* in = t.data_ptr<uint8_t>();
    float* o = out.data_ptr<float>();
    for (int64_t i = 0, n = t.num_elements(); i < n; ++i) o[i] = table[in[i]];
    return out;
}

// ---- Cast ----
namespace {

enum class Wide { Float, Signed, Unsigned };
union WideValue {
    double f;
    int64_t i;
    uint64_t u;
};

struct CastOptions {
    const Node& node;  // for error messages (identity only)
    DType src, dst;
    bool saturate = true;
    E8M0Rounding rounding = E8M0Rounding::Up;
};

using LoadFn = void (*)(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions& o);
using StoreFn = void (*)(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions& o);

// -- loads --

template <typename S>
void load_float(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions&) {
    const S* p = static_cast<const S*>(src) + begin;
    for (int64_t i = 0; i < n; ++i) out[i].f = static_cast<double>(static_cast<Compute<S>>(p[i]));
}

void load_narrow(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions& o) {
    const uint8_t* p = static_cast<const uint8_t*>(src) + begin;
    const float* table = decode_table(o.src);
    for (int64_t i = 0; i < n; ++i) out[i].f = table[p[i]];
}

template <typename S>
void load_signed(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions&) {
    const S* p = static_cast<const S*>(src) + begin;
    for (int64_t i = 0; i < n; ++i) out[i].i = static_cast<int64_t>(p[i]);
}

template <typename S>
void load_unsigned(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions&) {
    const S* p = static_cast<const S*>(src) + begin;
    for (int64_t i = 0; i < n; ++i) out[i].u = static_cast<uint64_t>(p[i]);
}

// Int4/UInt4/Int2/UInt2 from their low bits only: tensors coming from other packed
// representations (ml_dtypes' int4 bytes hold the two's complement nibble, not sign-extended)
// read the same as sign-extended ones.
template <int kBits, bool kSigned>
void load_sub_byte(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions&) {
    const uint8_t* p = static_cast<const uint8_t*>(src) + begin;
    constexpr uint32_t mask = (1u << kBits) - 1, sign = 1u << (kBits - 1);
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t v = p[i] & mask;
        if constexpr (kSigned) out[i].i = (v & sign) ? static_cast<int64_t>(v) - (int64_t(1) << kBits) : v;
        else out[i].u = v;
    }
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The whole string (surrounding whitespace aside) as a double: decimal, scientific, "inf",
// "+INF", "-inf", "NaN", any case.
bool parse_double(const std::string& s, double& out) {
    const char* begin = s.c_str();
    char* end = nullptr;
    errno = 0;
    out = std::strtod(begin, &end);
    if (end == begin) return false;
    while (*end && std::isspace(static_cast<unsigned char>(*end))) ++end;
    return *end == '\0';  // ERANGE: strtod gave +-inf or a denormal/0, which is the value we want
}

[[noreturn]] void parse_failure(const std::string& s, const CastOptions& o) {
    fail_node(o.node, "cannot cast string \"" + s + "\" to " + dtype_to_string(o.dst));
}

void load_string_float(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions& o) {
    const std::string* p = static_cast<const std::string*>(src) + begin;
    for (int64_t i = 0; i < n; ++i)
        if (!parse_double(p[i], out[i].f)) parse_failure(p[i], o);
}

// Integers parse exactly; anything else that reads as a number ("100.5", "1e3") truncates.
template <bool kSigned>
void load_string_int(const void* src, int64_t begin, int64_t n, WideValue* out, const CastOptions& o) {
    const std::string* p = static_cast<const std::string*>(src) + begin;
    for (int64_t i = 0; i < n; ++i) {
        const std::string& s = p[i];
        if (o.dst == DType::Bool) {
            const std::string l = lower(s);
            if (l == "true" || l == "false") {
                out[i].u = l == "true";
                continue;
            }
        }
        const char* b = s.c_str();
        char* end = nullptr;
        errno = 0;
        if constexpr (kSigned) out[i].i = std::strtoll(b, &end, 10);
        else out[i].u = std::strtoull(b, &end, 10);
        while (end && *end && std::isspace(static_cast<unsigned char>(*end))) ++end;
        if (end != b && *end == '\0' && errno != ERANGE) continue;
        double d = 0;
        if (!parse_double(s, d)) parse_failure(s, o);
        if constexpr (kSigned) out[i].i = truncate_to_int<int64_t>(d);
        else out[i].u = d < 0 ? static_cast<uint64_t>(truncate_to_int<int64_t>(d)) : truncate_to_int<uint64_t>(d);
    }
}

// -- stores --

template <Wide K>
double as_double(const WideValue& v) {
    if constexpr (K == Wide::Float) return v.f;
    else if constexpr (K == Wide::Signed) return static_cast<double>(v.i);
    else return static_cast<double>(v.u);
}

template <typename D, Wide K>
void store_float(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions&) {
    D* p = static_cast<D*>(dst) + begin;
    for (int64_t i = 0; i < n; ++i) {
        if constexpr (K == Wide::Float) p[i] = static_cast<D>(in[i].f);
        else if constexpr (K == Wide::Signed) p[i] = static_cast<D>(in[i].i);  // one rounding
        else p[i] = static_cast<D>(in[i].u);
    }
}

template <typename H, Wide K>
void store_half(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions&) {
    H* p = static_cast<H*>(dst) + begin;
    for (int64_t i = 0; i < n; ++i) p[i] = half_from_double<H>(as_double<K>(in[i]));
}

template <Wide K>
void store_narrow(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions& o) {
    uint8_t* p = static_cast<uint8_t*>(dst) + begin;
    if (o.dst == DType::Float8E8M0) {
        for (int64_t i = 0; i < n; ++i)
            p[i] = float_to_float8e8m0(static_cast<float>(as_double<K>(in[i])), o.saturate, o.rounding);
    } else if (o.dst == DType::Float4E2M1) {
        for (int64_t i = 0; i < n; ++i) p[i] = float_to_float4e2m1(as_double<K>(in[i]));
    } else {
        const FloatFormat& f = float8_format(o.dst);
        for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(encode(as_double<K>(in[i]), f, o.saturate));
    }
}

// Integers of `kBits` bits held in D (Int4/Int2 sign-extended in int8): floats truncate toward
// zero; out-of-range values keep their low bits (two's complement), as ONNX specifies for
// integer sources and ONNX Runtime/numpy do for floats.
template <typename D, int kBits, Wide K>
void store_int(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions&) {
    D* p = static_cast<D*>(dst) + begin;
    constexpr uint64_t mask = kBits == 64 ? ~uint64_t(0) : (uint64_t(1) << kBits) - 1;
    constexpr uint64_t sign = uint64_t(1) << (kBits - 1);
    for (int64_t i = 0; i < n; ++i) {
        uint64_t v;
        if constexpr (K == Wide::Float) {
            if constexpr (std::is_same_v<D, uint64_t>) v = truncate_to_int<uint64_t>(in[i].f);
            else v = static_cast<uint64_t>(truncate_to_int<int64_t>(in[i].f));
        } else if constexpr (K == Wide::Signed) {
            v = static_cast<uint64_t>(in[i].i);
        } else {
            v = in[i].u;
        }
        v &= mask;
        if constexpr (std::is_signed_v<D>)
            if (v & sign) v |= ~mask;  // sign-extend
        p[i] = static_cast<D>(v);
    }
}

template <Wide K>
void store_bool(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions&) {
    bool* p = static_cast<bool*>(dst) + begin;
    for (int64_t i = 0; i < n; ++i) {
        if constexpr (K == Wide::Float) p[i] = in[i].f != 0;  // NaN is true
        else if constexpr (K == Wide::Signed) p[i] = in[i].i != 0;
        else p[i] = in[i].u != 0;
    }
}

std::string format_float(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v < 0 ? "-INF" : "INF";
    char buffer[64];
    const int len = std::snprintf(buffer, sizeof(buffer), "%.8g", v);
    return std::string(buffer, static_cast<size_t>(len));
}

template <Wide K>
void store_string(const WideValue* in, int64_t begin, int64_t n, void* dst, const CastOptions&) {
    std::string* p = static_cast<std::string*>(dst) + begin;
    for (int64_t i = 0; i < n; ++i) {
        if constexpr (K == Wide::Float) p[i] = format_float(in[i].f);
        else if constexpr (K == Wide::Signed) p[i] = std::to_string(in[i].i);
        else p[i] = std::to_string(in[i].u);  // bool: "0"/"1", as std::to_string(bool) in ONNX Runtime
    }
}

Wide wide_of(DType dtype) {
    if (is_float_dtype(dtype)) return Wide::Float;
    switch (dtype) {
        case DType::Int8: case DType::Int16: case DType::Int32: case DType::Int64: case DType::Int4: case DType::Int2:
            return Wide::Signed;
        default:
            return Wide::Unsigned;  // unsigned integers and bool
    }
}

bool castable(DType dtype) { return dtype != DType::Complex64 && dtype != DType::Complex128; }

LoadFn loader(DType src, DType dst) {
    switch (src) {
        case DType::Float32: return load_float<float>;
        case DType::Float64: return load_float<double>;
        case DType::Float16: return load_float<Eigen::half>;
        case DType::BFloat16: return load_float<Eigen::bfloat16>;
        case DType::Float8E4M3FN: case DType::Float8E4M3FNUZ: case DType::Float8E5M2: case DType::Float8E5M2FNUZ:
        case DType::Float8E8M0: case DType::Float4E2M1:
            return load_narrow;
        case DType::Int4: return load_sub_byte<4, true>;
        case DType::Int2: return load_sub_byte<2, true>;
        case DType::UInt4: return load_sub_byte<4, false>;
        case DType::UInt2: return load_sub_byte<2, false>;
        case DType::Int8: return load_signed<int8_t>;
        case DType::Int16: return load_signed<int16_t>;
        case DType::Int32: return load_signed<int32_t>;
        case DType::Int64: return load_signed<int64_t>;
        case DType::UInt8: return load_unsigned<uint8_t>;
        case DType::UInt16: return load_unsigned<uint16_t>;
        case DType::UInt32: return load_unsigned<uint32_t>;
        case DType::UInt64: return load_unsigned<uint64_t>;
        case DType::Bool: return load_unsigned<bool>;
        case DType::String:
            switch (wide_of(dst)) {  // parse into the form the target needs
                case Wide::Float: return load_string_float;
                case Wide::Signed: return load_string_int<true>;
                case Wide::Unsigned: return load_string_int<false>;
            }
            break;
        default: break;
    }
    return nullptr;
}

template <Wide K>
StoreFn storer(DType dst) {
    switch (dst) {
        case DType::Float32: return store_float<float, K>;
        case DType::Float64: return store_float<double, K>;
        case DType::Float16: return store_half<Eigen::half, K>;
        case DType::BFloat16: return store_half<Eigen::bfloat16, K>;
        case DType::Float8E4M3FN: case DType::Float8E4M3FNUZ: case DType::Float8E5M2: case DType::Float8E5M2FNUZ:
        case DType::Float8E8M0: case DType::Float4E2M1:
            return store_narrow<K>;
        case DType::Int8: return store_int<int8_t, 8, K>;
        case DType::Int16: return store_int<int16_t, 16, K>;
        case DType::Int32: return store_int<int32_t, 32, K>;
        case DType::Int64: return store_int<int64_t, 64, K>;
        case DType::Int4: return store_int<int8_t, 4, K>;
        case DType::Int2: return store_int<int8_t, 2, K>;
        case DType::UInt8: return store_int<uint8_t, 8, K>;
        case DType::UInt16: return store_int<uint16_t, 16, K>;
        case DType::UInt32: return store_int<uint32_t, 32, K>;
        case DType::UInt64: return store_int<uint64_t, 64, K>;
        case DType::UInt4: return store_int<uint8_t, 4, K>;
        case DType::UInt2: return store_int<uint8_t, 2, K>;
        case DType::Bool: return store_bool<K>;
        case DType::String: return store_string<K>;
        default: return nullptr;
    }
}

StoreFn storer(Wide kind, DType dst) {
    switch (kind) {
        case Wide::Float: return storer<Wide::Float>(dst);
        case Wide::Signed: return storer<Wide::Signed>(dst);
        default: return storer<Wide::Unsigned>(dst);
    }
}

// The wide form a source is loaded into (strings: the one the target parses into).
Wide loaded_kind(DType src, DType dst) { return src == DType::String ? wide_of(dst) : wide_of(src); }

struct CastAttributes {
    bool saturate = true;
    E8M0Rounding rounding = E8M0Rounding::Up;
};

CastAttributes parse_cast_attributes(const Node& node) {
    CastAttributes a;
    const int64_t saturate = node.get_attribute<int64_t>("saturate", 1);
    if (saturate != 0 && saturate != 1)
        fail_node(node, "attribute saturate must be 0 or 1, got " + std::to_string(saturate));
    a.saturate = saturate == 1;
    const std::string mode = node.get_attribute<std::string>("round_mode", "up");
    if (mode == "up") a.rounding = E8M0Rounding::Up;
    else if (mode == "down") a.rounding = E8M0Rounding::Down;
    else if (mode == "nearest") a.rounding = E8M0Rounding::Nearest;
    else fail_node(node, "attribute round_mode must be \"up\", \"down\" or \"nearest\", got \"" + mode + "\"");
    return a;
}

DType parse_to(const Node& node) {
    const int64_t to = node.get_attribute<int64_t>("to");
    DType dtype;
    try {
        dtype = dtype_from_onnx(static_cast<int>(to));
    } catch (const ValidationError&) {
        fail_node(node, "attribute to = " + std::to_string(to) + " is not a data type this build supports");
    }
    if (!castable(dtype)) fail_node(node, "casting to " + dtype_to_string(dtype) + " is not supported");
    return dtype;
}

// float32 <-> bfloat16 (the Casts at the edges of a BF16 graph's float32 ops) as plain bit
// arithmetic the compiler vectorizes: bfloat16 is float32's upper half, rounded to nearest even
// (NaN stays a quiet NaN of its sign), exactly as Eigen::bfloat16 converts.
void float_to_bfloat16(const float* in, uint16_t* __restrict out, int64_t begin, int64_t end) {
    const auto* __restrict bits = reinterpret_cast<const uint32_t*>(in);
    for (int64_t i = begin; i < end; ++i) {
        const uint32_t u = bits[i];
        const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        const uint32_t nan = 0x7FC0u | ((u >> 16) & 0x8000u);
        const uint32_t is_nan = 0u - static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);
        out[i] = static_cast<uint16_t>((rounded & ~is_nan) | (nan & is_nan));
    }
}

void bfloat16_to_float(const uint16_t* __restrict in, float* out, int64_t begin, int64_t end) {
    auto* __restrict bits = reinterpret_cast<uint32_t*>(out);
    for (int64_t i = begin; i < end; ++i) bits[i] = static_cast<uint32_t>(in[i]) << 16;
}

class CastKernel final : public NodeKernel {
public:
    CastKernel(const Node& node, bool like)
        : NodeKernel(node), like_(like), to_(like ? DType::Float32 : parse_to(node)), attrs_(parse_cast_attributes(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const DType dst = like_ ? ctx.input(1).dtype() : to_;
        if (!castable(x.dtype()) || !castable(dst))
            fail("casting " + dtype_to_string(x.dtype()) + " to " + dtype_to_string(dst) + " is not supported");
        if (x.dtype() == dst) {
            ctx.outputs[0] = x.clone();
            return;
        }
        const bool to_bf16 = x.dtype() == DType::Float32 && dst == DType::BFloat16;
        if (to_bf16 || (x.dtype() == DType::BFloat16 && dst == DType::Float32)) {
            Tensor y(x.shape(), dst);
            const int64_t n = x.num_elements();
            constexpr int64_t kBlock = 16384;
            const int threads = threads_for_work(static_cast<double>(n), ctx.num_threads);
            parallel_for((n + kBlock - 1) / kBlock, threads, [&](int64_t first, int64_t last) {
                const int64_t begin = first * kBlock, end = std::min(n, last * kBlock);
                if (to_bf16) float_to_bfloat16(x.data_ptr<float>(), static_cast<uint16_t*>(y.data()), begin, end);
                else bfloat16_to_float(static_cast<const uint16_t*>(x.data()), y.data_ptr<float>(), begin, end);
            });
            ctx.outputs[0] = std::move(y);
            return;
        }
        const CastOptions options{node_, x.dtype(), dst, attrs_.saturate, attrs_.rounding};
        const LoadFn load = loader(x.dtype(), dst);
        const StoreFn store = storer(loaded_kind(x.dtype(), dst), dst);
        Tensor y(x.shape(), dst);
        constexpr int64_t kBlock = 256;
        const int64_t n = x.num_elements();
        const int64_t blocks = (n + kBlock - 1) / kBlock;
        const int threads = threads_for_work(static_cast<double>(n) * 8.0, ctx.num_threads);
        parallel_for(blocks, threads, [&](int64_t first, int64_t last) {
            WideValue buffer[kBlock];
            for (int64_t b = first; b < last; ++b) {
                const int64_t begin = b * kBlock, count = std::min(kBlock, n - begin);
                load(x.data(), begin, count, buffer, options);
                store(buffer, begin, count, y.data(), options);
            }
        });
        ctx.outputs[0] = std::move(y);
    }

private:
    bool like_;
    DType to_;
    CastAttributes attrs_;
};

void infer_cast(InferenceContext& ctx, bool like) {
    parse_cast_attributes(ctx.node);
    std::optional<DType> dst;
    if (!like) dst = parse_to(ctx.node);
    else if (ctx.has_input(1)) dst = ctx.input(1).dtype;
    if (dst && !castable(*dst)) fail_node(ctx.node, "casting to " + dtype_to_string(*dst) + " is not supported");
    if (ctx.has_input(0) && !castable(ctx.input(0).dtype))
        fail_node(ctx.node, "casting from " + dtype_to_string(ctx.input(0).dtype) + " is not supported");
    if (dst && ctx.has_input(0)) ctx.set_output(0, *dst, ctx.input(0).shape);
}

}  // namespace

void register_cast_ops(OpTable& table) {
    table.add(OpSchema{"Cast", "", 6, 1, 1, 1, 1, [](InferenceContext& ctx) { infer_cast(ctx, false); },
                       [](const KernelInfo& info) { return std::make_unique<CastKernel>(info.node, false); }});
    table.add(OpSchema{"CastLike", "", 15, 2, 2, 1, 1, [](InferenceContext& ctx) { infer_cast(ctx, true); },
                       [](const KernelInfo& info) { return std::make_unique<CastKernel>(info.node, true); }});
}

}  // namespace pyflame_rt::ops
