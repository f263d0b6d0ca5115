// MaxPool, AveragePool (1-D, 2-D, 3-D) and GlobalAveragePool on oneDNN's pooling, float32.
// Pooling is memory-bound, so it never reorders its input: it reads whatever layout arrives
// (row-major, or a convolution's blocked one) and writes the same, reordering its (smaller)
// output to row-major only for readers that need it.
//
// ONNX against oneDNN: oneDNN wants output = floor((input + pads - extent) / stride) + 1, so a
// ceil_mode output is expressed by widening the end pad to what the last window needs. Taps on
// padding are ignored by max and by average without count_include_pad, so the widening changes
// nothing there; with count_include_pad ONNX counts the explicit pads but not the widening, so
// such windows stay with the reference kernel. So do MaxPool's Indices output and what oneDNN
// only has a generic ("ref") implementation for, such as dilated windows.
#include <algorithm>

#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

struct PoolEntry {
    dnnl::memory::desc x;
    Step pool;
    OutputLayout output;  // pooling writes x's layout
};

struct PoolGeometry {
    std::vector<int64_t> out_shape;
    Dims strides, kernel, dilations, pad_begin, pad_end;
};

std::shared_ptr<PoolEntry> build_pool(const dnnl::memory::desc& x, PoolGeometry g, dnnl::algorithm algorithm) {
    auto entry = std::make_shared<PoolEntry>();
    entry->x = x;
    try {
        const dnnl::pooling_forward::primitive_desc pd(*cpu_engine(), dnnl::prop_kind::forward_inference, algorithm,
                                                       entry->x, any_desc(to_dims(g.out_shape)), g.strides,
                                                       g.kernel, g.dilations, g.pad_begin, g.pad_end, base_attr());
        if (!optimized(pd)) return nullptr;  // e.g. dilated windows
        entry->pool = Step{dnnl::pooling_forward(pd), pd.scratchpad_desc()};
        entry->output = OutputLayout(pd.dst_desc(), g.out_shape);
    } catch (const dnnl::error&) {
        return nullptr;  // a configuration oneDNN does not implement
    }
    return entry;
}

void run_pool(const PoolEntry& entry, ops::KernelContext& ctx) {
    dnnl::stream& stream = thread_stream();
    OutputLayout::Write y = entry.output.begin(ctx.may_write_layout(0));
    entry.pool.execute(stream, {{DNNL_ARG_SRC, memory_over(entry.x, ctx.input(0).data())}, {DNNL_ARG_DST, y.dst}});
    ctx.outputs[0] = entry.output.finish(stream, y);
    stream.wait();
}

// Pooling kernels read and write oneDNN layouts (input X, output Y).
class PoolKernel : public FastKernel {
public:
    bool reads_layout(size_t input) const override { return input == 0; }
    bool writes_layout(size_t output) const override { return output == 0; }

protected:
    using FastKernel::FastKernel;
};

// MaxPool and AveragePool: the window attributes of the node.
class WindowPoolKernel final : public PoolKernel {
public:
    WindowPoolKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference, dnnl::algorithm algorithm)
        : PoolKernel(info, std::move(reference)),
          window_(ops::WindowAttributes::parse(info.node, true)),
          algorithm_(algorithm) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        if (x.dtype() != DType::Float32 || x.ndim() != window_.kernel_shape.size() + 2 || x.num_elements() == 0)
            return fallback(ctx);
        const auto entry = cache_.get(shape_and_layout_key(x), [&] {
            return build(x.shape(), desc_of(x, plain_desc(to_dims(x.shape()))));
        });
        if (!entry) return fallback(ctx);
        run_pool(*entry, ctx);
    }

private:
    std::shared_ptr<const PoolEntry> build(const std::vector<int64_t>& x_shape, const dnnl::memory::desc& x_desc) const {
        const std::vector<int64_t> spatial(x_shape.begin() + 2, x_shape.end());
        const std::vector<ops::WindowAxis> axes = ops::resolve_window(window_, window_.kernel_shape, spatial, node_);
        PoolGeometry g;
        g.out_shape = {x_shape[0], x_shape[1]};
        for (const ops::WindowAxis& a : axes) {
            const int64_t extent = (a.kernel - 1) * a.dilation + 1;
            const int64_t needed_end = (a.output - 1) * a.stride + extent - a.input - a.pad_begin;
            if (needed_end > a.pad_end && algorithm_ == dnnl::algorithm::pooling_avg_include_padding) return nullptr;
            g.out_shape.push_back(a.output);
            g.strides.push_back(a.stride);
            g.kernel.push_back(a.kernel);
            g.dilations.push_back(a.dilation - 1);  // oneDNN counts the gaps between taps
            g.pad_begin.push_back(a.pad_begin);
            g.pad_end.push_back(std::max(a.pad_end, needed_end));
        }
        return build_pool(x_desc, std::move(g), algorithm_);
    }

    ops::WindowAttributes window_;
    dnnl::algorithm algorithm_;
    ShapeCache<PoolEntry> cache_;
};

struct MaxPool {
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const auto& outputs = info.node.outputs();
        if (outputs.size() > 1 && !outputs[1].empty()) return reference;  // Indices: oneDNN has no such output
        return std::make_unique<WindowPoolKernel>(info, std::move(reference), dnnl::algorithm::pooling_max);
    }
};

struct AveragePool {
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const bool include_pad = info.node.get_attribute<int64_t>("count_include_pad", 0) == 1;
        return std::make_unique<WindowPoolKernel>(info, std::move(reference),
                                                  include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                              : dnnl::algorithm::pooling_avg_exclude_padding);
    }
};

// GlobalAveragePool: one window covering the whole spatial extent.
class GlobalAveragePoolKernel final : public PoolKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<GlobalAveragePoolKernel>(info, std::move(reference));
    }
    GlobalAveragePoolKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : PoolKernel(info, std::move(reference)) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        if (x.dtype() != DType::Float32 || x.ndim() < 3 || x.ndim() > 5 || x.num_elements() == 0) return fallback(ctx);
        const auto entry = cache_.get(shape_and_layout_key(x), [&] {
            PoolGeometry g;
            g.out_shape.assign(x.ndim(), 1);
            g.out_shape[0] = x.shape()[0];
            g.out_shape[1] = x.shape()[1];
            const size_t spatial = x.ndim() - 2;
            g.kernel.assign(x.shape().begin() + 2, x.shape().end());
            g.strides.assign(spatial, 1);
            g.dilations.assign(spatial, 0);
            g.pad_begin.assign(spatial, 0);
            g.pad_end.assign(spatial, 0);
            return build_pool(desc_of(x, plain_desc(to_dims(x.shape()))), std::move(g),
                              dnnl::algorithm::pooling_avg_exclude_padding);
        });
        if (!entry) return fallback(ctx);
        run_pool(*entry, ctx);
    }

private:
    ShapeCache<PoolEntry> cache_;
};

}  // namespace

void add_pool_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["::MaxPool"] = factory<MaxPool>("MaxPool");
    kernels["::AveragePool"] = factory<AveragePool>("AveragePool");
    kernels["::GlobalAveragePool"] = factory<GlobalAveragePoolKernel>("GlobalAveragePool");
}

}  // namespace pyflame_rt::onednn
