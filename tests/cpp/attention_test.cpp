// com.pyflame FusedAttention: its reference kernel and its oneDNN kernel against naive loops
// written from the definition softmax(scale * Q·Kᵀ + mask)·V (double precision, any batch
// broadcast), and the errors both report for inputs that do not fit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "backends/cpu/onednn_kernels.hpp"
#include "ops/op.hpp"
#include "test_util.hpp"

namespace pyflame_rt {
namespace {

using Shape64 = std::vector<int64_t>;

const std::map<std::string, ops::KernelFactory>& onednn_factories() {
    static const std::map<std::string, ops::KernelFactory> table = [] {
        std::map<std::string, ops::KernelFactory> t;
        register_onednn_kernels(t);
        return t;
    }();
    return table;
}

Node attention_node(bool has_mask, bool k_transposed, std::optional<double> scale) {
    std::vector<std::string> inputs{"q", "k", "v"};
    if (has_mask) inputs.push_back("mask");
    Node node("FusedAttention", "attn", inputs, {"y"});
    node.set_domain("com.pyflame");
    if (k_transposed) node.set_attribute("k_transposed", int64_t{1});
    if (scale) node.set_attribute("scale", *scale);
    return node;
}

std::unique_ptr<ops::OpKernel> reference_kernel(const Node& node) {
    return ops::OpTable::instance().find("FusedAttention", "com.pyflame")->reference_kernel(ops::KernelInfo{node, 17, {}});
}

std::unique_ptr<ops::OpKernel> onednn_kernel(const Node& node) {
    return onednn_factories().at("com.pyflame::FusedAttention")(ops::KernelInfo{node, 17, {}});
}

Tensor run(const ops::OpKernel& kernel, const std::vector<const Tensor*>& inputs) {
    ops::KernelContext ctx;
    ctx.inputs = inputs;
    ctx.outputs.resize(1);
    ctx.num_threads = 2;
    kernel.compute(ctx);
    return ctx.outputs[0];
}

Tensor random_tensor(const Shape64& shape, uint32_t seed, float spread = 1.0f) {
    Tensor t(shape, DType::Float32);
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-spread, spread);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data_ptr<float>()[i] = dist(gen);
    return t;
}

// Element of `t` at the (right-aligned, broadcast) multi-index `index` of a bigger shape.
double at(const Tensor& t, const Shape64& index) {
    const Shape64& shape = t.shape();
    int64_t offset = 0;
    for (size_t d = 0; d < shape.size(); ++d) {
        const int64_t i = index[index.size() - shape.size() + d];
        offset = offset * shape[d] + (shape[d] == 1 ? 0 : i);
    }
    return t.data_ptr<float>()[offset];
}

// The definition, one output element at a time.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, bool k_transposed, double scale,
                       const Shape64& out_shape) {
    const size_t rank = out_shape.size();
    const int64_t sq = out_shape[rank - 2], dv = out_shape[rank - 1], d = q.shape().back();
    const int64_t sk = k_transposed ? k.shape().back() : k.shape()[k.ndim() - 2];
    Tensor y(out_shape, DType::Float32);
    Shape64 index(rank, 0);
    for (int64_t flat = 0; flat < y.num_elements(); flat += sq * dv) {
        int64_t rest = flat / (sq * dv);
        for (size_t a = rank - 2; a-- > 0;) index[a] = rest % out_shape[a], rest /= out_shape[a];
        for (int64_t i = 0; i < sq; ++i) {
            std::vector<double> s(sk);
            for (int64_t j = 0; j < sk; ++j) {
                double dot = 0;
                for (int64_t c = 0; c < d; ++c) {
                    Shape64 qi = index, ki = index;
                    qi[rank - 2] = i, qi[rank - 1] = c;
                    ki[rank - 2] = k_transposed ? c : j, ki[rank - 1] = k_transposed ? j : c;
                    dot += at(q, qi) * at(k, ki);
                }
                Shape64 mi = index;
                mi[rank - 2] = i, mi[rank - 1] = j;
                s[j] = scale * dot + (mask ? at(*mask, mi) : 0.0);
            }
            const double max = *std::max_element(s.begin(), s.end());
            double sum = 0;
            for (double& x : s) sum += x = std::exp(x - max);
            for (int64_t c = 0; c < dv; ++c) {
                double acc = 0;
                for (int64_t j = 0; j < sk; ++j) {
                    Shape64 vi = index;
                    vi[rank - 2] = j, vi[rank - 1] = c;
                    acc += s[j] / sum * at(v, vi);
                }
                y.data_ptr<float>()[flat + i * dv + c] = static_cast<float>(acc);
            }
        }
    }
    return y;
}

void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
    ASSERT_EQ(actual.shape(), expected.shape()) << what;
    int reported = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        const float a = actual.data_ptr<float>()[i], e = expected.data_ptr<float>()[i];
        if (!(std::fabs(a - e) <= 1e-4f * std::max(1.0f, std::fabs(e))) && reported++ < 5)
            ADD_FAILURE() << what << ": element " << i << " is " << a << ", expected " << e;
    }
}

struct Case {
    Shape64 q, k, v, mask;  // mask empty: none
    bool k_transposed;
    std::optional<double> scale;
    Shape64 out;
};

TEST(FusedAttention, ReferenceAndOneDnnKernelsMatchTheDefinition) {
    const std::vector<Case> cases = {
        {{2, 3, 5, 4}, {2, 3, 7, 4}, {2, 3, 7, 6}, {}, false, 0.5, {2, 3, 5, 6}},             // 4-D, Sq != Sk
        {{6, 5, 8}, {6, 5, 8}, {6, 5, 8}, {}, false, std::nullopt, {6, 5, 8}},                 // 3-D, default scale
        {{2, 3, 5, 4}, {2, 3, 4, 7}, {2, 3, 7, 4}, {2, 1, 1, 7}, true, 0.25, {2, 3, 5, 4}},    // K given transposed, key mask
        {{2, 3, 6, 4}, {2, 3, 6, 4}, {2, 3, 6, 4}, {6, 6}, false, 1.0, {2, 3, 6, 4}},          // a causal-like [Sq, Sk] mask
        {{2, 3, 6, 4}, {2, 3, 6, 4}, {2, 3, 6, 4}, {2, 3, 6, 6}, false, 0.3, {2, 3, 6, 4}},    // a full mask
        {{2, 3, 6, 4}, {2, 3, 6, 4}, {2, 3, 6, 4}, {6, 1}, false, 0.3, {2, 3, 6, 4}},          // a per-row mask
        {{2, 3, 5, 4}, {1, 3, 7, 4}, {1, 1, 7, 2}, {}, false, 0.5, {2, 3, 5, 2}},              // K and V broadcast
        {{1, 3, 5, 4}, {1, 3, 7, 4}, {1, 3, 7, 2}, {2, 1, 5, 7}, false, 0.5, {2, 3, 5, 2}},    // the mask adds a batch
        {{5, 4}, {7, 4}, {7, 3}, {7}, false, 0.5, {5, 3}},                                     // 2-D
        {{2, 3, 1, 4}, {2, 3, 7, 4}, {2, 3, 7, 2}, {2, 1, 5, 7}, false, 0.5, {2, 3, 5, 2}},    // Q's one row, 5 mask rows
    };
    const bool engine = onednn_available();
    uint32_t seed = 1;
    for (const Case& c : cases) {
        const std::string what = "Q " + shape_to_string(c.q) + " K " + shape_to_string(c.k) + " V " + shape_to_string(c.v) +
                                 " mask " + shape_to_string(c.mask);
        const Tensor q = random_tensor(c.q, seed++, 2.0f), k = random_tensor(c.k, seed++, 2.0f),
                     v = random_tensor(c.v, seed++);
        const Tensor mask = random_tensor(c.mask.empty() ? Shape64{1} : c.mask, seed++, 3.0f);
        const bool has_mask = !c.mask.empty();
        const Node node = attention_node(has_mask, c.k_transposed, c.scale);
        std::vector<const Tensor*> inputs{&q, &k, &v};
        if (has_mask) inputs.push_back(&mask);
        const double scale = c.scale ? *c.scale : 1.0 / std::sqrt(static_cast<double>(c.q.back()));
        const Tensor expected = naive_attention(q, k, v, has_mask ? &mask : nullptr, c.k_transposed, scale, c.out);
        expect_close(run(*reference_kernel(node), inputs), expected, "reference kernel, " + what);
        const auto fast = onednn_kernel(node);
        EXPECT_EQ(is_onednn_kernel(*fast), engine) << what;
        expect_close(run(*fast, inputs), expected, "oneDNN kernel, " + what);
    }
}

TEST(FusedAttention, BothKernelsRejectInputsThatDoNotFit) {
    const Tensor q = random_tensor({2, 5, 4}, 1), k = random_tensor({2, 7, 3}, 2), v = random_tensor({2, 7, 4}, 3);
    const Tensor good_k = random_tensor({2, 7, 4}, 4), short_v = random_tensor({2, 6, 4}, 5);
    const Tensor bad_mask = random_tensor({3, 7}, 6);
    for (const bool fast : {false, true}) {
        const Node node = attention_node(false, false, 0.5);
        const auto kernel = fast ? onednn_kernel(node) : reference_kernel(node);
        testing::expect_validation_error([&] { run(*kernel, {&q, &k, &v}); }, {"'attn'", "head sizes"});
        testing::expect_validation_error([&] { run(*kernel, {&q, &good_k, &short_v}); }, {"sequence lengths"});
        const Node masked = attention_node(true, false, 0.5);
        const auto masked_kernel = fast ? onednn_kernel(masked) : reference_kernel(masked);
        testing::expect_validation_error([&] { run(*masked_kernel, {&q, &good_k, &v, &bad_mask}); }, {"mask"});
        Tensor q64({2, 5, 4}, DType::Float64);
        testing::expect_validation_error([&] { run(*kernel, {&q64, &good_k, &v}); }, {"input Q", "Float32"});
    }
    Node bad("FusedAttention", "attn", {"q", "k", "v"}, {"y"});
    bad.set_domain("com.pyflame");
    bad.set_attribute("k_transposed", int64_t{2});
    testing::expect_validation_error([&] { reference_kernel(bad); }, {"k_transposed"});
}

}  // namespace
}  // namespace pyflame_rt
