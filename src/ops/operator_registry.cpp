#include "pyflame_rt/registry.hpp"

#include <algorithm>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {

OperatorRegistry& OperatorRegistry::instance() {
    static OperatorRegistry registry;
    return registry;
}

void OperatorRegistry::register_op(const std::string& op_type, OpFunction func) {
    if (op_type.empty()) throw ValidationError("register_op: empty op_type");
    if (!func) throw ValidationError("register_op('" + op_type + "'): empty function");
    std::lock_guard<std::mutex> lock(mutex_);
    ops_[op_type] = std::move(func);
}

bool OperatorRegistry::unregister_op(const std::string& op_type) {
    std::lock_guard<std::mutex> lock(mutex_);
    return ops_.erase(op_type) != 0;
}

bool OperatorRegistry::has_op(const std::string& op_type) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return ops_.count(op_type) != 0;
}

OperatorRegistry::OpFunction OperatorRegistry::get(const std::string& op_type) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = ops_.find(op_type);
    if (it == ops_.end()) throw UnsupportedOperatorError(op_type, "operator '" + op_type + "' is not registered");
    return it->second;
}

Tensor OperatorRegistry::execute(const std::string& op_type, const std::vector<Tensor>& inputs,
                                 const std::unordered_map<std::string, std::any>& attributes) const {
    return get(op_type)(inputs, attributes);  // called outside the lock: ops may be slow or re-enter
}

std::vector<std::string> OperatorRegistry::registered_ops() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [k, v] : ops_) names.push_back(k);
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace pyflame_rt
