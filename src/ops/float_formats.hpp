#pragma once
// Bit-exact conversions between real numbers and ONNX's narrow float formats, held one element
// per byte: float8 E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0 and float4 E2M1. Encoding rounds to
// nearest even (E8M0: by `round_mode`) and follows the saturate tables of ONNX's Cast; results
// match ml_dtypes (the ONNX reference) bit for bit. Defined in cast.cpp.
#include <cstdint>

#include "pyflame_rt/dtype.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::ops {

// Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ (not E8M0: it has no sign or
// mantissa and its own rounding modes).
bool is_float8_dtype(DType dtype);
// Any float format without a C++ arithmetic type here: the float8s, E8M0 and Float4E2M1.
bool is_narrow_float_dtype(DType dtype);

// x -> float8 `format` (one of is_float8_dtype). saturate: out-of-range values and infinities
// become +-max finite; otherwise they become inf (E5M2) or NaN. NaN stays NaN. Taking a double
// makes float64 sources round once (float32 and float16 values convert exactly).
uint8_t float_to_float8(double x, DType format, bool saturate = true);
float float8_to_float(uint8_t bits, DType format);

// Float4E2M1 has no inf or NaN: out of range saturates to +-6; NaN gives 0x8 (as ml_dtypes).
uint8_t float_to_float4e2m1(double x);
float float4e2m1_to_float(uint8_t bits);

// Float8E8M0 (a power of two 2^(bits-127), 0xFF = NaN), as the ONNX reference computes it
// from the float32 bits: Up rounds any fraction up, Down drops it, Nearest rounds on the
// first fraction bit. saturate keeps the largest finite value instead of overflowing to NaN.
enum class E8M0Rounding { Up, Down, Nearest };
uint8_t float_to_float8e8m0(float x, bool saturate = true, E8M0Rounding rounding = E8M0Rounding::Up);
float float8e8m0_to_float(uint8_t bits);

// Dispatch by dtype over the narrow float formats (is_narrow_float_dtype). `saturate` applies
// to the float8s and E8M0 only; E8M0 rounds up.
uint8_t float_to_narrow(double x, DType format, bool saturate = true);
float narrow_to_float(uint8_t bits, DType format);

// A Float32 tensor holding the values of a narrow float tensor.
Tensor decode_narrow_to_float32(const Tensor& t);

}  // namespace pyflame_rt::ops
