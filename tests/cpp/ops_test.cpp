// Tests of the built-in operator definitions: reference kernels and shape inference.
// Expected values come from naive loops written here from the ONNX spec (never from the
// kernel code) or from values computed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <thread>

#include "ops/op.hpp"
#include "test_util.hpp"

namespace pyflame_rt::ops {
namespace {

constexpr std::nullopt_t DYN = std::nullopt;

// ---------------------------------------------------------------------------------------------
// Helpers

template <typename T>
Tensor make(const std::vector<int64_t>& shape, const std::vector<T>& values) {
    Tensor t(shape, dtype_of<T>::value);
    EXPECT_EQ(static_cast<int64_t>(values.size()), t.num_elements());
    std::copy(values.begin(), values.end(), t.data_ptr<T>());
    return t;
}

Tensor random_tensor(const std::vector<int64_t>& shape, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    Tensor t(shape, DType::Float32);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data_ptr<float>()[i] = dist(gen);
    return t;
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
    return std::vector<T>(t.data_ptr<T>(), t.data_ptr<T>() + t.num_elements());
}

template <typename T>
void expect_close(const Tensor& got, const std::vector<int64_t>& shape, const std::vector<T>& want, double tol = 1e-5) {
    ASSERT_EQ(got.shape(), shape);
    ASSERT_EQ(got.dtype(), dtype_of<T>::value);
    ASSERT_EQ(static_cast<int64_t>(want.size()), got.num_elements());
    for (size_t i = 0; i < want.size(); ++i) {
        const double g = got.data_ptr<T>()[i], w = want[i];
        EXPECT_NEAR(g, w, tol * (1.0 + std::abs(w))) << "at flat index " << i;
    }
}

void expect_close(const Tensor& got, const Tensor& want, double tol = 1e-5) {
    expect_close<float>(got, want.shape(), values_of<float>(want), tol);
}

// A node named "n" + op type, with inputs in0.. and outputs out0...
Node make_node(const std::string& op, size_t inputs, size_t outputs = 1) {
    std::vector<std::string> in, out;
    for (size_t i = 0; i < inputs; ++i) in.push_back("in" + std::to_string(i));
    for (size_t i = 0; i < outputs; ++i) out.push_back("out" + std::to_string(i));
    return Node(op, "n" + op, in, out);
}

const OpSchema& schema_of(const Node& node) {
    const OpSchema* schema = OpTable::instance().find(node.op_type(), node.domain());
    if (!schema) throw std::runtime_error("no schema for " + node.op_type());
    return *schema;
}

std::vector<Tensor> run_all(const Node& node, const std::vector<const Tensor*>& inputs, int threads = 1,
                            int64_t opset = 13) {
    const OpSchema& schema = schema_of(node);
    check_arity(schema, node);
    const auto kernel = schema.reference_kernel(KernelInfo{node, opset, {}});
    KernelContext ctx;
    ctx.inputs = inputs;
    ctx.outputs.resize(node.outputs().size());
    ctx.num_threads = threads;
    kernel->compute(ctx);
    return ctx.outputs;
}

Tensor run(const Node& node, const std::vector<const Tensor*>& inputs, int threads = 1, int64_t opset = 13) {
    return run_all(node, inputs, threads, opset).at(0);
}

std::vector<std::optional<TensorInfo>> infer_all(const Node& node, const std::vector<std::optional<TensorInfo>>& inputs,
                                                 const std::vector<const Tensor*>& constants = {}) {
    InferenceContext ctx{node, 13, inputs, constants, {}};
    ctx.constant_inputs.resize(inputs.size(), nullptr);
    ctx.outputs.resize(node.outputs().size());
    schema_of(node).infer(ctx);
    return ctx.outputs;
}

std::optional<TensorInfo> infer(const Node& node, const std::vector<std::optional<TensorInfo>>& inputs,
                                const std::vector<const Tensor*>& constants = {}) {
    return infer_all(node, inputs, constants).at(0);
}

TensorInfo info(DType dtype, const Shape& shape) { return TensorInfo{"", dtype, shape}; }
TensorInfo f32(const Shape& shape) { return info(DType::Float32, shape); }

void expect_info(const std::optional<TensorInfo>& got, DType dtype, const Shape& shape) {
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->dtype, dtype);
    EXPECT_EQ(shape_to_string(got->shape), shape_to_string(shape));
}

using pyflame_rt::testing::expect_validation_error;

// Calls f(index) for each multi-index of the box `dims`, in row-major order.
void for_each_index(const std::vector<int64_t>& dims, const std::function<void(const std::vector<int64_t>&)>& f) {
    const int64_t total = num_elements_of(dims);
    std::vector<int64_t> index(dims.size(), 0);
    for (int64_t t = 0; t < total; ++t) {
        f(index);
        for (size_t d = dims.size(); d-- > 0;) {
            if (++index[d] < dims[d]) break;
            index[d] = 0;
        }
    }
}

int64_t flat_index(const std::vector<int64_t>& index, const std::vector<int64_t>& dims) {
    int64_t flat = 0;
    for (size_t d = 0; d < dims.size(); ++d) flat = flat * dims[d] + index[d];
    return flat;
}

// ---------------------------------------------------------------------------------------------
// Schema table

TEST(OpTableTest, EveryOpIsRegisteredWithInferenceAndKernel) {
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax", "Gemm", "MatMul", "Conv",
                           "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten", "Reshape",
                           "Transpose", "Concat", "Identity", "Constant"}) {
        const OpSchema* schema = OpTable::instance().find(op);
        ASSERT_NE(schema, nullptr) << op;
        EXPECT_EQ(schema->domain, "");
        EXPECT_TRUE(schema->infer) << op;
        EXPECT_TRUE(schema->reference_kernel) << op;
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

// out[i] = f(a[broadcast i], b[broadcast i]), by unravelling every output index.
template <typename T, typename F>
std::vector<T> naive_broadcast(const Tensor& a, const Tensor& b, const std::vector<int64_t>& out_shape, F f) {
    std::vector<T> out;
    auto source_index = [&](const std::vector<int64_t>& index, const std::vector<int64_t>& dims) {
        std::vector<int64_t> sub(dims.size());
        const size_t skip = out_shape.size() - dims.size();
        for (size_t d = 0; d < dims.size(); ++d) sub[d] = dims[d] == 1 ? 0 : index[skip + d];
        return flat_index(sub, dims);
    };
    for_each_index(out_shape, [&](const std::vector<int64_t>& index) {
        out.push_back(f(a.data_ptr<T>()[source_index(index, a.shape())], b.data_ptr<T>()[source_index(index, b.shape())]));
    });
    return out;
}

TEST(ElementwiseTest, AddSameShapeFloat) {
    const Tensor a = make<float>({2, 2}, {1, 2, 3, 4});
    const Tensor b = make<float>({2, 2}, {10, 20, 30, 40});
    expect_close<float>(run(make_node("Add", 2), {&a, &b}), {2, 2}, {11, 22, 33, 44});
}

TEST(ElementwiseTest, BroadcastingMatchesNaiveForEveryOp) {
    const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
        {{2, 3, 4}, {3, 1}}, {{1}, {2, 3}}, {{2, 1, 4}, {3, 1}}, {{}, {2, 3}}, {{4, 1, 1, 5}, {1, 3, 2, 1}},
        {{2, 3}, {2, 3}},    {{5, 1}, {1, 6}}, {{3, 4}, {}}};
    const std::vector<std::pair<std::string, std::function<float(float, float)>>> ops = {
        {"Add", [](float x, float y) { return x + y; }},
        {"Sub", [](float x, float y) { return x - y; }},
        {"Mul", [](float x, float y) { return x * y; }},
        {"Div", [](float x, float y) { return x / y; }}};
    unsigned seed = 1;
    for (const auto& [sa, sb] : cases) {
        const Tensor a = random_tensor(sa, seed++);
        const Tensor b = random_tensor(sb, seed++);
        const std::vector<int64_t> out_shape = broadcast_shapes(sa, sb);
        for (const auto& [op, f] : ops) {
            SCOPED_TRACE(op + " " + shape_to_string(sa) + " " + shape_to_string(sb));
            expect_close<float>(run(make_node(op, 2), {&a, &b}), out_shape, naive_broadcast<float>(a, b, out_shape, f));
            expect_close<float>(run(make_node(op, 2), {&b, &a}), out_shape, naive_broadcast<float>(b, a, out_shape, f));
        }
    }
}

TEST(ElementwiseTest, Float64) {
    const Tensor a = make<double>({3}, {1.5, 2.5, -3.0});
    const Tensor b = make<double>({1}, {2.0});
    expect_close<double>(run(make_node("Mul", 2), {&a, &b}), {3}, {3.0, 5.0, -6.0}, 1e-12);
    expect_close<double>(run(make_node("Div", 2), {&a, &b}), {3}, {0.75, 1.25, -1.5}, 1e-12);
}

TEST(ElementwiseTest, IntegerOpsAndTruncatingDivision) {
    const Tensor a = make<int32_t>({2, 3}, {7, -7, 7, -7, 9, 0});
    const Tensor b = make<int32_t>({3}, {2, 2, -2});
    expect_close<int32_t>(run(make_node("Add", 2), {&a, &b}), {2, 3}, {9, -5, 5, -5, 11, -2});
    expect_close<int32_t>(run(make_node("Sub", 2), {&a, &b}), {2, 3}, {5, -9, 9, -9, 7, 2});
    expect_close<int32_t>(run(make_node("Mul", 2), {&a, &b}), {2, 3}, {14, -14, -14, -14, 18, 0});
    // C++ (and ONNX Runtime) integer division truncates toward zero: -7/2 = -3, 7/-2 = -3.
    expect_close<int32_t>(run(make_node("Div", 2), {&a, &b}), {2, 3}, {3, -3, -3, -3, 4, 0});

    const Tensor c = make<int64_t>({2}, {int64_t{1} << 40, -9});
    const Tensor d = make<int64_t>({}, {4});
    expect_close<int64_t>(run(make_node("Div", 2), {&c, &d}), {2}, {int64_t{1} << 38, -2});
    expect_close<int64_t>(run(make_node("Mul", 2), {&c, &d}), {2}, {int64_t{1} << 42, -36});
}

TEST(ElementwiseTest, IntegerDivisionByZeroRaises) {
    const Tensor a = make<int32_t>({3}, {1, 2, 3});
    const Tensor b = make<int32_t>({3}, {1, 0, 1});
    expect_validation_error([&] { run(make_node("Div", 2), {&a, &b}); }, {"'nDiv'", "division by zero"});
    const Tensor c = make<int64_t>({1}, {5});
    const Tensor z = make<int64_t>({}, {0});
    expect_validation_error([&] { run(make_node("Div", 2), {&c, &z}); }, {"division by zero"});
    // Float division by zero is IEEE: inf, no error.
    const Tensor f = make<float>({1}, {1.0f});
    const Tensor fz = make<float>({1}, {0.0f});
    EXPECT_TRUE(std::isinf(run(make_node("Div", 2), {&f, &fz}).data_ptr<float>()[0]));
}

TEST(ElementwiseTest, IntegerOverflowDoesNotTrap) {
    const int32_t min = std::numeric_limits<int32_t>::min(), max = std::numeric_limits<int32_t>::max();
    const Tensor a = make<int32_t>({2}, {min, max});
    const Tensor b = make<int32_t>({2}, {-1, 1});
    expect_close<int32_t>(run(make_node("Div", 2), {&a, &b}), {2}, {min, max});  // INT_MIN / -1 wraps
    expect_close<int32_t>(run(make_node("Add", 2), {&a, &b}), {2}, {max, min});  // wraps both ways
}

TEST(ElementwiseTest, MismatchedDtypesRaise) {
    const Tensor a = make<float>({2}, {1, 2});
    const Tensor b = make<int64_t>({2}, {1, 2});
    expect_validation_error([&] { run(make_node("Add", 2), {&a, &b}); }, {"'nAdd'", "Float32", "Int64"});
    expect_validation_error([&] { infer(make_node("Sub", 2), {f32({2}), info(DType::Int64, {2})}); },
                            {"'nSub'", "Float32", "Int64"});
}

TEST(ElementwiseTest, UnsupportedDtypeRaises) {
    const Tensor a = make<bool>({2}, {true, false});
    expect_validation_error([&] { run(make_node("Add", 2), {&a, &a}); }, {"'nAdd'", "Bool"});
}

TEST(ElementwiseTest, IncompatibleBroadcastRaises) {
    const Tensor a = random_tensor({2, 3}, 1);
    const Tensor b = random_tensor({4}, 2);
    expect_validation_error([&] { run(make_node("Mul", 2), {&a, &b}); }, {"'nMul'", "[2, 3]", "[4]"});
    expect_validation_error([&] { infer(make_node("Mul", 2), {f32({2, 3}), f32({4})}); }, {"'nMul'", "broadcast"});
}

TEST(ElementwiseTest, ShapeInference) {
    const Node add = make_node("Add", 2);
    expect_info(infer(add, {f32({2, 3, 1}), f32({4})}), DType::Float32, {2, 3, 4});
    expect_info(infer(add, {f32({DYN, 3}), f32({1, 3})}), DType::Float32, {DYN, 3});
    expect_info(infer(add, {f32({DYN}), f32({5})}), DType::Float32, {5});
    expect_info(infer(add, {f32({DYN, 1}), f32({DYN})}), DType::Float32, {DYN, DYN});
    expect_info(infer(add, {info(DType::Int64, {}), info(DType::Int64, {2, DYN})}), DType::Int64, {2, DYN});
    EXPECT_FALSE(infer(add, {std::nullopt, f32({2})}).has_value());  // unknown input: unknown output
}

// ---------------------------------------------------------------------------------------------
// Activations

TEST(ActivationTest, UnaryFloat32AndFloat64) {
    const std::vector<float> xs = {-100.0f, -3.0f, -0.5f, 0.0f, 0.5f, 3.0f, 100.0f};
    const std::vector<int64_t> shape = {7};
    const Tensor x = make<float>(shape, xs);
    const Tensor xd = make<double>(shape, std::vector<double>(xs.begin(), xs.end()));
    std::vector<float> relu, sigmoid, tanh_;
    for (float v : xs) {
        relu.push_back(v > 0 ? v : 0);
        sigmoid.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(v)))));
        tanh_.push_back(static_cast<float>(std::tanh(static_cast<double>(v))));
    }
    expect_close<float>(run(make_node("Relu", 1), {&x}), shape, relu);
    expect_close<float>(run(make_node("Sigmoid", 1), {&x}), shape, sigmoid, 1e-6);
    expect_close<float>(run(make_node("Tanh", 1), {&x}), shape, tanh_, 1e-6);
    expect_close<double>(run(make_node("Relu", 1), {&xd}), shape, std::vector<double>(relu.begin(), relu.end()));
    expect_close<double>(run(make_node("Sigmoid", 1), {&xd}), shape,
                         std::vector<double>(sigmoid.begin(), sigmoid.end()), 1e-6);
    expect_close<double>(run(make_node("Tanh", 1), {&xd}), shape, std::vector<double>(tanh_.begin(), tanh_.end()), 1e-6);
}

TEST(ActivationTest, UnsupportedDtypeRaises) {
    const Tensor x = make<int32_t>({2}, {1, -1});
    expect_validation_error([&] { run(make_node("Sigmoid", 1), {&x}); }, {"'nSigmoid'", "Int32"});
    expect_validation_error([&] { run(make_node("Softmax", 1), {&x}); }, {"'nSoftmax'", "Int32"});
}

TEST(ActivationTest, ShapeInferencePassesThrough) {
    for (const char* op : {"Relu", "Sigmoid", "Tanh", "Softmax"})
        expect_info(infer(make_node(op, 1), {f32({DYN, 10})}), DType::Float32, {DYN, 10});
}

// Softmax over n values `inner` apart, for each of outer x inner groups.
std::vector<float> naive_softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner) {
    std::vector<float> out(static_cast<size_t>(x.num_elements()));
    const float* xd = x.data_ptr<float>();
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
            double sum = 0;
            for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(xd[(o * n + j) * inner + i]));
            for (int64_t j = 0; j < n; ++j)
                out[(o * n + j) * inner + i] = static_cast<float>(std::exp(static_cast<double>(xd[(o * n + j) * inner + i])) / sum);
        }
    return out;
}

TEST(SoftmaxTest, Opset13AlongAxis) {
    const Tensor x = random_tensor({2, 3, 4}, 7);
    Node node = make_node("Softmax", 1);
    expect_close<float>(run(node, {&x}), {2, 3, 4}, naive_softmax(x, 6, 4, 1), 1e-5);  // default axis -1
    node.set_attribute("axis", int64_t{1});
    expect_close<float>(run(node, {&x}), {2, 3, 4}, naive_softmax(x, 2, 3, 4), 1e-5);
    node.set_attribute("axis", int64_t{-3});
    expect_close<float>(run(node, {&x}), {2, 3, 4}, naive_softmax(x, 1, 2, 12), 1e-5);
    node.set_attribute("axis", int64_t{0});
    expect_close<float>(run(node, {&x}), {2, 3, 4}, naive_softmax(x, 1, 2, 12), 1e-5);
}

TEST(SoftmaxTest, LegacyOpsetFlattensTrailingDims) {
    const Tensor x = random_tensor({2, 3, 4}, 8);
    Node node = make_node("Softmax", 1);
    // Default axis 1: the input is a 2 x 12 matrix, one softmax per row.
    expect_close<float>(run(node, {&x}, 1, 11), {2, 3, 4}, naive_softmax(x, 2, 12, 1), 1e-5);
    node.set_attribute("axis", int64_t{-1});
    expect_close<float>(run(node, {&x}, 1, 11), {2, 3, 4}, naive_softmax(x, 6, 4, 1), 1e-5);
    node.set_attribute("axis", int64_t{0});
    expect_close<float>(run(node, {&x}, 1, 11), {2, 3, 4}, naive_softmax(x, 1, 24, 1), 1e-5);
}

TEST(SoftmaxTest, NumericallyStableForLargeInputs) {
    const Tensor x = make<float>({1, 3}, {1000.0f, 1001.0f, 1002.0f});
    const Tensor y = run(make_node("Softmax", 1), {&x});
    // exp(-2), exp(-1), 1 normalized.
    const double e2 = std::exp(-2.0), e1 = std::exp(-1.0), s = e2 + e1 + 1.0;
    expect_close<float>(y, {1, 3}, {static_cast<float>(e2 / s), static_cast<float>(e1 / s), static_cast<float>(1.0 / s)}, 1e-6);
}

TEST(SoftmaxTest, BadAxisRaises) {
    Node node = make_node("Softmax", 1);
    node.set_attribute("axis", int64_t{3});
    const Tensor x = random_tensor({2, 3}, 1);
    expect_validation_error([&] { run(node, {&x}); }, {"'nSoftmax'", "axis 3"});
    expect_validation_error([&] { infer(node, {f32({2, 3})}); }, {"'nSoftmax'", "axis 3"});
}

// ---------------------------------------------------------------------------------------------
// MatMul and Gemm

// C = A (m x k) * B (k x n) with explicit element accessors.
std::vector<float> naive_matmul(int64_t m, int64_t n, int64_t k, const std::function<float(int64_t, int64_t)>& a,
                                const std::function<float(int64_t, int64_t)>& b) {
    std::vector<float> c(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t p = 0; p < k; ++p) acc += static_cast<double>(a(i, p)) * b(p, j);
            c[i * n + j] = static_cast<float>(acc);
        }
    return c;
}

std::vector<float> naive_matmul(const Tensor& a, const Tensor& b) {  // plain 2-D
    const int64_t m = a.shape()[0], k = a.shape()[1], n = b.shape()[1];
    const float* ad = a.data_ptr<float>();
    const float* bd = b.data_ptr<float>();
    return naive_matmul(m, n, k, [&](int64_t i, int64_t p) { return ad[i * k + p]; },
                        [&](int64_t p, int64_t j) { return bd[p * n + j]; });
}

TEST(MatMulTest, TwoDimensional) {
    const Tensor a = random_tensor({5, 7}, 1);
    const Tensor b = random_tensor({7, 3}, 2);
    expect_close<float>(run(make_node("MatMul", 2), {&a, &b}), {5, 3}, naive_matmul(a, b), 1e-5);
}

TEST(MatMulTest, OneDimensionalOperandsArePromotedThenSqueezed) {
    const Tensor v = make<float>({3}, {1, 2, 3});
    const Tensor m = make<float>({3, 2}, {1, 2, 3, 4, 5, 6});
    const Tensor mt = make<float>({2, 3}, {1, 3, 5, 2, 4, 6});
    expect_close<float>(run(make_node("MatMul", 2), {&v, &m}), {2}, {22, 28});
    expect_close<float>(run(make_node("MatMul", 2), {&mt, &v}), {2}, {22, 28});
    expect_close<float>(run(make_node("MatMul", 2), {&v, &v}), {}, {14});
    const Tensor batched = make<float>({2, 3, 2}, {1, 2, 3, 4, 5, 6, 0, 0, 1, 0, 0, 1});
    expect_close<float>(run(make_node("MatMul", 2), {&v, &batched}), {2, 2}, {22, 28, 2, 3});
}

TEST(MatMulTest, BatchBroadcasting) {
    const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
        {{2, 1, 3, 4}, {3, 4, 5}}, {{2, 3, 4}, {4, 5}}, {{3, 4}, {2, 4, 5}}, {{1, 3, 4}, {2, 4, 5}}, {{2, 3, 4}, {2, 4, 5}}};
    unsigned seed = 10;
    for (const auto& [sa, sb] : cases) {
        SCOPED_TRACE(shape_to_string(sa) + " x " + shape_to_string(sb));
        const Tensor a = random_tensor(sa, seed++);
        const Tensor b = random_tensor(sb, seed++);
        const int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
        const std::vector<int64_t> batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
        const std::vector<int64_t> batch = broadcast_shapes(batch_a, batch_b);
        std::vector<int64_t> out_shape = batch;
        out_shape.push_back(m);
        out_shape.push_back(n);
        std::vector<float> want;
        for_each_index(batch, [&](const std::vector<int64_t>& index) {
            auto matrix = [&](const std::vector<int64_t>& dims) {  // broadcast batch index -> matrix number
                std::vector<int64_t> sub(dims.size());
                for (size_t d = 0; d < dims.size(); ++d) sub[d] = dims[d] == 1 ? 0 : index[index.size() - dims.size() + d];
                return flat_index(sub, dims);
            };
            const float* ad = a.data_ptr<float>() + matrix(batch_a) * m * k;
            const float* bd = b.data_ptr<float>() + matrix(batch_b) * k * n;
            for (float v : naive_matmul(m, n, k, [&](int64_t i, int64_t p) { return ad[i * k + p]; },
                                        [&](int64_t p, int64_t j) { return bd[p * n + j]; }))
                want.push_back(v);
        });
        expect_close<float>(run(make_node("MatMul", 2), {&a, &b}), out_shape, want, 1e-5);
    }
}

TEST(MatMulTest, MultiThreadedMatchesSingleThreaded) {
    // Large enough that the kernel splits rows (2-D) and batches (3-D) over threads.
    const Tensor a = random_tensor({192, 256}, 3);
    const Tensor b = random_tensor({256, 160}, 4);
    expect_close<float>(run(make_node("MatMul", 2), {&a, &b}, 2), {192, 160}, naive_matmul(a, b), 1e-4);
    const Tensor ba = random_tensor({4, 96, 128}, 5);
    const Tensor bb = random_tensor({4, 128, 128}, 6);
    expect_close(run(make_node("MatMul", 2), {&ba, &bb}, 2), run(make_node("MatMul", 2), {&ba, &bb}, 1), 1e-5);
}

TEST(MatMulTest, Float64) {
    const Tensor a = make<double>({2, 2}, {1, 2, 3, 4});
    const Tensor b = make<double>({2, 1}, {0.5, 0.25});
    expect_close<double>(run(make_node("MatMul", 2), {&a, &b}), {2, 1}, {1.0, 2.5}, 1e-12);
}

TEST(MatMulTest, BadShapesAndDtypesRaise) {
    const Tensor a = random_tensor({2, 3}, 1);
    const Tensor b = random_tensor({4, 5}, 2);
    expect_validation_error([&] { run(make_node("MatMul", 2), {&a, &b}); }, {"'nMatMul'", "inner dimensions"});
    const Tensor c = random_tensor({2, 3, 4}, 3);
    const Tensor d = random_tensor({3, 4, 5}, 4);
    expect_validation_error([&] { run(make_node("MatMul", 2), {&c, &d}); }, {"'nMatMul'", "broadcast"});
    const Tensor e = make<double>({3, 2}, {1, 2, 3, 4, 5, 6});
    expect_validation_error([&] { run(make_node("MatMul", 2), {&a, &e}); }, {"'nMatMul'", "Float64"});
    const Tensor i = make<int32_t>({1, 1}, {1});
    expect_validation_error([&] { run(make_node("MatMul", 2), {&i, &i}); }, {"'nMatMul'", "Int32"});
}

TEST(MatMulTest, ShapeInference) {
    const Node node = make_node("MatMul", 2);
    expect_info(infer(node, {f32({DYN, 3, 4}), f32({4, 5})}), DType::Float32, {DYN, 3, 5});
    expect_info(infer(node, {f32({4}), f32({2, 4, 5})}), DType::Float32, {2, 5});
    expect_info(infer(node, {f32({2, 4, DYN}), f32({DYN})}), DType::Float32, {2, 4});
    expect_info(infer(node, {f32({DYN, 1, 3, DYN}), f32({7, DYN, 8})}), DType::Float32, {DYN, 7, 3, 8});
    expect_validation_error([&] { infer(node, {f32({2, 3}), f32({4, 5})}); }, {"'nMatMul'", "inner dimensions"});
    expect_validation_error([&] { infer(node, {f32({2, 3, 4}), f32({3, 4, 5})}); }, {"'nMatMul'", "broadcast"});
}

struct GemmCase {
    bool trans_a, trans_b;
    double alpha, beta;
    std::vector<int64_t> c_shape;  // {-1}: no C
};

TEST(GemmTest, TransposesScalingAndBiasBroadcast) {
    const int64_t m = 4, k = 5, n = 3;
    const std::vector<GemmCase> cases = {
        {false, false, 1.0, 1.0, {m, n}}, {true, false, 0.5, 2.0, {n}},   {false, true, 2.0, 0.5, {m, 1}},
        {true, true, 1.5, -1.0, {}},      {false, false, 1.0, 1.0, {-1}}, {true, false, 1.0, 1.0, {1, n}},
        {false, true, 1.0, 0.0, {m, n}}};
    unsigned seed = 20;
    for (const auto& gc : cases) {
        SCOPED_TRACE("transA=" + std::to_string(gc.trans_a) + " transB=" + std::to_string(gc.trans_b) + " C " +
                     shape_to_string(gc.c_shape));
        const Tensor a = random_tensor(gc.trans_a ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k}, seed++);
        const Tensor b = random_tensor(gc.trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, seed++);
        const bool has_c = gc.c_shape != std::vector<int64_t>{-1};
        const Tensor c = random_tensor(has_c ? gc.c_shape : std::vector<int64_t>{1}, seed++);
        Node node = make_node("Gemm", has_c ? 3 : 2);
        node.set_attribute("alpha", gc.alpha);
        node.set_attribute("beta", gc.beta);
        node.set_attribute("transA", int64_t{gc.trans_a});
        node.set_attribute("transB", int64_t{gc.trans_b});

        const float* ad = a.data_ptr<float>();
        const float* bd = b.data_ptr<float>();
        std::vector<float> want = naive_matmul(
            m, n, k, [&](int64_t i, int64_t p) { return gc.trans_a ? ad[p * m + i] : ad[i * k + p]; },
            [&](int64_t p, int64_t j) { return gc.trans_b ? bd[j * k + p] : bd[p * n + j]; });
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
                float bias = 0;
                if (has_c) {
                    const auto& cs = gc.c_shape;
                    const int64_t rows = cs.size() == 2 ? cs[0] : 1, cols = cs.empty() ? 1 : cs.back();
                    bias = c.data_ptr<float>()[(rows == 1 ? 0 : i) * cols + (cols == 1 ? 0 : j)];
                }
                want[i * n + j] = static_cast<float>(gc.alpha * want[i * n + j] + gc.beta * bias);
            }
        std::vector<const Tensor*> inputs = {&a, &b};
        if (has_c) inputs.push_back(&c);
        expect_close<float>(run(node, inputs), {m, n}, want, 1e-5);
        expect_info(infer(node, {f32(to_shape(a.shape())), f32(to_shape(b.shape())), f32(to_shape(c.shape()))}),
                    DType::Float32, {m, n});
    }
}

TEST(GemmTest, Float64AndOmittedC) {
    const Tensor a = make<double>({1, 2}, {1, 2});
    const Tensor b = make<double>({2, 2}, {1, 0, 0, 1});
    Node node = make_node("Gemm", 3);
    node.set_input(2, "");  // omitted optional C
    expect_close<double>(run(node, {&a, &b, nullptr}), {1, 2}, {1, 2}, 1e-12);
}

TEST(GemmTest, BadInputsRaise) {
    const Tensor a = random_tensor({2, 3}, 1);
    const Tensor b = random_tensor({3, 4}, 2);
    const Tensor bad_c = random_tensor({3}, 3);
    expect_validation_error([&] { run(make_node("Gemm", 3), {&a, &b, &bad_c}); }, {"'nGemm'", "[3]", "[2, 4]"});
    expect_validation_error([&] { run(make_node("Gemm", 2), {&a, &a}); }, {"'nGemm'", "inner dimensions"});
    const Tensor v = random_tensor({3}, 4);
    expect_validation_error([&] { run(make_node("Gemm", 2), {&v, &b}); }, {"'nGemm'", "matrices"});
    Node bad_flag = make_node("Gemm", 2);
    bad_flag.set_attribute("transA", int64_t{2});
    expect_validation_error([&] { run(bad_flag, {&a, &b}); }, {"'nGemm'", "transA"});
}

TEST(GemmTest, ShapeInference) {
    Node node = make_node("Gemm", 3);
    node.set_attribute("transA", int64_t{1});
    expect_info(infer(node, {f32({3, DYN}), f32({3, 4}), f32({4})}), DType::Float32, {DYN, 4});
    expect_info(infer(node, {f32({DYN, 2}), f32({DYN, DYN}), std::nullopt}), DType::Float32, {2, DYN});
    expect_validation_error([&] { infer(node, {f32({3, 2}), f32({4, 5}), std::nullopt}); }, {"'nGemm'", "inner"});
    expect_validation_error([&] { infer(node, {f32({3, 2}), f32({3, 5}), f32({3})}); }, {"'nGemm'", "broadcast"});
}

// ---------------------------------------------------------------------------------------------
// Conv

struct Window {
    std::vector<int64_t> strides, dilations, pads_begin, pads_end;  // empty: defaults
};

int64_t floor_output(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe) {
    return (in + pb + pe - ((k - 1) * d + 1)) / s + 1;
}

// Direct convolution from the ONNX definition: y[n, m, o] = B[m] +
// sum over c in m's group and kernel offsets of x[n, c, o * s - pb + k * d] * W[m, c', k].
Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor* bias, Window win, int64_t group) {
    const size_t r = x.ndim() - 2;
    auto fill = [&](std::vector<int64_t>& v, int64_t value) { if (v.empty()) v.assign(r, value); };
    fill(win.strides, 1), fill(win.dilations, 1), fill(win.pads_begin, 0), fill(win.pads_end, 0);
    const int64_t batch = x.shape()[0], channels = x.shape()[1], maps = w.shape()[0], cg = w.shape()[1];
    const std::vector<int64_t> in(x.shape().begin() + 2, x.shape().end()), kernel(w.shape().begin() + 2, w.shape().end());
    std::vector<int64_t> out_spatial;
    for (size_t i = 0; i < r; ++i)
        out_spatial.push_back(floor_output(in[i], kernel[i], win.strides[i], win.dilations[i], win.pads_begin[i], win.pads_end[i]));
    std::vector<int64_t> out_shape = {batch, maps};
    out_shape.insert(out_shape.end(), out_spatial.begin(), out_spatial.end());
    Tensor y(out_shape, DType::Float32);
    float* yd = y.data_ptr<float>();
    for (int64_t n = 0; n < batch; ++n)
        for (int64_t m = 0; m < maps; ++m) {
            const int64_t g = m / (maps / group);
            for_each_index(out_spatial, [&](const std::vector<int64_t>& o) {
                double acc = bias ? bias->data_ptr<float>()[m] : 0.0;
                for (int64_t c = 0; c < cg; ++c)
                    for_each_index(kernel, [&](const std::vector<int64_t>& k) {
                        std::vector<int64_t> pos(r);
                        for (size_t i = 0; i < r; ++i) {
                            pos[i] = o[i] * win.strides[i] - win.pads_begin[i] + k[i] * win.dilations[i];
                            if (pos[i] < 0 || pos[i] >= in[i]) return;  // padding reads zero
                        }
                        const int64_t xi = (n * channels + g * cg + c) * num_elements_of(in) + flat_index(pos, in);
                        const int64_t wi = (m * cg + c) * num_elements_of(kernel) + flat_index(k, kernel);
                        acc += static_cast<double>(x.data_ptr<float>()[xi]) * w.data_ptr<float>()[wi];
                    });
                *yd++ = static_cast<float>(acc);
            });
        }
    return y;
}

// strides, dilations and pads (begins then ends) where the window gives them.
void set_window_attributes(Node& node, const Window& win) {
    if (!win.strides.empty()) node.set_attribute("strides", win.strides);
    if (!win.dilations.empty()) node.set_attribute("dilations", win.dilations);
    if (!win.pads_begin.empty()) {
        std::vector<int64_t> pads = win.pads_begin;
        pads.insert(pads.end(), win.pads_end.begin(), win.pads_end.end());
        node.set_attribute("pads", pads);
    }
}

Node conv_node(const Window& win, int64_t group, bool bias) {
    Node node = make_node("Conv", bias ? 3 : 2);
    set_window_attributes(node, win);
    if (group != 1) node.set_attribute("group", group);
    return node;
}

void check_conv(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape, const Window& win,
                int64_t group, bool with_bias, int threads = 1) {
    SCOPED_TRACE("X " + shape_to_string(x_shape) + " W " + shape_to_string(w_shape) + " group " + std::to_string(group));
    const Tensor x = random_tensor(x_shape, 31);
    const Tensor w = random_tensor(w_shape, 32);
    const Tensor b = random_tensor({w_shape[0]}, 33);
    const Tensor want = naive_conv(x, w, with_bias ? &b : nullptr, win, group);
    const Node node = conv_node(win, group, with_bias);
    std::vector<const Tensor*> inputs = {&x, &w};
    if (with_bias) inputs.push_back(&b);
    expect_close(run(node, inputs, threads), want, 1e-4);
    // Shape inference agrees with the kernel.
    std::vector<std::optional<TensorInfo>> infos = {f32(to_shape(x_shape)), f32(to_shape(w_shape))};
    if (with_bias) infos.push_back(f32({w_shape[0]}));
    expect_info(infer(node, infos), DType::Float32, to_shape(want.shape()));
}

TEST(ConvTest, TwoDimensionalBasic) { check_conv({1, 3, 6, 7}, {4, 3, 3, 3}, {}, 1, false); }

TEST(ConvTest, StridesPadsDilationsBias) {
    check_conv({2, 3, 9, 8}, {5, 3, 3, 2}, {{2, 1}, {1, 1}, {1, 0}, {1, 1}}, 1, true);
    check_conv({1, 2, 10, 11}, {3, 2, 3, 3}, {{1, 2}, {2, 3}, {2, 0}, {1, 3}}, 1, true);
    check_conv({1, 2, 7, 7}, {2, 2, 2, 2}, {{3, 3}, {1, 1}, {0, 0}, {0, 0}}, 1, false);
}

TEST(ConvTest, GroupedAndDepthwise) {
    check_conv({2, 4, 6, 6}, {6, 2, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}}, 2, true);   // 2 groups
    check_conv({1, 4, 7, 7}, {8, 1, 3, 3}, {{2, 2}, {1, 1}, {1, 1}, {1, 1}}, 4, true);   // depthwise x2
    check_conv({1, 3, 8, 8}, {3, 1, 3, 3}, {{1, 1}, {2, 2}, {2, 2}, {2, 2}}, 3, false);  // depthwise dilated
}

TEST(ConvTest, OneAndThreeDimensional) {
    check_conv({2, 3, 11}, {4, 3, 3}, {{2}, {2}, {1}, {2}}, 1, true);
    check_conv({1, 2, 5, 6, 4}, {3, 2, 3, 2, 2}, {{1, 2, 1}, {1, 1, 2}, {1, 0, 1}, {1, 1, 0}}, 1, true);
    check_conv({1, 4, 4, 4, 4}, {4, 2, 2, 2, 2}, {}, 2, false);
}

TEST(ConvTest, PointwiseAndMultiThreaded) {
    check_conv({2, 8, 5, 5}, {6, 8, 1, 1}, {}, 1, true);                                    // 1x1 fast path
    check_conv({4, 16, 20, 20}, {32, 16, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}}, 1, true, 2);  // across images
    check_conv({1, 16, 24, 24}, {64, 16, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, {1, 1}}, 1, true, 2);  // within the GEMM
}

TEST(ConvTest, AutoPad) {
    // Input 6, kernel 3, stride 2: SAME gives ceil(6 / 2) = 3 outputs and needs
    // (3 - 1) * 2 + 3 - 6 = 1 pad: at the end for SAME_UPPER, at the start for SAME_LOWER.
    const Tensor x = random_tensor({1, 2, 6, 6}, 41);
    const Tensor w = random_tensor({3, 2, 3, 3}, 42);
    const std::vector<std::pair<std::string, Window>> cases = {
        {"SAME_UPPER", {{2, 2}, {1, 1}, {0, 0}, {1, 1}}},
        {"SAME_LOWER", {{2, 2}, {1, 1}, {1, 1}, {0, 0}}},
        {"VALID", {{2, 2}, {1, 1}, {0, 0}, {0, 0}}}};
    for (const auto& [mode, pads] : cases) {
        SCOPED_TRACE(mode);
        Node node = make_node("Conv", 2);
        node.set_attribute("auto_pad", mode);
        node.set_attribute("strides", std::vector<int64_t>{2, 2});
        node.set_attribute("pads", std::vector<int64_t>{5, 5, 5, 5});  // ignored under auto_pad
        const Tensor want = naive_conv(x, w, nullptr, pads, 1);
        expect_close(run(node, {&x, &w}), want, 1e-4);
        expect_info(infer(node, {f32({DYN, 2, 6, DYN}), f32({3, 2, 3, 3})}), DType::Float32,
                    {DYN, 3, want.shape()[2], DYN});
    }
}

TEST(ConvTest, ConcurrentComputeOnOneKernel) {
    const Tensor x = random_tensor({2, 3, 9, 9}, 51);
    const Tensor w = random_tensor({4, 3, 3, 3}, 52);
    const Window win{{2, 2}, {1, 1}, {1, 1}, {1, 1}};
    const Node node = conv_node(win, 1, false);
    const Tensor want = naive_conv(x, w, nullptr, win, 1);
    const auto kernel = schema_of(node).reference_kernel(KernelInfo{node, 13, {}});
    std::vector<Tensor> results(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < results.size(); ++t)
        threads.emplace_back([&, t] {
            KernelContext ctx;
            ctx.inputs = {&x, &w};
            ctx.outputs.resize(1);
            kernel->compute(ctx);
            results[t] = ctx.outputs[0];
        });
    for (auto& t : threads) t.join();
    for (const auto& r : results) expect_close(r, want, 1e-4);
}

TEST(ConvTest, KernelShapeAttribute) {
    const Tensor x = random_tensor({1, 2, 5, 5}, 1);
    const Tensor w = random_tensor({3, 2, 3, 3}, 2);
    Node node = make_node("Conv", 2);
    node.set_attribute("kernel_shape", std::vector<int64_t>{3, 3});
    expect_close(run(node, {&x, &w}), naive_conv(x, w, nullptr, {}, 1), 1e-4);
    node.set_attribute("kernel_shape", std::vector<int64_t>{2, 2});
    expect_validation_error([&] { run(node, {&x, &w}); }, {"'nConv'", "kernel_shape"});
    expect_validation_error([&] { infer(node, {f32({1, 2, 5, 5}), f32({3, 2, 3, 3})}); }, {"'nConv'", "kernel_shape"});
}

TEST(ConvTest, BadInputsRaise) {
    const Tensor x = random_tensor({1, 3, 5, 5}, 1);
    const Tensor w = random_tensor({4, 2, 3, 3}, 2);
    expect_validation_error([&] { run(make_node("Conv", 2), {&x, &w}); }, {"'nConv'", "3 channels"});
    const Tensor w2 = random_tensor({4, 3, 3, 3}, 3);
    const Tensor bad_bias = random_tensor({3}, 4);
    expect_validation_error([&] { run(make_node("Conv", 3), {&x, &w2, &bad_bias}); }, {"'nConv'", "bias"});
    const Tensor big_w = random_tensor({4, 3, 7, 7}, 5);
    expect_validation_error([&] { run(make_node("Conv", 2), {&x, &big_w}); }, {"'nConv'", "window"});
    const Tensor x2d = random_tensor({3, 5}, 6);
    expect_validation_error([&] { run(make_node("Conv", 2), {&x2d, &w2}); }, {"'nConv'", "rank"});
    Node bad_pads = make_node("Conv", 2);
    bad_pads.set_attribute("pads", std::vector<int64_t>{1, 1, 1});
    expect_validation_error([&] { run(bad_pads, {&x, &w2}); }, {"'nConv'", "pads"});
    bad_pads.set_attribute("pads", std::vector<int64_t>{1, 1});  // 1 axis' worth for a 2-D conv
    expect_validation_error([&] { run(bad_pads, {&x, &w2}); }, {"'nConv'", "pads"});
    Node bad_group = make_node("Conv", 2);
    bad_group.set_attribute("group", int64_t{0});
    expect_validation_error([&] { schema_of(bad_group).reference_kernel(KernelInfo{bad_group, 13, {}}); }, {"'nConv'", "group"});
    Node bad_auto = make_node("Conv", 2);
    bad_auto.set_attribute("auto_pad", "SAME");
    expect_validation_error([&] { schema_of(bad_auto).reference_kernel(KernelInfo{bad_auto, 13, {}}); }, {"'nConv'", "auto_pad"});
}

TEST(ConvTest, ShapeInference) {
    Node node = make_node("Conv", 3);
    node.set_attribute("strides", std::vector<int64_t>{2, 1});
    node.set_attribute("pads", std::vector<int64_t>{1, 0, 1, 0});
    // H: (7 + 2 - 3) / 2 + 1 = 4; W: 9 - 3 + 1 = 7.
    expect_info(infer(node, {f32({2, 3, 7, 9}), f32({8, 3, 3, 3}), f32({8})}), DType::Float32, {2, 8, 4, 7});
    expect_info(infer(node, {f32({DYN, 3, DYN, 9}), f32({8, 3, 3, 3}), std::nullopt}), DType::Float32, {DYN, 8, DYN, 7});
    expect_info(infer(node, {f32({1, DYN, 7, 9}), f32({DYN, DYN, 3, 3}), std::nullopt}), DType::Float32, {1, DYN, 4, 7});
    // Weight unknown, no kernel_shape: spatial dims unknown, rank still known.
    expect_info(infer(node, {f32({1, 3, 7, 9}), std::nullopt, std::nullopt}), DType::Float32, {1, DYN, DYN, DYN});
    expect_validation_error([&] { infer(node, {f32({1, 4, 7, 9}), f32({8, 3, 3, 3}), std::nullopt}); },
                            {"'nConv'", "channels"});
    expect_validation_error([&] { infer(node, {f32({1, 3}), f32({8, 3, 3, 3}), std::nullopt}); }, {"'nConv'", "rank"});
    expect_validation_error([&] { infer(node, {f32({1, 3, 7}), f32({8, 3, 3}), std::nullopt}); },
                            {"'nConv'", "strides", "1 spatial axes"});
}

// ---------------------------------------------------------------------------------------------
// Pools

enum class PoolMode { Max, Average };

// Pooling from the ONNX definition, for given output sizes (which ceil_mode decides). A tap
// outside the input is skipped; with count_include_pad it still counts if it lies on the
// explicit padding.
Tensor naive_pool(const Tensor& x, const std::vector<int64_t>& kernel, Window win, const std::vector<int64_t>& out_spatial,
                  PoolMode mode, bool count_include_pad = false) {
    const size_t r = kernel.size();
    auto fill = [&](std::vector<int64_t>& v, int64_t value) { if (v.empty()) v.assign(r, value); };
    fill(win.strides, 1), fill(win.dilations, 1), fill(win.pads_begin, 0), fill(win.pads_end, 0);
    const std::vector<int64_t> in(x.shape().begin() + 2, x.shape().end());
    std::vector<int64_t> out_shape = {x.shape()[0], x.shape()[1]};
    out_shape.insert(out_shape.end(), out_spatial.begin(), out_spatial.end());
    Tensor y(out_shape, DType::Float32);
    float* yd = y.data_ptr<float>();
    for (int64_t p = 0; p < x.shape()[0] * x.shape()[1]; ++p) {
        const float* plane = x.data_ptr<float>() + p * num_elements_of(in);
        for_each_index(out_spatial, [&](const std::vector<int64_t>& o) {
            float best = -std::numeric_limits<float>::infinity();
            double sum = 0;
            int64_t valid = 0, padded = 0;
            for_each_index(kernel, [&](const std::vector<int64_t>& k) {
                std::vector<int64_t> pos(r);
                bool inside = true, on_padding = true;
                for (size_t i = 0; i < r; ++i) {
                    pos[i] = o[i] * win.strides[i] - win.pads_begin[i] + k[i] * win.dilations[i];
                    inside = inside && pos[i] >= 0 && pos[i] < in[i];
                    on_padding = on_padding && pos[i] >= -win.pads_begin[i] && pos[i] < in[i] + win.pads_end[i];
                }
                padded += on_padding;
                if (!inside) return;
                ++valid;
                const float v = plane[flat_index(pos, in)];
                best = std::max(best, v);
                sum += v;
            });
            *yd++ = mode == PoolMode::Max ? best : static_cast<float>(sum / (count_include_pad ? padded : valid));
        });
    }
    return y;
}

Node pool_node(const std::string& op, const std::vector<int64_t>& kernel, const Window& win) {
    Node node = make_node(op, 1);
    node.set_attribute("kernel_shape", kernel);
    set_window_attributes(node, win);
    return node;
}

// Runs MaxPool and AveragePool (both count_include_pad values) against the naive pool, and
// checks shape inference gives the same shape.
void check_pools(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& kernel, const Window& win,
                 const std::vector<int64_t>& out_spatial, bool ceil_mode = false) {
    SCOPED_TRACE("X " + shape_to_string(x_shape) + " kernel " + shape_to_string(kernel));
    const Tensor x = random_tensor(x_shape, 61);
    for (const std::string op : {"MaxPool", "AveragePool"}) {
        for (int include_pad = 0; include_pad < (op == "MaxPool" ? 1 : 2); ++include_pad) {
            SCOPED_TRACE(op + " count_include_pad=" + std::to_string(include_pad));
            Node node = pool_node(op, kernel, win);
            if (ceil_mode) node.set_attribute("ceil_mode", int64_t{1});
            if (include_pad) node.set_attribute("count_include_pad", int64_t{1});
            const Tensor want = naive_pool(x, kernel, win, out_spatial,
                                           op == "MaxPool" ? PoolMode::Max : PoolMode::Average, include_pad);
            expect_close(run(node, {&x}), want, 1e-5);
            expect_info(infer(node, {f32(to_shape(x_shape))}), DType::Float32, to_shape(want.shape()));
        }
    }
}

TEST(PoolTest, MaxPoolLiteral) {
    const Tensor x = make<float>({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
    Node node = pool_node("MaxPool", {2, 2}, {{2, 2}, {}, {}, {}});
    expect_close<float>(run(node, {&x}), {1, 1, 2, 2}, {6, 8, 14, 16});
    Node avg = pool_node("AveragePool", {2, 2}, {{2, 2}, {}, {}, {}});
    expect_close<float>(run(avg, {&x}), {1, 1, 2, 2}, {3.5, 5.5, 11.5, 13.5});
}

TEST(PoolTest, StridesPadsDilations2D) {
    check_pools({2, 3, 7, 8}, {3, 3}, {}, {5, 6});
    check_pools({1, 2, 7, 8}, {3, 2}, {{2, 2}, {}, {1, 0}, {1, 1}}, {4, 4});
    check_pools({1, 2, 9, 9}, {2, 3}, {{1, 2}, {2, 2}, {1, 2}, {0, 1}}, {8, 4});
}

TEST(PoolTest, OneAndThreeDimensional) {
    check_pools({2, 3, 10}, {3}, {{2}, {}, {1}, {1}}, {5});
    check_pools({1, 2, 5, 6, 7}, {2, 3, 2}, {{1, 2, 2}, {}, {0, 1, 1}, {1, 1, 0}}, {5, 3, 4});
}

TEST(PoolTest, CeilMode) {
    // 7 + 1 + 1 - 3 = 6 -> ceil(6 / 2) + 1 = 4 (floor would give 4 too), width: 8 - 3 = 5 ->
    // ceil(5 / 2) + 1 = 4 (floor: 3); the last window overhangs the input.
    check_pools({1, 2, 7, 8}, {3, 3}, {{2, 2}, {}, {1, 0}, {1, 0}}, {4, 4}, true);
    check_pools({1, 1, 5}, {2}, {{2}, {}, {}, {}}, {3}, true);
}

TEST(PoolTest, CeilModeLiterals) {
    // [1 2 3 4 5], kernel 2, stride 2, ceil_mode: windows [1 2] [3 4] [5].
    const Tensor x = make<float>({1, 1, 5}, {1, 2, 3, 4, 5});
    for (int include_pad = 0; include_pad < 2; ++include_pad) {
        Node avg = pool_node("AveragePool", {2}, {{2}, {}, {}, {}});
        avg.set_attribute("ceil_mode", int64_t{1});
        avg.set_attribute("count_include_pad", int64_t{include_pad});
        // The overhanging window is not padding: it averages its one real value either way.
        expect_close<float>(run(avg, {&x}), {1, 1, 3}, {1.5, 3.5, 5});
    }
    Node max = pool_node("MaxPool", {2}, {{2}, {}, {}, {}});
    max.set_attribute("ceil_mode", int64_t{1});
    expect_close<float>(run(max, {&x}), {1, 1, 3}, {2, 4, 5});

    // Input 4, kernel 2, stride 2, end pad 1: ceil((4 + 1 - 2) / 2) + 1 = 3, but the third
    // window would start in the end padding, so it is dropped.
    Node dropped = pool_node("MaxPool", {2}, {{2}, {}, {0}, {1}});
    dropped.set_attribute("ceil_mode", int64_t{1});
    expect_info(infer(dropped, {f32({1, 1, 4})}), DType::Float32, {1, 1, 2});
    const Tensor x4 = make<float>({1, 1, 4}, {1, 2, 3, 4});
    expect_close<float>(run(dropped, {&x4}), {1, 1, 2}, {2, 4});
}

TEST(PoolTest, CountIncludePadLiterals) {
    // [1 2 3 4 5], kernel 3, stride 2, pads 1/1: windows [pad 1 2] [2 3 4] [4 5 pad].
    const Tensor x = make<float>({1, 1, 5}, {1, 2, 3, 4, 5});
    Node avg = pool_node("AveragePool", {3}, {{2}, {}, {1}, {1}});
    expect_close<float>(run(avg, {&x}), {1, 1, 3}, {1.5, 3, 4.5});
    avg.set_attribute("count_include_pad", int64_t{1});
    expect_close<float>(run(avg, {&x}), {1, 1, 3}, {1, 3, 3});
    Node max = pool_node("MaxPool", {3}, {{2}, {}, {1}, {1}});
    const Tensor neg = make<float>({1, 1, 5}, {-1, -2, -3, -4, -5});
    expect_close<float>(run(max, {&neg}), {1, 1, 3}, {-1, -2, -4});  // padding is not a 0 candidate
}

TEST(PoolTest, AutoPad) {
    // Input 7, kernel 3, stride 2: SAME gives 4 outputs, total pad (4 - 1) * 2 + 3 - 7 = 2 -> 1/1;
    // input 6: 3 outputs, total pad 1 -> 0/1 (UPPER) or 1/0 (LOWER).
    const Tensor x = random_tensor({1, 2, 7, 6}, 71);
    const std::vector<std::pair<std::string, Window>> cases = {
        {"SAME_UPPER", {{2, 2}, {}, {1, 0}, {1, 1}}}, {"SAME_LOWER", {{2, 2}, {}, {1, 1}, {1, 0}}}, {"VALID", {{2, 2}, {}, {0, 0}, {0, 0}}}};
    for (const auto& [mode, pads] : cases) {
        for (const std::string op : {"MaxPool", "AveragePool"}) {
            for (int include_pad = 0; include_pad < 2; ++include_pad) {
                SCOPED_TRACE(mode + " " + op + " count_include_pad=" + std::to_string(include_pad));
                Node node = pool_node(op, {3, 3}, {{2, 2}, {}, {}, {}});
                node.set_attribute("auto_pad", mode);
                if (op == "AveragePool") node.set_attribute("count_include_pad", int64_t{include_pad});
                const std::vector<int64_t> out = mode == "VALID" ? std::vector<int64_t>{3, 2} : std::vector<int64_t>{4, 3};
                const Tensor want = naive_pool(x, {3, 3}, pads, out, op == "MaxPool" ? PoolMode::Max : PoolMode::Average,
                                               include_pad);
                expect_close(run(node, {&x}), want, 1e-5);
            }
        }
    }
}

TEST(PoolTest, MaxPoolIndices) {
    // Plane 0 [[1 9 2] [3 4 8]]: both windows peak at (0, 1). Plane 1 [[10 11 12] [15 14 13]]:
    // peaks at (1, 0) and (1, 1). Row-major flat index h * 3 + w, plus 6 per plane.
    const Tensor x = make<float>({1, 2, 2, 3}, {1, 9, 2, 3, 4, 8, 10, 11, 12, 15, 14, 13});
    Node node = pool_node("MaxPool", {2, 2}, {{1, 1}, {}, {}, {}});
    node.set_output(1, "indices");
    auto outs = run_all(node, {&x});
    expect_close<float>(outs[0], {1, 2, 1, 2}, {9, 9, 15, 14});
    expect_close<int64_t>(outs[1], {1, 2, 1, 2}, {1, 1, 6 + 3, 6 + 4});
    // Column major: (h, w) -> h + w * 2, the plane offset unchanged.
    node.set_attribute("storage_order", int64_t{1});
    outs = run_all(node, {&x});
    expect_close<int64_t>(outs[1], {1, 2, 1, 2}, {2, 2, 6 + 1, 6 + 3});
    expect_info(infer_all(node, {f32({1, 2, 2, 3})}).at(1), DType::Int64, {1, 2, 1, 2});
}

TEST(PoolTest, GlobalAveragePool) {
    const Tensor x = make<float>({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
    expect_close<float>(run(make_node("GlobalAveragePool", 1), {&x}), {1, 2, 1, 1}, {2.5, 25});
    const Tensor x3 = random_tensor({2, 3, 2, 3, 4}, 81);
    std::vector<float> want;
    for (int64_t p = 0; p < 6; ++p) {
        double sum = 0;
        for (int64_t i = 0; i < 24; ++i) sum += x3.data_ptr<float>()[p * 24 + i];
        want.push_back(static_cast<float>(sum / 24));
    }
    expect_close<float>(run(make_node("GlobalAveragePool", 1), {&x3}), {2, 3, 1, 1, 1}, want);
    expect_info(infer(make_node("GlobalAveragePool", 1), {f32({DYN, 3, DYN, DYN})}), DType::Float32, {DYN, 3, 1, 1});
    const Tensor bad = random_tensor({2, 3}, 1);
    expect_validation_error([&] { run(make_node("GlobalAveragePool", 1), {&bad}); }, {"'nGlobalAveragePool'"});
}

TEST(PoolTest, ShapeInferenceWithDynamicDims) {
    Node node = pool_node("MaxPool", {3, 3}, {{2, 2}, {}, {1, 1}, {1, 1}});
    expect_info(infer(node, {f32({DYN, 3, 224, DYN})}), DType::Float32, {DYN, 3, 112, DYN});
    node.set_attribute("auto_pad", "SAME_UPPER");
    expect_info(infer(node, {f32({1, DYN, 7, 8})}), DType::Float32, {1, DYN, 4, 4});
    expect_validation_error([&] { infer(node, {f32({1, 3, 7})}); }, {"'nMaxPool'", "rank"});
}

TEST(PoolTest, BadAttributesAndInputsRaise) {
    Node no_kernel = make_node("MaxPool", 1);
    expect_validation_error([&] { schema_of(no_kernel).reference_kernel(KernelInfo{no_kernel, 13, {}}); }, {"'nMaxPool'", "kernel_shape"});
    Node bad_order = pool_node("MaxPool", {2, 2}, {});
    bad_order.set_attribute("storage_order", int64_t{2});
    expect_validation_error([&] { schema_of(bad_order).reference_kernel(KernelInfo{bad_order, 13, {}}); }, {"'nMaxPool'", "storage_order"});
    Node bad_stride = pool_node("AveragePool", {2, 2}, {{0, 1}, {}, {}, {}});
    expect_validation_error([&] { schema_of(bad_stride).reference_kernel(KernelInfo{bad_stride, 13, {}}); }, {"'nAveragePool'", "strides"});
    const Tensor x = random_tensor({1, 1, 4}, 1);
    expect_validation_error([&] { run(pool_node("MaxPool", {2, 2}, {}), {&x}); }, {"'nMaxPool'", "rank"});
    const Tensor small = random_tensor({1, 1, 2, 2}, 1);
    expect_validation_error([&] { run(pool_node("AveragePool", {3, 3}, {}), {&small}); }, {"'nAveragePool'", "window"});
    const Tensor ints = make<int32_t>({1, 1, 2, 2}, {1, 2, 3, 4});
    expect_validation_error([&] { run(pool_node("MaxPool", {2, 2}, {}), {&ints}); }, {"'nMaxPool'", "Int32"});
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization

TEST(BatchNormTest, InferenceMode) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 3, 4, 5}, std::vector<int64_t>{4, 3}}) {
        SCOPED_TRACE(shape_to_string(shape));
        const Tensor x = random_tensor(shape, 91);
        const Tensor scale = random_tensor({3}, 92);
        const Tensor bias = random_tensor({3}, 93);
        const Tensor mean = random_tensor({3}, 94);
        Tensor var = random_tensor({3}, 95);
        for (int c = 0; c < 3; ++c) var.data_ptr<float>()[c] = std::abs(var.data_ptr<float>()[c]) + 0.1f;
        Node node = make_node("BatchNormalization", 5);
        node.set_attribute("epsilon", 1e-3);
        const int64_t plane = num_elements_of(shape) / (shape[0] * 3);
        std::vector<float> want;
        for (int64_t i = 0; i < x.num_elements(); ++i) {
            const int64_t c = (i / plane) % 3;
            const double v = x.data_ptr<float>()[i];
            want.push_back(static_cast<float>((v - mean.data_ptr<float>()[c]) / std::sqrt(var.data_ptr<float>()[c] + 1e-3) *
                                                  scale.data_ptr<float>()[c] +
                                              bias.data_ptr<float>()[c]));
        }
        expect_close<float>(run(node, {&x, &scale, &bias, &mean, &var}), shape, want, 1e-5);
    }
}

TEST(BatchNormTest, DefaultEpsilon) {
    const Tensor x = make<float>({1, 1, 2}, {1, 3});
    const Tensor one = make<float>({1}, {1});
    const Tensor zero = make<float>({1}, {0});
    const float s = static_cast<float>(1.0 / std::sqrt(1.0 + 1e-5));
    expect_close<float>(run(make_node("BatchNormalization", 5), {&x, &one, &zero, &zero, &one}), {1, 1, 2}, {s, 3 * s}, 1e-6);
}

TEST(BatchNormTest, TrainingModeUsesBatchStatistics) {
    // One channel over 2 images of 2 values: batch mean 2.5, (population) variance 1.25.
    const Tensor x = make<float>({2, 1, 2}, {1, 2, 3, 4});
    const Tensor one = make<float>({1}, {1});
    const Tensor zero = make<float>({1}, {0});
    Node training = make_node("BatchNormalization", 5, 3);
    training.set_attribute("training_mode", int64_t{1});
    training.set_attribute("momentum", 0.75);
    const std::vector<Tensor> outs = run_all(training, {&x, &one, &zero, &zero, &one}, 1, 15);
    const double inv = 1.0 / std::sqrt(1.25 + 1e-5);
    expect_close<float>(outs[0], {2, 1, 2},
                        {static_cast<float>(-1.5 * inv), static_cast<float>(-0.5 * inv), static_cast<float>(0.5 * inv),
                         static_cast<float>(1.5 * inv)});
    expect_close<float>(outs[1], {1}, {0.25f * 2.5f});          // running mean: 0 * 0.75 + 2.5 * 0.25
    expect_close<float>(outs[2], {1}, {0.75f + 0.25f * 1.25f});  // running var: 1 * 0.75 + 1.25 * 0.25
}

TEST(BatchNormTest, StatisticsOutputsOutsideTrainingAndBadInputsRaise) {
    Node stats = make_node("BatchNormalization", 5, 3);
    expect_validation_error([&] { schema_of(stats).reference_kernel(KernelInfo{stats, 15, {}}); },
                            {"'nBatchNormalization'", "training_mode"});
    const Tensor x = random_tensor({1, 3, 2, 2}, 1);
    const Tensor p3 = random_tensor({3}, 2);
    const Tensor p4 = random_tensor({4}, 3);
    expect_validation_error([&] { run(make_node("BatchNormalization", 5), {&x, &p3, &p3, &p4, &p3}); },
                            {"'nBatchNormalization'", "input_mean", "[4]"});
    expect_validation_error(
        [&] { infer(make_node("BatchNormalization", 5), {f32({1, 3, 2, 2}), f32({3}), f32({4}), f32({3}), f32({3})}); },
        {"'nBatchNormalization'", "B"});
}

TEST(BatchNormTest, ShapeInference) {
    const Node node = make_node("BatchNormalization", 5);
    expect_info(infer(node, {f32({DYN, 3, DYN, 7}), f32({3}), f32({3}), f32({DYN}), std::nullopt}), DType::Float32,
                {DYN, 3, DYN, 7});
}

// ---------------------------------------------------------------------------------------------
// Shape ops

TEST(FlattenTest, AxesAndSharedStorage) {
    const Tensor x = random_tensor({2, 3, 4, 5}, 1);
    const std::vector<std::pair<int64_t, std::vector<int64_t>>> cases = {
        {0, {1, 120}}, {1, {2, 60}}, {2, {6, 20}}, {-1, {24, 5}}, {4, {120, 1}}, {-4, {1, 120}}};
    for (const auto& [axis, shape] : cases) {
        Node node = make_node("Flatten", 1);
        node.set_attribute("axis", axis);
        const Tensor y = run(node, {&x});
        EXPECT_EQ(y.shape(), shape) << "axis " << axis;
        EXPECT_EQ(y.data(), x.data());  // a view, no copy
        expect_info(infer(node, {f32({2, 3, 4, 5})}), DType::Float32, to_shape(shape));
    }
    expect_close<float>(run(make_node("Flatten", 1), {&x}), {2, 60}, values_of<float>(x));  // default axis 1
    Node bad = make_node("Flatten", 1);
    bad.set_attribute("axis", int64_t{5});
    expect_validation_error([&] { run(bad, {&x}); }, {"'nFlatten'", "axis 5"});
}

TEST(FlattenTest, ShapeInferenceWithDynamicDims) {
    Node node = make_node("Flatten", 1);
    expect_info(infer(node, {f32({DYN, 3, 4})}), DType::Float32, {DYN, 12});
    node.set_attribute("axis", int64_t{-1});
    expect_info(infer(node, {info(DType::Int64, {2, DYN, 4})}), DType::Int64, {DYN, 4});
    node.set_attribute("axis", int64_t{2});
    expect_info(infer(node, {f32({0, DYN, 4})}), DType::Float32, {0, 4});
}

TEST(ReshapeTest, ZeroCopiesAndMinusOneInfers) {
    const Tensor x = random_tensor({2, 3, 4}, 1);
    const Node node = make_node("Reshape", 2);
    const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
        {{0, -1}, {2, 12}}, {{-1, 4}, {6, 4}}, {{0, 0, 2, 2}, {2, 3, 2, 2}}, {{24}, {24}}, {{4, 0, -1}, {4, 3, 2}}};
    for (const auto& [target, want] : cases) {
        const Tensor shape = make<int64_t>({static_cast<int64_t>(target.size())}, target);
        const Tensor y = run(node, {&x, &shape});
        EXPECT_EQ(y.shape(), want) << shape_to_string(target);
        EXPECT_EQ(y.data(), x.data());  // shares storage
        expect_info(infer(node, {f32({2, 3, 4}), info(DType::Int64, {static_cast<int64_t>(target.size())})}, {nullptr, &shape}),
                    DType::Float32, to_shape(want));
    }
}

TEST(ReshapeTest, AllowZero) {
    const Tensor x = Tensor({0, 3}, DType::Float32);
    Node node = make_node("Reshape", 2);
    node.set_attribute("allowzero", int64_t{1});
    const Tensor shape = make<int64_t>({3}, {3, 0, 5});
    EXPECT_EQ(run(node, {&x, &shape}).shape(), (std::vector<int64_t>{3, 0, 5}));
    const Tensor both = make<int64_t>({2}, {0, -1});
    expect_validation_error([&] { run(node, {&x, &both}); }, {"'nReshape'", "allowzero"});
}

TEST(ReshapeTest, BadShapesRaise) {
    const Tensor x = random_tensor({2, 3}, 1);
    const Node node = make_node("Reshape", 2);
    const Tensor two_inferred = make<int64_t>({2}, {-1, -1});
    expect_validation_error([&] { run(node, {&x, &two_inferred}); }, {"'nReshape'", "-1"});
    const Tensor wrong_count = make<int64_t>({2}, {4, 2});
    expect_validation_error([&] { run(node, {&x, &wrong_count}); }, {"'nReshape'", "[2, 3]", "[4, 2]"});
    const Tensor not_divisible = make<int64_t>({2}, {4, -1});
    expect_validation_error([&] { run(node, {&x, &not_divisible}); }, {"'nReshape'"});
    const Tensor copies_missing = make<int64_t>({3}, {0, 0, 0});
    expect_validation_error([&] { run(node, {&x, &copies_missing}); }, {"'nReshape'", "rank"});
    const Tensor int32_shape = make<int32_t>({1}, {6});
    expect_validation_error([&] { run(node, {&x, &int32_shape}); }, {"'nReshape'", "Int32"});
    expect_validation_error(
        [&] { infer(node, {f32({2, 3}), info(DType::Int64, {2})}, {nullptr, &wrong_count}); }, {"'nReshape'", "[4, 2]"});
}

TEST(ReshapeTest, ShapeInferenceWithDynamicDims) {
    const Node node = make_node("Reshape", 2);
    const Tensor flatten = make<int64_t>({2}, {0, -1});
    expect_info(infer(node, {f32({DYN, 3, 4}), info(DType::Int64, {2})}, {nullptr, &flatten}), DType::Float32, {DYN, 12});
    const Tensor to_batch = make<int64_t>({3}, {-1, 3, 4});
    expect_info(infer(node, {f32({DYN, 12}), info(DType::Int64, {3})}, {nullptr, &to_batch}), DType::Float32,
                {DYN, 3, 4});
    // Input rank unknown: copied dims, and so -1, are unknown.
    expect_info(infer(node, {f32({}), info(DType::Int64, {2})}, {nullptr, &flatten}), DType::Float32, {DYN, DYN});
    // Shape not constant: only the rank is known.
    expect_info(infer(node, {f32({2, 12}), info(DType::Int64, {3})}), DType::Float32, {DYN, DYN, DYN});
    EXPECT_FALSE(infer(node, {f32({2, 12}), info(DType::Int64, {DYN})}).has_value());
}

// out[i0, i1, ...] = x[i_perm^-1...]: walk the output and read the input at the permuted index.
template <typename T>
std::vector<T> naive_transpose(const Tensor& x, const std::vector<int64_t>& perm) {
    std::vector<int64_t> out_dims;
    for (int64_t p : perm) out_dims.push_back(x.shape()[p]);
    std::vector<T> out;
    for_each_index(out_dims, [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> in(o.size());
        for (size_t i = 0; i < perm.size(); ++i) in[perm[i]] = o[i];
        out.push_back(x.data_ptr<T>()[flat_index(in, x.shape())]);
    });
    return out;
}

TEST(TransposeTest, PermutationsAndDtypes) {
    const Tensor x = random_tensor({2, 3, 4, 5}, 1);
    for (const std::vector<int64_t>& perm :
         {std::vector<int64_t>{0, 2, 3, 1}, {3, 1, 0, 2}, {0, 1, 2, 3}, {1, 0, 3, 2}}) {
        Node node = make_node("Transpose", 1);
        node.set_attribute("perm", perm);
        std::vector<int64_t> dims;
        for (int64_t p : perm) dims.push_back(x.shape()[p]);
        expect_close<float>(run(node, {&x}), dims, naive_transpose<float>(x, perm), 0);
        expect_info(infer(node, {f32({DYN, 3, 4, 5})}), DType::Float32,
                    [&] { Shape s; for (int64_t p : perm) s.push_back(p == 0 ? std::nullopt : std::optional<int64_t>(x.shape()[p])); return s; }());
    }
    // Default: reversed dims; 8-, 1- and 2-byte dtypes.
    const Tensor xi = make<int64_t>({2, 3}, {1, 2, 3, 4, 5, 6});
    expect_close<int64_t>(run(make_node("Transpose", 1), {&xi}), {3, 2}, {1, 4, 2, 5, 3, 6});
    const Tensor xb = make<uint8_t>({1, 2, 2}, {1, 2, 3, 4});
    expect_close<uint8_t>(run(make_node("Transpose", 1), {&xb}), {2, 2, 1}, {1, 3, 2, 4});
    expect_info(infer(make_node("Transpose", 1), {info(DType::Int64, {DYN, 3})}), DType::Int64, {3, DYN});
}

TEST(TransposeTest, BadPermRaises) {
    Node node = make_node("Transpose", 1);
    node.set_attribute("perm", std::vector<int64_t>{0, 0, 1});
    expect_validation_error([&] { schema_of(node).reference_kernel(KernelInfo{node, 13, {}}); }, {"'nTranspose'", "perm"});
    node.set_attribute("perm", std::vector<int64_t>{1, 0});
    const Tensor x = random_tensor({2, 3, 4}, 1);
    expect_validation_error([&] { run(node, {&x}); }, {"'nTranspose'", "rank 3"});
}

TEST(ConcatTest, AxesAndDtypes) {
    const Tensor a = make<float>({2, 2}, {1, 2, 3, 4});
    const Tensor b = make<float>({2, 1}, {5, 6});
    const Tensor c = make<float>({2, 3}, {7, 8, 9, 10, 11, 12});
    Node node = make_node("Concat", 3);
    node.set_attribute("axis", int64_t{1});
    expect_close<float>(run(node, {&a, &b, &c}), {2, 6}, {1, 2, 5, 7, 8, 9, 3, 4, 6, 10, 11, 12});
    node.set_attribute("axis", int64_t{-1});
    expect_close<float>(run(node, {&a, &b, &c}), {2, 6}, {1, 2, 5, 7, 8, 9, 3, 4, 6, 10, 11, 12});

    const Tensor i = make<int64_t>({1, 2}, {1, 2});
    const Tensor j = make<int64_t>({2, 2}, {3, 4, 5, 6});
    const Tensor empty = Tensor({0, 2}, DType::Int64);
    Node rows = make_node("Concat", 3);
    rows.set_attribute("axis", int64_t{0});
    expect_close<int64_t>(run(rows, {&i, &empty, &j}), {3, 2}, {1, 2, 3, 4, 5, 6});
}

TEST(ConcatTest, BadInputsRaise) {
    const Tensor a = random_tensor({2, 2}, 1);
    const Tensor b = random_tensor({3, 3}, 2);
    Node node = make_node("Concat", 2);
    node.set_attribute("axis", int64_t{1});
    expect_validation_error([&] { run(node, {&a, &b}); }, {"'nConcat'", "[3, 3]"});
    const Tensor i = make<int64_t>({2, 1}, {1, 2});
    expect_validation_error([&] { run(node, {&a, &i}); }, {"'nConcat'", "Int64"});
    Node no_axis = make_node("Concat", 2);
    expect_validation_error([&] { schema_of(no_axis).reference_kernel(KernelInfo{no_axis, 13, {}}); }, {"'nConcat'", "axis"});
    node.set_attribute("axis", int64_t{2});
    expect_validation_error([&] { run(node, {&a, &a}); }, {"'nConcat'", "axis 2"});
}

TEST(ConcatTest, ShapeInference) {
    Node node = make_node("Concat", 3);
    node.set_attribute("axis", int64_t{-1});
    expect_info(infer(node, {f32({DYN, 2}), f32({3, 4}), f32({DYN, 1})}), DType::Float32, {3, 7});
    expect_info(infer(node, {f32({DYN, 2}), f32({DYN, DYN}), f32({DYN, 1})}), DType::Float32, {DYN, DYN});
    expect_validation_error([&] { infer(node, {f32({2, 2}), f32({3, 4}), f32({2, 1})}); }, {"'nConcat'", "[3, 4]"});
    EXPECT_FALSE(infer(node, {f32({2, 2}), std::nullopt, f32({2, 1})}).has_value());
}

TEST(IdentityTest, SharesStorageForAnyDtype) {
    const Tensor x = make<int32_t>({3}, {1, 2, 3});
    const Tensor y = run(make_node("Identity", 1), {&x});
    EXPECT_EQ(y.data(), x.data());
    EXPECT_EQ(y.dtype(), DType::Int32);
    expect_info(infer(make_node("Identity", 1), {info(DType::Bool, {DYN, 2})}), DType::Bool, {DYN, 2});
}

TEST(ConstantTest, ValueAttributes) {
    const Tensor value = make<float>({2}, {1.5, 2.5});
    Node node = make_node("Constant", 0);
    node.set_attribute("value", value);
    const Tensor y = run(node, {});
    EXPECT_EQ(y.data(), value.data());  // shared, not copied
    expect_info(infer(node, {}), DType::Float32, {2});

    Node f = make_node("Constant", 0);
    f.set_attribute("value_float", 0.25);
    expect_close<float>(run(f, {}), {}, {0.25f});
    Node fs = make_node("Constant", 0);
    fs.set_attribute("value_floats", std::vector<double>{1, 2, 3});
    expect_close<float>(run(fs, {}), {3}, {1, 2, 3});
    Node i = make_node("Constant", 0);
    i.set_attribute("value_int", int64_t{7});
    expect_close<int64_t>(run(i, {}), {}, {7});
    expect_info(infer(i, {}), DType::Int64, {});
    Node is = make_node("Constant", 0);
    is.set_attribute("value_ints", std::vector<int64_t>{4, 5});
    expect_close<int64_t>(run(is, {}), {2}, {4, 5});
    EXPECT_EQ(constant_node_value(is).shape(), std::vector<int64_t>{2});
}

TEST(ConstantTest, MissingOrUnsupportedValueRaises) {
    Node none = make_node("Constant", 0);
    expect_validation_error([&] { schema_of(none).reference_kernel(KernelInfo{none, 13, {}}); }, {"'nConstant'", "no value"});
    Node two = make_node("Constant", 0);
    two.set_attribute("value_int", int64_t{1});
    two.set_attribute("value_float", 1.0);
    expect_validation_error([&] { schema_of(two).reference_kernel(KernelInfo{two, 13, {}}); }, {"'nConstant'", "exactly one"});
    Node sparse = make_node("Constant", 0);
    sparse.set_attribute("sparse_value", std::string("not representable"));
    expect_validation_error([&] { infer(sparse, {}); }, {"'nConstant'", "sparse_value"});
    Node str = make_node("Constant", 0);  // strings are supported
    str.set_attribute("value_string", "hello");
    const auto out = infer(str, {});
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(out->dtype, DType::String);
}

}  // namespace
}  // namespace pyflame_rt::ops
