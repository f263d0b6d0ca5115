// The level-3 layout passes and the LayerNorm fusion through the C++ API: what each rewrites
// (node ops and attributes) and that the rewritten graph computes what loops over the inputs do.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "pyflame_rt/optimize/pass_manager.hpp"
#include "test_util.hpp"

using namespace pyflame_rt;
using namespace pyflame_rt::testing;

namespace {

std::vector<std::string> op_types(const Graph& g) {
    std::vector<std::string> ops;
    for (const auto& n : g.nodes()) ops.push_back(n->op_type());
    return ops;
}

std::shared_ptr<Node> with_attribute(std::shared_ptr<Node> node, const std::string& name, const AttributeValue& value) {
    node->set_attribute(name, value);
    return node;
}

Tensor run_level_0(const std::shared_ptr<Graph>& g, const std::vector<std::pair<std::string, Tensor>>& feeds) {
    SessionOptions options;
    options.optimization_level = 0;
    InferenceSession session(g, options);
    std::unordered_map<std::string, Tensor> inputs(feeds.begin(), feeds.end());
    return session.run({}, inputs)[0];
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * std::fabs(want[i]) + 1e-5) << "at " << i;
}

}  // namespace

TEST(LayoutPasses, TransposesComposingToIdentityVanish) {
    auto g = std::make_shared<Graph>("cancel");
    g->add_input(TensorInfo{"x", DType::Float32, {2, 3}});
    g->add_node(with_attribute(make_node("Transpose", "t1", {"x"}, {"t"}), "perm", std::vector<int64_t>{1, 0}));
    g->add_node(with_attribute(make_node("Transpose", "t2", {"t"}, {"u"}), "perm", std::vector<int64_t>{1, 0}));
    g->add_node(make_node("Relu", "relu", {"u"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {2, 3}});
    const auto results = optimize::PassManager().run_passes(*g, {"cancel_transposes"});
    EXPECT_EQ(results.at(0).nodes_removed, 2);
    ASSERT_EQ(op_types(*g), std::vector<std::string>{"Relu"});
    EXPECT_EQ(g->nodes()[0]->inputs()[0], "x");
    const auto x = random_values(6, 1);
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = std::max(x[i], 0.0f);
    expect_near_all(to_vector(run_level_0(g, {{"x", make_tensor({2, 3}, x)}})), want);
}

TEST(LayoutPasses, TransposeFoldsIntoGemmAndMatMul) {
    // y = Gemm(T(a), w, transA=1) = a @ w (folding undoes Gemm's transpose);
    // z = MatMul(q, T(k)) = q @ k^T per batch (a FusedMatMul reading k with transB).
    auto g = std::make_shared<Graph>("fold");
    g->add_input(TensorInfo{"a", DType::Float32, {3, 4}});
    g->add_input(TensorInfo{"q", DType::Float32, {2, 3, 4}});
    g->add_input(TensorInfo{"k", DType::Float32, {2, 5, 4}});
    const auto w = random_values(8, 2);
    g->add_initializer("w", make_tensor({4, 2}, w));
    g->add_node(with_attribute(make_node("Transpose", "ta", {"a"}, {"at"}), "perm", std::vector<int64_t>{1, 0}));
    g->add_node(with_attribute(make_node("Gemm", "gemm", {"at", "w"}, {"y"}), "transA", int64_t{1}));
    g->add_node(with_attribute(make_node("Transpose", "tk", {"k"}, {"kt"}), "perm", std::vector<int64_t>{0, 2, 1}));
    g->add_node(make_node("MatMul", "mm", {"q", "kt"}, {"z"}));
    g->add_output(TensorInfo{"y", DType::Float32, {3, 2}});
    g->add_output(TensorInfo{"z", DType::Float32, {2, 3, 5}});
    const auto results = optimize::PassManager().run_passes(*g, {"fold_transpose_into_matmul"});
    EXPECT_EQ(results.at(0).nodes_fused, 2);
    ASSERT_EQ(op_types(*g), (std::vector<std::string>{"Gemm", "FusedMatMul"}));
    EXPECT_EQ(g->nodes()[0]->get_attribute<int64_t>("transA"), 0);
    EXPECT_EQ(g->nodes()[0]->inputs()[0], "a");
    EXPECT_EQ(g->nodes()[1]->domain(), "com.pyflame");
    EXPECT_EQ(g->nodes()[1]->get_attribute<int64_t>("transB"), 1);
    EXPECT_EQ(g->nodes()[1]->inputs()[1], "k");

    const auto a = random_values(12, 3), q = random_values(24, 4), k = random_values(40, 5);
    SessionOptions options;
    options.optimization_level = 0;
    InferenceSession session(g, options);
    const auto out = session.run({}, {{"a", make_tensor({3, 4}, a)}, {"q", make_tensor({2, 3, 4}, q)},
                                      {"k", make_tensor({2, 5, 4}, k)}});
    std::vector<float> want_y(6, 0.0f), want_z(30, 0.0f);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 2; ++j)
            for (int p = 0; p < 4; ++p) want_y[i * 2 + j] += a[i * 4 + p] * w[p * 2 + j];
    for (int b = 0; b < 2; ++b)
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 5; ++j)
                for (int p = 0; p < 4; ++p) want_z[(b * 3 + i) * 5 + j] += q[(b * 3 + i) * 4 + p] * k[(b * 5 + j) * 4 + p];
    expect_near_all(to_vector(out[0]), want_y);
    expect_near_all(to_vector(out[1]), want_z);
}

namespace {

// LayerNorm over the last axis of x [rows, 8], spelled out; eps a constant or graph input.
std::shared_ptr<Graph> decomposed_layer_norm(bool eps_constant) {
    auto g = std::make_shared<Graph>("ln");
    g->add_input(TensorInfo{"x", DType::Float32, {3, 8}});
    g->add_initializer("two", make_tensor({}, {2.0f}));
    if (eps_constant) g->add_initializer("eps", make_tensor({}, {1e-5f}));
    else g->add_input(TensorInfo{"eps", DType::Float32, {}});
    g->add_initializer("gamma", make_tensor({8}, random_values(8, 6)));
    g->add_initializer("beta", make_tensor({8}, random_values(8, 7)));
    const auto axes = std::vector<int64_t>{-1};
    g->add_node(with_attribute(make_node("ReduceMean", "mean", {"x"}, {"m"}), "axes", axes));
    g->add_node(make_node("Sub", "sub", {"x", "m"}, {"d"}));
    g->add_node(make_node("Pow", "pow", {"d", "two"}, {"sq"}));
    g->add_node(with_attribute(make_node("ReduceMean", "var", {"sq"}, {"v"}), "axes", axes));
    g->add_node(make_node("Add", "add_eps", {"v", "eps"}, {"ve"}));
    g->add_node(make_node("Sqrt", "sqrt", {"ve"}, {"s"}));
    g->add_node(make_node("Div", "div", {"d", "s"}, {"n"}));
    g->add_node(make_node("Mul", "scale", {"n", "gamma"}, {"scaled"}));
    g->add_node(make_node("Add", "shift", {"scaled", "beta"}, {"y"}));
    g->add_output(TensorInfo{"y", DType::Float32, {3, 8}});
    return g;
}

}  // namespace

TEST(LayerNormFusion, DecomposedPatternBecomesOneNode) {
    auto g = decomposed_layer_norm(true);
    const auto results = optimize::PassManager().run_passes(*g, {"fuse_layer_norm"});
    EXPECT_EQ(results.at(0).nodes_fused, 8);
    ASSERT_EQ(op_types(*g), std::vector<std::string>{"LayerNormalization"});
    EXPECT_EQ(g->nodes()[0]->outputs()[0], "y");
    EXPECT_NEAR(g->nodes()[0]->get_attribute<double>("epsilon"), 1e-5, 1e-12);

    const auto x = random_values(24, 8);
    const auto gamma = to_vector(g->get_initializer("gamma")), beta = to_vector(g->get_initializer("beta"));
    std::vector<float> want(24);
    for (int r = 0; r < 3; ++r) {
        double mean = 0, var = 0;
        for (int c = 0; c < 8; ++c) mean += x[r * 8 + c] / 8.0;
        for (int c = 0; c < 8; ++c) var += (x[r * 8 + c] - mean) * (x[r * 8 + c] - mean) / 8.0;
        for (int c = 0; c < 8; ++c)
            want[r * 8 + c] = static_cast<float>((x[r * 8 + c] - mean) / std::sqrt(var + 1e-5) * gamma[c] + beta[c]);
    }
    expect_near_all(to_vector(run_level_0(g, {{"x", make_tensor({3, 8}, x)}})), want);
}

TEST(LayerNormFusion, EpsilonThatIsNotAConstantLeavesTheGraphAlone) {
    auto g = decomposed_layer_norm(false);
    const auto before = op_types(*g);
    const auto results = optimize::PassManager().run_passes(*g, {"fuse_layer_norm"});
    EXPECT_FALSE(results.at(0).changed());
    EXPECT_EQ(op_types(*g), before);
}
