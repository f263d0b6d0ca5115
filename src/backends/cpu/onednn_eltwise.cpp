// Elementwise activations (Relu, LeakyRelu, Sigmoid, Tanh, Elu, Gelu, HardSwish, Swish, HardSigmoid,
// Mish, Exp, Log, Sqrt, Abs) and Softmax/LogSoftmax on oneDNN's vectorized (JIT) kernels,
// float32, plain layout. An elementwise op sees its input as one flat vector, so one primitive
// per element count serves every shape. Softplus stays on the reference kernel: oneDNN's
// soft_relu loses relative precision where log(1 + exp(x)) is tiny (x << 0).
#include "backends/cpu/onednn_context.hpp"

namespace pyflame_rt::onednn {
namespace {

// Below this many elements the reference loop costs less than a primitive call (an OpenMP
// parallel region, which under CPU contention can also wait for a descheduled thread).
constexpr int64_t kSmallTensor = 4096;

struct UnaryEntry {
    dnnl::memory::desc md;
    Step step;
};

// An entry over `dims` whose primitive `make_pd(md)` describes; null when oneDNN has no
// optimized implementation (the reference kernel then serves that shape).
template <typename Primitive, typename MakePd>
std::shared_ptr<UnaryEntry> build_unary(const Dims& dims, MakePd&& make_pd) {
    auto e = std::make_shared<UnaryEntry>();
    e->md = plain_desc(dims);
    try {
        const auto pd = make_pd(e->md);
        if (!optimized(pd)) return nullptr;
        e->step = Step{Primitive(pd), pd.scratchpad_desc()};
    } catch (const dnnl::error&) {
        return nullptr;
    }
    return e;
}

// Runs `entry` from x into a new tensor shaped like x.
void run_unary(const UnaryEntry& entry, const Tensor& x, ops::KernelContext& ctx) {
    Tensor y(x.shape(), DType::Float32);
    dnnl::stream& stream = thread_stream();
    entry.step.execute(stream, {{DNNL_ARG_SRC, memory_over(entry.md, x.data())},
                                {DNNL_ARG_DST, memory_over(entry.md, y.data())}});
    stream.wait();
    ctx.outputs[0] = std::move(y);
}

class EltwiseKernel final : public FastKernel {
public:
    EltwiseKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference, dnnl::algorithm algorithm,
                  float alpha, float beta)
        : FastKernel(info, std::move(reference)), algorithm_(algorithm), alpha_(alpha), beta_(beta) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        if (x.dtype() != DType::Float32 || x.num_elements() < kSmallTensor) return fallback(ctx);
        const auto entry = cache_.get({x.num_elements()}, [&] {
            return build_unary<dnnl::eltwise_forward>({x.num_elements()}, [&](const dnnl::memory::desc& md) {
                return dnnl::eltwise_forward::primitive_desc(*cpu_engine(), dnnl::prop_kind::forward_inference,
                                                             algorithm_, md, md, alpha_, beta_, base_attr());
            });
        });
        if (!entry) return fallback(ctx);
        run_unary(*entry, x, ctx);
    }

private:
    dnnl::algorithm algorithm_;
    float alpha_, beta_;
    ShapeCache<UnaryEntry> cache_;
};

// An ONNX activation as a oneDNN algorithm with (alpha, beta) read from the node.
template <dnnl::algorithm Algorithm>
struct Eltwise {
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        const Node& n = info.node;
        float alpha = 0, beta = 0;
        dnnl::algorithm algorithm = Algorithm;
        const std::string& op = n.op_type();
        if (op == "LeakyRelu") alpha = static_cast<float>(n.get_attribute<double>("alpha", 0.01));
        if (op == "Elu") alpha = static_cast<float>(n.get_attribute<double>("alpha", 1.0));
        if (op == "HardSigmoid") {
            alpha = static_cast<float>(n.get_attribute<double>("alpha", 0.2));
            beta = static_cast<float>(n.get_attribute<double>("beta", 0.5));
        }
        if (op == "HardSwish") alpha = 1.0f / 6.0f, beta = 0.5f;  // x * max(0, min(1, x/6 + 1/2))
        if (op == "Swish") alpha = static_cast<float>(n.get_attribute<double>("alpha", 1.0));  // x * sigmoid(alpha x)
        if (op == "Gelu" && n.get_attribute<std::string>("approximate", "none") == "tanh")
            algorithm = dnnl::algorithm::eltwise_gelu_tanh;
        return std::make_unique<EltwiseKernel>(info, std::move(reference), algorithm, alpha, beta);
    }
};

// Softmax / LogSoftmax along one axis. Before opset 13 the input is a 2-D matrix split at
// `axis` with one softmax per row; from 13 the softmax runs along `axis` itself.
class SoftmaxKernel final : public FastKernel {
public:
    SoftmaxKernel(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference, dnnl::algorithm algorithm)
        : FastKernel(info, std::move(reference)),
          algorithm_(algorithm),
          legacy_(info.opset > 0 && info.opset < 13),
          axis_(info.node.get_attribute<int64_t>("axis", legacy_ ? 1 : -1)) {}

    void compute(ops::KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        apply_thread_budget(threads_for_elements(x.num_elements(), ctx.num_threads));
        const int64_t rank = static_cast<int64_t>(x.ndim());
        if (x.dtype() != DType::Float32 || x.num_elements() < kSmallTensor || rank == 0 || axis_ < -rank || axis_ >= rank)
            return fallback(ctx);  // the reference kernel reports bad axes
        const auto entry = cache_.get(x.shape(), [&] {
            const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
            Dims dims = to_dims(x.shape());
            int softmax_axis = static_cast<int>(axis);
            if (legacy_) {
                int64_t outer = 1, inner = 1;
                for (int64_t d = 0; d < rank; ++d) (d < axis ? outer : inner) *= x.shape()[d];
                dims = {outer, inner};
                softmax_axis = 1;
            }
            return build_unary<dnnl::softmax_forward>(dims, [&](const dnnl::memory::desc& md) {
                return dnnl::softmax_forward::primitive_desc(*cpu_engine(), dnnl::prop_kind::forward_inference,
                                                             algorithm_, md, md, softmax_axis, base_attr());
            });
        });
        if (!entry) return fallback(ctx);
        run_unary(*entry, x, ctx);
    }

private:
    dnnl::algorithm algorithm_;
    bool legacy_;
    int64_t axis_;
    ShapeCache<UnaryEntry> cache_;
};

template <dnnl::algorithm Algorithm>
struct Softmax {
    static std::unique_ptr<ops::OpKernel> create(const ops::KernelInfo& info, std::unique_ptr<ops::OpKernel> reference) {
        return std::make_unique<SoftmaxKernel>(info, std::move(reference), Algorithm);
    }
};

}  // namespace

void add_eltwise_kernels(std::map<std::string, ops::KernelFactory>& kernels) {
    using A = dnnl::algorithm;
    kernels["::Relu"] = factory<Eltwise<A::eltwise_relu>>("Relu");
    kernels["::LeakyRelu"] = factory<Eltwise<A::eltwise_relu>>("LeakyRelu");
    kernels["::Sigmoid"] = factory<Eltwise<A::eltwise_logistic>>("Sigmoid");
    kernels["::Tanh"] = factory<Eltwise<A::eltwise_tanh>>("Tanh");
    kernels["::Elu"] = factory<Eltwise<A::eltwise_elu>>("Elu");
    kernels["::Gelu"] = factory<Eltwise<A::eltwise_gelu_erf>>("Gelu");
    kernels["::HardSwish"] = factory<Eltwise<A::eltwise_hardswish>>("HardSwish");
    kernels["::Swish"] = factory<Eltwise<A::eltwise_swish>>("Swish");
    kernels["::HardSigmoid"] = factory<Eltwise<A::eltwise_hardsigmoid>>("HardSigmoid");
    kernels["::Mish"] = factory<Eltwise<A::eltwise_mish>>("Mish");
    kernels["::Exp"] = factory<Eltwise<A::eltwise_exp>>("Exp");
    kernels["::Log"] = factory<Eltwise<A::eltwise_log>>("Log");
    kernels["::Sqrt"] = factory<Eltwise<A::eltwise_sqrt>>("Sqrt");
    kernels["::Abs"] = factory<Eltwise<A::eltwise_abs>>("Abs");
    kernels["::Softmax"] = factory<Softmax<A::softmax_accurate>>("Softmax");
    kernels["::LogSoftmax"] = factory<Softmax<A::softmax_log>>("LogSoftmax");
}

}  // namespace pyflame_rt::onednn
