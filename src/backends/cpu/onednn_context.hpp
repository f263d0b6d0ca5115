#pragma once
// What the oneDNN kernels share: the CPU engine, descriptors over plain (row-major) tensors,
// the per-shape primitive cache, constants packed once into the layouts primitives ask for,
// per-thread work buffers, and the base class that falls back to the reference kernel.
//
// Concurrency: compute() runs from many threads on one kernel. Primitives are built under the
// cache's mutex and then shared read-only; every call uses its own dnnl::stream, its own memory
// objects and a per-thread scratchpad (primitives are created with scratchpad_mode::user, so
// no scratchpad is shared between concurrent executions).
//
// Threads: this oneDNN runs on GNU OpenMP. OpenMP's thread count is a per-calling-thread
// setting, so each compute() applies the session's KernelContext::num_threads to its own
// thread before running primitives (apply_thread_budget), and sessions with different
// budgets can run side by side.
#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ops/op.hpp"

namespace pyflame_rt::onednn {

// Caps the OpenMP threads oneDNN uses for calls from this thread (n < 1: leave as is).
void apply_thread_budget(int num_threads);

// The OpenMP threads a primitive of this size is worth: one when its work (the flops, or the
// bytes it moves, whichever takes a core longer) is under ~2 µs, where a fork/join and the
// imbalance of a split cost more than a second core saves; else `budget`. A function of the
// shapes only, so a primitive runs with the threads it was created for.
int threads_for_primitive(double flops, double bytes, int budget);
// The same for a primitive that reads and writes about one float32 value per element of its
// input (element-wise ops, normalizations, pools, transposes).
inline int threads_for_elements(int64_t elements, int budget) {
    return threads_for_primitive(static_cast<double>(elements), 8.0 * static_cast<double>(elements), budget);
}


// The process's CPU engine, created on first use; nullptr when there is none, and then every
// factory returns the reference kernel. There is none when the environment sets
// PYFLAME_RT_ONEDNN=0, and when oneDNN's CPU runtime is SYCL and finds no SYCL CPU device: PyPI's
// `onednn` 2026.x wheel is such a build and, without a Unified Runtime OpenCL adapter, sees none.
const dnnl::engine* cpu_engine();

using Dims = dnnl::memory::dims;

// Row-major, and with the layout left to the primitive; float32 unless told otherwise.
dnnl::memory::desc plain_desc(const Dims& dims, dnnl::memory::data_type type = dnnl::memory::data_type::f32);
dnnl::memory::desc any_desc(const Dims& dims, dnnl::memory::data_type type = dnnl::memory::data_type::f32);
// A memory object over existing data (no copy); inputs are only read by the primitives. Kept
// per thread for the pair: callers must not re-point it (set_data_handle), and should pass
// layouts that live across runs (an entry's), not ones made per call.
dnnl::memory memory_over(const dnnl::memory::desc& md, const void* data);
// A memory object of layout `md` over `data` for a primitive run on many sub-blocks of one
// buffer (row slabs), where memory_over would keep an object per address: one object per
// thread, layout object and argument `slot`, re-pointed on each call (valid until the next).
dnnl::memory slab_memory(const dnnl::memory::desc& md, int slot, const void* data);
// Attributes every primitive here is created with (user-provided scratchpad).
dnnl::primitive_attr base_attr();

// Per-thread buffers reused across calls (they only grow), one per role, so intermediate
// tensors and scratchpads cost no allocation and no fresh page faults on each run. A buffer is
// valid until the same thread asks for the same role again; CPU primitives finish before
// execute() returns, so one call's steps can reuse a role one after the other.
// Transformed and Products are Winograd's transformed input and its 36 products; Expanded and
// Depthwise, an inverted residual block's middle rows.
enum class Buffer { Src, Weights, Bias, Dst, Residual, Scratchpad, Transformed, Products, Expanded, Depthwise, Count };
dnnl::memory thread_memory(const dnnl::memory::desc& md, Buffer role);

// The calling thread's stream on the CPU engine. A CPU stream runs each primitive within
// execute(), so one per thread serves every call (creating one per call cost an allocation).
dnnl::stream& thread_stream();

// A primitive's (argument, memory) pairs, held inline: a map built per call was most of a small
// primitive's overhead.
class ExecArgs {
public:
    static constexpr size_t kMax = 16;
    ExecArgs(std::initializer_list<std::pair<int, dnnl::memory>> args);
    void emplace(int arg, dnnl::memory memory);
    size_t size() const { return size_; }
    const std::pair<int, dnnl::memory>& operator[](size_t i) const { return args_[i]; }

private:
    std::array<std::pair<int, dnnl::memory>, kMax> args_;
    size_t size_ = 0;
};

// A primitive and its scratchpad size.
struct Step {
    dnnl::primitive primitive;
    dnnl::memory::desc scratchpad;

    // Executes on `stream` with a per-thread scratchpad added to `args`.
    void execute(dnnl::stream& stream, ExecArgs args) const;
};

// A float32 tensor in a layout a primitive chose (e.g. nChw16c), passed as is to the next
// oneDNN kernel; to_plain() is the reorder at the boundary with every other kernel.
class OneDnnLayout final : public TensorLayout {
public:
    explicit OneDnnLayout(const dnnl::memory::desc& desc);
    const dnnl::memory::desc& desc() const { return desc_; }
    size_t storage_bytes() const override { return desc_.get_size(); }
    Tensor to_plain(const Tensor& t) const override;

private:
    dnnl::memory::desc desc_;
    std::shared_ptr<const Step> to_plain_;
};

// Where a primitive's output goes. The node's output tensor keeps the primitive's layout `dst`
// when every reader takes layouts (KernelContext::may_write_layout) and dst holds the output's
// own element type; otherwise it is row-major (`plain`) and the primitive writes a thread
// buffer that is reordered (and converted) into it.
class OutputLayout {
public:
    OutputLayout() = default;
    OutputLayout(const dnnl::memory::desc& dst, const std::vector<int64_t>& shape);  // float32
    OutputLayout(const dnnl::memory::desc& dst, const dnnl::memory::desc& plain, DType dtype);
    const dnnl::memory::desc& dst() const { return dst_; }

    struct Write {
        Tensor tensor;      // the node's output
        dnnl::memory dst;   // what the primitive writes into
        dnnl::memory tensor_memory;
        bool reorder = false;
    };
    Write begin(bool may_write_layout) const;
    // Reorders into the row-major tensor when needed (on `stream`); returns the tensor.
    Tensor finish(dnnl::stream& stream, Write& write) const;

private:
    std::vector<int64_t> shape_;
    DType dtype_ = DType::Float32;
    dnnl::memory::desc dst_, plain_;
    std::shared_ptr<const Step> to_plain_;           // when dst is not the plain output
    std::shared_ptr<const OneDnnLayout> layout_;     // when dst is another layout of the same type
};

// The layout `t` lies in: its OneDnnLayout's, or row-major `plain`.
dnnl::memory::desc desc_of(const Tensor& t, const dnnl::memory::desc& plain);
// Numbers that identify a layout (strides and blocking), for shape-cache keys.
std::vector<int64_t> layout_key(const dnnl::memory::desc& desc);
// A shape-cache key for `t`: its shape, and the layout_key of the oneDNN layout it lies in.
std::vector<int64_t> shape_and_layout_key(const Tensor& t);
// Whether `memory` lies in `layout` (without copying its descriptor, as get_desc() does).
bool lies_in(const dnnl::memory& memory, const dnnl::memory::desc& layout);

// Reorders into one target layout from whatever layouts inputs arrive in: row-major or another
// primitive's. Each source layout's reorder is built the first time it is seen.
class ReorderInto {
public:
    explicit ReorderInto(const dnnl::memory::desc& to) : to_(to) {}
    const dnnl::memory::desc& target() const { return to_; }
    // `from` itself when it already lies in the target layout, else its copy in the calling
    // thread's buffer `role`.
    dnnl::memory operator()(dnnl::stream& stream, const dnnl::memory& from, Buffer role) const;
    // The same into `to` (memory in the target layout).
    void into(dnnl::stream& stream, const dnnl::memory& from, const dnnl::memory& to) const;

private:
    const Step& step_from(const dnnl::memory::desc& from) const;

    dnnl::memory::desc to_;
    mutable std::mutex mutex_;
    mutable std::vector<std::pair<dnnl::memory::desc, std::shared_ptr<const Step>>> steps_;
};

// A fused node's `activation` (with `activation_params`) as an eltwise post-op; nothing when
// the node has none.
void append_activation(dnnl::post_ops& ops, const Node& node);

// Whether oneDNN picked an optimized implementation for `pd`. Its "ref" ones are generic
// loops: the reference kernel, which defines the semantics, does as well.
bool optimized(const dnnl::primitive_desc_base& pd);

// A reorder from `from` to `to`.
Step make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to);
// A reorder from `from` to `to` when the two layouts differ, else none.
std::optional<Step> reorder_if_needed(const dnnl::memory::desc& from, const dnnl::memory::desc& to);
// `memory` itself when `reorder` is empty, else its copy in layout `to`, made in the calling
// thread's buffer `role`.
dnnl::memory relayout(dnnl::stream& stream, const std::optional<Step>& reorder, const dnnl::memory& memory,
                      const dnnl::memory::desc& to, Buffer role);

inline Dims to_dims(const std::vector<int64_t>& shape) { return Dims(shape.begin(), shape.end()); }

// Per-shape entries (primitives and their layouts), built once per key under a mutex. A null
// entry records a shape the fast kernel leaves to the reference kernel.
template <typename Entry>
class ShapeCache {
public:
    template <typename Make>
    std::shared_ptr<const Entry> get(const std::vector<int64_t>& key, Make&& make) const {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = entries_.find(key);
        if (it != entries_.end()) return it->second;
        // Bounded: a model fed ever new shapes must not grow without end. Entries in use
        // stay alive through their shared_ptr.
        if (entries_.size() >= kMaxEntries) entries_.clear();
        return entries_.emplace(key, make()).first->second;
    }

private:
    static constexpr size_t kMaxEntries = 64;
    mutable std::mutex mutex_;
    mutable std::map<std::vector<int64_t>, std::shared_ptr<const Entry>> entries_;
};

// A constant input (an initializer: fixed for the session's life) reordered into each layout a
// primitive asks for, once per layout: never per run.
class PackedConstant {
public:
    explicit PackedConstant(const Tensor& value) : value_(value) {}
    // The value, read through `plain` (dims and strides over its data), in layout `packed`.
    dnnl::memory get(const dnnl::memory::desc& plain, const dnnl::memory::desc& packed) const;

    // Packs the value now into `packed` (the layout a primitive will ask for) and keeps only
    // that copy, as a tensor of the value's shape in a backend layout (prepacked()): the
    // initializer's own storage can then be freed. `plain` must describe the value as it lies,
    // in `packed`'s dims: row-major, or a 2-D value (or (N, K, 1, 1) weights) read transposed.
    // False when it does not.
    bool prepack(const dnnl::memory::desc& plain, const dnnl::memory::desc& packed);
    const Tensor* prepacked() const { return prepacked_ ? &value_ : nullptr; }
    // The value row-major (a fresh copy when prepacked).
    Tensor plain() const { return value_.is_plain() ? value_ : value_.plain(); }

private:
    Tensor value_;  // shares the initializer's storage, or is the prepacked copy
    bool prepacked_ = false;
    mutable std::mutex mutex_;
    mutable std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> packed_;
};

// The element-wise activation the hand-written conv kernels (winograd, depthwise) apply as they
// write outputs (FusedConv's `activation`).
struct FusedActivation {
    enum class Kind { None, Relu, Clip } kind = Kind::None;
    float min = 0, max = 0;  // Clip's bounds
};
// A node's activation as the hand-written kernels apply it; nothing when it has one they do not.
std::optional<FusedActivation> fused_activation_of(const Node& node);

// A convolution's oneDNN geometry for one input shape, with pads resolved as the reference
// kernel does (auto_pad included; a window that does not fit throws its ValidationError):
// the output shape, strides, dilations (oneDNN counts the gaps between taps), pads, and ONNX's
// (M, C/group, k...) weights as oneDNN's (group, M/group, C/group, k...), as they lie.
struct ConvGeometry {
    std::vector<int64_t> out_shape;
    Dims strides, dilations, pad_begin, pad_end, weight_dims;
};
ConvGeometry conv_geometry(const ops::WindowAttributes& window, int64_t group, const std::vector<int64_t>& x_shape,
                           const std::vector<int64_t>& w_shape, const Node& node);

// A 2-D convolution's sizes as the hand-written kernels (winograd, depthwise) take them.
struct Conv2dSizes {
    int64_t batch = 0, channels = 0, height = 0, width = 0;  // input (N, C, H, W)
    int64_t out_height = 0, out_width = 0;
    int64_t pad_top = 0, pad_left = 0;
};
// Those of `g` (a 2-D ConvGeometry) for input shape `x_shape`.
Conv2dSizes conv2d_sizes(const ConvGeometry& g, const std::vector<int64_t>& x_shape);

// Input `input` when it is a float32 initializer, else nullptr.
inline const Tensor* float_constant(const ops::KernelInfo& info, size_t input) {
    const Tensor* t = info.constant_input(input);
    return t && t->dtype() == DType::Float32 ? t : nullptr;
}

// Base of the fast kernels: keeps the reference kernel for whatever they do not handle (other
// dtypes and ranks, invalid inputs, whose errors the reference kernel reports).
class FastKernel : public ops::NodeKernel {
protected:
    FastKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : NodeKernel(info.node), reference_(std::move(reference)) {}
    // Runs the reference kernel, on row-major copies of inputs that came in a backend layout.
    void fallback(ops::KernelContext& ctx) const;

private:
    std::unique_ptr<ops::OpKernel> reference_;
};

// A factory that creates the reference kernel of `op_type` (it also checks the node's
// attributes) and, when there is an engine, hands it to Kernel::create, which returns the
// fast kernel or the reference kernel itself when the node is not one it handles.
template <typename Kernel>
ops::KernelFactory factory(const std::string& op_type, const std::string& domain = "") {
    return [op_type, domain](const ops::KernelInfo& info) -> std::unique_ptr<ops::OpKernel> {
        std::unique_ptr<ops::OpKernel> reference = ops::OpTable::instance().find(op_type, domain)->reference_kernel(info);
        if (!cpu_engine()) return reference;
        return Kernel::create(info, std::move(reference));
    };
}

// Each family's factories (onednn_conv.cpp, onednn_matmul.cpp, onednn_pool.cpp).
void add_conv_kernels(std::map<std::string, ops::KernelFactory>& kernels);
void add_matmul_kernels(std::map<std::string, ops::KernelFactory>& kernels);
void add_inverted_residual_kernel(std::map<std::string, ops::KernelFactory>& kernels);  // inverted_residual.cpp
void add_pool_kernels(std::map<std::string, ops::KernelFactory>& kernels);
void add_eltwise_kernels(std::map<std::string, ops::KernelFactory>& kernels);  // onednn_eltwise.cpp
void add_norm_kernels(std::map<std::string, ops::KernelFactory>& kernels);     // onednn_norm.cpp
void add_quant_kernels(std::map<std::string, ops::KernelFactory>& kernels);    // onednn_quant.cpp
void add_lowp_kernels(std::map<std::string, ops::KernelFactory>& kernels);     // onednn_lowp.cpp
void add_transpose_kernels(std::map<std::string, ops::KernelFactory>& kernels); // onednn_transpose.cpp
void add_attention_kernels(std::map<std::string, ops::KernelFactory>& kernels);  // onednn_attention.cpp

}  // namespace pyflame_rt::onednn
