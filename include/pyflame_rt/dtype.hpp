#pragma once
// Element types, shapes and the small descriptive structs of the API reference.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace pyflame_rt {

// The reference's ten codes never change; new types are appended after Bool.
enum class DType : uint8_t {
    Float32 = 0,
    Float16 = 1,
    BFloat16 = 2,
    Float64 = 3,
    Int64 = 4,
    Int32 = 5,
    Int16 = 6,
    Int8 = 7,
    UInt8 = 8,
    Bool = 9,
    // Appended for ONNX coverage. Sub-byte types are held unpacked, one element per byte.
    UInt16 = 10,
    UInt32 = 11,
    UInt64 = 12,
    String = 13,          // elements are std::string
    Complex64 = 14,       // std::complex<float>
    Complex128 = 15,      // std::complex<double>
    Float8E4M3FN = 16,
    Float8E4M3FNUZ = 17,
    Float8E5M2 = 18,
    Float8E5M2FNUZ = 19,
    UInt4 = 20,
    Int4 = 21,
    Float4E2M1 = 22,
    Float8E8M0 = 23,
    UInt2 = 24,
    Int2 = 25,
};

inline constexpr int kNumDTypes = 26;

size_t dtype_size(DType dtype);
std::string dtype_to_string(DType dtype);           // "Float32"
DType string_to_dtype(const std::string& str);      // accepts "Float32", "float32", "float"; throws ValidationError
std::string dtype_to_onnx_type(DType dtype);        // "float", "int64", ... as in "tensor(float)"
bool is_valid_dtype_code(int code);
bool is_float_dtype(DType dtype);    // Float32/16/64, BFloat16 and the Float8/Float4 types
bool is_integer_dtype(DType dtype);  // signed and unsigned, sub-byte included; not Bool
// ONNX TensorProto.DataType code <-> DType; ValidationError for types without a DType.
DType dtype_from_onnx(int onnx_type);
int dtype_to_onnx(DType dtype);

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::Int16; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::Int8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::UInt16; };
template <> struct dtype_of<uint32_t> { static constexpr DType value = DType::UInt32; };
template <> struct dtype_of<uint64_t> { static constexpr DType value = DType::UInt64; };
template <> struct dtype_of<std::string> { static constexpr DType value = DType::String; };

// A dimension is either known (a value) or dynamic (nullopt).
using Shape = std::vector<std::optional<int64_t>>;

std::string shape_to_string(const Shape& shape);                  // "[?, 3, 224, 224]"
std::string shape_to_string(const std::vector<int64_t>& shape);   // "[1, 3, 224, 224]"
Shape to_shape(const std::vector<int64_t>& dims);
bool is_static(const Shape& shape);

// What kind of value a graph input/output holds; dtype and shape describe its tensors.
enum class ValueKind : uint8_t { Tensor, Sequence, OptionalTensor, OptionalSequence };

struct TensorInfo {
    std::string name;
    DType dtype = DType::Float32;
    Shape shape;
    bool rank_known = true;  // false: nothing is known of the shape (then `shape` is empty)
    ValueKind kind = ValueKind::Tensor;
};

struct NodeArg {
    std::string name;
    DType dtype = DType::Float32;
    Shape shape;
    bool rank_known = true;
    ValueKind kind = ValueKind::Tensor;

    std::string type_str() const;  // "tensor(float)", "seq(tensor(float))", "optional(tensor(float))"
};

struct ModelMetadata {
    std::string producer_name;
    std::string producer_version;
    std::string domain;
    int64_t model_version = 0;
    std::string doc_string;
    std::unordered_map<std::string, std::string> custom_metadata;
};

}  // namespace pyflame_rt
