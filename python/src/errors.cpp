// The Python exception hierarchy of errors.hpp and the C++ -> Python translator.
//
//   PyFlameRTError(RuntimeError)
//     InvalidModelError, UnsupportedOperatorError (.op_type), ValidationError
//     FileNotFoundError(builtins.FileNotFoundError, PyFlameRTError)  (.errno, .filename)
//     RunTimeoutError(builtins.TimeoutError, PyFlameRTError)
//
// The builtin base comes first so OSError's constructor (errno, strerror, filename) applies.
#include <cerrno>

#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::python {

namespace {

// Strong references, created once and never released (exception types live for the process).
PyObject* g_base = nullptr;
PyObject* g_invalid_model = nullptr;
PyObject* g_unsupported = nullptr;
PyObject* g_validation = nullptr;
PyObject* g_file_not_found = nullptr;
PyObject* g_timeout = nullptr;

PyObject* new_exception(const char* name, const char* doc, PyObject* bases) {
    PyObject* type = PyErr_NewExceptionWithDoc(name, doc, bases, nullptr);
    if (!type) throw py::error_already_set();
    return type;
}

void add(py::module_& m, const char* name, PyObject* type) { m.attr(name) = py::reinterpret_borrow<py::object>(type); }

// Raises `type(*args)` as the current Python exception.
template <typename... Args>
void raise(PyObject* type, Args&&... args) {
    py::object exc = py::reinterpret_borrow<py::object>(type)(std::forward<Args>(args)...);
    PyErr_SetObject(type, exc.ptr());
}

}  // namespace

void init_errors(py::module_& m) {
    g_base = new_exception("pyflame_rt.PyFlameRTError", "Base exception for all PyFlameRT errors.",
                           PyExc_RuntimeError);
    g_invalid_model = new_exception("pyflame_rt.InvalidModelError",
                                    "Raised when a model file is invalid or corrupted.", g_base);
    g_unsupported = new_exception("pyflame_rt.UnsupportedOperatorError",
                                  "Raised when a model contains unsupported operators (.op_type names it).",
                                  g_base);
    g_validation = new_exception("pyflame_rt.ValidationError",
                                 "Raised when validation fails: feeds, shapes, dtypes, options, attributes.",
                                 g_base);
    {
        py::tuple bases = py::make_tuple(py::handle(PyExc_FileNotFoundError), py::handle(g_base));
        g_file_not_found = new_exception("pyflame_rt.FileNotFoundError",
                                         "Raised when a model file does not exist; also a builtin "
                                         "FileNotFoundError.",
                                         bases.ptr());
    }
    {
        py::tuple bases = py::make_tuple(py::handle(PyExc_TimeoutError), py::handle(g_base));
        g_timeout = new_exception("pyflame_rt.RunTimeoutError",
                                  "Raised when RunOptions.timeout_ms is exceeded; the session stays usable. "
                                  "Also a builtin TimeoutError.",
                                  bases.ptr());
    }
    add(m, "PyFlameRTError", g_base);
    add(m, "InvalidModelError", g_invalid_model);
    add(m, "UnsupportedOperatorError", g_unsupported);
    add(m, "ValidationError", g_validation);
    add(m, "FileNotFoundError", g_file_not_found);
    add(m, "RunTimeoutError", g_timeout);

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pyflame_rt::FileNotFoundError& e) {
            if (e.path().empty()) raise(g_file_not_found, e.what());
            else raise(g_file_not_found, ENOENT, "No such file or directory", e.path());
        } catch (const pyflame_rt::RunTimeoutError& e) {
            raise(g_timeout, e.what());
        } catch (const pyflame_rt::InvalidModelError& e) {
            raise(g_invalid_model, e.what());
        } catch (const pyflame_rt::UnsupportedOperatorError& e) {
            py::object exc = py::reinterpret_borrow<py::object>(g_unsupported)(e.what());
            exc.attr("op_type") = e.op_type();
            PyErr_SetObject(g_unsupported, exc.ptr());
        } catch (const pyflame_rt::ValidationError& e) {
            raise(g_validation, e.what());
        } catch (const pyflame_rt::PyFlameRTError& e) {
            raise(g_base, e.what());
        }
    });
}

}  // namespace pyflame_rt::python
