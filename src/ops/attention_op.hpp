#pragma once
// com.pyflame FusedAttention(Q, K, V, [mask]) = Softmax(scale * Q·Kᵀ + mask, last axis)·V,
// the scaled dot-product attention the optimizer fuses (attention_fusion.cpp). Defined in
// attention_op.cpp; the shapes below are shared with the oneDNN kernel so both validate alike.
//   Q [..., Sq, D]; K [..., Sk, D], or [..., D, Sk] with k_transposed=1; V [..., Sk, Dv];
//   mask: additive, broadcast with the scores [..., Sq, Sk] as Add does: its last dim is 1 or Sk;
//   its rows 1, Sq, or any number when Sq is 1 (Q's one row then serves them all).
//   Leading (batch) dims of every input broadcast as MatMul's. Y [..., rows, Dv].
//   scale: default 1/sqrt(D).
#include <vector>

#include "ops/op.hpp"

namespace pyflame_rt::ops {

struct AttentionAttributes {
    bool has_scale = false;
    float scale = 1.0f;
    bool k_transposed = false;

    static AttentionAttributes parse(const Node& node);  // ValidationError naming the node
    float scale_for(int64_t head_size) const;
};

// The operands' geometry for one set of input shapes.
struct AttentionShapes {
    int64_t sq = 0, sk = 0, d = 0, dv = 0;
    int64_t rows = 0;                                         // of the scores and Y: Sq, or the mask's when Sq is 1
    std::vector<int64_t> batch;                               // every operand's batch dims broadcast
    std::vector<int64_t> q_batch, k_batch, v_batch, mask_batch;  // as given, without the last two dims
    int64_t mask_rows = 1, mask_cols = 1;                     // 1 or sq, 1 or sk (mask broadcast)
    bool has_mask = false;

    std::vector<int64_t> out_shape() const;  // batch + [rows, dv]
};

// ValidationError naming `node` when the shapes do not fit together. `mask` may be null.
AttentionShapes attention_shapes(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                                 const std::vector<int64_t>& v, const std::vector<int64_t>* mask, bool k_transposed,
                                 const Node& node);

}  // namespace pyflame_rt::ops
