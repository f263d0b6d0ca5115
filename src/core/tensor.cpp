#include "pyflame_rt/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "core/tensor_arena.hpp"
#include "pyflame_rt/errors.hpp"

namespace pyflame_rt {
namespace {

std::shared_ptr<void> allocate_aligned(size_t bytes) {
    // During a session's run, intermediates come from its arena (buffers reused across runs).
    if (TensorArena* arena = TensorArena::current()) return arena->allocate(bytes);
    return std::shared_ptr<void>(heap_buffer(bytes), [](void* q) { std::free(q); });
}

// String elements are real std::string objects: constructed here, destroyed with the storage.
std::shared_ptr<void> allocate_strings(int64_t count) {
    auto raw = allocate_aligned(static_cast<size_t>(count) * sizeof(std::string));
    auto* first = static_cast<std::string*>(raw.get());
    for (int64_t i = 0; i < count; ++i) new (first + i) std::string();
    return std::shared_ptr<void>(first, [raw, count](void* p) {
        auto* s = static_cast<std::string*>(p);
        for (int64_t i = 0; i < count; ++i) s[i].~basic_string();
    });
}

void check_shape(const std::vector<int64_t>& shape) {
    for (int64_t d : shape) {
        if (d < 0) throw ValidationError("negative dimension in tensor shape " + shape_to_string(shape));
    }
}

}  // namespace

int64_t num_elements_of(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

Tensor::Tensor() = default;

Tensor::Tensor(const std::vector<int64_t>& shape, DType dtype) : shape_(shape), dtype_(dtype) {
    check_shape(shape);
    storage_ = dtype == DType::String ? allocate_strings(num_elements()) : allocate_aligned(size_bytes());
    data_ = storage_.get();
}

Tensor::Tensor(const std::vector<int64_t>& shape, DType dtype, std::shared_ptr<const TensorLayout> layout)
    : shape_(shape), dtype_(dtype), layout_(std::move(layout)) {
    check_shape(shape);
    if (dtype == DType::String) throw ValidationError("string tensors have no backend layout");
    storage_ = allocate_aligned(layout_ ? layout_->storage_bytes() : size_bytes());
    data_ = storage_.get();
}

Tensor::Tensor(void* data, const std::vector<int64_t>& shape, DType dtype)
    : data_(data), shape_(shape), dtype_(dtype) {
    check_shape(shape);
}

Tensor::Tensor(std::shared_ptr<void> keep_alive, void* data, const std::vector<int64_t>& shape, DType dtype)
    : storage_(std::move(keep_alive)), data_(data), shape_(shape), dtype_(dtype) {
    check_shape(shape);
}

Tensor::Tensor(const Tensor& other) = default;
Tensor::Tensor(Tensor&& other) noexcept = default;
Tensor& Tensor::operator=(const Tensor& other) = default;
Tensor& Tensor::operator=(Tensor&& other) noexcept = default;
Tensor::~Tensor() = default;

int64_t Tensor::num_elements() const { return num_elements_of(shape_); }
size_t Tensor::size_bytes() const { return static_cast<size_t>(num_elements()) * dtype_size(dtype_); }

Tensor Tensor::plain() const { return layout_ ? layout_->to_plain(*this) : *this; }

Tensor Tensor::clone() const {
    if (layout_) return layout_->to_plain(*this);
    Tensor copy(shape_, dtype_);
    if (dtype_ == DType::String) {
        const auto* from = data_ptr<std::string>();
        auto* to = copy.data_ptr<std::string>();
        for (int64_t i = 0; i < num_elements(); ++i) to[i] = from[i];
    } else if (data_ && size_bytes()) {
        std::memcpy(copy.data_, data_, size_bytes());
    }
    return copy;
}

Tensor Tensor::view() const { return *this; }

Tensor Tensor::reshape(const std::vector<int64_t>& new_shape) const {
    if (layout_) return plain().reshape(new_shape);  // a blocked layout has no row-major view
    std::vector<int64_t> resolved = new_shape;
    int infer_at = -1;
    int64_t known = 1;
    for (size_t i = 0; i < resolved.size(); ++i) {
        if (resolved[i] == -1) {
            if (infer_at >= 0) throw ValidationError("reshape: more than one -1 in " + shape_to_string(new_shape));
            infer_at = static_cast<int>(i);
        } else if (resolved[i] < 0) {
            throw ValidationError("reshape: negative dimension in " + shape_to_string(new_shape));
        } else {
            known *= resolved[i];
        }
    }
    if (infer_at >= 0) {
        if (known == 0 || num_elements() % known != 0)
            throw ValidationError("reshape: cannot reshape " + shape_to_string(shape_) + " to " +
                                  shape_to_string(new_shape));
        resolved[infer_at] = num_elements() / known;
    }
    if (num_elements_of(resolved) != num_elements())
        throw ValidationError("reshape: " + shape_to_string(shape_) + " has " + std::to_string(num_elements()) +
                              " elements, " + shape_to_string(new_shape) + " has " +
                              std::to_string(num_elements_of(resolved)));
    Tensor out = *this;
    out.shape_ = std::move(resolved);
    return out;
}

Tensor Tensor::zeros(const std::vector<int64_t>& shape, DType dtype) {
    Tensor t(shape, dtype);
    if (dtype != DType::String && t.size_bytes()) std::memset(t.data(), 0, t.size_bytes());  // strings start empty
    return t;
}

}  // namespace pyflame_rt
