#include "pyflame_rt/dtype.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {
namespace {

enum Kind { kFloat, kSigned, kUnsigned, kOther };

struct DTypeRow {
    DType dtype;
    size_t size;
    const char* name;       // reference name
    const char* onnx_name;  // as in "tensor(float)"
    const char* numpy_name; // numpy / ml_dtypes name
    int onnx_code;          // TensorProto.DataType
    Kind kind;
};

// Indexed by DType code.
const DTypeRow kRows[] = {
    {DType::Float32, 4, "Float32", "float", "float32", 1, kFloat},
    {DType::Float16, 2, "Float16", "float16", "float16", 10, kFloat},
    {DType::BFloat16, 2, "BFloat16", "bfloat16", "bfloat16", 16, kFloat},
    {DType::Float64, 8, "Float64", "double", "float64", 11, kFloat},
    {DType::Int64, 8, "Int64", "int64", "int64", 7, kSigned},
    {DType::Int32, 4, "Int32", "int32", "int32", 6, kSigned},
    {DType::Int16, 2, "Int16", "int16", "int16", 5, kSigned},
    {DType::Int8, 1, "Int8", "int8", "int8", 3, kSigned},
    {DType::UInt8, 1, "UInt8", "uint8", "uint8", 2, kUnsigned},
    {DType::Bool, 1, "Bool", "bool", "bool", 9, kOther},
    {DType::UInt16, 2, "UInt16", "uint16", "uint16", 4, kUnsigned},
    {DType::UInt32, 4, "UInt32", "uint32", "uint32", 12, kUnsigned},
    {DType::UInt64, 8, "UInt64", "uint64", "uint64", 13, kUnsigned},
    {DType::String, sizeof(std::string), "String", "string", "str", 8, kOther},
    {DType::Complex64, 8, "Complex64", "complex64", "complex64", 14, kOther},
    {DType::Complex128, 16, "Complex128", "complex128", "complex128", 15, kOther},
    {DType::Float8E4M3FN, 1, "Float8E4M3FN", "float8e4m3fn", "float8_e4m3fn", 17, kFloat},
    {DType::Float8E4M3FNUZ, 1, "Float8E4M3FNUZ", "float8e4m3fnuz", "float8_e4m3fnuz", 18, kFloat},
    {DType::Float8E5M2, 1, "Float8E5M2", "float8e5m2", "float8_e5m2", 19, kFloat},
    {DType::Float8E5M2FNUZ, 1, "Float8E5M2FNUZ", "float8e5m2fnuz", "float8_e5m2fnuz", 20, kFloat},
    {DType::UInt4, 1, "UInt4", "uint4", "uint4", 21, kUnsigned},
    {DType::Int4, 1, "Int4", "int4", "int4", 22, kSigned},
    {DType::Float4E2M1, 1, "Float4E2M1", "float4e2m1", "float4_e2m1fn", 23, kFloat},
    {DType::Float8E8M0, 1, "Float8E8M0", "float8e8m0", "float8_e8m0fnu", 24, kFloat},
    {DType::UInt2, 1, "UInt2", "uint2", "uint2", 25, kUnsigned},
    {DType::Int2, 1, "Int2", "int2", "int2", 26, kSigned},
};
static_assert(sizeof(kRows) / sizeof(kRows[0]) == kNumDTypes, "one row per DType");

const DTypeRow& row(DType dtype) {
    const auto code = static_cast<int>(dtype);
    if (!is_valid_dtype_code(code)) throw ValidationError("invalid dtype code " + std::to_string(code));
    return kRows[code];
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

}  // namespace

bool is_valid_dtype_code(int code) { return code >= 0 && code < kNumDTypes; }
bool is_float_dtype(DType dtype) { return row(dtype).kind == kFloat; }
bool is_integer_dtype(DType dtype) { return row(dtype).kind == kSigned || row(dtype).kind == kUnsigned; }

DType dtype_from_onnx(int onnx_type) {
    for (const auto& r : kRows)
        if (r.onnx_code == onnx_type) return r.dtype;
    throw ValidationError("ONNX element type " + std::to_string(onnx_type) + " has no PyFlameRT dtype");
}

int dtype_to_onnx(DType dtype) { return row(dtype).onnx_code; }
size_t dtype_size(DType dtype) { return row(dtype).size; }
std::string dtype_to_string(DType dtype) { return row(dtype).name; }
std::string dtype_to_onnx_type(DType dtype) { return row(dtype).onnx_name; }

DType string_to_dtype(const std::string& str) {
    const std::string key = lower(str);
    for (const auto& r : kRows) {
        if (key == lower(r.name) || key == r.onnx_name || key == r.numpy_name) return r.dtype;
    }
    throw ValidationError("unknown dtype '" + str + "'");
}

std::string shape_to_string(const Shape& shape) {
    std::ostringstream out;
    out << "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) out << ", ";
        if (shape[i]) out << *shape[i]; else out << "?";
    }
    out << "]";
    return out.str();
}

std::string shape_to_string(const std::vector<int64_t>& shape) { return shape_to_string(to_shape(shape)); }

Shape to_shape(const std::vector<int64_t>& dims) { return Shape(dims.begin(), dims.end()); }

bool is_static(const Shape& shape) {
    return std::all_of(shape.begin(), shape.end(), [](const auto& d) { return d.has_value(); });
}

std::string NodeArg::type_str() const {
    const std::string tensor = "tensor(" + dtype_to_onnx_type(dtype) + ")";
    switch (kind) {
        case ValueKind::Sequence: return "seq(" + tensor + ")";
        case ValueKind::OptionalTensor: return "optional(" + tensor + ")";
        case ValueKind::OptionalSequence: return "optional(seq(" + tensor + "))";
        default: return tensor;
    }
}

}  // namespace pyflame_rt
