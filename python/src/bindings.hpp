#pragma once
// Internal header of the _pyflame_rt extension: the per-area init functions and the
// conversions (numpy <-> Tensor, shapes, dtypes, attributes, paths) they share.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <any>
#include <string>
#include <vector>

#include "pyflame_rt/dtype.hpp"
#include "pyflame_rt/node.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::python {

namespace py = pybind11;

// ---- per-area registration, called in this order by module.cpp ----
void init_errors(py::module_& m);    // errors.cpp: exception classes and the translator
void init_tensor(py::module_& m);    // tensor.cpp: DType, Tensor, TensorInfo, NodeArg, ModelMetadata
void init_graph(py::module_& m);     // graph.cpp: Node, Graph, save_model, load_model
void init_session(py::module_& m);   // session.cpp: options, InferenceSession, providers
void init_import(py::module_& m);    // import.cpp: ImportOptions/Stats/Result, import_module
void init_registry(py::module_& m);  // registry.cpp: custom operators implemented in Python
void init_optimize(py::module_& m);  // optimize.cpp: PassManager, PassResult
void init_quantization(py::module_& m);  // quantization.cpp: the `quantization` submodule
void init_export(py::module_& m);        // export.cpp: export_onnx

// ---- conversions (convert.cpp) ----

// The numpy dtype of `dtype` (BFloat16 needs the ml_dtypes package; ValidationError without).
py::dtype numpy_dtype(DType dtype);
// The DType of a numpy dtype; ValidationError naming the dtype when unsupported.
DType dtype_from_numpy(const py::dtype& dt);
// A DType from a DType member, a dtype name ("float32", "Float32") or anything np.dtype() accepts.
DType dtype_from_py(py::handle obj);

// np.asarray(obj), made C-contiguous, aligned and native-endian (copying only when needed).
// The dtype is never changed.
py::array as_c_array(py::handle obj);

// A Tensor for `obj` (a pyflame_rt.Tensor, a numpy array or anything np.asarray accepts).
// A pyflame_rt.Tensor is shared as is. Otherwise:
//   copy == true : an owning Tensor holding a copy of the data;
//   copy == false: a non-owning view of the array's memory; the array it views is appended to
//                  `keep_alive`, which the caller must keep alive as long as the Tensor.
Tensor tensor_from_py(py::handle obj, bool copy, std::vector<py::object>* keep_alive = nullptr);

// A numpy array of the tensor's data. copy == false shares the storage of an owning tensor
// (the array's base keeps it alive); a non-owning tensor is always copied.
py::array tensor_to_numpy(const Tensor& tensor, bool copy = true);

// Shapes: [None, 3] <-> {nullopt, 3}. In Python, None, a negative int or a str (a symbolic
// dimension) means dynamic.
py::list shape_to_py(const Shape& shape);
Shape shape_from_py(py::handle obj);

// Node attribute values <-> Python. Python int/bool -> int64, float -> double, str, lists of
// those, numpy array/Tensor -> Tensor, Graph -> subgraph. Tensor attributes come back as numpy.
AttributeValue attribute_from_py(py::handle obj);
py::object attribute_to_py(const AttributeValue& value);
// A std::any holding one of the attribute types (or an AttributeValue) -> Python; None if unknown.
py::object any_to_py(const std::any& value);

// str, bytes or os.PathLike -> std::string (os.fsdecode).
std::string path_from_py(py::handle obj);

// False once the interpreter is finalizing: Python objects must not be touched then.
bool python_alive();

}  // namespace pyflame_rt::python
