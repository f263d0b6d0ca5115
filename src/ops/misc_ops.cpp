#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_misc_ops(OpTable& table) {}

}  // namespace pyflame_rt::ops
