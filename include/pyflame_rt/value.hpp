#pragma once
// Value: what flows along a graph edge — a tensor, a sequence of tensors, or nothing (an
// empty optional). Most values are tensors; sequences and optionals come from ONNX's
// sequence/optional ops and control flow.
#include <vector>

#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt {

class Value {
public:
    Value() = default;  // none: an empty optional
    Value(Tensor tensor);  // NOLINT: a tensor is a value
    static Value sequence(std::vector<Tensor> items);

    bool is_none() const { return kind_ == Kind::None; }
    bool is_tensor() const { return kind_ == Kind::Tensor; }
    bool is_sequence() const { return kind_ == Kind::Sequence; }

    // ValidationError when the value is of another kind.
    const Tensor& tensor() const;
    const std::vector<Tensor>& items() const;
    std::vector<Tensor>& items();

    std::string kind_name() const;  // "tensor", "sequence", "none"

private:
    enum class Kind { None, Tensor, Sequence } kind_ = Kind::None;
    Tensor tensor_;
    std::vector<Tensor> items_;
};

}  // namespace pyflame_rt
