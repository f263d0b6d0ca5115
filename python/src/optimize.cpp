// PassManager and PassResult: graph optimization passes by level or by name.
#include "bindings.hpp"
#include "pyflame_rt/optimize/pass_manager.hpp"

namespace pyflame_rt::python {

void init_optimize(py::module_& m) {
    using optimize::PassManager;
    using optimize::PassResult;
    py::class_<PassResult>(m, "PassResult", "What one optimization pass changed.")
        .def_readonly("pass_name", &PassResult::pass)
        .def_readonly("nodes_removed", &PassResult::nodes_removed)
        .def_readonly("nodes_fused", &PassResult::nodes_fused)
        .def_readonly("nodes_added", &PassResult::nodes_added)
        .def_property_readonly("changed", &PassResult::changed)
        .def("__repr__", [](const PassResult& r) {
            return "PassResult(" + r.pass + ": removed=" + std::to_string(r.nodes_removed) +
                   ", fused=" + std::to_string(r.nodes_fused) + ", added=" + std::to_string(r.nodes_added) + ")";
        });
    py::class_<PassManager>(m, "PassManager", "Runs graph optimization passes (levels 1 basic, 2 extended, 3 all).")
        .def(py::init<>())
        .def("list_passes", &PassManager::list_passes, "Names of the passes, in the order they run.")
        .def("pass_level", &PassManager::pass_level, py::arg("name"))
        .def(
            "run",
            [](const PassManager& pm, Graph& graph, std::optional<int> level, std::optional<std::vector<std::string>> passes) {
                if (passes) return pm.run_passes(graph, *passes);
                return pm.run_level(graph, level.value_or(2));
            },
            py::arg("graph"), py::arg("level") = py::none(), py::arg("passes") = py::none(),
            "Optimizes `graph` in place: every pass up to `level` (default 2), or the named `passes`. "
            "Returns one PassResult per pass run.");
}

}  // namespace pyflame_rt::python
