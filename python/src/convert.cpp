// Conversions shared by the binding files: numpy <-> Tensor, dtypes, shapes, attributes, paths.
#include <cstring>
#include <memory>
#include <typeinfo>
#include <variant>

#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt::python {

namespace {

using npy = py::detail::npy_api;

py::module_ numpy() { return py::module_::import("numpy"); }

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Python int-like: int, bool, numpy integer and numpy bool scalars.
bool is_int_like(py::handle obj, const py::module_& np) {
    return PyLong_Check(obj.ptr()) || py::isinstance(obj, np.attr("integer")) ||
           py::isinstance(obj, np.attr("bool_"));
}

// Python float-like: float (numpy float64 is one) and numpy floating scalars.
bool is_float_like(py::handle obj, const py::module_& np) {
    return PyFloat_Check(obj.ptr()) || py::isinstance(obj, np.attr("floating"));
}

int64_t index_value(py::handle obj) {
    PyObject* idx = PyNumber_Index(obj.ptr());
    if (!idx) throw py::error_already_set();
    return py::reinterpret_steal<py::int_>(idx).cast<int64_t>();
}

py::str utf8_or_bytes_str(const std::string& s) {
    PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
    if (!u) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(u);
}

}  // namespace

bool python_alive() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsInitialized() && !Py_IsFinalizing();
#else
    return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// ---------------------------------------------------------------- dtypes

// Types numpy lacks come from ml_dtypes (the package numpy's ML ecosystem uses for them).
py::dtype ml_dtype(const char* name) {
    try {
        return py::dtype::from_args(py::module_::import("ml_dtypes").attr(name));
    } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_ImportError) && !e.matches(PyExc_AttributeError)) throw;
        throw ValidationError(std::string("tensors of type ") + name + " need the ml_dtypes package (pip install ml_dtypes)");
    }
}

py::dtype numpy_dtype(DType dtype) {
    switch (dtype) {
        case DType::Float32: return py::dtype::of<float>();
        case DType::Float16: return py::dtype("float16");
        case DType::Float64: return py::dtype::of<double>();
        case DType::Int64: return py::dtype::of<int64_t>();
        case DType::Int32: return py::dtype::of<int32_t>();
        case DType::Int16: return py::dtype::of<int16_t>();
        case DType::Int8: return py::dtype::of<int8_t>();
        case DType::UInt8: return py::dtype::of<uint8_t>();
        case DType::Bool: return py::dtype::of<bool>();
        case DType::UInt16: return py::dtype::of<uint16_t>();
        case DType::UInt32: return py::dtype::of<uint32_t>();
        case DType::UInt64: return py::dtype::of<uint64_t>();
        case DType::Complex64: return py::dtype("complex64");
        case DType::Complex128: return py::dtype("complex128");
        case DType::String: return py::dtype("O");
        case DType::BFloat16: return ml_dtype("bfloat16");
        case DType::Float8E4M3FN: return ml_dtype("float8_e4m3fn");
        case DType::Float8E4M3FNUZ: return ml_dtype("float8_e4m3fnuz");
        case DType::Float8E5M2: return ml_dtype("float8_e5m2");
        case DType::Float8E5M2FNUZ: return ml_dtype("float8_e5m2fnuz");
        case DType::UInt4: return ml_dtype("uint4");
        case DType::Int4: return ml_dtype("int4");
        case DType::Float4E2M1: return ml_dtype("float4_e2m1fn");
        case DType::Float8E8M0: return ml_dtype("float8_e8m0fnu");
        case DType::UInt2: return ml_dtype("uint2");
        case DType::Int2: return ml_dtype("int2");
    }
    throw ValidationError("invalid dtype code " + std::to_string(static_cast<int>(dtype)));
}

DType dtype_from_numpy(const py::dtype& dt) {
    const auto size = dt.itemsize();
    switch (dt.kind()) {
        case 'f':
            if (size == 4) return DType::Float32;
            if (size == 8) return DType::Float64;
            if (size == 2) return DType::Float16;
            break;
        case 'i':
            if (size == 8) return DType::Int64;
            if (size == 4) return DType::Int32;
            if (size == 2) return DType::Int16;
            if (size == 1) return DType::Int8;
            break;
        case 'u':
            if (size == 1) return DType::UInt8;
            if (size == 2) return DType::UInt16;
            if (size == 4) return DType::UInt32;
            if (size == 8) return DType::UInt64;
            break;
        case 'b':
            return DType::Bool;
        case 'c':
            if (size == 8) return DType::Complex64;
            if (size == 16) return DType::Complex128;
            break;
        case 'O':
        case 'U':
        case 'S':
            return DType::String;
        default:
            break;
    }
    // ml_dtypes types (kind 'V'): matched by name.
    static const std::pair<const char*, DType> kMlDtypes[] = {
        {"bfloat16", DType::BFloat16},         {"float8_e4m3fn", DType::Float8E4M3FN},
        {"float8_e4m3fnuz", DType::Float8E4M3FNUZ}, {"float8_e5m2", DType::Float8E5M2},
        {"float8_e5m2fnuz", DType::Float8E5M2FNUZ}, {"uint4", DType::UInt4},
        {"int4", DType::Int4},                 {"float4_e2m1fn", DType::Float4E2M1},
        {"float8_e8m0fnu", DType::Float8E8M0}, {"uint2", DType::UInt2},
        {"int2", DType::Int2}};
    const std::string name = py::str(dt.attr("name"));
    for (const auto& [ml_name, dtype] : kMlDtypes)
        if (name == ml_name) return dtype;
    throw ValidationError("unsupported numpy dtype '" + name +
                          "' (supported: float16/32/64, int8/16/32/64, uint8/16/32/64, bool, complex64/128, "
                          "str/bytes/object (strings), and ml_dtypes' bfloat16, float8, float4, int4, uint4, int2, uint2)");
}

DType dtype_from_py(py::handle obj) {
    try {
        return obj.cast<DType>();
    } catch (const py::cast_error&) {
    }
    if (py::isinstance<py::str>(obj)) return string_to_dtype(obj.cast<std::string>());
    py::dtype dt = py::reinterpret_steal<py::dtype>(PyObject_CallOneArg(numpy().attr("dtype").ptr(), obj.ptr()));
    if (!dt) throw py::error_already_set();
    return dtype_from_numpy(dt);
}

// ---------------------------------------------------------------- arrays and tensors

py::array as_c_array(py::handle obj) {
    py::array arr = py::isinstance<py::array>(obj) ? py::reinterpret_borrow<py::array>(obj)
                                                    : py::array(numpy().attr("asarray")(obj));
    const py::dtype dt = arr.dtype();
    const bool native = dt.attr("isnative").cast<bool>();
    const int flags = arr.flags();
    if (native && (flags & npy::NPY_ARRAY_C_CONTIGUOUS_) && (flags & npy::NPY_ARRAY_ALIGNED_)) return arr;
    // Same dtype (native byte order): a copy, never a cast.
    py::object target = native ? py::object(dt) : dt.attr("newbyteorder")("=");
    return py::array(numpy().attr("require")(arr, target, py::make_tuple("C", "A")));
}

// ml_dtypes keeps only the low 4 (2) bits meaningful; our Int4/Int2 bytes are sign-extended
// and UInt4/UInt2 bytes zero-extended, so every kernel may read them as plain int8/uint8.
void normalize_sub_byte(Tensor& t) {
    const bool four = t.dtype() == DType::Int4 || t.dtype() == DType::UInt4;
    const bool sign = t.dtype() == DType::Int4 || t.dtype() == DType::Int2;
    const uint8_t mask = four ? 0x0F : 0x03, top = four ? 0x08 : 0x02;
    auto* p = t.data_ptr<uint8_t>();
    for (int64_t i = 0; i < t.num_elements(); ++i) {
        uint8_t v = p[i] & mask;
        if (sign && (v & top)) v |= static_cast<uint8_t>(~mask);
        p[i] = v;
    }
}

// Each element: str (stored as UTF-8) or bytes (stored as is).
Tensor string_tensor_from_array(const py::array& arr, const std::vector<int64_t>& shape) {
    Tensor t(shape, DType::String);
    py::list flat = numpy().attr("ravel")(arr).attr("tolist")();
    auto* out = t.data_ptr<std::string>();
    size_t i = 0;
    for (py::handle item : flat) {
        if (PyBytes_Check(item.ptr())) out[i++] = item.cast<std::string>();
        else if (PyUnicode_Check(item.ptr())) out[i++] = item.cast<std::string>();
        else throw ValidationError("string tensor element " + std::to_string(i) + " is " + type_name(item) + ", not str or bytes");
    }
    return t;
}

Tensor tensor_from_py(py::handle obj, bool copy, std::vector<py::object>* keep_alive) {
    if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
    py::array arr = as_c_array(obj);
    const DType dtype = dtype_from_numpy(arr.dtype());
    std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
    if (dtype == DType::String) return string_tensor_from_array(arr, shape);
    const bool sub_byte = dtype == DType::Int4 || dtype == DType::UInt4 || dtype == DType::Int2 || dtype == DType::UInt2;
    if (copy || keep_alive == nullptr || sub_byte) {
        Tensor t(shape, dtype);
        const auto bytes = static_cast<size_t>(arr.nbytes());
        if (bytes) std::memcpy(t.data(), arr.data(), bytes);
        if (sub_byte) normalize_sub_byte(t);
        return t;
    }
    keep_alive->push_back(arr);
    return Tensor(const_cast<void*>(arr.data()), shape, dtype);
}

py::array tensor_to_numpy(const Tensor& tensor, bool copy) {
    if (!tensor.is_plain()) return tensor_to_numpy(tensor.plain(), true);  // a backend layout: row-major copy
    py::dtype dt = numpy_dtype(tensor.dtype());
    std::vector<py::ssize_t> shape(tensor.shape().begin(), tensor.shape().end());
    if (tensor.dtype() == DType::String) {  // an object array of str, as onnx and onnxruntime give
        py::list items;
        for (int64_t i = 0; i < tensor.num_elements(); ++i) items.append(utf8_or_bytes_str(tensor.data_ptr<std::string>()[i]));
        return py::array(numpy().attr("array")(items, py::dtype("O")).attr("reshape")(py::tuple(py::cast(shape))));
    }
    const size_t bytes = tensor.size_bytes();
    if (bytes != 0 && tensor.data() == nullptr) throw PyFlameRTError("tensor has no data");
    if (copy || !tensor.owns_data() || bytes == 0) {
        py::array out(dt, shape);
        if (bytes) std::memcpy(out.mutable_data(), tensor.data(), bytes);
        return out;
    }
    auto keep = std::make_unique<Tensor>(tensor);  // shares the storage
    py::capsule base(keep.get(), [](void* p) { delete static_cast<Tensor*>(p); });
    keep.release();
    return py::array(dt, shape, tensor.data(), base);
}

// ---------------------------------------------------------------- shapes

py::list shape_to_py(const Shape& shape) {
    py::list out;
    for (const auto& d : shape) {
        if (d) out.append(py::int_(*d)); else out.append(py::none());
    }
    return out;
}

Shape shape_from_py(py::handle obj) {
    Shape shape;
    if (obj.is_none()) return shape;
    if (py::isinstance<py::str>(obj) || !py::isinstance<py::iterable>(obj))
        throw py::type_error("shape must be a list of int/None, not " + type_name(obj));
    for (py::handle d : py::reinterpret_borrow<py::iterable>(obj)) {
        if (d.is_none() || py::isinstance<py::str>(d)) {
            shape.emplace_back(std::nullopt);
            continue;
        }
        if (PyFloat_Check(d.ptr())) throw py::type_error("shape dimensions must be int or None, not float");
        const int64_t v = index_value(d);
        if (v < 0) shape.emplace_back(std::nullopt); else shape.emplace_back(v);
    }
    return shape;
}

// ---------------------------------------------------------------- attributes

AttributeValue attribute_from_py(py::handle obj) {
    py::module_ np = numpy();
    if (is_int_like(obj, np)) return index_value(obj);
    if (is_float_like(obj, np)) return obj.cast<double>();
    if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
    if (py::isinstance<py::bytes>(obj)) return std::string(obj.cast<py::bytes>());
    if (py::isinstance<Graph>(obj)) return obj.cast<std::shared_ptr<Graph>>();
    if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
    if (py::isinstance<py::array>(obj)) return tensor_from_py(obj, /*copy=*/true);
    if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
        bool all_int = true, all_num = true, all_str = true;
        for (py::handle e : obj) {
            const bool i = is_int_like(e, np);
            const bool f = is_float_like(e, np);
            const bool s = py::isinstance<py::str>(e);
            all_int &= i;
            all_num &= i || f;
            all_str &= s;
        }
        if (all_int) {  // also the empty list
            std::vector<int64_t> v;
            for (py::handle e : obj) v.push_back(index_value(e));
            return v;
        }
        if (all_num) {
            std::vector<double> v;
            for (py::handle e : obj) v.push_back(e.cast<double>());
            return v;
        }
        if (all_str) return obj.cast<std::vector<std::string>>();
        throw ValidationError("attribute list must hold only ints, only numbers or only strings");
    }
    throw ValidationError("unsupported attribute value of type '" + type_name(obj) +
                          "' (int, float, str, list of those, numpy array, Tensor or Graph)");
}

py::object attribute_to_py(const AttributeValue& value) {
    return std::visit(
        [](const auto& v) -> py::object {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) {
                return utf8_or_bytes_str(v);
            } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
                py::list out;
                for (const auto& s : v) out.append(utf8_or_bytes_str(s));
                return out;
            } else if constexpr (std::is_same_v<T, Tensor>) {
                return tensor_to_numpy(v, /*copy=*/true);
            } else if constexpr (std::is_same_v<T, std::shared_ptr<Graph>>) {
                return v ? py::cast(v) : py::none();
            } else {
                return py::cast(v);
            }
        },
        value);
}

py::object any_to_py(const std::any& value) {
    if (!value.has_value()) return py::none();
    const std::type_info& t = value.type();
    if (t == typeid(AttributeValue)) return attribute_to_py(std::any_cast<const AttributeValue&>(value));
    if (t == typeid(int64_t)) return py::int_(std::any_cast<int64_t>(value));
    if (t == typeid(long long)) return py::int_(std::any_cast<long long>(value));
    if (t == typeid(long)) return py::int_(std::any_cast<long>(value));
    if (t == typeid(int)) return py::int_(std::any_cast<int>(value));
    if (t == typeid(bool)) return py::int_(std::any_cast<bool>(value) ? 1 : 0);
    if (t == typeid(double)) return py::float_(std::any_cast<double>(value));
    if (t == typeid(float)) return py::float_(std::any_cast<float>(value));
    if (t == typeid(std::string)) return attribute_to_py(AttributeValue(std::any_cast<const std::string&>(value)));
    if (t == typeid(const char*)) return py::str(std::any_cast<const char*>(value));
    if (t == typeid(std::vector<int64_t>)) return py::cast(std::any_cast<const std::vector<int64_t>&>(value));
    if (t == typeid(std::vector<int>)) return py::cast(std::any_cast<const std::vector<int>&>(value));
    if (t == typeid(std::vector<double>)) return py::cast(std::any_cast<const std::vector<double>&>(value));
    if (t == typeid(std::vector<float>)) return py::cast(std::any_cast<const std::vector<float>&>(value));
    if (t == typeid(std::vector<std::string>))
        return attribute_to_py(AttributeValue(std::any_cast<const std::vector<std::string>&>(value)));
    if (t == typeid(Tensor)) return tensor_to_numpy(std::any_cast<const Tensor&>(value), /*copy=*/true);
    if (t == typeid(std::shared_ptr<Graph>)) {
        const auto& g = std::any_cast<const std::shared_ptr<Graph>&>(value);
        return g ? py::cast(g) : py::none();
    }
    return py::none();
}

// ---------------------------------------------------------------- paths

std::string path_from_py(py::handle obj) {
    if (py::isinstance<py::str>(obj)) return obj.cast<std::string>();
    return py::module_::import("os").attr("fsdecode")(obj).cast<std::string>();
}

}  // namespace pyflame_rt::python
