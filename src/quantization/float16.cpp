#include "pyflame_rt/quantization/float16.hpp"

#include <cstring>

namespace pyflame_rt::quantization {
namespace {

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
}

}  // namespace

Float16 Float16::from_float(float value) {
    const uint32_t f = bits_of(value);
    const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
    const uint32_t abs = f & 0x7FFFFFFFu;
    if (abs >= 0x7F800000u) {  // Inf or NaN: NaN keeps its top payload bits and stays quiet
        if (abs == 0x7F800000u) return from_bits(sign | 0x7C00u);
        return from_bits(static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x03FFu)));
    }
    // Smallest float that rounds to half infinity: 65520 (halfway between 65504 and 65536).
    if (abs >= 0x477FF000u) return from_bits(sign | 0x7C00u);
    const int32_t exponent = static_cast<int32_t>(abs >> 23) - 127;
    if (exponent >= -14) {  // normal half: drop 13 mantissa bits, rounding to nearest even
        uint32_t h = ((static_cast<uint32_t>(exponent + 15)) << 10) | ((abs >> 13) & 0x03FFu);
        const uint32_t rest = abs & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may bump the exponent: still correct
        return from_bits(static_cast<uint16_t>(sign | h));
    }
    // Subnormal half (or zero): value = m * 2^-24 with m = round(|x| * 2^24).
    if (exponent < -25) return from_bits(sign);  // below half the smallest subnormal: rounds to 0
    const uint32_t mantissa = (abs & 0x007FFFFFu) | 0x00800000u;  // 24-bit significand, value = mantissa * 2^(exponent-23)
    const int shift = -exponent - 1;  // mantissa * 2^(exponent-23) / 2^-24 = mantissa >> (-1 - exponent)
    uint32_t m = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) ++m;  // may become the smallest normal: correct
    return from_bits(static_cast<uint16_t>(sign | m));
}

float Float16::to_float() const {
    const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    const uint32_t exponent = (bits >> 10) & 0x1Fu;
    const uint32_t mantissa = bits & 0x03FFu;
    if (exponent == 0x1Fu) return float_of(sign | 0x7F800000u | (mantissa << 13));
    if (exponent != 0) return float_of(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    // Subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * float_of(0x33800000u);  // 2^-24
    return sign ? -magnitude : magnitude;
}

BFloat16 BFloat16::from_float(float value) {
    const uint32_t f = bits_of(value);
    if ((f & 0x7FFFFFFFu) > 0x7F800000u)  // NaN: keep the top payload bits, force quiet
        return from_bits(static_cast<uint16_t>((f >> 16) | 0x0040u));
    // Round to nearest even on the low 16 bits; overflow carries into the exponent (to Inf).
    const uint32_t rounded = f + 0x7FFFu + ((f >> 16) & 1u);
    return from_bits(static_cast<uint16_t>(rounded >> 16));
}

float BFloat16::to_float() const { return float_of(static_cast<uint32_t>(bits) << 16); }

}  // namespace pyflame_rt::quantization
