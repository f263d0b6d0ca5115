#pragma once
// OperatorRegistry: the user-facing table of custom operators. An op registered here becomes
// a real node type: graphs using it validate and run inside an InferenceSession.
#include <any>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt {

class OperatorRegistry {
public:
    using OpFunction = std::function<Tensor(const std::vector<Tensor>& inputs,
                                            const std::unordered_map<std::string, std::any>& attributes)>;

    static OperatorRegistry& instance();

    // Registers (or replaces) `op_type`. Sessions created afterwards can run it.
    void register_op(const std::string& op_type, OpFunction func);
    bool unregister_op(const std::string& op_type);

    bool has_op(const std::string& op_type) const;
    // UnsupportedOperatorError when `op_type` is not registered.
    Tensor execute(const std::string& op_type, const std::vector<Tensor>& inputs,
                   const std::unordered_map<std::string, std::any>& attributes) const;
    // The function registered for `op_type` (UnsupportedOperatorError if none).
    OpFunction get(const std::string& op_type) const;
    std::vector<std::string> registered_ops() const;

private:
    OperatorRegistry() = default;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, OpFunction> ops_;
};

}  // namespace pyflame_rt
