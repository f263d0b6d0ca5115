#include "ops/op.hpp"

namespace pyflame_rt::ops {

void register_indexing_ops(OpTable& table) {}

}  // namespace pyflame_rt::ops
