#include "pyflame_rt/dtype.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {
namespace {

struct DTypeRow {
    DType dtype;
    size_t size;
    const char* name;       // reference name
    const char* onnx_name;  // as in "tensor(float)"
    const char* numpy_name;
};

constexpr DTypeRow kRows[] = {
    {DType::Float32, 4, "Float32", "float", "float32"},
    {DType::Float16, 2, "Float16", "float16", "float16"},
    {DType::BFloat16, 2, "BFloat16", "bfloat16", "bfloat16"},
    {DType::Float64, 8, "Float64", "double", "float64"},
    {DType::Int64, 8, "Int64", "int64", "int64"},
    {DType::Int32, 4, "Int32", "int32", "int32"},
    {DType::Int16, 2, "Int16", "int16", "int16"},
    {DType::Int8, 1, "Int8", "int8", "int8"},
    {DType::UInt8, 1, "UInt8", "uint8", "uint8"},
    {DType::Bool, 1, "Bool", "bool", "bool"},
};

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

std::string NodeArg::type_str() const { return "tensor(" + dtype_to_onnx_type(dtype) + ")"; }

}  // namespace pyflame_rt
