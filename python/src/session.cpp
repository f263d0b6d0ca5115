// SessionOptions, RunOptions, CompileOptions, InferenceSession, providers.
#include <filesystem>
#include <utility>

#include "bindings.hpp"
#include "pyflame_rt/backend.hpp"
#include "pyflame_rt/compile.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/options.hpp"
#include "pyflame_rt/session.hpp"

namespace pyflame_rt::python {

namespace {

std::string py_repr(py::handle obj) { return py::repr(obj).cast<std::string>(); }

// T(**kwargs): each keyword sets the property of the same name (AttributeError if unknown).
template <typename T>
std::unique_ptr<T> from_kwargs(const py::kwargs& kwargs) {
    auto obj = std::make_unique<T>();
    if (kwargs.size() != 0) {
        py::object self = py::cast(obj.get(), py::return_value_policy::reference);
        for (auto item : kwargs) py::setattr(self, item.first, item.second);
    }
    return obj;
}

std::vector<std::string> names_from_py(py::handle obj) {
    if (obj.is_none()) return {};
    if (py::isinstance<py::str>(obj)) return {obj.cast<std::string>()};
    return obj.cast<std::vector<std::string>>();
}

std::unique_ptr<InferenceSession> make_session(py::handle model, std::optional<SessionOptions> options,
                                               std::optional<std::vector<std::string>> providers) {
    SessionOptions opts = options.value_or(SessionOptions{});
    std::vector<std::string> provs = providers.value_or(std::vector<std::string>{});
    if (py::isinstance<Graph>(model)) {
        auto graph = model.cast<std::shared_ptr<Graph>>();  // the session copies it
        py::gil_scoped_release release;
        return std::make_unique<InferenceSession>(std::move(graph), std::move(opts), std::move(provs));
    }
    if (model.is_none()) throw py::type_error("InferenceSession: a model path or a Graph is required");
    const std::string path = path_from_py(model);
    py::gil_scoped_release release;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw pyflame_rt::FileNotFoundError(path);
    return std::make_unique<InferenceSession>(path, std::move(opts), std::move(provs));
}

py::list run(InferenceSession& session, py::handle output_names, py::handle input_feed,
             std::optional<RunOptions> run_options) {
    if (!py::hasattr(input_feed, "items"))
        throw py::type_error("input_feed must be a dict mapping input names to arrays");
    const std::vector<std::string> names = names_from_py(output_names);

    std::vector<py::object> keep_alive;  // arrays viewed by the feed tensors
    std::unordered_map<std::string, Value> feed;
    py::object items = input_feed.attr("items")();
    for (py::handle item : items) {
        py::object key = item[py::int_(0)];
        if (!py::isinstance<py::str>(key)) throw py::type_error("input_feed keys must be str input names");
        py::handle value = item[py::int_(1)];
        // None feeds an empty optional; a list or tuple of arrays feeds a sequence.
        Value v;
        if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
            std::vector<Tensor> elements;
            for (py::handle e : value) elements.push_back(tensor_from_py(e, /*copy=*/false, &keep_alive));
            v = Value::sequence(std::move(elements));
        } else if (!value.is_none()) {
            v = Value(tensor_from_py(value, /*copy=*/false, &keep_alive));
        }
        feed.insert_or_assign(key.cast<std::string>(), std::move(v));
    }
    const RunOptions ro = run_options.value_or(RunOptions{});

    std::vector<Value> outputs;
    {
        py::gil_scoped_release release;
        outputs = session.run_values(names, feed, ro);
    }

    // Copied out: an output may share storage with a feed (Identity of an input), a weight
    // (Identity/Reshape of an initializer), a Constant's value or another output, and the
    // public Tensor API cannot tell whether its storage is shared, so a zero-copy array could
    // let a caller's in-place write change the model.
    py::list result;
    for (const auto& v : outputs) {
        if (v.is_none()) {
            result.append(py::none());  // an empty optional
        } else if (v.is_sequence()) {
            py::list elements;
            for (const auto& t : v.items()) elements.append(tensor_to_numpy(t, /*copy=*/true));
            result.append(elements);
        } else {
            result.append(tensor_to_numpy(v.tensor(), /*copy=*/true));
        }
    }
    return result;
}

}  // namespace

void init_session(py::module_& m) {
    // ---- options ----
    py::class_<SessionOptions>(m, "SessionOptions", "Configuration of an InferenceSession.")
        .def(py::init(&from_kwargs<SessionOptions>), "SessionOptions(**properties)")
        .def_readwrite("device", &SessionOptions::device, "\"cpu\" or \"wse\"")
        .def_readwrite("num_threads", &SessionOptions::num_threads, "intra-op threads; 0 = all cores")
        .def_readwrite("enable_profiling", &SessionOptions::enable_profiling)
        .def_readwrite("execution_mode", &SessionOptions::execution_mode, "\"sequential\" or \"parallel\"")
        .def_readwrite("log_level", &SessionOptions::log_level, "verbose, info, warning, error, fatal")
        .def_readwrite("memory_limit", &SessionOptions::memory_limit, "bytes; 0 = unlimited")
        .def_readwrite("optimization_level", &SessionOptions::optimization_level, "0..3")
        .def_readwrite("profile_file_prefix", &SessionOptions::profile_file_prefix,
                       "end_profiling() writes PREFIX_<time>.json")
        .def("validate", &SessionOptions::validate, "One message per problem; empty when valid.")
        .def("__repr__", [](const SessionOptions& o) {
            return "SessionOptions(device=" + py_repr(py::str(o.device)) +
                   ", num_threads=" + std::to_string(o.num_threads) +
                   ", enable_profiling=" + (o.enable_profiling ? "True" : "False") +
                   ", execution_mode=" + py_repr(py::str(o.execution_mode)) +
                   ", log_level=" + py_repr(py::str(o.log_level)) +
                   ", memory_limit=" + std::to_string(o.memory_limit) +
                   ", optimization_level=" + std::to_string(o.optimization_level) +
                   ", profile_file_prefix=" + py_repr(py::str(o.profile_file_prefix)) + ")";
        });

    py::class_<RunOptions>(m, "RunOptions", "Options of one run() call.")
        .def(py::init(&from_kwargs<RunOptions>), "RunOptions(**properties)")
        .def_readwrite("log_level", &RunOptions::log_level, "Optional[str]: overrides the session log level")
        .def_readwrite("tag", &RunOptions::tag, "Optional[str]: tag for profiling/debugging")
        .def_readwrite("timeout_ms", &RunOptions::timeout_ms, "Optional[int]: RunTimeoutError when exceeded")
        .def("__repr__", [](py::handle self) {
            return "RunOptions(log_level=" + py_repr(self.attr("log_level")) + ", tag=" + py_repr(self.attr("tag")) +
                   ", timeout_ms=" + py_repr(self.attr("timeout_ms")) + ")";
        });

    py::class_<CompileOptions>(m, "CompileOptions", "Options for model compilation (model conversion).")
        .def(py::init(&from_kwargs<CompileOptions>), "CompileOptions(**properties)")
        .def_readwrite("cache_dir", &CompileOptions::cache_dir, "Optional[str]")
        .def_readwrite("dynamic_batch", &CompileOptions::dynamic_batch)
        .def_readwrite("optimization_level", &CompileOptions::optimization_level, "0..3")
        .def("__repr__", [](py::handle self) {
            return "CompileOptions(cache_dir=" + py_repr(self.attr("cache_dir")) +
                   ", dynamic_batch=" + py_repr(self.attr("dynamic_batch")) +
                   ", optimization_level=" + py_repr(self.attr("optimization_level")) + ")";
        });

    // ---- InferenceSession ----
    py::class_<InferenceSession>(m, "InferenceSession", "Runs a model: plans it once, then run() many times.")
        .def(py::init(&make_session), py::arg("model_path"), py::arg("options") = py::none(),
             py::arg("providers") = py::none(),
             "InferenceSession(model_path_or_graph, options=None, providers=None). `model_path` is a .pfm "
             "(or .onnx) path, str or os.PathLike, or a Graph.")
        .def("run", &run, py::arg("output_names"), py::arg("input_feed"), py::arg("run_options") = py::none(),
             "Runs the model. output_names None or [] returns every output. input_feed maps input names to "
             "numpy arrays (or Tensors); dtypes are not converted. Returns a list of numpy arrays. The GIL is "
             "released while the model runs; several threads may call run() at once.")
        .def("get_inputs", &InferenceSession::get_inputs)
        .def("get_outputs", &InferenceSession::get_outputs)
        .def("get_modelmeta", &InferenceSession::get_modelmeta)
        .def("get_providers", &InferenceSession::get_providers)
        .def("quantization_report", &InferenceSession::quantization_report,
             "How the model is quantized (a pyflame_rt.quantization.QuantizationReport).")
        .def("memory_stats",
             [](const InferenceSession& s) {
                 const SessionMemoryStats m = s.memory_stats();
                 py::dict d;
                 d["weights_bytes"] = m.weights_bytes;
                 d["planned_bytes"] = m.planned_bytes;
                 d["arena_bytes"] = m.arena_bytes;
                 d["peak_in_use_bytes"] = m.peak_in_use_bytes;
                 d["heap_allocations"] = m.heap_allocations;
                 return d;
             },
             "The session's memory as a dict: weights_bytes, planned_bytes (arena buffers the memory plan "
             "reserved at creation), arena_bytes, peak_in_use_bytes, heap_allocations (arena buffers ever "
             "taken from the heap; constant across steady-state runs of a static-shape model).")
        .def("get_profiling_start_time_ns", &InferenceSession::get_profiling_start_time_ns)
        .def("end_profiling", &InferenceSession::end_profiling, py::call_guard<py::gil_scoped_release>(),
             "Writes the Chrome trace-event JSON, stops profiling and returns the file's path.")
        .def_property_readonly("options", [](const InferenceSession& s) { return s.options(); },
                               "A copy of the session's SessionOptions.")
        .def_property_readonly(
            "graph",
            [](const InferenceSession& s) -> std::shared_ptr<Graph> {
                auto g = s.graph();
                if (!g) return nullptr;
                auto copy = std::make_shared<Graph>(*g);
                // Weights the session keeps packed for its kernels come back row-major: the
                // copy serves every graph consumer (quantizer, exporter, another session).
                for (const auto& [name, t] : g->initializers())
                    if (!t.is_plain()) copy->add_initializer(name, t.plain());
                return copy;
            },
            "A copy of the session's (optimized) graph, weights row-major.")
        .def("__repr__", [](const InferenceSession& s) {
            return "InferenceSession(inputs=" + std::to_string(s.get_inputs().size()) +
                   ", outputs=" + std::to_string(s.get_outputs().size()) + ")";
        });

    m.def(
        "compile_model",
        [](py::handle model_path, std::optional<CompileOptions> options) {
            const std::string path = path_from_py(model_path);
            const CompileOptions opts = options.value_or(CompileOptions{});
            py::gil_scoped_release release;
            return compile_model(path, opts);
        },
        py::arg("model_path"), py::arg("options") = py::none(),
        "Loads a model (.pfm or .onnx) and optimizes it at options.optimization_level, returning the Graph. "
        "With options.cache_dir, the optimized graph is cached there (a .pfm named by the model's content "
        "hash and the options) and reused by later calls. dynamic_batch makes every input's first dimension "
        "dynamic.");

    // ---- providers ----
    m.def("get_available_providers", &get_available_providers, "Provider names this build provides.");
    m.def("get_device_count", &get_device_count, py::arg("device_type") = "cpu",
          "Number of devices of a type (\"cpu\", \"wse\").");
}

}  // namespace pyflame_rt::python
