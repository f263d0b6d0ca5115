// PYBIND11_MODULE(_pyflame_rt): the compiled core of the `pyflame_rt` package.
#include "bindings.hpp"
#include "pyflame_rt/version.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_pyflame_rt, m) {
    m.doc() = "PyFlameRT inference runtime (compiled core; import the `pyflame_rt` package instead).";
    m.attr("__version__") = pyflame_rt::kVersion;

    using namespace pyflame_rt::python;
    init_errors(m);
    init_tensor(m);    // DType first: later default arguments use it
    init_graph(m);
    init_session(m);
    init_import(m);
    init_registry(m);
    init_optimize(m);
    init_quantization(m);
    init_export(m);
}
