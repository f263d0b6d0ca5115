// Conv (1-D, 2-D, 3-D; float32) on oneDNN's convolution: groups (depthwise included),
// strides, dilations, explicit and automatic pads, optional bias. FusedConv (com.pyflame) adds a
// residual Z (a binary-add post-op reading Z where it lies, or where oneDNN has none for the
// shape, a sum post-op on an output buffer that starts as Z) and an activation (eltwise post-op).
#include "backends/cpu/onednn_context.hpp"
#include "backends/cpu/depthwise.hpp"
#include "backends/cpu/winograd.hpp"


namespace pyflame_rt::onednn {
namespace {

// One input-shape signature: the primitive and the layouts around it.
struct ConvEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc x_plain, w_plain, y_plain, bias;  // the tensors as they lie (row-major)
    dnnl::memory::desc weights;                    // the layout the convolution reads W in
    Step conv;                                      // unless `winograd` or `depthwise` does the work
    std::optional<WinogradConv> winograd;
    std::optional<DepthwiseConv> depthwise;
    std::optional<ReorderInto> src_into;            // X, row-major or another primitive's layout
    std::optional<ReorderInto> residual_into;       // Z into dst's layout
    bool residual_as_sum = false;                   // else read as the binary post-op's operand
    std::optional<Step> weights_reorder;            // non-constant weights
    OutputLayout output;
    dnnl::memory packed_weights;                    // constant weights, already in `weights`
};

class ConvKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<ConvKernel>(info, std::move(reference));
    }

    ConvKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          window_(ops::WindowAttributes::parse(info.node, false)),
          group_(info.node.get_attribute<int64_t>("group", 1)),
          has_residual_(info.node.has_input(3)),
          activation_(activation_of(info.node)),
          attr_(post_ops_attr()),
          fused_activation_(fused_activation_of(info.node)) {
        const Tensor* w = float_constant(info, 1);
        if (!w) return;
        weights_.emplace(*w);
        // With X's shape known, plan now and keep only the packed weights: the session then
        // drops the initializer's row-major copy (prepacked_input). An unknown batch is planned
        // as 1: the weights' layout oneDNN picks does not depend on it (checked on ResNets).
        std::vector<int64_t> x_shape = info.input_shape(0);
        if (!x_shape.empty() && x_shape[0] < 0) x_shape[0] = 1;
        const bool has_bias = info.node.has_input(2);
        if (handles_shapes(x_shape, w->shape())) {
            apply_thread_budget(threads_for(x_shape, w->shape(), info.num_threads));
            cache_.get(cache_key(x_shape, w->shape(), has_bias), [&] { return build(x_shape, w->shape(), has_bias, true); });
        }
    }

    const Tensor* prepacked_input(size_t input) const override { return input == 1 && weights_ ? weights_->prepacked() : nullptr; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(1);
        const Tensor* b = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        if (!handles(x, w, b)) return fallback(ctx);
        apply_thread_budget(threads_for(x.shape(), w.shape(), ctx.num_threads));
        const auto entry = cache_.get(cache_key(x.shape(), w.shape(), b != nullptr),
                                      [&] { return build(x.shape(), w.shape(), b != nullptr, false); });
        if (!entry) return fallback(ctx);
        const Tensor* z = has_residual_ ? &ctx.input(3) : nullptr;
        if (z && (z->dtype() != DType::Float32 || z->shape() != entry->out_shape)) return fallback(ctx);  // broadcasting

        dnnl::stream& stream = thread_stream();
        const dnnl::memory given = memory_over(desc_of(x, entry->x_plain), x.data());
        // The depthwise kernel reads a blocked X where it lies.
        const bool x_blocked = entry->depthwise && lies_in(given, entry->depthwise->blocked_src_desc());
        const dnnl::memory src = x_blocked ? given : (*entry->src_into)(stream, given, Buffer::Src);
        // Written in the convolution's own layout when every reader takes it: no reorder.
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        // Z in dst's layout: itself when it already is (no copy).
        dnnl::memory residual;
        if (z) {
            const dnnl::memory given = memory_over(desc_of(*z, entry->y_plain), z->data());
            // The sum post-op adds the convolution to what dst holds: start from Z.
            if (entry->residual_as_sum) entry->residual_into->into(stream, given, y.dst);
            else residual = (*entry->residual_into)(stream, given, Buffer::Residual);
        }
        if (entry->winograd || entry->depthwise) {
            const auto* x_data = static_cast<const float*>(src.get_data_handle());
            const auto* bias = b ? static_cast<const float*>(b->data()) : nullptr;
            const auto* z_data = z ? static_cast<const float*>(residual.get_data_handle()) : nullptr;
            auto* y_data = static_cast<float*>(y.dst.get_data_handle());
            if (entry->winograd) entry->winograd->run(stream, x_data, bias, z_data, y_data);
            else entry->depthwise->run(x_data, x_blocked, bias, z_data, y_data);
            ctx.outputs[0] = entry->output.finish(stream, y);
            stream.wait();
            return;
        }
        const dnnl::memory weights = entry->packed_weights ? entry->packed_weights
                                                           : relayout(stream, entry->weights_reorder,
                                                                      memory_over(entry->w_plain, w.data()),
                                                                      entry->weights, Buffer::Weights);
        ExecArgs args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, y.dst}};
        if (b) args.emplace(DNNL_ARG_BIAS, memory_over(entry->bias, b->data()));
        if (residual) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, residual);
        entry->conv.execute(stream, std::move(args));
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

    // X and Z; W when the kernel keeps it packed.
    bool reads_layout(size_t input) const override {
        return input == 0 || input == 3 || (input == 1 && prepacked_input(1));
    }
    bool writes_layout(size_t output) const override { return output == 0; }

private:
    // What the fast path takes; anything else (including invalid inputs, whose errors the
    // reference kernel words) goes to the reference kernel.
    bool handles(const Tensor& x, const Tensor& w, const Tensor* b) const {
        if (x.dtype() != DType::Float32 || w.dtype() != DType::Float32 || !handles_shapes(x.shape(), w.shape()))
            return false;
        return !b || (b->dtype() == DType::Float32 && b->shape() == std::vector<int64_t>{w.shape()[0]});
    }
    bool handles_shapes(const std::vector<int64_t>& x, const std::vector<int64_t>& w) const {
        const size_t rank = x.size();
        if (rank < 3 || rank > 5 || w.size() != rank) return false;
        for (size_t i = 0; i < rank; ++i)
            if (x[i] <= 0 || w[i] <= 0) return false;  // also: not known yet
        if (x[1] != w[1] * group_ || w[0] % group_ != 0) return false;
        return window_.kernel_shape.empty() || window_.kernel_shape == std::vector<int64_t>(w.begin() + 2, w.end());
    }
    // The threads this shape's convolution is worth (threads_for_primitive), from its work
    // (flops at stride 1: an upper bound) and the activations it reads and writes.
    int threads_for(const std::vector<int64_t>& x, const std::vector<int64_t>& w, int budget) const {
        double taps = 1, pixels = 1;
        for (size_t i = 2; i < w.size(); ++i) taps *= static_cast<double>(w[i]);
        for (size_t i = 2; i < x.size(); ++i) pixels *= static_cast<double>(x[i]);
        const double batch = static_cast<double>(x[0]), maps = static_cast<double>(w[0]);
        const double flops = 2 * batch * pixels * maps * static_cast<double>(w[1]) * taps;
        const double bytes = 4 * batch * pixels * (static_cast<double>(x[1]) + maps);
        return threads_for_primitive(flops, bytes, budget);
    }
    static std::vector<int64_t> cache_key(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                          bool has_bias) {
        std::vector<int64_t> key = x_shape;
        key.insert(key.end(), w_shape.begin(), w_shape.end());
        key.push_back(has_bias);
        return key;
    }

    // `at_creation`: called from the constructor, when the constant weights may still be
    // packed in place of their row-major copy.
    std::shared_ptr<const ConvEntry> build(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                           bool has_bias, bool at_creation) const {
        const ConvGeometry g = conv_geometry(window_, group_, x_shape, w_shape, node_);
        const int64_t maps = w_shape[0];
        auto entry = std::make_shared<ConvEntry>();
        entry->out_shape = g.out_shape;
        const Dims &strides = g.strides, &dilations = g.dilations, &pad_begin = g.pad_begin, &pad_end = g.pad_end;
        const Dims& w_dims = g.weight_dims;
        entry->x_plain = plain_desc(to_dims(x_shape));
        entry->w_plain = plain_desc(w_dims);
        entry->y_plain = plain_desc(to_dims(entry->out_shape));
        if (auto depthwise = depthwise_geometry(g, x_shape, w_shape)) {
            // Keeps its own copy of the weights (9 per channel); the initializer stays plain.
            entry->depthwise.emplace(*depthwise, weights_->plain(), *fused_activation_);
            set_layouts(*entry, entry->depthwise->src_desc(), entry->depthwise->dst_desc());
            return entry;
        }
        const dnnl::memory::desc bias = has_bias ? plain_desc({maps}) : dnnl::memory::desc();
        entry->bias = bias;
        std::optional<dnnl::convolution_forward::primitive_desc> pd;
        try {
            // Every layout left to oneDNN: its blocked/channels-last kernels beat the plain-layout
            // ones by more than the two activation reorders cost.
            pd.emplace(*cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                       any_desc(to_dims(x_shape)), any_desc(w_dims), bias, any_desc(to_dims(entry->out_shape)),
                       strides, dilations, pad_begin, pad_end, attr_);
        } catch (const dnnl::error&) {
            return nullptr;  // a configuration oneDNN does not implement
        }
        if (!optimized(*pd)) return nullptr;
        // For groups of few channels oneDNN blocks by the group size (aBcd4b), a layout no
        // neighbouring kernel uses: a reorder on each side (10 µs of the demo CNN's 171 at batch
        // 8). Channels-last, which oneDNN's other kernels take, when it has an optimized kernel.
        const std::vector<int64_t> blocks = pd->src_desc().get_inner_blks();
        if (x_shape.size() == 4 && blocks.size() == 1 && blocks[0] < 8) {
            try {
                using tag = dnnl::memory::format_tag;
                dnnl::convolution_forward::primitive_desc nhwc(
                    *cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                    dnnl::memory::desc(to_dims(x_shape), dnnl::memory::data_type::f32, tag::nhwc), any_desc(w_dims), bias,
                    dnnl::memory::desc(to_dims(entry->out_shape), dnnl::memory::data_type::f32, tag::nhwc), strides,
                    dilations, pad_begin, pad_end, attr_);
                if (optimized(nhwc)) pd.emplace(std::move(nhwc));
            } catch (const dnnl::error&) {
            }
        }
        entry->weights = pd->weights_desc();
        if (weights_ && at_creation) weights_->prepack(entry->w_plain, entry->weights);
        if (auto winograd = winograd_geometry(g, x_shape, w_shape)) {
            // Transformed once for every shape that runs this way.
            if (!winograd_weights_) winograd_weights_.emplace(WinogradConv::transform_weights(weights_->plain()));
            entry->winograd.emplace(*winograd, *winograd_weights_, *fused_activation_);
            set_layouts(*entry, entry->winograd->src_desc(), entry->winograd->dst_desc());
            return entry;
        }
        if (has_residual_) {
            // The same kernel with Z read by a binary post-op in dst's layout, when oneDNN has
            // one: Z is then not copied into dst first.
            entry->residual_as_sum = true;
            const dnnl::memory::desc dst = pd->dst_desc();
            try {
                dnnl::convolution_forward::primitive_desc binary(
                    *cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                    pd->src_desc(), pd->weights_desc(), bias, pd->dst_desc(), strides, dilations, pad_begin,
                    pad_end, post_ops_attr(&dst));
                if (optimized(binary)) {
                    pd.emplace(std::move(binary));
                    entry->residual_as_sum = false;
                }
            } catch (const dnnl::error&) {
                // no binary post-op for this configuration: the sum post-op stays
            }
            entry->residual_into.emplace(pd->dst_desc());
        }
        entry->conv = Step{dnnl::convolution_forward(*pd), pd->scratchpad_desc()};
        entry->src_into.emplace(pd->src_desc());
        entry->output = OutputLayout(pd->dst_desc(), entry->out_shape);
        if (weights_) entry->packed_weights = weights_->get(entry->w_plain, entry->weights);
        else entry->weights_reorder = reorder_if_needed(entry->w_plain, entry->weights);
        return entry;
    }

    // The hand-written kernels read X and Z and write Y in these layouts.
    void set_layouts(ConvEntry& entry, const dnnl::memory::desc& src, const dnnl::memory::desc& dst) const {
        entry.src_into.emplace(src);
        if (has_residual_) entry.residual_into.emplace(dst);
        entry.output = OutputLayout(dst, entry.out_shape);
    }

    // The depthwise geometry when DepthwiseConv runs this convolution: 2-D 3x3, one map per
    // channel, no dilation, equal strides of 1 or 2, constant weights and an activation it applies.
    std::optional<DepthwiseGeometry> depthwise_geometry(const ConvGeometry& g, const std::vector<int64_t>& x_shape,
                                                        const std::vector<int64_t>& w_shape) const {
        if (!weights_ || !fused_activation_ || x_shape.size() != 4 || group_ != x_shape[1] || w_shape[0] != group_ ||
            w_shape[2] != 3 || w_shape[3] != 3 || g.strides[0] != g.strides[1] || g.dilations[0] != 0 ||
            g.dilations[1] != 0)
            return std::nullopt;
        DepthwiseGeometry geometry;
        static_cast<Conv2dSizes&>(geometry) = conv2d_sizes(g, x_shape);
        geometry.stride = g.strides[0];
        if (!DepthwiseConv::handles(geometry)) return std::nullopt;
        return geometry;
    }

    // The Winograd geometry when this convolution is one WinogradConv runs, and faster: 2-D 3x3,
    // stride 1, no dilation, one group, constant weights and an activation it applies.
    std::optional<WinogradGeometry> winograd_geometry(const ConvGeometry& g, const std::vector<int64_t>& x_shape,
                                                      const std::vector<int64_t>& w_shape) const {
        if (!weights_ || !fused_activation_ || x_shape.size() != 4 || group_ != 1 || w_shape[2] != 3 ||
            w_shape[3] != 3)
            return std::nullopt;
        for (size_t i = 0; i < 2; ++i)
            if (g.strides[i] != 1 || g.dilations[i] != 0) return std::nullopt;
        WinogradGeometry geometry;
        static_cast<Conv2dSizes&>(geometry) = conv2d_sizes(g, x_shape);
        geometry.maps = w_shape[0];
        if (!WinogradConv::pays(geometry)) return std::nullopt;
        return geometry;
    }

    // FusedConv's residual and activation (eltwise) as post-ops, in that order: applied as each
    // output block is written. The residual is a binary add of an operand in layout
    // `residual`, or without one, a sum (dst's previous contents).
    dnnl::primitive_attr post_ops_attr(const dnnl::memory::desc* residual = nullptr) const {
        dnnl::primitive_attr attr = base_attr();
        dnnl::post_ops ops;
        if (has_residual_) {
            if (residual) ops.append_binary(dnnl::algorithm::binary_add, *residual);
            else ops.append_sum(1.0f);
        }
        for (int i = 0; i < activation_.len(); ++i) {
            dnnl::algorithm alg;
            float alpha, beta;
            activation_.get_params_eltwise(i, alg, alpha, beta);
            ops.append_eltwise(alg, alpha, beta);
        }
        attr.set_post_ops(ops);
        return attr;
    }

    static dnnl::post_ops activation_of(const Node& node) {
        dnnl::post_ops ops;
        append_activation(ops, node);
        return ops;
    }

    ops::WindowAttributes window_;
    int64_t group_;
    bool has_residual_;
    dnnl::post_ops activation_;  // the node's activation, as a post-op
    dnnl::primitive_attr attr_;
    std::optional<FusedActivation> fused_activation_;
    // When W is an initializer. Mutable: build() packs it in place while the constructor plans.
    mutable std::optional<PackedConstant> weights_;
    mutable std::optional<PackedConstant> winograd_weights_;  // W transformed, once needed
    ShapeCache<ConvEntry> cache_;
};

// ConvTranspose on oneDNN's deconvolution (1-D to 3-D, groups, dilations, output_padding and
// output_shape through the pads). ONNX's (C, M/group, k...) weights are read in place through
// strides; constant weights are packed once. Reads and writes oneDNN layouts like Conv.
struct DeconvEntry {
    std::vector<int64_t> out_shape;
    dnnl::memory::desc x_plain, w_plain, weights, bias;
    Step deconv;
    std::optional<ReorderInto> src_into;
    std::optional<Step> weights_reorder;
    OutputLayout output;
    dnnl::memory packed_weights;
};

class ConvTransposeKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<ConvTransposeKernel>(info, std::move(reference));
    }

    ConvTransposeKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)), attrs_(info.node) {
        if (const Tensor* w = float_constant(info, 1)) weights_.emplace(*w);
    }

    bool reads_layout(size_t input) const override { return input == 0; }
    bool writes_layout(size_t output) const override { return output == 0; }

    void compute(ops::KernelContext& ctx) const override {
        apply_thread_budget(ctx.num_threads);
        const Tensor& x = ctx.input(0);
        const Tensor& w = ctx.input(1);
        const Tensor* b = ctx.has_input(2) ? &ctx.input(2) : nullptr;
        const size_t rank = x.ndim();
        if (x.dtype() != DType::Float32 || w.dtype() != DType::Float32 || rank < 3 || rank > 5 || w.ndim() != rank ||
            x.num_elements() == 0 || w.num_elements() == 0 || x.shape()[1] != w.shape()[0] ||
            x.shape()[1] % attrs_.group != 0)
            return fallback(ctx);
        const int64_t maps = w.shape()[1] * attrs_.group;
        if (b && (b->dtype() != DType::Float32 || b->shape() != std::vector<int64_t>{maps})) return fallback(ctx);
        if (!attrs_.window.kernel_shape.empty() &&
            attrs_.window.kernel_shape != std::vector<int64_t>(w.shape().begin() + 2, w.shape().end()))
            return fallback(ctx);
        std::vector<int64_t> key = x.shape();
        key.insert(key.end(), w.shape().begin(), w.shape().end());
        key.push_back(b != nullptr);
        const auto entry = cache_.get(key, [&] { return build(x.shape(), w.shape(), b != nullptr); });
        if (!entry) return fallback(ctx);

        dnnl::stream& stream = thread_stream();
        const dnnl::memory src =
            (*entry->src_into)(stream, memory_over(desc_of(x, entry->x_plain), x.data()), Buffer::Src);
        const dnnl::memory weights = entry->packed_weights ? entry->packed_weights
                                                           : relayout(stream, entry->weights_reorder,
                                                                      memory_over(entry->w_plain, w.data()),
                                                                      entry->weights, Buffer::Weights);
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        ExecArgs args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, y.dst}};
        if (b) args.emplace(DNNL_ARG_BIAS, memory_over(entry->bias, b->data()));
        entry->deconv.execute(stream, std::move(args));
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

private:
    std::shared_ptr<const DeconvEntry> build(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                             bool has_bias) const {
        const size_t spatial = x_shape.size() - 2;
        const int64_t group = attrs_.group, channels = x_shape[1], group_maps = w_shape[1];
        const int64_t group_channels = channels / group, maps = group_maps * group;
        auto entry = std::make_shared<DeconvEntry>();
        entry->out_shape = {x_shape[0], maps};
        Dims strides, dilations, pad_begin, pad_end;
        for (size_t i = 0; i < spatial; ++i) {
            const ops::WindowAxis a = attrs_.axis(i, spatial, w_shape[i + 2], x_shape[i + 2], node_);
            entry->out_shape.push_back(a.input);
            strides.push_back(a.stride);
            dilations.push_back(a.dilation - 1);  // oneDNN counts the gaps between taps
            pad_begin.push_back(a.pad_begin);
            // oneDNN's output is stride*(in-1) + extent - pads: output_padding (or a requested
            // output_shape) shows up as less (possibly negative) padding at the end.
            const int64_t extent = (a.kernel - 1) * a.dilation + 1;
            pad_end.push_back(a.stride * (a.output - 1) + extent - a.pad_begin - a.input);
        }
        // Weights (C, M/group, k...) as oneDNN's (group,) OC, IC, k... through strides.
        int64_t k_size = 1;
        for (size_t i = 2; i < w_shape.size(); ++i) k_size *= w_shape[i];
        Dims k_strides(spatial);
        for (size_t i = spatial, stride = 1; i-- > 0;) {
            k_strides[i] = static_cast<int64_t>(stride);
            stride *= static_cast<size_t>(w_shape[i + 2]);
        }
        Dims w_dims, w_strides;
        if (group > 1) {
            w_dims = {group, group_maps, group_channels};
            w_strides = {group_channels * group_maps * k_size, k_size, group_maps * k_size};
        } else {
            w_dims = {maps, channels};
            w_strides = {k_size, maps * k_size};
        }
        w_dims.insert(w_dims.end(), w_shape.begin() + 2, w_shape.end());
        w_strides.insert(w_strides.end(), k_strides.begin(), k_strides.end());
        entry->w_plain = dnnl::memory::desc(w_dims, dnnl::memory::data_type::f32, w_strides);
        entry->x_plain = plain_desc(to_dims(x_shape));
        if (has_bias) entry->bias = plain_desc({maps});
        Dims any_w = w_dims;
        std::optional<dnnl::deconvolution_forward::primitive_desc> pd;
        try {
            pd.emplace(*cpu_engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::deconvolution_direct,
                       any_desc(to_dims(x_shape)), any_desc(any_w), has_bias ? plain_desc({maps}) : dnnl::memory::desc(),
                       any_desc(to_dims(entry->out_shape)), strides, dilations, pad_begin, pad_end, base_attr());
        } catch (const dnnl::error&) {
            return nullptr;  // e.g. padding oneDNN does not take
        }
        if (!optimized(*pd)) return nullptr;
        entry->weights = pd->weights_desc();
        entry->deconv = Step{dnnl::deconvolution_forward(*pd), pd->scratchpad_desc()};
        entry->src_into.emplace(pd->src_desc());
        entry->output = OutputLayout(pd->dst_desc(), entry->out_shape);
        if (weights_) entry->packed_weights = weights_->get(entry->w_plain, entry->weights);
        else entry->weights_reorder = reorder_if_needed(entry->w_plain, entry->weights);
        return entry;
    }

    ops::ConvTransposeAttributes attrs_;
    std::optional<PackedConstant> weights_;
    ShapeCache<DeconvEntry> cache_;
};

}  // namespace

void add_conv_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["::Conv"] = factory<ConvKernel>("Conv");
    kernels["com.pyflame::FusedConv"] = factory<ConvKernel>("FusedConv", "com.pyflame");
    kernels["::ConvTranspose"] = factory<ConvTransposeKernel>("ConvTranspose");
}

}  // namespace pyflame_rt::onednn
