#include "pyflame_rt/value.hpp"

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {

Value::Value(Tensor tensor) : kind_(Kind::Tensor), tensor_(std::move(tensor)) {}

Value Value::sequence(std::vector<Tensor> items) {
    Value v;
    v.kind_ = Kind::Sequence;
    v.items_ = std::move(items);
    return v;
}

const Tensor& Value::tensor() const {
    if (kind_ != Kind::Tensor) throw ValidationError("expected a tensor, got a " + kind_name());
    return tensor_;
}

const std::vector<Tensor>& Value::items() const {
    if (kind_ != Kind::Sequence) throw ValidationError("expected a sequence, got a " + kind_name());
    return items_;
}

std::vector<Tensor>& Value::items() {
    if (kind_ != Kind::Sequence) throw ValidationError("expected a sequence, got a " + kind_name());
    return items_;
}

std::string Value::kind_name() const {
    switch (kind_) {
        case Kind::Tensor: return "tensor";
        case Kind::Sequence: return "sequence";
        default: return "none";
    }
}

}  // namespace pyflame_rt
