#pragma once
// Float16 (IEEE 754 binary16) and BFloat16 (the upper half of a binary32): storage types with
// round-to-nearest-even conversion from float. Arithmetic computes in float and rounds back once:
// that is correctly rounded IEEE arithmetic for + - * / because float's 24-bit significand is at
// least 2p+2 bits for both formats (p = 11 and 8), so the double rounding is innocuous.
#include <cstdint>

namespace pyflame_rt::quantization {

struct Float16 {
    uint16_t bits = 0;

    static Float16 from_float(float value);
    static Float16 from_bits(uint16_t bits) { return Float16{bits}; }
    float to_float() const;

    bool is_nan() const { return (bits & 0x7C00u) == 0x7C00u && (bits & 0x03FFu) != 0; }
    bool is_inf() const { return (bits & 0x7FFFu) == 0x7C00u; }
    bool is_zero() const { return (bits & 0x7FFFu) == 0; }

    Float16 operator+(Float16 other) const { return from_float(to_float() + other.to_float()); }
    Float16 operator-(Float16 other) const { return from_float(to_float() - other.to_float()); }
    Float16 operator*(Float16 other) const { return from_float(to_float() * other.to_float()); }
    Float16 operator/(Float16 other) const { return from_float(to_float() / other.to_float()); }
    Float16 operator-() const { return from_bits(static_cast<uint16_t>(bits ^ 0x8000u)); }

    // IEEE comparison: NaN compares unequal to everything, +0 == -0.
    bool operator==(Float16 other) const { return to_float() == other.to_float(); }
    bool operator!=(Float16 other) const { return !(*this == other); }
    bool operator<(Float16 other) const { return to_float() < other.to_float(); }
    bool operator<=(Float16 other) const { return to_float() <= other.to_float(); }
    bool operator>(Float16 other) const { return to_float() > other.to_float(); }
    bool operator>=(Float16 other) const { return to_float() >= other.to_float(); }
};

struct BFloat16 {
    uint16_t bits = 0;

    static BFloat16 from_float(float value);
    static BFloat16 from_bits(uint16_t bits) { return BFloat16{bits}; }
    float to_float() const;

    bool is_nan() const { return (bits & 0x7F80u) == 0x7F80u && (bits & 0x007Fu) != 0; }
    bool is_inf() const { return (bits & 0x7FFFu) == 0x7F80u; }
    bool is_zero() const { return (bits & 0x7FFFu) == 0; }

    BFloat16 operator+(BFloat16 other) const { return from_float(to_float() + other.to_float()); }
    BFloat16 operator-(BFloat16 other) const { return from_float(to_float() - other.to_float()); }
    BFloat16 operator*(BFloat16 other) const { return from_float(to_float() * other.to_float()); }
    BFloat16 operator/(BFloat16 other) const { return from_float(to_float() / other.to_float()); }
    BFloat16 operator-() const { return from_bits(static_cast<uint16_t>(bits ^ 0x8000u)); }

    bool operator==(BFloat16 other) const { return to_float() == other.to_float(); }
    bool operator!=(BFloat16 other) const { return !(*this == other); }
    bool operator<(BFloat16 other) const { return to_float() < other.to_float(); }
    bool operator<=(BFloat16 other) const { return to_float() <= other.to_float(); }
    bool operator>(BFloat16 other) const { return to_float() > other.to_float(); }
    bool operator>=(BFloat16 other) const { return to_float() >= other.to_float(); }
};

}  // namespace pyflame_rt::quantization
