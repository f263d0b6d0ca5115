#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_control_flow_ops(OpTable& table) {}

}  // namespace pyflame_rt::ops
