// LayerNormalization (float32) on oneDNN's layer normalization: the input seen as a matrix
// (prod(dims[:axis]), prod(dims[axis:])) normalized along its rows, with per-column scale and
// bias of exactly that row length. Broadcast scale/bias and the optional Mean/InvStdDev
// outputs stay with the reference kernel.
// BatchNormalization (inference: the given running mean and variance) reading and writing
// whatever layout arrives (a convolution's blocked one): with constant statistics, one
// multiply-add per element (channel_affine) in the layouts it knows; else oneDNN's batch
// normalization.
#include <cmath>

#include "backends/cpu/channel_affine.hpp"
#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

struct LayerNormEntry {
    dnnl::memory::desc data, params;
    Step step;
};

class LayerNormKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const auto& outputs = info.node.outputs();
        for (size_t i = 1; i < outputs.size(); ++i)
            if (!outputs[i].empty()) return reference;  // Mean / InvStdDev requested
        return std::make_unique<LayerNormKernel>(info, std::move(reference));
    }

    LayerNormKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          axis_(info.node.get_attribute<int64_t>("axis", -1)),
          epsilon_(static_cast<float>(info.node.get_attribute<double>("epsilon", 1e-5))) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        const int64_t rank = static_cast<int64_t>(x.ndim());
        if (x.dtype() != DType::Float32 || x.num_elements() == 0 || axis_ < -rank || axis_ >= rank || !ctx.has_input(1))
            return fallback(ctx);
        const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
        int64_t rows = 1, cols = 1;
        for (int64_t d = 0; d < rank; ++d) (d < axis ? rows : cols) *= x.shape()[d];
        const Tensor& scale = ctx.input(1);
        const Tensor* bias = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        if (scale.dtype() != DType::Float32 || scale.num_elements() != cols ||
            (bias && (bias->dtype() != DType::Float32 || bias->num_elements() != cols)))
            return fallback(ctx);  // broadcast parameters
        const auto entry = cache_.get({rows, cols, bias != nullptr}, [&]() -> std::shared_ptr<LayerNormEntry> {
            auto e = std::make_shared<LayerNormEntry>();
            e->data = plain_desc({rows, cols});
            e->params = plain_desc({cols});
            auto flags = dnnl::normalization_flags::use_scale;
            if (bias) flags = flags | dnnl::normalization_flags::use_shift;
            try {
                const dnnl::layer_normalization_forward::primitive_desc pd(
                    *cpu_engine(), dnnl::prop_kind::forward_inference, e->data, e->data, epsilon_, flags, base_attr());
                if (!optimized(pd)) return nullptr;
                e->step = Step{dnnl::layer_normalization_forward(pd), pd.scratchpad_desc()};
            } catch (const dnnl::error&) {
                return nullptr;
            }
            return e;
        });
        if (!entry) return fallback(ctx);
        Tensor y(x.shape(), DType::Float32);
        dnnl::stream& stream = thread_stream();
        ExecArgs args{{DNNL_ARG_SRC, memory_over(entry->data, x.data())},
                                                   {DNNL_ARG_DST, memory_over(entry->data, y.data())},
                                                   {DNNL_ARG_SCALE, memory_over(entry->params, scale.data())}};
        if (bias) args.emplace(DNNL_ARG_SHIFT, memory_over(entry->params, bias->data()));
        entry->step.execute(stream, std::move(args));
        stream.wait();
        ctx.outputs[0] = std::move(y);
    }

private:
    int64_t axis_;
    float epsilon_;
    ShapeCache<LayerNormEntry> cache_;
};

struct BatchNormEntry {
    dnnl::memory::desc data, params;  // data: the input's layout, which the output keeps
    Step step;                        // unless `affine` does the work
    std::optional<ChannelLayout> affine;
    OutputLayout output;
};

// How channel_affine walks `desc` (over dims N, C, spatial...), if it can.
std::optional<ChannelLayout> channel_layout_of(const dnnl::memory::desc& desc) {
    using tag = dnnl::memory::format_tag;
    const Dims dims = desc.get_dims();
    const auto f32 = dnnl::memory::data_type::f32;
    if (desc == plain_desc(dims)) return ChannelLayout::Planar;
    const size_t rank = dims.size();
    if (rank < 3 || rank > 5) return std::nullopt;
    const tag channels_last[] = {tag::nwc, tag::nhwc, tag::ndhwc}, blocked[] = {tag::nCw16c, tag::nChw16c, tag::nCdhw16c};
    if (desc == dnnl::memory::desc(dims, f32, channels_last[rank - 3])) return ChannelLayout::ChannelsLast;
    if (dims[1] % 16 == 0 && desc == dnnl::memory::desc(dims, f32, blocked[rank - 3])) return ChannelLayout::Blocked16;
    return std::nullopt;
}

class BatchNormKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const auto& outputs = info.node.outputs();
        for (size_t i = 1; i < outputs.size(); ++i)
            if (!outputs[i].empty()) return reference;  // training outputs (running statistics)
        if (info.node.get_attribute<int64_t>("training_mode", 0) != 0) return reference;
        return std::make_unique<BatchNormKernel>(info, std::move(reference));
    }

    BatchNormKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          epsilon_(static_cast<float>(info.node.get_attribute<double>("epsilon", 1e-5))) {
        // Constant statistics fold into y = x * s + t, s = scale / sqrt(var + epsilon),
        // t = bias - mean * s (in double, then rounded once).
        const Tensor* p[4];
        for (size_t i = 0; i < 4; ++i)
            if (!(p[i] = float_constant(info, i + 1)) || p[i]->ndim() != 1 || p[i]->shape() != p[0]->shape()) return;
        const int64_t channels = p[0]->shape()[0];
        scale_.resize(channels);
        shift_.resize(channels);
        for (int64_t c = 0; c < channels; ++c) {
            const double s = p[0]->data_ptr<float>()[c] / std::sqrt(static_cast<double>(p[3]->data_ptr<float>()[c]) + epsilon_);
            scale_[c] = static_cast<float>(s);
            shift_[c] = static_cast<float>(p[1]->data_ptr<float>()[c] - p[2]->data_ptr<float>()[c] * s);
        }
    }

    bool reads_layout(size_t input) const override { return input == 0; }
    bool writes_layout(size_t output) const override { return output == 0; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        if (x.dtype() != DType::Float32 || x.ndim() < 2 || x.ndim() > 5 || x.num_elements() == 0) return fallback(ctx);
        const int64_t channels = x.shape()[1];
        for (size_t i = 1; i < 5; ++i)
            if (!ctx.has_input(i) || ctx.input(i).dtype() != DType::Float32 ||
                ctx.input(i).shape() != std::vector<int64_t>{channels})
                return fallback(ctx);  // the reference kernel words the error
        const auto entry = cache_.get(shape_and_layout_key(x), [&]() -> std::shared_ptr<BatchNormEntry> {
            auto e = std::make_shared<BatchNormEntry>();
            e->data = desc_of(x, plain_desc(to_dims(x.shape())));
            e->output = OutputLayout(e->data, x.shape());
            if (static_cast<int64_t>(scale_.size()) == channels && (e->affine = channel_layout_of(e->data))) return e;
            e->params = plain_desc({channels});
            const auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                               dnnl::normalization_flags::use_shift;
            try {
                const dnnl::batch_normalization_forward::primitive_desc pd(
                    *cpu_engine(), dnnl::prop_kind::forward_inference, e->data, e->data, epsilon_, flags, base_attr());
                if (!optimized(pd)) return nullptr;
                e->step = Step{dnnl::batch_normalization_forward(pd), pd.scratchpad_desc()};
            } catch (const dnnl::error&) {
                return nullptr;
            }
            return e;
        });
        if (!entry) return fallback(ctx);
        dnnl::stream& stream = thread_stream();
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        if (entry->affine) {
            int64_t spatial = 1;
            for (size_t i = 2; i < x.ndim(); ++i) spatial *= x.shape()[i];
            channel_affine(static_cast<const float*>(x.data()), static_cast<float*>(y.dst.get_data_handle()),
                           scale_.data(), shift_.data(), x.shape()[0], channels, spatial, *entry->affine);
            ctx.outputs[0] = entry->output.finish(stream, y);
            stream.wait();
            return;
        }
        entry->step.execute(stream, {{DNNL_ARG_SRC, memory_over(entry->data, x.data())},
                                     {DNNL_ARG_DST, y.dst},
                                     {DNNL_ARG_SCALE, memory_over(entry->params, ctx.input(1).data())},
                                     {DNNL_ARG_SHIFT, memory_over(entry->params, ctx.input(2).data())},
                                     {DNNL_ARG_MEAN, memory_over(entry->params, ctx.input(3).data())},
                                     {DNNL_ARG_VARIANCE, memory_over(entry->params, ctx.input(4).data())}});
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

private:
    float epsilon_;
    std::vector<float> scale_, shift_;  // per channel, when the statistics are constants
    ShapeCache<BatchNormEntry> cache_;
};

}  // namespace

void add_norm_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["::LayerNormalization"] = factory<LayerNormKernel>("LayerNormalization");
    kernels["::BatchNormalization"] = factory<BatchNormKernel>("BatchNormalization");
}

}  // namespace pyflame_rt::onednn
