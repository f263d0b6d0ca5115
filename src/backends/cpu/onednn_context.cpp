#include "backends/cpu/onednn_context.hpp"

#include <algorithm>

#include <omp.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>

#include "backends/cpu/onednn_kernels.hpp"
#include "core/tensor_arena.hpp"

namespace pyflame_rt {

void register_onednn_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    // Cheap: the engine is only looked for when a factory first runs.
    onednn::add_conv_kernels(kernels);
    onednn::add_matmul_kernels(kernels);
    onednn::add_inverted_residual_kernel(kernels);
    onednn::add_pool_kernels(kernels);
    onednn::add_eltwise_kernels(kernels);
    onednn::add_norm_kernels(kernels);
    onednn::add_quant_kernels(kernels);
    onednn::add_lowp_kernels(kernels);
    onednn::add_transpose_kernels(kernels);
    onednn::add_attention_kernels(kernels);
}

bool onednn_available() { return onednn::cpu_engine() != nullptr; }

bool is_onednn_kernel(const ops::OpKernel& kernel) { return dynamic_cast<const onednn::FastKernel*>(&kernel) != nullptr; }

namespace onednn {

void apply_thread_budget(int num_threads) {
    if (num_threads >= 1 && omp_get_max_threads() != num_threads) omp_set_num_threads(num_threads);
}

int threads_for_primitive(double flops, double bytes, int budget) {
    constexpr double kFlopsPerSecond = 100e9, kBytesPerSecond = 60e9;  // one core, AVX-512, L3
    // The second OpenMP thread spins between regions, so a fork/join costs ~1 µs: the demo's small
    // CNN ran fastest splitting work from ~2 µs up (10 µs: 46 µs per run, 2 µs: 41 µs).
    constexpr double kWorthSplitting = 2e-6;  // seconds
    return std::max(flops / kFlopsPerSecond, bytes / kBytesPerSecond) < kWorthSplitting ? 1 : budget;
}

const dnnl::engine* cpu_engine() {
    static const std::unique_ptr<dnnl::engine> engine = []() -> std::unique_ptr<dnnl::engine> {
        const char* flag = std::getenv("PYFLAME_RT_ONEDNN");
        if (flag && std::strcmp(flag, "0") == 0) return nullptr;
        try {
            // Counted first: a failed creation would print oneDNN's error log on stderr.
            if (dnnl::engine::get_count(dnnl::engine::kind::cpu) == 0) return nullptr;
            return std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0);
        } catch (const dnnl::error&) {
            return nullptr;
        }
    }();
    return engine.get();
}

dnnl::memory::desc plain_desc(const Dims& dims, dnnl::memory::data_type type) {
    Dims strides(dims.size(), 1);
    for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
    return dnnl::memory::desc(dims, type, strides);
}

dnnl::memory::desc any_desc(const Dims& dims, dnnl::memory::data_type type) {
    return dnnl::memory::desc(dims, type, dnnl::memory::format_tag::any);
}

dnnl::memory memory_over(const dnnl::memory::desc& md, const void* data) {
    // Creating a memory object costs allocations, and kernels describe the same tensors on every
    // run: the same layout object over, with the arena's plan, the same address. So objects are
    // kept per thread by (layout object, address). Nothing re-points a memory object, so one
    // object serves every caller that asks for the same pair; the cache holds the layout, which
    // keeps its address from being reused by another.
    struct Key {
        const void* desc;
        const void* data;
        bool operator==(const Key& o) const { return desc == o.desc && data == o.data; }
    };
    struct KeyHash {
        size_t operator()(const Key& k) const {
            return std::hash<const void*>()(k.desc) * 31 + std::hash<const void*>()(k.data);
        }
    };
    struct Cached {
        dnnl::memory::desc desc;
        dnnl::memory memory;
    };
    constexpr size_t kMaxCached = 4096;  // inputs at new addresses each run must not grow it
    thread_local std::unordered_map<Key, Cached, KeyHash> cache;
    const Key key{md.get(), data};
    if (auto it = cache.find(key); it != cache.end()) return it->second.memory;
    if (cache.size() >= kMaxCached) cache.clear();
    dnnl::memory memory(md, *cpu_engine(), const_cast<void*>(data));
    cache.emplace(key, Cached{md, memory});
    return memory;
}

dnnl::memory slab_memory(const dnnl::memory::desc& md, int slot, const void* data) {
    struct Key {
        const void* desc;
        int slot;
        bool operator==(const Key& o) const { return desc == o.desc && slot == o.slot; }
    };
    struct KeyHash {
        size_t operator()(const Key& k) const { return std::hash<const void*>()(k.desc) * 31 + static_cast<size_t>(k.slot); }
    };
    struct Cached {
        dnnl::memory::desc desc;  // keeps the layout object (the key) alive
        dnnl::memory memory;
    };
    constexpr size_t kMaxCached = 1024;
    thread_local std::unordered_map<Key, Cached, KeyHash> cache;
    const Key key{md.get(), slot};
    auto it = cache.find(key);
    if (it == cache.end()) {
        if (cache.size() >= kMaxCached) cache.clear();
        it = cache.emplace(key, Cached{md, dnnl::memory(md, *cpu_engine(), const_cast<void*>(data))}).first;
    } else {
        it->second.memory.set_data_handle(const_cast<void*>(data));
    }
    return it->second.memory;
}

dnnl::primitive_attr base_attr() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

namespace {

struct AlignedBuffer {
    void* data = nullptr;
    size_t size = 0;
    ~AlignedBuffer() { std::free(data); }
};

}  // namespace

dnnl::memory thread_memory(const dnnl::memory::desc& md, Buffer role) {
    thread_local std::array<AlignedBuffer, static_cast<size_t>(Buffer::Count)> buffers;
    AlignedBuffer& b = buffers[static_cast<size_t>(role)];
    const size_t bytes = md.get_size();
    if (bytes > b.size) {
        std::free(b.data);
        b.data = nullptr;  // stays consistent if the allocation below throws
        b.size = 0;
        b.data = heap_buffer(bytes);
        b.size = bytes;
    }
    return memory_over(md, b.data);
}

ConvGeometry conv_geometry(const ops::WindowAttributes& window, int64_t group, const std::vector<int64_t>& x_shape,
                           const std::vector<int64_t>& w_shape, const Node& node) {
    const std::vector<int64_t> kernel(w_shape.begin() + 2, w_shape.end());
    const std::vector<int64_t> spatial(x_shape.begin() + 2, x_shape.end());
    ConvGeometry g;
    g.out_shape = {x_shape[0], w_shape[0]};
    for (const ops::WindowAxis& a : ops::resolve_window(window, kernel, spatial, node)) {
        g.out_shape.push_back(a.output);
        g.strides.push_back(a.stride);
        g.dilations.push_back(a.dilation - 1);
        g.pad_begin.push_back(a.pad_begin);
        g.pad_end.push_back(a.pad_end);
    }
    g.weight_dims = to_dims(w_shape);
    if (group > 1) {
        g.weight_dims[0] = w_shape[0] / group;
        g.weight_dims.insert(g.weight_dims.begin(), group);
    }
    return g;
}

Conv2dSizes conv2d_sizes(const ConvGeometry& g, const std::vector<int64_t>& x_shape) {
    Conv2dSizes s;
    s.batch = x_shape[0], s.channels = x_shape[1], s.height = x_shape[2], s.width = x_shape[3];
    s.out_height = g.out_shape[2], s.out_width = g.out_shape[3];
    s.pad_top = g.pad_begin[0], s.pad_left = g.pad_begin[1];
    return s;
}

std::optional<FusedActivation> fused_activation_of(const Node& node) {
    FusedActivation act;
    if (!node.has_attribute("activation")) return act;
    const std::string op = node.get_attribute<std::string>("activation");
    if (op == "Relu") {
        act.kind = FusedActivation::Kind::Relu;
    } else if (op == "Clip") {
        const std::vector<double> p = node.get_attribute<std::vector<double>>("activation_params", {});
        if (p.size() != 2) return std::nullopt;
        act.kind = FusedActivation::Kind::Clip;
        act.min = static_cast<float>(p[0]);
        act.max = static_cast<float>(p[1]);
    } else {
        return std::nullopt;
    }
    return act;
}

void append_activation(dnnl::post_ops& ops, const Node& node) {
    if (!node.has_attribute("activation")) return;
    const std::string op = node.get_attribute<std::string>("activation");
    const std::vector<double> p = node.get_attribute<std::vector<double>>("activation_params", {});
    auto param = [&](size_t i) { return i < p.size() ? static_cast<float>(p[i]) : 0.0f; };
    using A = dnnl::algorithm;
    A alg = A::eltwise_relu;
    float alpha = 0, beta = 0;
    if (op == "Relu") alg = A::eltwise_relu;
    else if (op == "LeakyRelu") alg = A::eltwise_relu, alpha = param(0);
    else if (op == "Sigmoid") alg = A::eltwise_logistic;
    else if (op == "Tanh") alg = A::eltwise_tanh;
    else if (op == "Elu") alg = A::eltwise_elu, alpha = param(0);
    else if (op == "HardSigmoid") alg = A::eltwise_hardsigmoid, alpha = param(0), beta = param(1);
    else if (op == "HardSwish") alg = A::eltwise_hardswish, alpha = 1.0f / 6.0f, beta = 0.5f;
    else if (op == "Clip") alg = A::eltwise_clip, alpha = param(0), beta = param(1);
    else if (op == "Gelu") alg = A::eltwise_gelu_erf;
    else if (op == "Swish") alg = A::eltwise_swish, alpha = param(0);  // x * sigmoid(alpha * x)
    else ops::fail_node(node, "unsupported fused activation '" + op + "'");
    ops.append_eltwise(alg, alpha, beta);
}

bool optimized(const dnnl::primitive_desc_base& pd) { return std::strncmp(pd.impl_info_str(), "ref", 3) != 0; }

dnnl::stream& thread_stream() {
    thread_local dnnl::stream stream(*cpu_engine());
    return stream;
}

ExecArgs::ExecArgs(std::initializer_list<std::pair<int, dnnl::memory>> args) {
    for (const auto& [arg, memory] : args) emplace(arg, memory);
}

void ExecArgs::emplace(int arg, dnnl::memory memory) {
    if (size_ == kMax) throw std::logic_error("a oneDNN primitive given more than 16 arguments");
    args_[size_++] = {arg, std::move(memory)};
}

void Step::execute(dnnl::stream& stream, ExecArgs args) const {
    if (scratchpad.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, thread_memory(scratchpad, Buffer::Scratchpad));
    std::array<dnnl_exec_arg_t, ExecArgs::kMax> c_args;
    for (size_t i = 0; i < args.size(); ++i) c_args[i] = {args[i].first, args[i].second.get()};
    dnnl::error::wrap_c_api(
        dnnl_primitive_execute(primitive.get(), stream.get(), static_cast<int>(args.size()), c_args.data()),
        "could not execute a primitive");
}

Step make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    const dnnl::engine& engine = *cpu_engine();
    const dnnl::reorder::primitive_desc pd(engine, from, engine, to, base_attr());
    return Step{dnnl::reorder(pd), pd.scratchpad_desc()};
}

std::optional<Step> reorder_if_needed(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    if (from == to) return std::nullopt;
    return make_reorder(from, to);
}

dnnl::memory relayout(dnnl::stream& stream, const std::optional<Step>& reorder, const dnnl::memory& memory,
                      const dnnl::memory::desc& to, Buffer role) {
    if (!reorder) return memory;
    dnnl::memory out = thread_memory(to, role);
    reorder->execute(stream, {{DNNL_ARG_FROM, memory}, {DNNL_ARG_TO, out}});
    return out;
}

namespace {
// Row-major in `desc`'s own data type (int8 layouts as well as float32 ones).
dnnl::memory::desc plain_like(const dnnl::memory::desc& desc) {
    const Dims dims = desc.get_dims();
    Dims strides(dims.size(), 1);
    for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
    return dnnl::memory::desc(dims, desc.get_data_type(), strides);
}
}  // namespace

OneDnnLayout::OneDnnLayout(const dnnl::memory::desc& desc)
    : desc_(desc), to_plain_(std::make_shared<Step>(make_reorder(desc, plain_like(desc)))) {}

Tensor OneDnnLayout::to_plain(const Tensor& t) const {
    Tensor out(t.shape(), t.dtype());
    dnnl::stream& stream = thread_stream();
    to_plain_->execute(stream, {{DNNL_ARG_FROM, memory_over(desc_, t.data())},
                                {DNNL_ARG_TO, memory_over(plain_like(desc_), out.data())}});
    stream.wait();
    return out;
}

OutputLayout::OutputLayout(const dnnl::memory::desc& dst, const std::vector<int64_t>& shape)
    : OutputLayout(dst, plain_desc(to_dims(shape)), DType::Float32) {}

OutputLayout::OutputLayout(const dnnl::memory::desc& dst, const dnnl::memory::desc& plain, DType dtype)
    : dtype_(dtype), dst_(dst), plain_(plain) {
    const Dims dims = plain.get_dims();
    shape_.assign(dims.begin(), dims.end());
    if (dst_ != plain_) {
        to_plain_ = std::make_shared<Step>(make_reorder(dst_, plain_));
        if (dst_.get_data_type() == plain_.get_data_type()) layout_ = std::make_shared<OneDnnLayout>(dst_);
    }
}

OutputLayout::Write OutputLayout::begin(bool may_write_layout) const {
    Write w;
    const bool keep_layout = layout_ && may_write_layout;
    w.tensor = keep_layout ? Tensor(shape_, dtype_, layout_) : Tensor(shape_, dtype_);
    w.tensor_memory = memory_over(keep_layout ? dst_ : plain_, w.tensor.data());
    w.reorder = to_plain_ && !keep_layout;
    w.dst = w.reorder ? thread_memory(dst_, Buffer::Dst) : w.tensor_memory;
    return w;
}

Tensor OutputLayout::finish(dnnl::stream& stream, Write& write) const {
    if (write.reorder) to_plain_->execute(stream, {{DNNL_ARG_FROM, write.dst}, {DNNL_ARG_TO, write.tensor_memory}});
    return std::move(write.tensor);
}

dnnl::memory::desc desc_of(const Tensor& t, const dnnl::memory::desc& plain) {
    const auto* layout = dynamic_cast<const OneDnnLayout*>(t.layout());
    return layout ? layout->desc() : plain;
}

std::vector<int64_t> shape_and_layout_key(const Tensor& t) {
    std::vector<int64_t> key = t.shape();
    if (const auto* layout = dynamic_cast<const OneDnnLayout*>(t.layout()))
        for (int64_t k : layout_key(layout->desc())) key.push_back(k);
    return key;
}

std::vector<int64_t> layout_key(const dnnl::memory::desc& desc) {
    std::vector<int64_t> key = desc.get_strides();
    key.push_back(-1);
    for (int64_t b : desc.get_inner_blks()) key.push_back(b);
    key.push_back(-2);
    for (int64_t i : desc.get_inner_idxs()) key.push_back(i);
    return key;
}

const Step& ReorderInto::step_from(const dnnl::memory::desc& from) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [md, step] : steps_)
        if (md == from) return *step;
    steps_.emplace_back(from, std::make_shared<Step>(make_reorder(from, to_)));
    return *steps_.back().second;
}

bool lies_in(const dnnl::memory& memory, const dnnl::memory::desc& layout) {
    const_dnnl_memory_desc_t md;
    dnnl::error::wrap_c_api(dnnl_memory_get_memory_desc(memory.get(), &md), "could not read a memory's layout");
    return dnnl_memory_desc_equal(md, layout.get()) != 0;
}

dnnl::memory ReorderInto::operator()(dnnl::stream& stream, const dnnl::memory& from, Buffer role) const {
    if (lies_in(from, to_)) return from;
    dnnl::memory out = thread_memory(to_, role);
    step_from(from.get_desc()).execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, out}});
    return out;
}

void ReorderInto::into(dnnl::stream& stream, const dnnl::memory& from, const dnnl::memory& to) const {
    if (lies_in(from, to_)) {
        std::memcpy(to.get_data_handle(), from.get_data_handle(), to_.get_size());
        return;
    }
    step_from(from.get_desc()).execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

void FastKernel::fallback(ops::KernelContext& ctx) const {
    std::vector<Tensor> row_major;
    row_major.reserve(ctx.inputs.size());
    const std::vector<const Tensor*> given = ctx.inputs;
    for (const Tensor*& t : ctx.inputs)
        if (t && !t->is_plain()) t = &row_major.emplace_back(t->plain());
    if (row_major.empty()) return reference_->compute(ctx);
    try {
        reference_->compute(ctx);
    } catch (...) {
        ctx.inputs = given;
        throw;
    }
    ctx.inputs = given;
}

dnnl::memory PackedConstant::get(const dnnl::memory::desc& plain, const dnnl::memory::desc& packed) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [md, memory] : packed_)
        if (md == packed) return memory;
    dnnl::memory out(packed, *cpu_engine());  // owned by oneDNN, kept for the kernel's life
    dnnl::stream& stream = thread_stream();
    // A prepacked value is unpacked to row-major for the reorder (rare: another shape asked for
    // another layout), then dropped.
    const Tensor source = this->plain();
    make_reorder(plain, packed).execute(stream, {{DNNL_ARG_FROM, memory_over(plain, source.data())}, {DNNL_ARG_TO, out}});
    stream.wait();
    packed_.emplace_back(packed, out);
    return out;
}

bool PackedConstant::prepack(const dnnl::memory::desc& plain, const dnnl::memory::desc& packed) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepacked_ || !value_.is_plain() || value_.dtype() != DType::Float32) return false;
    const Dims dims = packed.get_dims();
    const std::vector<int64_t>& shape = value_.shape();
    dnnl::memory::desc stored;  // the packed layout over the value's own dims
    if (Dims(shape.begin(), shape.end()) == dims) stored = packed;
    else if (shape.size() >= 2 && dims.size() == 2 && shape[0] == dims[1] && shape[1] == dims[0] &&
             std::all_of(shape.begin() + 2, shape.end(), [](int64_t d) { return d == 1; })) {
        // A 2-D value read transposed; or a 1x1 convolution's (N, K, 1, 1) weights read as [K, N].
        stored = packed.permute_axes({1, 0});
        if (shape.size() > 2) try {
                stored = stored.reshape(Dims(shape.begin(), shape.end()));
            } catch (const dnnl::error&) {
                return false;  // a layout oneDNN cannot give the unit axes
            }
    } else {
        return false;
    }
    Tensor copy(shape, DType::Float32, std::make_shared<OneDnnLayout>(stored));
    dnnl::stream& stream = thread_stream();
    make_reorder(plain, packed)
        .execute(stream, {{DNNL_ARG_FROM, memory_over(plain, value_.data())}, {DNNL_ARG_TO, memory_over(packed, copy.data())}});
    stream.wait();
    value_ = std::move(copy);
    prepacked_ = true;
    packed_.emplace_back(packed, memory_over(packed, value_.data()));
    return true;
}

}  // namespace onednn
}  // namespace pyflame_rt
