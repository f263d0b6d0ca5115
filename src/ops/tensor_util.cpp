#include "ops/tensor_util.hpp"

#include <string>

#include "ops/dispatch.hpp"

namespace pyflame_rt::ops {
namespace {

// Copies `rows` blocks of `block` elements from src (stride src_stride) to dst (stride dst_stride).
void copy_blocks(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst, int64_t dst_offset,
                 int64_t dst_stride, int64_t rows, int64_t block) {
    dispatch_by_width(src.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* s = static_cast<const T*>(src.data()) + src_offset;
        T* d = static_cast<T*>(dst.data()) + dst_offset;
        for (int64_t r = 0; r < rows; ++r)
            std::copy(s + r * src_stride, s + r * src_stride + block, d + r * dst_stride);
    });
}

int64_t product(const std::vector<int64_t>& dims, size_t from, size_t to) {
    int64_t p = 1;
    for (size_t i = from; i < to; ++i) p *= dims[i];
    return p;
}

}  // namespace

Tensor concat_along(const std::vector<Tensor>& items, int64_t axis, bool new_axis) {
    if (items.empty()) throw ValidationError("cannot concatenate an empty sequence");
    std::vector<int64_t> first = items[0].shape();
    if (new_axis) {
        if (axis < 0) axis += static_cast<int64_t>(first.size()) + 1;
        if (axis < 0 || axis > static_cast<int64_t>(first.size())) throw ValidationError("axis out of range");
        first.insert(first.begin() + axis, 1);
    } else {
        if (axis < 0) axis += static_cast<int64_t>(first.size());
        if (axis < 0 || axis >= static_cast<int64_t>(first.size())) throw ValidationError("axis out of range");
    }
    std::vector<int64_t> out_shape = first;
    out_shape[axis] = 0;
    for (const Tensor& t : items) {
        std::vector<int64_t> s = t.shape();
        if (new_axis) s.insert(s.begin() + axis, 1);
        if (t.dtype() != items[0].dtype()) throw ValidationError("sequence elements differ in dtype");
        bool fits = s.size() == first.size();
        for (size_t d = 0; fits && d < s.size(); ++d) fits = static_cast<int64_t>(d) == axis || s[d] == first[d];
        if (!fits) throw ValidationError("cannot concatenate shapes " + shape_to_string(items[0].shape()) + " and " +
                                         shape_to_string(t.shape()));
        out_shape[axis] += s[axis];
    }
    Tensor out(out_shape, items[0].dtype());
    const int64_t outer = product(out_shape, 0, axis), inner = product(out_shape, axis + 1, out_shape.size());
    int64_t offset = 0;
    for (const Tensor& t : items) {
        const int64_t len = new_axis ? 1 : t.shape()[axis];
        copy_blocks(t, 0, len * inner, out, offset * inner, out_shape[axis] * inner, outer, len * inner);
        offset += len;
    }
    return out;
}

Tensor slice_along(const Tensor& t, int64_t axis, int64_t start, int64_t length, bool keepdims) {
    const auto& dims = t.shape();
    std::vector<int64_t> out_shape = dims;
    out_shape[axis] = length;
    const int64_t outer = product(dims, 0, axis), inner = product(dims, axis + 1, dims.size());
    Tensor out(out_shape, t.dtype());
    copy_blocks(t, start * inner, dims[axis] * inner, out, 0, length * inner, outer, length * inner);
    if (!keepdims && length == 1) out_shape.erase(out_shape.begin() + axis);
    return out.reshape(out_shape);
}

}  // namespace pyflame_rt::ops
