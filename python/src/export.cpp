// export_onnx: Graph -> ONNX file.
#include "bindings.hpp"
#include "pyflame_rt/export/onnx_exporter.hpp"
#include "pyflame_rt/graph.hpp"

namespace pyflame_rt::python {

void init_export(py::module_& m) {
    m.def(
        "export_onnx",
        [](const Graph& graph, py::handle path) {
            const std::string p = path_from_py(path);
            py::gil_scoped_release release;
            export_onnx(graph, p);
        },
        py::arg("graph"), py::arg("path"), "Writes the graph as an ONNX model file (standard ops stay standard).");
    m.def(
        "export_onnx_bytes", [](const Graph& graph) { return py::bytes(export_onnx_bytes(graph)); }, py::arg("graph"),
        "The graph as a serialized ONNX ModelProto.");
}

}  // namespace pyflame_rt::python
