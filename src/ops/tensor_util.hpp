#pragma once
// Element-moving helpers shared by sequence and control-flow ops (any dtype, strings too).
#include <vector>

#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::ops {

// Concatenates `items` along `axis` (of the result). With `new_axis`, each item gets a new
// dimension of size 1 inserted at `axis` first (stacking). ValidationError on mismatches.
Tensor concat_along(const std::vector<Tensor>& items, int64_t axis, bool new_axis);
// items[i] = the slice [start, start + length) of `t` along `axis`; without `keepdims` and
// length 1, that axis is dropped.
Tensor slice_along(const Tensor& t, int64_t axis, int64_t start, int64_t length, bool keepdims);

}  // namespace pyflame_rt::ops
