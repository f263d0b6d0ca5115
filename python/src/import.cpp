// ImportOptions, ImportStats, ImportResult and the `import_module` submodule (ONNXImporter).
#include "bindings.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/import/importer.hpp"
#include "pyflame_rt/import/onnx_importer.hpp"

namespace pyflame_rt::python {

namespace {

std::string py_repr(py::handle obj) { return py::repr(obj).cast<std::string>(); }

std::unique_ptr<ImportOptions> import_options_from_kwargs(const py::kwargs& kwargs) {
    auto obj = std::make_unique<ImportOptions>();
    if (kwargs.size() != 0) {
        py::object self = py::cast(obj.get(), py::return_value_policy::reference);
        for (auto item : kwargs) py::setattr(self, item.first, item.second);
    }
    return obj;
}

}  // namespace

void init_import(py::module_& m) {
    py::class_<ImportOptions>(m, "ImportOptions", "Configuration for model import.")
        .def(py::init(&import_options_from_kwargs), "ImportOptions(**properties)")
        .def_readwrite("validate", &ImportOptions::validate, "Validate the graph after import (default True)")
        .def_readwrite("infer_shapes", &ImportOptions::infer_shapes, "Run shape inference (default True)")
        .def_readwrite("optimize", &ImportOptions::optimize, "Basic optimizations (default False)")
        .def_readwrite("strict", &ImportOptions::strict, "Warnings become failure (default False)")
        .def("__repr__", [](const ImportOptions& o) {
            auto b = [](bool v) { return v ? "True" : "False"; };
            return std::string("ImportOptions(validate=") + b(o.validate) + ", infer_shapes=" + b(o.infer_shapes) +
                   ", optimize=" + b(o.optimize) + ", strict=" + b(o.strict) + ")";
        });

    py::class_<ImportStats>(m, "ImportStats", "Statistics of an import.")
        .def(py::init<>())
        .def_readonly("node_count", &ImportStats::node_count)
        .def_readonly("initializer_count", &ImportStats::initializer_count)
        .def_readonly("parameter_count", &ImportStats::parameter_count)
        .def_readonly("import_time_ms", &ImportStats::import_time_ms)
        .def_readonly("warnings", &ImportStats::warnings)
        .def("__repr__", [](const ImportStats& s) {
            return "ImportStats(node_count=" + std::to_string(s.node_count) +
                   ", initializer_count=" + std::to_string(s.initializer_count) +
                   ", parameter_count=" + std::to_string(s.parameter_count) +
                   ", import_time_ms=" + py_repr(py::float_(s.import_time_ms)) +
                   ", warnings=" + std::to_string(s.warnings.size()) + ")";
        });

    py::class_<ImportResult>(m, "ImportResult", "Result of an import: success, graph, error, stats.")
        .def(py::init<>())
        .def_readonly("success", &ImportResult::success)
        .def_property_readonly("graph", [](const ImportResult& r) { return r.graph; }, "The Graph (None on failure).")
        .def_readonly("error", &ImportResult::error)
        .def_readonly("stats", &ImportResult::stats)
        .def("__repr__", [](const ImportResult& r) {
            return std::string("ImportResult(success=") + (r.success ? "True" : "False") +
                   (r.error.empty() ? std::string() : ", error=" + py_repr(py::str(r.error))) + ")";
        });

    py::module_ im = m.def_submodule("import_module", "Importers of other frameworks' model files.");

    py::class_<ONNXImporter>(im, "ONNXImporter", "Importer for ONNX models (.onnx).")
        .def(py::init<>())
        .def(
            "import_model",
            [](ONNXImporter& self, py::handle model_path, const ImportOptions& options) {
                const std::string path = path_from_py(model_path);
                py::gil_scoped_release release;
                return self.import_model(path, options);
            },
            py::arg("model_path"), py::arg("options") = ImportOptions(),
            "Imports an ONNX file; returns an ImportResult (check .success and .error).")
        .def("supported_opsets", &ONNXImporter::supported_opsets, "Supported ai.onnx opset versions.")
        .def_property_readonly("name", &ONNXImporter::name)
        .def("supported_extensions", &ONNXImporter::supported_extensions)
        .def(
            "supports", [](const ONNXImporter& self, py::handle path) { return self.supports(path_from_py(path)); },
            py::arg("path"));

    im.def(
        "import_model",
        [](py::handle model_path, const ImportOptions& options) {
            const std::string path = path_from_py(model_path);
            py::gil_scoped_release release;
            return ImporterRegistry::instance().import_model(path, options);
        },
        py::arg("model_path"), py::arg("options") = ImportOptions(),
        "Imports a model file with whichever registered importer supports it.");
    im.def(
        "list_importers", [] { return ImporterRegistry::instance().list_importers(); },
        "Names of the registered importers.");
}

}  // namespace pyflame_rt::python
