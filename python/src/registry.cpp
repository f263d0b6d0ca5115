// Custom operators implemented in Python, registered in the C++ OperatorRegistry.
//
// fn(inputs: list[np.ndarray], attributes: dict) -> np.ndarray runs with the GIL held (the
// wrapper acquires it, so sessions may call it from any thread). The Python callable is held
// through a shared_ptr whose deleter takes the GIL: copies of the C++ OpFunction (sessions
// keep some) never touch Python reference counts without the GIL. At interpreter exit the ops
// registered from Python are unregistered (atexit), and a callable still referenced after
// finalization is leaked rather than released without an interpreter.
#include <set>

#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/registry.hpp"

namespace pyflame_rt::python {

namespace {

struct GilDeleter {
    void operator()(py::object* obj) const {
        if (!python_alive()) return;  // leak: no interpreter to release it
        py::gil_scoped_acquire gil;
        delete obj;
    }
};

// Names registered from Python (accessed with the GIL held only). Never destroyed.
std::set<std::string>& python_ops() {
    static auto* ops = new std::set<std::string>();
    return *ops;
}

OperatorRegistry::OpFunction wrap(const std::string& op_type, py::function fn) {
    std::shared_ptr<py::object> callable(new py::object(std::move(fn)), GilDeleter{});
    return [op_type, callable](const std::vector<Tensor>& inputs,
                               const std::unordered_map<std::string, std::any>& attributes) -> Tensor {
        if (!python_alive())
            throw PyFlameRTError("custom op '" + op_type + "': the Python interpreter is shutting down");
        py::gil_scoped_acquire gil;
        py::list args;
        for (const auto& t : inputs) {
            if (t.empty()) args.append(py::none());  // an omitted optional input
            else args.append(tensor_to_numpy(t, /*copy=*/true));
        }
        py::dict attrs;
        for (const auto& [name, value] : attributes) attrs[py::str(name)] = any_to_py(value);
        py::object result = (*callable)(args, attrs);
        if (result.is_none())
            throw ValidationError("custom op '" + op_type + "' returned None; it must return an array");
        return tensor_from_py(result, /*copy=*/true);
    };
}

}  // namespace

void init_registry(py::module_& m) {
    m.def(
        "register_op",
        [](const std::string& op_type, py::function fn) {
            if (op_type.empty()) throw ValidationError("register_op: op_type is empty");
            auto func = wrap(op_type, std::move(fn));
            python_ops().insert(op_type);
            // Without the GIL: the registry's lock may be held by a thread waiting for the GIL.
            py::gil_scoped_release release;
            OperatorRegistry::instance().register_op(op_type, std::move(func));
        },
        py::arg("op_type"), py::arg("fn"),
        "Registers (or replaces) a custom operator implemented in Python: fn(inputs: list of numpy arrays, "
        "attributes: dict) -> numpy array. Sessions created afterwards can run graphs using `op_type`.");
    m.def(
        "unregister_op",
        [](const std::string& op_type) {
            python_ops().erase(op_type);
            py::gil_scoped_release release;
            return OperatorRegistry::instance().unregister_op(op_type);
        },
        py::arg("op_type"), "Removes a custom operator; False if it was not registered.");
    m.def(
        "has_op", [](const std::string& op_type) { return OperatorRegistry::instance().has_op(op_type); },
        py::arg("op_type"), py::call_guard<py::gil_scoped_release>(), "True when `op_type` is a registered custom operator.");
    m.def(
        "registered_ops", [] { return OperatorRegistry::instance().registered_ops(); },
        py::call_guard<py::gil_scoped_release>(),
        "Names of the registered custom operators.");

    // Drop the Python callables while the interpreter can still release them.
    py::module_::import("atexit").attr("register")(py::cpp_function([] {
        std::set<std::string> ops;
        ops.swap(python_ops());
        py::gil_scoped_release release;
        for (const auto& op : ops) OperatorRegistry::instance().unregister_op(op);
    }));
}

}  // namespace pyflame_rt::python
