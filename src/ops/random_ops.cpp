// Random generators: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.
// Kernels are shared by concurrent runs, so each run draws from its own generator: seeded by
// the 'seed' attribute when given (every run then yields the same values), else from
// std::random_device. Values are not ONNX Runtime's (the spec leaves the generator open).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "ops/dispatch.hpp"
#include "ops/nn_common.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

// The run's generator (see the file comment).
std::mt19937_64 make_generator(const std::optional<double>& seed) {
    if (!seed) return std::mt19937_64(std::random_device{}());
    const auto s = static_cast<float>(*seed);  // the attribute is a float: use its bits
    uint32_t bits = 0;
    std::memcpy(&bits, &s, sizeof bits);
    return std::mt19937_64(bits);
}

std::optional<double> seed_of(const Node& node) {
    return node.has_attribute("seed") ? std::optional<double>(node.get_attribute<double>("seed")) : std::nullopt;
}

std::optional<DType> dtype_attr(const Node& node) {
    if (!node.has_attribute("dtype")) return std::nullopt;
    const int64_t code = node.get_attribute<int64_t>("dtype");
    try {
        return dtype_from_onnx(static_cast<int>(code));
    } catch (const ValidationError&) {
        fail_node(node, "attribute 'dtype' is " + std::to_string(code) + ", not a supported type");
    }
}

// Fills a tensor of dtype dt (numeric or bool) with draw() for each element.
template <typename Draw>
Tensor generate(const std::vector<int64_t>& shape, DType dt, const Node& node, Draw&& draw) {
    Tensor out(shape, dt);
    dispatch_numeric(
        dt, node,
        [&](auto tag) {
            using T = decltype(tag);
            T* p = out.data_ptr<T>();
            for (int64_t i = 0; i < out.num_elements(); ++i) {
                const double v = draw(i);
                if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) p[i] = T(static_cast<float>(v));
                else p[i] = static_cast<T>(v);
            }
        },
        true);
    return out;
}

void require_float_output(const Node& node, DType dt) {
    if (dt != DType::Float32 && dt != DType::Float64 && dt != DType::Float16 && dt != DType::BFloat16)
        fail_node(node, "output dtype " + dtype_to_string(dt) + " is not a floating type");
}

// RandomUniform / RandomNormal and their *Like forms (shape and default dtype from the input).
class RandomKernel final : public NodeKernel {
public:
    RandomKernel(const Node& node, bool normal, bool like)
        : NodeKernel(node),
          normal_(normal),
          like_(like),
          a_(node.get_attribute<double>(normal ? "mean" : "low", 0.0)),
          b_(node.get_attribute<double>(normal ? "scale" : "high", 1.0)),
          seed_(seed_of(node)),
          dtype_(dtype_attr(node)) {
        if (!like) {
            shape_ = node.get_attribute<std::vector<int64_t>>("shape");
            for (int64_t d : shape_)
                if (d < 0) fail("attribute 'shape' " + shape_to_string(shape_) + " has a negative dimension");
        }
        if (dtype_) require_float_output(node, *dtype_);
    }

    void compute(KernelContext& ctx) const override {
        const std::vector<int64_t> shape = like_ ? ctx.input(0).shape() : shape_;
        const DType dt = dtype_ ? *dtype_ : like_ ? ctx.input(0).dtype() : DType::Float32;
        require_float_output(node_, dt);
        std::mt19937_64 gen = make_generator(seed_);
        std::uniform_real_distribution<double> uniform(a_, b_);
        std::normal_distribution<double> normal(a_, b_);
        ctx.outputs[0] = generate(shape, dt, node_, [&](int64_t) { return normal_ ? normal(gen) : uniform(gen); });
    }

private:
    bool normal_, like_;
    double a_, b_;  // low/high or mean/scale
    std::optional<double> seed_;
    std::optional<DType> dtype_;
    std::vector<int64_t> shape_;
};

void infer_random(InferenceContext& ctx, bool like) {
    const std::optional<DType> dt = dtype_attr(ctx.node);
    if (!like) {
        ctx.set_output(0, dt.value_or(DType::Float32), to_shape(ctx.node.get_attribute<std::vector<int64_t>>("shape")));
    } else if (ctx.has_input(0)) {
        ctx.set_output(0, dt.value_or(ctx.input(0).dtype), ctx.input(0).shape);
    }
}

OpSchema random_schema(const char* name, int since, bool normal, bool like) {
    return OpSchema{name, "", since, like ? 1 : 0, like ? 1 : 0, 1, 1, [like](InferenceContext& ctx) { infer_random(ctx, like); },
                    [normal, like](const KernelInfo& info) { return std::make_unique<RandomKernel>(info.node, normal, like); }};
}

// Bernoulli: y = 1 with probability x (x in [0, 1]), else 0.
class BernoulliKernel final : public NodeKernel {
public:
    explicit BernoulliKernel(const Node& node) : NodeKernel(node), seed_(seed_of(node)), dtype_(dtype_attr(node)) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const std::vector<double> p = float_values(x, node_);
        for (double v : p)
            if (!(v >= 0 && v <= 1)) fail("probabilities must lie in [0, 1]; got " + std::to_string(v));
        std::mt19937_64 gen = make_generator(seed_);
        std::uniform_real_distribution<double> uniform(0.0, 1.0);
        ctx.outputs[0] = generate(x.shape(), dtype_.value_or(x.dtype()), node_,
                                  [&](int64_t i) { return uniform(gen) < p[i] ? 1.0 : 0.0; });
    }

private:
    std::optional<double> seed_;
    std::optional<DType> dtype_;
};

// Multinomial: sample_size class indices per batch row from unnormalized log-probabilities.
class MultinomialKernel final : public NodeKernel {
public:
    explicit MultinomialKernel(const Node& node)
        : NodeKernel(node),
          samples_(node.get_attribute<int64_t>("sample_size", 1)),
          seed_(seed_of(node)),
          dtype_(dtype_attr(node).value_or(DType::Int32)) {
        if (samples_ < 1) fail("sample_size must be >= 1");
        if (dtype_ != DType::Int32 && dtype_ != DType::Int64) fail("dtype must be int32 or int64");
    }

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 2) fail("input has shape " + shape_to_string(x.shape()) + "; expected [batch, classes]");
        const int64_t batch = x.shape()[0], classes = x.shape()[1];
        if (classes < 1) fail("input needs at least one class");
        const std::vector<double> logits = float_values(x, node_);
        std::mt19937_64 gen = make_generator(seed_);
        std::vector<int64_t> picks;
        for (int64_t b = 0; b < batch; ++b) {
            const double* row = logits.data() + b * classes;
            const double top = *std::max_element(row, row + classes);  // exp(-top) keeps exp finite
            std::vector<double> weights(static_cast<size_t>(classes));
            for (int64_t k = 0; k < classes; ++k) weights[k] = std::exp(row[k] - top);
            std::discrete_distribution<int64_t> dist(weights.begin(), weights.end());
            for (int64_t s = 0; s < samples_; ++s) picks.push_back(dist(gen));
        }
        ctx.outputs[0] = generate({batch, samples_}, dtype_, node_, [&](int64_t i) { return static_cast<double>(picks[i]); });
    }

private:
    int64_t samples_;
    std::optional<double> seed_;
    DType dtype_;
};

}  // namespace

void register_random_ops(OpTable& table) {
    table.add(random_schema("RandomUniform", 1, false, false));
    table.add(random_schema("RandomNormal", 1, true, false));
    table.add(random_schema("RandomUniformLike", 1, false, true));
    table.add(random_schema("RandomNormalLike", 1, true, true));
    table.add(OpSchema{"Bernoulli", "", 15, 1, 1, 1, 1,
                       [](InferenceContext& ctx) {
                           if (ctx.has_input(0)) ctx.set_output(0, dtype_attr(ctx.node).value_or(ctx.input(0).dtype), ctx.input(0).shape);
                       },
                       [](const KernelInfo& info) { return std::make_unique<BernoulliKernel>(info.node); }});
    table.add(OpSchema{"Multinomial", "", 7, 1, 1, 1, 1,
                       [](InferenceContext& ctx) {
                           const DType dt = dtype_attr(ctx.node).value_or(DType::Int32);
                           const std::optional<int64_t> samples = ctx.node.get_attribute<int64_t>("sample_size", 1);
                           ctx.set_output(0, dt, {ctx.has_input(0) && ctx.input(0).shape.size() == 2 ? ctx.input(0).shape[0] : std::nullopt, samples});
                       },
                       [](const KernelInfo& info) { return std::make_unique<MultinomialKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
