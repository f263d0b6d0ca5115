#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_nn_extra_ops(OpTable& table) {}

}  // namespace pyflame_rt::ops
