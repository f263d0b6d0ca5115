// InvertedResidual (com.pyflame): MobileNetV2's block, 1x1 expand -> depthwise 3x3 -> 1x1
// project (+ residual), run in slabs of output rows. For each slab the expand convolution
// writes just the rows the depthwise window needs into a per-thread buffer, the depthwise
// kernel writes its rows into a second one, and the project convolution reads them into the
// output: the middle tensors (6x the block's input and output) stay in L2 instead of going
// through L3 or DRAM and back twice each. Consecutive slabs share window rows; the buffer
// slides them down instead of computing them again.
//
// The 1x1 convolutions are oneDNN matmuls over channels-last rows ([rows x width, C] times
// [C, C']), one primitive per row count the slab schedule uses, all planned at creation.
// Threads: each thread runs its own share of the rows, slab after slab (its primitives are
// single-threaded, nested in the OpenMP region).
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backends/cpu/depthwise.hpp"
#include "backends/cpu/onednn_context.hpp"
#include "backends/cpu/simd.hpp"

namespace pyflame_rt::onednn {
namespace {

// A 1x1 convolution over `rows` channels-last rows, as one matmul primitive.
struct PointwiseStep {
    int64_t rows = 0;
    Step step;
    dnnl::memory::desc src, dst;
};

// The slabs one share of the rows is cut into, in order.
struct Slab {
    int64_t image, first_row, last_row;  // output rows [first_row, last_row)
    int64_t in_first, in_last;           // the input rows the window reads (inside the image)
    int64_t compute_from;                // rows [in_first, compute_from) are already expanded
    int64_t keep_offset;                 // where they lie in the buffer (rows), when kept
};

struct InvertedResidualEntry {
    std::vector<int64_t> out_shape;
    int64_t batch = 0, height = 0, width = 0, out_height = 0, out_width = 0, stride = 1, pad_top = 1;
    int64_t in_channels = 0, middle = 0, out_channels = 0;
    int64_t slab_rows = 1;    // output rows per slab
    int64_t buffer_rows = 1;  // expanded rows a slab holds at most
    int shares = 1;           // row shares, run in parallel, one thread each
    dnnl::memory::desc x_plain, y_plain, expanded, depthwise_rows, expand_bias, project_bias;
    std::optional<ReorderInto> src_into, residual_into;
    OutputLayout output;
    std::optional<DepthwiseConv> depthwise;
    std::vector<PointwiseStep> expand, project;
    dnnl::memory expand_weights, project_weights;

    const PointwiseStep& step(const std::vector<PointwiseStep>& steps, int64_t rows) const {
        for (const PointwiseStep& s : steps)
            if (s.rows == rows) return s;
        throw std::logic_error("InvertedResidual: no primitive planned for " + std::to_string(rows) + " rows");
    }

    // Calls visit(slab) for the slabs of share `share` (of `shares`) of the N x OH output rows.
    template <typename Visit>
    void for_each_slab(int share, Visit&& visit) const {
        const int64_t total = batch * out_height;
        const int64_t first = total * share / shares, last = total * (share + 1) / shares;
        int64_t held_image = -1, held_first = 0, held_last = 0;  // the expanded rows in the buffer
        for (int64_t r = first; r < last;) {
            Slab s;
            s.image = r / out_height;
            s.first_row = r % out_height;
            s.last_row = std::min({out_height, s.first_row + slab_rows, s.first_row + (last - r)});
            s.in_first = std::max<int64_t>(0, s.first_row * stride - pad_top);
            s.in_last = std::min(height, (s.last_row - 1) * stride - pad_top + 3);
            const bool keep = held_image == s.image && held_first <= s.in_first && held_last > s.in_first;
            s.compute_from = keep ? held_last : s.in_first;
            s.keep_offset = keep ? s.in_first - held_first : 0;
            visit(s);
            held_image = s.image, held_first = s.in_first, held_last = s.in_last;
            r += s.last_row - s.first_row;
        }
    }
};

class InvertedResidualKernel final : public FastKernel {
public:
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        for (size_t i = 1; i <= 6; ++i)
            if ((i % 2 == 1 || info.node.has_input(i)) && !float_constant(info, i)) return reference;
        const Node depthwise = ops::inverted_residual_part(info.node, 1);
        if (!fused_activation_of(depthwise)) return reference;
        return std::make_unique<InvertedResidualKernel>(info, std::move(reference));
    }

    InvertedResidualKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference)
        : FastKernel(info, std::move(reference)),
          parts_{ops::inverted_residual_part(info.node, 0), ops::inverted_residual_part(info.node, 1),
                 ops::inverted_residual_part(info.node, 2)},
          window_(ops::WindowAttributes::parse(parts_[1], false)),
          has_residual_(info.node.has_input(7)),
          expand_weights_(*float_constant(info, 1)),
          project_weights_(*float_constant(info, 5)),
          depthwise_weights_(*float_constant(info, 3)),
          weight_shapes_{float_constant(info, 1)->shape(), float_constant(info, 3)->shape(),
                         float_constant(info, 5)->shape()},
          has_bias_{info.node.has_input(2), info.node.has_input(6)} {
        std::vector<int64_t> x_shape = info.input_shape(0);
        if (!x_shape.empty() && x_shape[0] < 0) x_shape[0] = 1;  // planned as 1, like Conv
        if (handles_shape(x_shape)) {
            apply_thread_budget(info.num_threads);
            cache_.get(x_shape, [&] { return build(x_shape, info.num_threads, true); });
        }
    }

    // The 1x1 weights, when planning at creation packed them: the session keeps only that copy.
    const Tensor* prepacked_input(size_t input) const override {
        if (input == 1) return expand_weights_.prepacked();
        if (input == 5) return project_weights_.prepacked();
        return nullptr;
    }
    bool reads_layout(size_t input) const override { return input == 0 || input == 7 || prepacked_input(input); }
    bool writes_layout(size_t output) const override { return output == 0; }

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const Tensor* z = has_residual_ ? &ctx.input(7) : nullptr;
        if (x.dtype() != DType::Float32 || !handles_shape(x.shape())) return fallback(ctx);
        apply_thread_budget(ctx.num_threads);
        const auto entry = cache_.get(x.shape(), [&] { return build(x.shape(), ctx.num_threads, false); });
        if (!entry || (z && (z->dtype() != DType::Float32 || z->shape() != entry->out_shape))) return fallback(ctx);

        dnnl::stream& stream = thread_stream();
        const dnnl::memory src = (*entry->src_into)(stream, memory_over(desc_of(x, entry->x_plain), x.data()), Buffer::Src);
        dnnl::memory residual;
        if (z) residual = (*entry->residual_into)(stream, memory_over(desc_of(*z, entry->y_plain), z->data()), Buffer::Residual);
        OutputLayout::Write y = entry->output.begin(ctx.may_write_layout(0));
        const Pointers p{static_cast<const float*>(src.get_data_handle()),
                         z ? static_cast<const float*>(residual.get_data_handle()) : nullptr,
                         static_cast<float*>(y.dst.get_data_handle()),
                         ctx.has_input(2) ? &ctx.input(2) : nullptr, ctx.has_input(4) ? &ctx.input(4) : nullptr,
                         ctx.has_input(6) ? &ctx.input(6) : nullptr};
        simd::parallel_range(entry->shares, [&](int64_t first, int64_t last) {
            dnnl::stream& own = thread_stream();
            for (int64_t share = first; share < last; ++share) run_share(*entry, static_cast<int>(share), p, own);
        });
        ctx.outputs[0] = entry->output.finish(stream, y);
        stream.wait();
    }

private:
    struct Pointers {
        const float* x;
        const float* residual;
        float* y;
        const Tensor *expand_bias, *depthwise_bias, *project_bias;
    };

    static bool handles_shape(const std::vector<int64_t>& x) {
        if (x.size() != 4) return false;
        for (int64_t d : x)
            if (d <= 0) return false;
        return true;
    }

    // The slabs of one share, on the calling thread.
    void run_share(const InvertedResidualEntry& e, int share, const Pointers& p, dnnl::stream& stream) const {
        float* expanded = static_cast<float*>(thread_memory(e.expanded, Buffer::Expanded).get_data_handle());
        float* middle = static_cast<float*>(thread_memory(e.depthwise_rows, Buffer::Depthwise).get_data_handle());
        const int64_t in_row = e.width * e.middle, mid_row = e.out_width * e.middle;
        const float* depthwise_bias = p.depthwise_bias ? static_cast<const float*>(p.depthwise_bias->data()) : nullptr;
        e.for_each_slab(share, [&](const Slab& s) {
            const int64_t kept = s.compute_from - s.in_first;
            if (kept > 0 && s.keep_offset > 0)
                std::memmove(expanded, expanded + s.keep_offset * in_row, static_cast<size_t>(kept * in_row) * sizeof(float));
            if (s.compute_from < s.in_last) {
                const PointwiseStep& step = e.step(e.expand, (s.in_last - s.compute_from) * e.width);
                const float* x_rows = p.x + ((s.image * e.height + s.compute_from) * e.width) * e.in_channels;
                ExecArgs args{{DNNL_ARG_SRC, slab_memory(step.src, 0, x_rows)},
                              {DNNL_ARG_WEIGHTS, e.expand_weights},
                              {DNNL_ARG_DST, slab_memory(step.dst, 1, expanded + kept * in_row)}};
                if (p.expand_bias) args.emplace(DNNL_ARG_BIAS, memory_over(e.expand_bias, p.expand_bias->data()));
                step.step.execute(stream, std::move(args));
            }
            for (int64_t oh = s.first_row; oh < s.last_row; ++oh) {
                const float* in[3];
                for (int kh = 0; kh < 3; ++kh) {
                    const int64_t ih = oh * e.stride - e.pad_top + kh;
                    in[kh] = ih >= 0 && ih < e.height ? expanded + (ih - s.in_first) * in_row : nullptr;
                }
                e.depthwise->run_row(in, depthwise_bias, middle + (oh - s.first_row) * mid_row);
            }
            const PointwiseStep& step = e.step(e.project, (s.last_row - s.first_row) * e.out_width);
            const int64_t at = ((s.image * e.out_height + s.first_row) * e.out_width) * e.out_channels;
            ExecArgs args{{DNNL_ARG_SRC, slab_memory(step.src, 2, middle)},
                          {DNNL_ARG_WEIGHTS, e.project_weights},
                          {DNNL_ARG_DST, slab_memory(step.dst, 3, p.y + at)}};
            if (p.project_bias) args.emplace(DNNL_ARG_BIAS, memory_over(e.project_bias, p.project_bias->data()));
            if (p.residual)
                args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, slab_memory(step.dst, 4, p.residual + at));
            step.step.execute(stream, std::move(args));
        });
    }

    // `at_creation`: called from the constructor, when the 1x1 weights may still be packed in
    // place of their row-major copy.
    std::shared_ptr<const InvertedResidualEntry> build(const std::vector<int64_t>& x_shape, int threads,
                                                       bool at_creation) const {
        auto e = std::make_shared<InvertedResidualEntry>();
        const std::vector<int64_t>&w0 = weight_shapes_[0], &w1 = weight_shapes_[1], &w2 = weight_shapes_[2];
        if (x_shape[1] != w0[1] || w1[0] != w0[0] || w2[1] != w0[0]) return nullptr;  // the reference kernel says why
        e->batch = x_shape[0], e->height = x_shape[2], e->width = x_shape[3];
        e->in_channels = w0[1], e->middle = w0[0], e->out_channels = w2[0];
        const std::vector<int64_t> mid_shape{e->batch, e->middle, e->height, e->width};
        const ConvGeometry g = conv_geometry(window_, e->middle, mid_shape, w1, parts_[1]);
        DepthwiseGeometry dg;
        static_cast<Conv2dSizes&>(dg) = conv2d_sizes(g, mid_shape);
        dg.stride = g.strides[0];
        if (g.strides[0] != g.strides[1] || g.dilations[0] != 0 || g.dilations[1] != 0 || dg.pad_top != 1 ||
            !DepthwiseConv::handles(dg))
            return nullptr;
        e->depthwise.emplace(dg, depthwise_weights_, *fused_activation_of(parts_[1]));
        e->out_height = dg.out_height, e->out_width = dg.out_width, e->stride = dg.stride, e->pad_top = dg.pad_top;
        e->out_shape = {e->batch, e->out_channels, e->out_height, e->out_width};

        // A share of the rows per thread, each run on its own: the window rows computed twice
        // where shares meet cost less than splitting every step's small matmuls over threads
        // (measured on MobileNetV2 down to 7x7 images at batch 1).
        e->shares = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, e->batch * e->out_height)));
        // Slabs: the expanded and depthwise rows of a slab fill half of L2.
        constexpr int64_t kSlabBytes = 512 * 1024;
        auto slab_bytes = [&](int64_t rows) {
            return (((rows - 1) * e->stride + 3) * e->width + rows * e->out_width) * e->middle * int64_t{sizeof(float)};
        };
        e->slab_rows = 1;
        while (e->slab_rows < e->out_height && slab_bytes(e->slab_rows + 1) <= kSlabBytes) ++e->slab_rows;
        e->buffer_rows = std::min(e->height, (e->slab_rows - 1) * e->stride + 3);

        using tag = dnnl::memory::format_tag;
        const auto f32 = dnnl::memory::data_type::f32;
        e->x_plain = plain_desc({e->batch, e->in_channels, e->height, e->width});
        e->y_plain = plain_desc(to_dims(e->out_shape));
        e->src_into.emplace(dnnl::memory::desc({e->batch, e->in_channels, e->height, e->width}, f32, tag::nhwc));
        const dnnl::memory::desc dst({e->batch, e->out_channels, e->out_height, e->out_width}, f32, tag::nhwc);
        if (has_residual_) e->residual_into.emplace(dst);
        e->output = OutputLayout(dst, e->out_shape);
        e->expanded = plain_desc({e->buffer_rows * e->width * e->middle});
        e->depthwise_rows = plain_desc({e->slab_rows * e->out_width * e->middle});
        e->expand_bias = plain_desc({1, e->middle});
        e->project_bias = plain_desc({1, e->out_channels});

        // The row counts the schedule uses, each with its primitive, made for the threads it runs on.
        std::vector<int64_t> expand_rows, project_rows;
        for (int share = 0; share < e->shares; ++share)
            e->for_each_slab(share, [&](const Slab& s) {
                if (s.compute_from < s.in_last) expand_rows.push_back((s.in_last - s.compute_from) * e->width);
                project_rows.push_back((s.last_row - s.first_row) * e->out_width);
            });
        apply_thread_budget(1);  // each runs on one thread
        const bool built = plan_pointwise(expand_rows, e->in_channels, e->middle, parts_[0], has_bias_[0], false,
                                          at_creation, expand_weights_, e->expand, e->expand_weights) &&
                           plan_pointwise(project_rows, e->middle, e->out_channels, parts_[2], has_bias_[1],
                                          has_residual_, at_creation, project_weights_, e->project, e->project_weights);
        apply_thread_budget(threads);
        return built ? e : nullptr;
    }

    // Matmul primitives [rows, k] x [k, n] + bias (+ residual) -> activation, one per distinct
    // row count, all reading the weights in the layout the first one picked.
    static bool plan_pointwise(std::vector<int64_t> rows, int64_t k, int64_t n, const Node& part, bool bias,
                               bool residual, bool at_creation, PackedConstant& weights,
                               std::vector<PointwiseStep>& steps, dnnl::memory& packed) {
        std::sort(rows.begin(), rows.end());
        rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
        // ONNX's (n, k, 1, 1) weights, read as [k, n] through strides.
        const dnnl::memory::desc plain({k, n}, dnnl::memory::data_type::f32, Dims{1, k});
        std::optional<dnnl::memory::desc> layout;
        for (int64_t m : rows) {
            PointwiseStep step;
            step.rows = m;
            step.src = plain_desc({m, k});
            step.dst = plain_desc({m, n});
            dnnl::primitive_attr attr = base_attr();
            dnnl::post_ops ops;
            if (residual) ops.append_binary(dnnl::algorithm::binary_add, step.dst);
            append_activation(ops, part);
            attr.set_post_ops(ops);
            std::optional<dnnl::matmul::primitive_desc> pd;
            try {
                pd.emplace(*cpu_engine(), step.src, layout ? *layout : any_desc({k, n}),
                           bias ? plain_desc({1, n}) : dnnl::memory::desc(), step.dst, attr);
            } catch (const dnnl::error&) {
                return false;
            }
            if (!optimized(*pd) || (layout && pd->weights_desc() != *layout)) return false;
            layout = pd->weights_desc();
            step.step = Step{dnnl::matmul(*pd), pd->scratchpad_desc()};
            steps.push_back(std::move(step));
        }
        if (!layout) return false;
        if (at_creation) weights.prepack(plain, *layout);
        packed = weights.get(plain, *layout);
        return true;
    }

    const Node parts_[ops::kInvertedResidualParts];
    ops::WindowAttributes window_;  // the depthwise part's
    bool has_residual_;
    // Mutable: build() packs the 1x1 weights in place while the constructor plans.
    mutable PackedConstant expand_weights_, project_weights_;
    Tensor depthwise_weights_;  // DepthwiseConv makes its own tap-major copy
    std::vector<int64_t> weight_shapes_[ops::kInvertedResidualParts];
    bool has_bias_[2];  // the expand and project parts'
    ShapeCache<InvertedResidualEntry> cache_;
};

}  // namespace

void add_inverted_residual_kernel(std::map<std::string, ops::KernelFactory>& kernels) {
    kernels["com.pyflame::InvertedResidual"] = factory<InvertedResidualKernel>("InvertedResidual", "com.pyflame");
}

}  // namespace pyflame_rt::onednn
