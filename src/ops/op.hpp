#pragma once
// The internal operator table: each operator is defined once here (schema, shape/type
// inference, reference kernel); backends register their kernels against these definitions.
#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/node.hpp"
#include "pyflame_rt/tensor.hpp"
#include "pyflame_rt/value.hpp"

namespace pyflame_rt::ops {

// What shape inference knows about one node: its input types/shapes (nullopt when the input
// is omitted or unknown) and, for inputs that are initializers or Constants, their values.
struct InferenceContext {
    const Node& node;
    int64_t opset;  // the graph's ai.onnx opset (semantics of some ops changed across opsets)
    std::vector<std::optional<TensorInfo>> inputs;
    std::vector<const Tensor*> constant_inputs;  // nullptr when not constant
    std::vector<std::optional<TensorInfo>> outputs;  // filled by the op (nullopt = unknown)

    const TensorInfo& input(size_t i) const;  // ValidationError when unknown
    bool has_input(size_t i) const { return i < inputs.size() && inputs[i].has_value(); }
    const Tensor* constant(size_t i) const { return i < constant_inputs.size() ? constant_inputs[i] : nullptr; }
    void set_output(size_t i, DType dtype, Shape shape);
};

using ShapeInferenceFn = std::function<void(InferenceContext&)>;

// Finds a value by name in the scopes visible at a node (for subgraphs' outer-scope reads).
using ScopeLookup = std::function<const Value*(const std::string& name)>;

// Per-run limits and hooks, passed down into subgraphs.
struct RunControl {
    std::optional<std::chrono::steady_clock::time_point> deadline;
    int64_t timeout_ms = 0;  // for the message
    // Called after each node with its start/end times (profiling).
    std::function<void(const Node&, std::chrono::steady_clock::time_point, std::chrono::steady_clock::time_point)> on_node;
};

// Per-run execution context of one node. Inputs are never modified by a kernel.
struct KernelContext {
    std::vector<const Tensor*> inputs;  // nullptr for an omitted input or one that is not a tensor
    std::vector<Tensor> outputs;        // the kernel assigns each (shape and dtype its own)
    int num_threads = 1;
    // Sequence/optional-aware view of the same inputs (nullptr when omitted), and outputs
    // that are not plain tensors: a kernel producing a sequence or a none sets these.
    std::vector<const Value*> input_values;
    std::vector<std::optional<Value>> output_values;
    const ScopeLookup* scope = nullptr;     // names visible at this node
    const RunControl* control = nullptr;    // the run's deadline and hooks
    // Per output: whether every reader takes a backend layout (see OpKernel::writes_layout).
    const std::vector<char>* layout_outputs = nullptr;
    bool may_write_layout(size_t o) const { return layout_outputs && o < layout_outputs->size() && (*layout_outputs)[o]; }

    const Tensor& input(size_t i) const;  // ValidationError when omitted
    bool has_input(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
    const Value* input_value(size_t i) const { return i < input_values.size() ? input_values[i] : nullptr; }
    void set_output_value(size_t i, Value v) {
        if (output_values.size() <= i) output_values.resize(i + 1);
        output_values[i] = std::move(v);
    }
};

// Created once per node at session creation (attributes parsed there), then run many times,
// possibly from several threads at once: compute() must not mutate the kernel.
class OpKernel {
public:
    virtual ~OpKernel() = default;
    virtual void compute(KernelContext& ctx) const = 0;

    // The layout contract (TensorLayout): whether compute() takes input `i` in a backend layout,
    // and may write output `o` in one when KernelContext::may_write_layout(o) says every reader
    // takes it. The executor decides this once, at plan time; other readers get row-major data.
    virtual bool reads_layout(size_t input) const { return false; }
    virtual bool writes_layout(size_t output) const { return false; }

    // Input `input`, an initializer, as this kernel prepared it at creation (weights packed into
    // its primitive's layout): a tensor of the same shape and dtype in a backend layout, which
    // compute() takes as well as the original (reads_layout(input) holds). The executor may then
    // keep only this copy. nullptr: the kernel prepared none.
    virtual const Tensor* prepacked_input(size_t input) const { return nullptr; }
};

class SubgraphRunner;

// What a kernel may know when it is created (once per node, at session creation).
struct KernelInfo {
    const Node& node;
    int64_t opset = 0;                          // the graph's ai.onnx opset
    std::vector<const Tensor*> constant_inputs; // per node input: its value when it is an
                                                // initializer (fixed for the session), else nullptr
    // Per node input: its shape as shape inference left it, -1 for a dim it could not fix;
    // empty when the rank is unknown (or a scalar). Lets a kernel plan (and pack constants)
    // for the shapes it will see, at session creation.
    std::vector<std::vector<int64_t>> input_shapes;
    // The intra-op threads compute() will be given (KernelContext::num_threads): oneDNN plans a
    // primitive for the threads it is created with.
    int num_threads = 1;
    // Compiles a subgraph attribute of this node with the same backend (control flow ops).
    std::function<std::unique_ptr<SubgraphRunner>(const Graph&)> compile_subgraph;
    const Tensor* constant_input(size_t i) const { return i < constant_inputs.size() ? constant_inputs[i] : nullptr; }
    std::vector<int64_t> input_shape(size_t i) const { return i < input_shapes.size() ? input_shapes[i] : std::vector<int64_t>{}; }
};

using KernelFactory = std::function<std::unique_ptr<OpKernel>(const KernelInfo& info)>;

// A subgraph (If/Loop/Scan body) compiled once, run many times.
class SubgraphRunner {
public:
    virtual ~SubgraphRunner() = default;
    // `inputs` in the subgraph's input order; names from enclosing graphs resolve via `outer`.
    virtual std::vector<Value> run(std::vector<Value> inputs, const ScopeLookup& outer, const RunControl& control) const = 0;
    virtual const Graph& graph() const = 0;
};

struct OpSchema {
    std::string op_type;
    std::string domain;          // "" = ai.onnx
    int since_version = 1;
    int min_inputs = 0, max_inputs = 0;    // max -1 = variadic
    int min_outputs = 1, max_outputs = 1;
    ShapeInferenceFn infer;      // may be empty: outputs unknown until run time
    KernelFactory reference_kernel;
};

// All built-in operator definitions, built once.
class OpTable {
public:
    static const OpTable& instance();
    const OpSchema* find(const std::string& op_type, const std::string& domain = "") const;
    std::vector<const OpSchema*> all() const;
    void add(OpSchema schema);

private:
    std::unordered_map<std::string, OpSchema> ops_;  // key: domain + "::" + op_type
};

// Throws ValidationError naming the node when its arity does not match the schema.
void check_arity(const OpSchema& schema, const Node& node);

// Registration of each op family (one function per source file).
void register_elementwise_ops(OpTable& table);
void register_activation_ops(OpTable& table);
void register_matmul_ops(OpTable& table);
void register_conv_ops(OpTable& table);
void register_pool_ops(OpTable& table);
void register_norm_ops(OpTable& table);
void register_shape_ops(OpTable& table);
// Operator coverage (one owner per file): math.cpp, cast.cpp, indexing.cpp, reduce.cpp,
// normalization.cpp, nn_extra.cpp, quantize.cpp, sequence.cpp, control_flow.cpp, misc_ops.cpp.
void register_math_ops(OpTable& table);
void register_cast_ops(OpTable& table);
void register_indexing_ops(OpTable& table);
void register_reduce_ops(OpTable& table);
void register_normalization_ops(OpTable& table);
void register_nn_extra_ops(OpTable& table);
void register_quantize_ops(OpTable& table);
void register_sequence_ops(OpTable& table);
void register_control_flow_ops(OpTable& table);
void register_misc_ops(OpTable& table);
void register_fused_ops(OpTable& table);  // fused_ops.cpp: operators the optimizer creates

// InvertedResidual's convolution `part` (0 expand, 1 depthwise, 2 project) as the FusedConv
// node it was made of: inputs (x, W, B[, Z]) under the fused node's names, attributes without
// their part's prefix (its name and "_": expand_activation). Defined in fused_ops.cpp.
constexpr int kInvertedResidualParts = 3;
extern const char* const kInvertedResidualPartNames[kInvertedResidualParts];
Node inverted_residual_part(const Node& node, int part);
void register_fused_quant_ops(OpTable& table);  // fused_quant_ops.cpp: the same for int8 graphs
void register_attention_ops(OpTable& table);  // attention_op.cpp: com.pyflame FusedAttention

// ---- helpers shared by kernels ----
std::string node_label(const Node& node);  // "'conv1' (Conv)"
// Numpy/ONNX multidirectional broadcasting; ValidationError if incompatible.
std::vector<int64_t> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
Shape broadcast_shapes(const Shape& a, const Shape& b);
// Normalizes a possibly negative axis for `rank`; ValidationError when out of range.
int64_t normalize_axis(int64_t axis, int64_t rank, const Node& node);
// Requires float32 input i (the dtype this build's kernels support for the op).
void require_dtype(const Node& node, const Tensor& t, DType dtype, const char* what);

// ValidationError "node 'name' (Op): message".
[[noreturn]] inline void fail_node(const Node& node, const std::string& message) {
    throw ValidationError("node " + node_label(node) + ": " + message);
}

// Base of the reference kernels. Keeps the node's identity (op type and name, not the node
// itself: a kernel must not dangle if it outlives its graph) for error messages.
class NodeKernel : public OpKernel {
protected:
    explicit NodeKernel(const Node& node) : node_(node.op_type(), node.name(), {}, {}) {}
    [[noreturn]] void fail(const std::string& message) const { fail_node(node_, message); }

    const Node node_;  // identity only: no inputs, outputs or attributes
};

// How many threads `flops` of work deserves (one per few million flops, at most num_threads):
// spawning a std::thread costs tens of microseconds. Defined in matmul.cpp.
int threads_for_work(double flops, int num_threads);

// The tensor a Constant node produces (value, value_float(s), value_int(s)); ValidationError
// naming the node when it has none, several, or an unsupported one. Defined in shape_ops.cpp.
Tensor constant_node_value(const Node& node);

// Row-major GEMM on contiguous matrices: c (m x n) = alpha * op(a) * op(b) + beta * c, where
// op(a) is m x k (a is stored k x m when trans_a) and op(b) is k x n (b stored n x k when
// trans_b). beta == 0 ignores c's previous contents. Splits c's rows over up to num_threads
// std::threads when the product is big enough to pay for them. Defined in matmul.cpp.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          const float* b, float beta, float* c, int num_threads = 1);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          const double* b, double beta, double* c, int num_threads = 1);

// Offset (in matrices) into an operand with batch dims `dims` (right-aligned, numpy
// broadcasting) of each batch index of `batch`. Defined in matmul.cpp.
std::vector<int64_t> batch_offsets(const std::vector<int64_t>& batch, const std::vector<int64_t>& dims);

// Runs fn(begin, end) over [0, n) cut into at most num_threads contiguous chunks, one per
// std::thread (the caller runs the first); rethrows the first exception a chunk threw.
// Defined in matmul.cpp.
void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t, int64_t)>& fn);

// ---- sliding-window geometry shared by Conv and the pools (defined in conv.cpp) ----
enum class AutoPad { NotSet, Valid, SameUpper, SameLower };

// The window attributes as written on the node. Per-axis lists are empty when absent: their
// defaults depend on the spatial rank, which Conv may only learn from its weight.
struct WindowAttributes {
    std::vector<int64_t> kernel_shape, strides, dilations, pads;  // pads: all begins, then all ends
    AutoPad auto_pad = AutoPad::NotSet;
    bool ceil_mode = false;

    // Reads kernel_shape, strides, dilations, pads, auto_pad and (when `has_ceil_mode`) ceil_mode;
    // ValidationError naming the node for bad values.
    static WindowAttributes parse(const Node& node, bool has_ceil_mode);
    // ValidationError naming the node when a given list does not fit `spatial_rank` axes.
    void check_rank(size_t spatial_rank, const Node& node) const;
};

// One spatial axis resolved for one input size.
struct WindowAxis {
    int64_t kernel = 1, stride = 1, dilation = 1, pad_begin = 0, pad_end = 0;
    int64_t input = 1, output = 1;
};

// Resolves spatial axis `axis` of `spatial_rank` (defaults, auto_pad, output size with
// ceil_mode); ValidationError naming the node when the window does not fit the padded input.
WindowAxis resolve_window_axis(const WindowAttributes& attrs, size_t axis, size_t spatial_rank, int64_t kernel,
                               int64_t input, const Node& node);
// All axes at once, for run time.
std::vector<WindowAxis> resolve_window(const WindowAttributes& attrs, const std::vector<int64_t>& kernel,
                                       const std::vector<int64_t>& input_spatial, const Node& node);
// Output spatial dims for shape inference: nullopt where the input size or kernel is unknown.
Shape infer_window_output(const WindowAttributes& attrs, const Shape& kernel, const Shape& input_spatial,
                          const Node& node);
// ConvTranspose: X (N, C, in...), W (C, M/group, kernel...), optional B (M). Each output axis is
// stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - pads; with output_shape
// (or SAME auto_pad, whose output is in * stride) the pads come from the difference, the odd
// cell at the end for SAME_UPPER and at the beginning otherwise. Defined in conv.cpp.
struct ConvTransposeAttributes {
    WindowAttributes window;
    std::vector<int64_t> output_padding, output_shape;
    int64_t group = 1;

    explicit ConvTransposeAttributes(const Node& node);  // ValidationError naming the node for bad values
    // Axis i of `spatial` as the Conv whose gradient this is: its `input` is our output size,
    // its `output` our input size, its pads our pads.
    WindowAxis axis(size_t i, size_t spatial, int64_t kernel, int64_t in, const Node& node) const;
};

// 1-D and 2-D windows as 3-D ones with leading identity axes, so kernels loop over 3 axes only.
std::array<WindowAxis, 3> as_3d(const std::vector<WindowAxis>& axes);

}  // namespace pyflame_rt::ops
