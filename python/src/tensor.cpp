// DType, Tensor, TensorInfo, NodeArg, ModelMetadata, from_numpy, to_numpy.
#include <pybind11/native_enum.h>

#include <sstream>

#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::python {

namespace {

std::string dtype_repr(DType d) { return "DType." + dtype_to_string(d); }

std::string py_repr(py::handle obj) { return py::repr(obj).cast<std::string>(); }

std::vector<int64_t> dims_from_py(py::handle obj) {
    if (py::isinstance<py::str>(obj) || !py::isinstance<py::iterable>(obj))
        throw py::type_error("shape must be a list of ints");
    std::vector<int64_t> dims;
    for (py::handle d : py::reinterpret_borrow<py::iterable>(obj)) {
        PyObject* idx = PyNumber_Index(d.ptr());
        if (!idx) throw py::error_already_set();
        dims.push_back(py::reinterpret_steal<py::int_>(idx).cast<int64_t>());
    }
    return dims;
}

}  // namespace

void init_tensor(py::module_& m) {
    py::native_enum<DType>(m, "DType", "enum.Enum", "Element type of a tensor (values as in the API reference).")
        .value("Float32", DType::Float32)
        .value("Float16", DType::Float16)
        .value("BFloat16", DType::BFloat16)
        .value("Float64", DType::Float64)
        .value("Int64", DType::Int64)
        .value("Int32", DType::Int32)
        .value("Int16", DType::Int16)
        .value("Int8", DType::Int8)
        .value("UInt8", DType::UInt8)
        .value("Bool", DType::Bool)
        .value("UInt16", DType::UInt16)
        .value("UInt32", DType::UInt32)
        .value("UInt64", DType::UInt64)
        .value("String", DType::String)
        .value("Complex64", DType::Complex64)
        .value("Complex128", DType::Complex128)
        .value("Float8E4M3FN", DType::Float8E4M3FN)
        .value("Float8E4M3FNUZ", DType::Float8E4M3FNUZ)
        .value("Float8E5M2", DType::Float8E5M2)
        .value("Float8E5M2FNUZ", DType::Float8E5M2FNUZ)
        .value("UInt4", DType::UInt4)
        .value("Int4", DType::Int4)
        .value("Float4E2M1", DType::Float4E2M1)
        .value("Float8E8M0", DType::Float8E8M0)
        .value("UInt2", DType::UInt2)
        .value("Int2", DType::Int2)
        .finalize();

    m.def("dtype_size", [](py::handle d) { return dtype_size(dtype_from_py(d)); }, py::arg("dtype"),
          "Size in bytes of one element of `dtype`.");
    m.def("numpy_dtype", [](py::handle d) { return numpy_dtype(dtype_from_py(d)); }, py::arg("dtype"),
          "The numpy dtype of a DType (BFloat16 needs ml_dtypes).");
    m.def("dtype_from_numpy", [](py::handle d) { return dtype_from_py(d); }, py::arg("dtype"),
          "The DType of a numpy dtype (or dtype name); ValidationError when unsupported.");

    // ---- Tensor ----
    py::class_<Tensor>(m, "Tensor", "Multi-dimensional array: a shape, a dtype and ref-counted storage.")
        .def(py::init([](py::handle array) {
                 if (py::isinstance<Tensor>(array)) return array.cast<const Tensor&>().clone();
                 return tensor_from_py(array, /*copy=*/true);
             }),
             py::arg("array"), "An owning Tensor holding a copy of `array` (anything np.asarray accepts).")
        .def_static(
            "zeros", [](py::handle shape, py::handle dtype) { return Tensor::zeros(dims_from_py(shape), dtype_from_py(dtype)); },
            py::arg("shape"), py::arg("dtype") = DType::Float32, "A zero-filled owning Tensor.")
        .def_property_readonly("shape", [](const Tensor& t) { return t.shape(); })
        .def_property_readonly("dtype", &Tensor::dtype)
        .def_property_readonly("ndim", &Tensor::ndim)
        .def_property_readonly("num_elements", &Tensor::num_elements)
        .def_property_readonly("size_bytes", &Tensor::size_bytes)
        .def_property_readonly("owns_data", &Tensor::owns_data)
        .def_property_readonly(
            "data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); },
            "Address of the first element (tensors sharing storage have equal or nearby addresses).")
        .def("numpy", &tensor_to_numpy, py::arg("copy") = true,
             "A numpy array of the data: a copy by default; copy=False shares the tensor's storage.")
        .def("clone", &Tensor::clone, "A deep copy (owning).")
        .def("reshape", [](const Tensor& t, py::handle shape) { return t.reshape(dims_from_py(shape)); },
             py::arg("new_shape"),
             "The same data with a new shape (shares storage; -1 infers one dimension). "
             "ValidationError when the element counts differ.")
        .def(
            "__array__",
            [](const Tensor& t, py::object dtype, py::object /*copy*/) {
                py::array a = tensor_to_numpy(t, /*copy=*/true);
                if (!dtype.is_none()) return py::array(a.attr("astype")(dtype));
                return a;
            },
            py::arg("dtype") = py::none(), py::arg("copy") = py::none())
        .def("__len__",
             [](const Tensor& t) {
                 if (t.ndim() == 0) throw py::type_error("len() of a 0-d tensor");
                 return t.shape()[0];
             })
        .def("__repr__", [](const Tensor& t) {
            return "Tensor(shape=" + shape_to_string(t.shape()) + ", dtype=" + dtype_repr(t.dtype()) + ")";
        });

    m.def(
        "from_numpy",
        [](py::handle array) {
            if (py::isinstance<Tensor>(array)) return array.cast<const Tensor&>().clone();
            return tensor_from_py(array, /*copy=*/true);
        },
        py::arg("array"),
        "A Tensor owning a copy of `array`. Supported dtypes: float32, float64, float16, int64, int32, int16, "
        "int8, uint8, bool (and ml_dtypes.bfloat16); others raise ValidationError.");
    m.def("to_numpy", [](const Tensor& t) { return tensor_to_numpy(t, /*copy=*/true); }, py::arg("tensor"),
          "A numpy array holding a copy of the tensor's data.");

    // ---- TensorInfo ----
    py::class_<TensorInfo>(m, "TensorInfo", "Name, dtype and shape (None = dynamic dimension) of a tensor.")
        .def(py::init([](std::string name, py::handle dtype, py::handle shape) {
                 return TensorInfo{std::move(name), dtype_from_py(dtype), shape_from_py(shape), !shape.is_none()};
             }),
             py::arg("name") = "", py::arg("dtype") = DType::Float32, py::arg("shape") = py::list())
        .def_readwrite("name", &TensorInfo::name)
        .def_property(
            "dtype", [](const TensorInfo& t) { return t.dtype; },
            [](TensorInfo& t, py::handle d) { t.dtype = dtype_from_py(d); })
        .def_property(
            "shape", [](const TensorInfo& t) -> py::object { return t.rank_known ? py::object(shape_to_py(t.shape)) : py::none(); },
            [](TensorInfo& t, py::handle s) {
                t.shape = shape_from_py(s);
                t.rank_known = !s.is_none();
            })
        .def("__eq__",
             [](const TensorInfo& a, py::handle other) -> py::object {
                 if (!py::isinstance<TensorInfo>(other)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
                 const auto& b = other.cast<const TensorInfo&>();
                 return py::bool_(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape);
             })
        .def("__repr__", [](const TensorInfo& t) {
            return "TensorInfo(name=" + py_repr(py::str(t.name)) + ", dtype=" + dtype_repr(t.dtype) +
                   ", shape=" + py_repr(shape_to_py(t.shape)) + ")";
        })
        .attr("__hash__") = py::none();  // mutable, compared by value

    // ---- NodeArg ----
    py::class_<NodeArg>(m, "NodeArg", "An input or output of a model.")
        .def(py::init([](std::string name, py::handle dtype, py::handle shape) {
                 return NodeArg{std::move(name), dtype_from_py(dtype), shape_from_py(shape), !shape.is_none()};
             }),
             py::arg("name") = "", py::arg("dtype") = DType::Float32, py::arg("shape") = py::list())
        .def_readonly("name", &NodeArg::name)
        .def_property_readonly("shape", [](const NodeArg& a) -> py::object {
            return a.rank_known ? py::object(shape_to_py(a.shape)) : py::none();  // None: rank unknown
        })
        .def_property_readonly("type", &NodeArg::type_str, "Type string, e.g. \"tensor(float)\".")
        .def_property_readonly("dtype", [](const NodeArg& a) { return a.dtype; })
        .def("__repr__", [](const NodeArg& a) {
            return "NodeArg(name=" + py_repr(py::str(a.name)) + ", type=" + py_repr(py::str(a.type_str())) +
                   ", shape=" + py_repr(shape_to_py(a.shape)) + ")";
        });

    // ---- ModelMetadata ----
    py::class_<ModelMetadata>(m, "ModelMetadata", "Producer, version, domain, description and custom metadata.")
        .def(py::init<>())
        .def_readwrite("producer_name", &ModelMetadata::producer_name)
        .def_readwrite("producer_version", &ModelMetadata::producer_version)
        .def_readwrite("domain", &ModelMetadata::domain)
        .def_readwrite("version", &ModelMetadata::model_version, "The model version (model_version).")
        .def_readwrite("model_version", &ModelMetadata::model_version)
        .def_readwrite("description", &ModelMetadata::doc_string, "The model description (doc_string).")
        .def_readwrite("doc_string", &ModelMetadata::doc_string)
        .def_property(
            "custom_metadata", [](const ModelMetadata& md) { return py::dict(py::cast(md.custom_metadata)); },
            [](ModelMetadata& md, std::unordered_map<std::string, std::string> v) { md.custom_metadata = std::move(v); },
            "A dict (a copy: assign a whole dict to change it).")
        .def("__repr__", [](const ModelMetadata& md) {
            return "ModelMetadata(producer_name=" + py_repr(py::str(md.producer_name)) +
                   ", producer_version=" + py_repr(py::str(md.producer_version)) +
                   ", domain=" + py_repr(py::str(md.domain)) + ", version=" + std::to_string(md.model_version) +
                   ")";
        });
}

}  // namespace pyflame_rt::python
