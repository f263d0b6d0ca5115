// Node, Graph, save_model, load_model, is_pfm_file.
#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/model_io.hpp"

namespace pyflame_rt::python {

namespace {

std::string py_repr(py::handle obj) { return py::repr(obj).cast<std::string>(); }

py::dict attributes_to_py(const Node& node) {
    py::dict out;
    for (const auto& [name, value] : node.attributes()) out[py::str(name)] = attribute_to_py(value);
    return out;
}

TensorInfo make_info(const std::string& name, py::handle shape, py::handle dtype) {
    return TensorInfo{name, dtype_from_py(dtype), shape_from_py(shape), !shape.is_none()};
}

py::dict initializers_to_py(const Graph& g) {
    py::dict out;
    const auto& inits = g.initializers();
    for (const auto& name : g.initializer_names()) {
        auto it = inits.find(name);
        if (it != inits.end()) out[py::str(name)] = tensor_to_numpy(it->second, /*copy=*/true);
    }
    for (const auto& [name, tensor] : inits) {  // any not in the ordered list
        py::str key(name);
        if (!out.contains(key)) out[key] = tensor_to_numpy(tensor, /*copy=*/true);
    }
    return out;
}

}  // namespace

void init_graph(py::module_& m) {
    // ---- Node (read-only from Python: nodes are built with Graph.add_node) ----
    py::class_<Node, std::shared_ptr<Node>>(m, "Node", "One operation of a Graph.")
        .def_property_readonly("op_type", &Node::op_type)
        .def_property_readonly("name", &Node::name)
        .def_property_readonly("domain", &Node::domain)
        .def_property_readonly("inputs", [](const Node& n) { return n.inputs(); })
        .def_property_readonly("outputs", [](const Node& n) { return n.outputs(); })
        .def_property_readonly("attributes", &attributes_to_py,
                               "A dict name -> value (Tensor attributes as numpy arrays, subgraphs as Graph).")
        .def(
            "get_attribute",
            [](const Node& n, const std::string& name, py::object default_value) -> py::object {
                auto it = n.attributes().find(name);
                return it == n.attributes().end() ? default_value : attribute_to_py(it->second);
            },
            py::arg("name"), py::arg("default") = py::none())
        .def("has_attribute", &Node::has_attribute, py::arg("name"))
        .def("attribute_names", &Node::attribute_names)
        .def_readwrite("doc_string", &Node::doc_string)
        .def("__repr__", [](const Node& n) {
            return "Node(name=" + py_repr(py::str(n.name())) + ", op_type=" + py_repr(py::str(n.op_type())) +
                   (n.domain().empty() ? std::string() : ", domain=" + py_repr(py::str(n.domain()))) +
                   ", inputs=" + py_repr(py::cast(n.inputs())) + ", outputs=" + py_repr(py::cast(n.outputs())) + ")";
        });

    // ---- Graph ----
    py::class_<Graph, std::shared_ptr<Graph>>(m, "Graph", "Nodes, graph inputs/outputs, initializers and metadata.")
        .def(py::init<>())
        .def(py::init<const std::string&>(), py::arg("name"))
        .def_property("name", &Graph::name, &Graph::set_name)
        .def(
            "add_input",
            [](Graph& g, const std::string& name, py::handle shape, py::handle dtype) {
                g.add_input(make_info(name, shape, dtype));
            },
            py::arg("name"), py::arg("shape"), py::arg("dtype") = DType::Float32,
            "Declares a graph input; None in `shape` is a dynamic dimension.")
        .def("add_input", [](Graph& g, const TensorInfo& info) { g.add_input(info); }, py::arg("info"))
        .def(
            "add_output",
            [](Graph& g, const std::string& name, py::handle shape, py::handle dtype) {
                g.add_output(make_info(name, shape, dtype));
            },
            py::arg("name"), py::arg("shape") = py::none(), py::arg("dtype") = DType::Float32,
            "Declares a graph output; None in `shape` is a dynamic dimension.")
        .def("add_output", [](Graph& g, const TensorInfo& info) { g.add_output(info); }, py::arg("info"))
        .def(
            "add_initializer",
            [](Graph& g, const std::string& name, py::handle value) {
                g.add_initializer(name, tensor_from_py(value, /*copy=*/true));
            },
            py::arg("name"), py::arg("value"),
            "Adds a weight: a numpy array (copied) or a Tensor (storage shared).")
        .def(
            "add_node",
            [](Graph& g, const std::string& name, const std::string& op_type, std::vector<std::string> inputs,
               std::vector<std::string> outputs, py::object attributes, const std::string& domain) {
                auto node = std::make_shared<Node>(op_type, name, inputs, outputs);
                node->set_domain(domain);
                if (!attributes.is_none()) {
                    for (auto item : py::dict(attributes)) {
                        const AttributeValue value = attribute_from_py(item.second);
                        node->set_attribute(py::str(item.first).cast<std::string>(), value);
                    }
                }
                g.add_node(node);
                return node;
            },
            py::arg("name"), py::arg("op_type"), py::arg("inputs") = std::vector<std::string>{},
            py::arg("outputs") = std::vector<std::string>{}, py::arg("attributes") = py::none(),
            py::arg("domain") = "",
            "Adds a node and returns it. Attribute values: int/bool -> int, float, str, lists of those, "
            "numpy array/Tensor -> tensor, Graph -> subgraph.")
        .def("add_node", [](Graph& g, std::shared_ptr<Node> node) { g.add_node(std::move(node)); return node; },
             py::arg("node"), "Adds an existing Node (e.g. one of another graph).")
        .def("set_value_info", &Graph::set_value_info, py::arg("info"))
        .def_property_readonly("nodes", [](const Graph& g) { return g.nodes(); })
        .def_property_readonly("inputs", [](const Graph& g) { return g.inputs(); })
        .def_property_readonly("outputs", [](const Graph& g) { return g.outputs(); })
        .def_property_readonly("value_infos", [](const Graph& g) { return g.value_infos(); })
        .def_property_readonly("initializers", &initializers_to_py,
                               "A dict name -> numpy array (copies), in insertion order.")
        .def("has_initializer", &Graph::has_initializer, py::arg("name"))
        .def(
            "get_initializer",
            [](const Graph& g, const std::string& name) { return tensor_to_numpy(g.get_initializer(name), true); },
            py::arg("name"), "A copy of the initializer as a numpy array (ValidationError if absent).")
        .def("topological_sort", &Graph::topological_sort,
             "Nodes ordered producers first (ValidationError naming the nodes on a cycle).")
        .def(
            "validate",
            [](const Graph& g, std::optional<std::vector<std::string>> outer_scope) {
                return outer_scope ? g.validate(*outer_scope) : g.validate();
            },
            py::arg("outer_scope") = py::none(), "Every problem found, one message each; empty when well formed.")
        .def_property(
            "opset_imports", [](const Graph& g) { return g.opset_imports(); },
            [](Graph& g, std::unordered_map<std::string, int64_t> v) { g.opset_imports() = std::move(v); },
            "A dict domain ('' = ai.onnx) -> opset version (a copy: assign a whole dict to change it).")
        .def("opset_version", &Graph::opset_version, py::arg("domain") = "")
        .def_property(
            "metadata", py::cpp_function([](Graph& g) -> ModelMetadata& { return g.metadata(); },
                                         py::return_value_policy::reference_internal),
            [](Graph& g, const ModelMetadata& md) { g.metadata() = md; })
        .def("__repr__", [](const Graph& g) {
            return "Graph(name=" + py_repr(py::str(g.name())) + ", nodes=" + std::to_string(g.nodes().size()) +
                   ", inputs=" + std::to_string(g.inputs().size()) + ", outputs=" +
                   std::to_string(g.outputs().size()) + ", initializers=" + std::to_string(g.initializers().size()) +
                   ")";
        });

    // ---- the .pfm format ----
    const SaveOptions save_defaults;
    m.def(
        "save_model",
        [](const std::shared_ptr<Graph>& graph, py::handle path, int64_t min_tensor_bytes, int64_t total_threshold) {
            if (!graph) throw ValidationError("save_model: graph is None");
            const std::string p = path_from_py(path);
            SaveOptions options;
            options.external_data_min_tensor_bytes = min_tensor_bytes;
            options.external_data_total_threshold = total_threshold;
            py::gil_scoped_release release;
            save_model(*graph, p, options);
        },
        py::arg("graph"), py::arg("path"),
        py::arg("external_data_min_tensor_bytes") = save_defaults.external_data_min_tensor_bytes,
        py::arg("external_data_total_threshold") = save_defaults.external_data_total_threshold,
        "Saves `graph` as a .pfm file (atomically).");
    m.def(
        "load_model",
        [](py::handle path) {
            const std::string p = path_from_py(path);
            py::gil_scoped_release release;
            return load_model(p);
        },
        py::arg("path"), "Loads a .pfm file (InvalidModelError if corrupt, FileNotFoundError if missing).");
    m.def(
        "is_pfm_file",
        [](py::handle path) {
            const std::string p = path_from_py(path);
            py::gil_scoped_release release;
            return is_pfm_file(p);
        },
        py::arg("path"), "True when the file starts with the .pfm magic.");
}

}  // namespace pyflame_rt::python
