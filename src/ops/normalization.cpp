#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_normalization_ops(OpTable& table) {}

}  // namespace pyflame_rt::ops
