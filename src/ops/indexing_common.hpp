#pragma once
// Helpers shared by the indexing / data-movement ops (indexing*.cpp, shape_ops.cpp): reading
// integer inputs, shape-inference conveniences and one strided-copy routine that Slice, Pad,
// Tile, Expand, Gather, Compress, CenterCropPad, Transpose, DepthToSpace and SpaceToDepth use.
#include <optional>
#include <string>
#include <vector>

#include "ops/op.hpp"

namespace pyflame_rt::ops {

// ---- integer inputs ----
// The values of an Int32 or Int64 tensor (any shape) as int64; ValidationError naming the node
// for other dtypes.
std::vector<int64_t> int_values(const Tensor& t, const Node& node, const std::string& what);
// The single value of an Int32/Int64 tensor that holds exactly one element (scalar or [1]).
int64_t int_scalar(const Tensor& t, const Node& node, const std::string& what);
// Any numeric or Bool tensor read as int64 (floating values truncated toward zero; NaN and
// out-of-range values raise): OneHot's indices and depth accept every numeric type.
std::vector<int64_t> values_as_int64(const Tensor& t, const Node& node, const std::string& what);
// An int list that is an attribute before opset `input_since` and input `input` from then on
// (Squeeze/Unsqueeze axes, Split split, Slice starts...). Built at kernel creation: kernels
// keep only the node's identity, so the attribute is read here; a node written in the other
// opset's form raises ValidationError.
class IntsSource {
public:
    IntsSource(const Node& node, int64_t opset, int64_t input_since, const std::string& attr, size_t input);
    // The attribute's value, or input `input` (Int32/Int64); nullopt when absent.
    std::optional<std::vector<int64_t>> get(const KernelContext& ctx, const Node& node) const;

private:
    bool from_input_;
    std::optional<std::vector<int64_t>> attr_value_;
    std::string name_;
    size_t input_;
};

// Normalizes each axis for `rank` and rejects repeats.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const Node& node);

// ValidationError naming the node when a tensor of `dims` could not exist (its element count
// or byte size overflows int64): dims taken from input values must never wrap around.
void check_output_size(const std::vector<int64_t>& dims, const Node& node);

// Row-major element strides of `dims`.
std::vector<int64_t> row_major_strides(const std::vector<int64_t>& dims);

// ---- shape inference ----
// Output i has dtype `dtype` and nothing is known of its shape.
void set_output_unknown_rank(InferenceContext& ctx, size_t i, DType dtype);
// Output of `rank` unknown dims.
inline Shape unknown_dims(size_t rank) { return Shape(rank); }
// Input i's int values when it is a constant Int32/Int64 tensor (ValidationError for other
// dtypes); nullopt when the input is omitted or not constant.
std::optional<std::vector<int64_t>> constant_ints(const InferenceContext& ctx, size_t i, const std::string& what);
// IntsSource's counterpart for shape inference: `known` is false when the input is given but
// not constant (then the list is unknown); nullopt values with known=true mean absent.
struct MaybeInts {
    bool known = true;
    std::optional<std::vector<int64_t>> values;
};
MaybeInts ints_attr_or_input(const InferenceContext& ctx, int64_t input_since, const std::string& attr, size_t input);
// Number of elements along input i's only dimension when it is 1-D with a known length.
std::optional<int64_t> known_length(const InferenceContext& ctx, size_t i);

// ---- the strided copy ----
// out[j0, ..., jn] = in[maps[0][j0] + ... + maps[n][jn]], or the fill value when any of those
// entries is kPadding. maps[d] has out_dims[d] entries, each an element offset into `in`
// (index times stride), so one routine covers slicing (start + j*step), broadcasting (stride 0),
// tiling (j mod n), padding, gathering (indices[j]) and permuting axes.
constexpr int64_t kPadding = -1;
using AxisMaps = std::vector<std::vector<int64_t>>;
// `fill` points to one element of `in`'s dtype, or is nullptr for zero (empty for strings).
// Any dtype (copied by element width; strings by assignment). Splits rows over threads.
Tensor copy_by_axis_maps(const Tensor& in, const std::vector<int64_t>& out_dims, const AxisMaps& maps,
                         const void* fill, int num_threads);

// The map of an axis taken whole: j * stride.
std::vector<int64_t> identity_map(int64_t dim, int64_t stride);
// `in` (its elements viewed with dims `dims`) with axes permuted: out dim i is dims[perm[i]].
Tensor permute_axes(const Tensor& in, const std::vector<int64_t>& dims, const std::vector<int64_t>& perm,
                    int num_threads);
// Elements of `in` at `indices` (normalized, in range) along `axis`: the output has `in`'s
// shape with dim `axis` replaced by indices.size().
Tensor take_along_axis(const Tensor& in, size_t axis, const std::vector<int64_t>& indices, int num_threads);

// Threads worth using to move `elements` elements.
int threads_for_copy(int64_t elements, int num_threads);

// Calls fn(index) for each multi-index of the box `dims` in row-major order (none when a dim
// is 0; once, with an empty index, for a scalar).
template <typename F>
void for_each_index(const std::vector<int64_t>& dims, F&& fn) {
    for (int64_t d : dims)
        if (d == 0) return;
    std::vector<int64_t> index(dims.size(), 0);
    while (true) {
        fn(static_cast<const std::vector<int64_t>&>(index));
        size_t d = dims.size();
        while (d > 0 && ++index[d - 1] == dims[d - 1]) index[--d] = 0;
        if (d == 0) return;
    }
}

// Index `v` along an axis of size `dim`, negative counting from the end; ValidationError
// naming the node when outside [-dim, dim-1].
inline int64_t normalize_index(int64_t v, int64_t dim, const Node& node, const char* what) {
    if (v < -dim || v >= dim)
        fail_node(node, std::string(what) + " " + std::to_string(v) + " is out of range for a dimension of size " +
                            std::to_string(dim));
    return v < 0 ? v + dim : v;
}

// ---- registration of the indexing families (one function per indexing_*.cpp) ----
void register_indexing_gather_ops(OpTable& table);    // Gather*, Scatter*, TensorScatter, Compress
void register_indexing_slice_ops(OpTable& table);     // Slice, Pad, Expand, Tile, CenterCropPad, ...
void register_indexing_layout_ops(OpTable& table);    // Shape, Size, Squeeze, Unsqueeze, Split, ...
void register_indexing_generate_ops(OpTable& table);  // ConstantOfShape, Range, OneHot, EyeLike, ...
void register_indexing_sort_ops(OpTable& table);      // Unique, TopK, NonZero

}  // namespace pyflame_rt::ops
