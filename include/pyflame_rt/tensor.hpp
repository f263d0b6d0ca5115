#pragma once
// Tensor: a shape, a dtype and a pointer into ref-counted storage. Copies share storage
// (like a numpy view); clone() deep-copies. Owned storage is 64-byte aligned.
// String tensors hold std::string objects: copy their elements by assignment, never memcpy.
#include <memory>
#include <vector>

#include "pyflame_rt/dtype.hpp"

namespace pyflame_rt {

class Tensor;

// A backend's physical layout for a tensor whose logical shape stays shape(), e.g. oneDNN's
// blocked nChw16c. Such tensors pass only between kernels that declare they read them
// (OpKernel::reads_layout); the executor gives every other reader row-major data (plain()).
class TensorLayout {
public:
    virtual ~TensorLayout() = default;
    virtual size_t storage_bytes() const = 0;            // may exceed the logical size (padding)
    virtual Tensor to_plain(const Tensor& t) const = 0;  // a row-major copy of `t`
};

class Tensor {
public:
    Tensor();
    // Owning, uninitialized storage (64-byte aligned).
    Tensor(const std::vector<int64_t>& shape, DType dtype);
    // Owning, uninitialized storage in a backend layout.
    Tensor(const std::vector<int64_t>& shape, DType dtype, std::shared_ptr<const TensorLayout> layout);
    // Non-owning view over external memory; the caller keeps it alive.
    Tensor(void* data, const std::vector<int64_t>& shape, DType dtype);
    // Shares `keep_alive` (e.g. a memory mapping) and points into it.
    Tensor(std::shared_ptr<void> keep_alive, void* data, const std::vector<int64_t>& shape, DType dtype);

    Tensor(const Tensor& other);
    Tensor(Tensor&& other) noexcept;
    Tensor& operator=(const Tensor& other);
    Tensor& operator=(Tensor&& other) noexcept;
    ~Tensor();

    void* data() { return data_; }
    const void* data() const { return data_; }
    template <typename T> T* data_ptr() { return static_cast<T*>(data_); }
    template <typename T> const T* data_ptr() const { return static_cast<const T*>(data_); }

    const std::vector<int64_t>& shape() const { return shape_; }
    DType dtype() const { return dtype_; }
    size_t ndim() const { return shape_.size(); }
    int64_t num_elements() const;
    size_t size_bytes() const;
    bool empty() const { return data_ == nullptr && num_elements() != 0; }
    bool owns_data() const { return storage_ != nullptr; }

    const TensorLayout* layout() const { return layout_.get(); }
    bool is_plain() const { return layout_ == nullptr; }
    Tensor plain() const;  // *this when row-major, else a row-major copy

    Tensor clone() const;                                       // deep copy, owning, row-major
    Tensor view() const;                                        // shares storage
    Tensor reshape(const std::vector<int64_t>& new_shape) const;  // shares storage; -1 infers one dim
                                                                  // (of a row-major tensor)

    // A zero-filled owning tensor.
    static Tensor zeros(const std::vector<int64_t>& shape, DType dtype);

private:
    std::shared_ptr<void> storage_;  // null for a non-owning view
    void* data_ = nullptr;
    std::vector<int64_t> shape_;
    DType dtype_ = DType::Float32;
    std::shared_ptr<const TensorLayout> layout_;  // null: row-major
};

int64_t num_elements_of(const std::vector<int64_t>& shape);

}  // namespace pyflame_rt
