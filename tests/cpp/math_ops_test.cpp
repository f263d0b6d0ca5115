// Tests of the elementwise families (elementwise.cpp, math.cpp, activation.cpp, cast.cpp) and
// the narrow float converters. Expected values come from naive loops written here or from the
// ONNX spec's tables, never from the kernel code.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "ops/dispatch.hpp"
#include "ops/float_formats.hpp"
#include "ops/op.hpp"
#include "test_util.hpp"

namespace pyflame_rt::ops {
namespace {

template <typename T>
Tensor make(const std::vector<int64_t>& shape, const std::vector<T>& values, DType dtype = dtype_of<T>::value) {
    Tensor t(shape, dtype);
    EXPECT_EQ(static_cast<int64_t>(values.size()), t.num_elements());
    for (size_t i = 0; i < values.size(); ++i) t.data_ptr<T>()[i] = values[i];
    return t;
}

template <typename T>
std::vector<T> values(const Tensor& t) {
    return std::vector<T>(t.data_ptr<T>(), t.data_ptr<T>() + t.num_elements());
}

Node make_node(const std::string& op, size_t inputs) {
    std::vector<std::string> in;
    for (size_t i = 0; i < inputs; ++i) in.push_back("in" + std::to_string(i));
    return Node(op, "n" + op, in, {"out"});
}

Tensor run(const Node& node, const std::vector<const Tensor*>& inputs, int threads = 1, int64_t opset = 21) {
    const OpSchema* schema = OpTable::instance().find(node.op_type());
    if (!schema) throw std::runtime_error("no schema for " + node.op_type());
    check_arity(*schema, node);
    KernelInfo info{node, opset, {}};
    const auto kernel = schema->reference_kernel(info);
    KernelContext ctx;
    ctx.inputs = inputs;
    ctx.outputs.resize(1);
    ctx.num_threads = threads;
    kernel->compute(ctx);
    return ctx.outputs[0];
}

std::optional<TensorInfo> infer(const Node& node, const std::vector<std::optional<TensorInfo>>& inputs, int64_t opset = 21) {
    InferenceContext ctx{node, opset, inputs, std::vector<const Tensor*>(inputs.size(), nullptr), {}};
    ctx.outputs.resize(1);
    OpTable::instance().find(node.op_type())->infer(ctx);
    return ctx.outputs[0];
}

using pyflame_rt::testing::expect_validation_error;

// ---- broadcasting ----

// Naive numpy broadcasting: the element of `in` at output multi-index `index`.
int64_t source_offset(const std::vector<int64_t>& out, const std::vector<int64_t>& in, const std::vector<int64_t>& index) {
    int64_t offset = 0, stride = 1;
    for (size_t k = in.size(); k-- > 0;) {
        const size_t d = k + out.size() - in.size();
        if (in[k] != 1) offset += index[d] * stride;
        stride *= in[k];
    }
    return offset;
}

TEST(BroadcastTest, ThreeWayWhereMatchesNaiveLoopOnEveryThreadCount) {
    const std::vector<int64_t> sc = {7, 1, 1, 5}, sx = {1, 3, 1, 1}, sy = {4, 1};
    const std::vector<int64_t> out = {7, 3, 4, 5};
    std::mt19937 gen(3);
    Tensor c(sc, DType::Bool), x(sx, DType::Int64), y(sy, DType::Int64);
    for (int64_t i = 0; i < c.num_elements(); ++i) c.data_ptr<bool>()[i] = gen() % 2;
    for (int64_t i = 0; i < x.num_elements(); ++i) x.data_ptr<int64_t>()[i] = 100 + i;
    for (int64_t i = 0; i < y.num_elements(); ++i) y.data_ptr<int64_t>()[i] = -1 - i;
    for (int threads : {1, 2, 3, 8}) {
        const Tensor r = run(make_node("Where", 3), {&c, &x, &y}, threads);
        ASSERT_EQ(r.shape(), out);
        std::vector<int64_t> index(4, 0);
        for (int64_t t = 0; t < r.num_elements(); ++t) {
            const bool cond = c.data_ptr<bool>()[source_offset(out, sc, index)];
            const int64_t want = cond ? x.data_ptr<int64_t>()[source_offset(out, sx, index)]
                                      : y.data_ptr<int64_t>()[source_offset(out, sy, index)];
            ASSERT_EQ(r.data_ptr<int64_t>()[t], want) << "threads " << threads << " element " << t;
            for (size_t d = 4; d-- > 0;) {
                if (++index[d] < out[d]) break;
                index[d] = 0;
            }
        }
    }
}

TEST(BroadcastTest, BigTensorsSplitOverThreadsMidRow) {
    // 3 x 1,000,003 plus a row vector: threads start in the middle of rows.
    const std::vector<int64_t> sa = {3, 1000003}, sb = {1000003};
    Tensor a(sa, DType::Float32), b(sb, DType::Float32);
    for (int64_t i = 0; i < a.num_elements(); ++i) a.data_ptr<float>()[i] = static_cast<float>(i % 1000);
    for (int64_t i = 0; i < b.num_elements(); ++i) b.data_ptr<float>()[i] = static_cast<float>(i % 7);
    const Tensor r = run(make_node("Sub", 2), {&a, &b}, 4);
    for (int64_t i = 0; i < r.num_elements(); ++i)
        ASSERT_EQ(r.data_ptr<float>()[i], static_cast<float>(i % 1000) - static_cast<float>((i % 1000003) % 7)) << i;
}

TEST(BroadcastTest, EmptyAndScalarShapes) {
    const Tensor e(std::vector<int64_t>{0, 3}, DType::Float32);
    const Tensor s = make<float>({}, {2.0f});
    EXPECT_EQ(run(make_node("Mul", 2), {&e, &s}).shape(), (std::vector<int64_t>{0, 3}));
    EXPECT_EQ(values<float>(run(make_node("Mul", 2), {&s, &s})), std::vector<float>{4.0f});
}

TEST(BroadcastTest, VariadicFoldsEveryInput) {
    const Tensor a = make<int32_t>({2, 1}, {1, 10});
    const Tensor b = make<int32_t>({3}, {5, 0, 20});
    const Tensor c = make<int32_t>({1}, {7});
    const Tensor r = run(make_node("Max", 3), {&a, &b, &c});
    EXPECT_EQ(r.shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(values<int32_t>(r), (std::vector<int32_t>{7, 7, 20, 10, 10, 20}));
    const Tensor m1 = make<float>({2}, {1, 2}), m2 = make<float>({1}, {4});
    const Tensor m = run(make_node("Mean", 2), {&m1, &m2});
    EXPECT_EQ(values<float>(m), (std::vector<float>{2.5f, 3.0f}));
}

// ---- arithmetic semantics ----

TEST(ArithmeticTest, IntegersWrapAndModFollowsTheDivisorSign) {
    const Tensor a = make<int8_t>({4}, {127, -128, -7, 7});
    const Tensor b = make<int8_t>({4}, {1, -1, 3, -3});
    EXPECT_EQ(values<int8_t>(run(make_node("Add", 2), {&a, &b})), (std::vector<int8_t>{-128, 127, -4, 4}));
    EXPECT_EQ(values<int8_t>(run(make_node("Div", 2), {&a, &b})), (std::vector<int8_t>{127, -128, -2, -2}));
    EXPECT_EQ(values<int8_t>(run(make_node("Mod", 2), {&a, &b})), (std::vector<int8_t>{0, 0, 2, -2}));
    Node fmod = make_node("Mod", 2);
    fmod.set_attribute("fmod", int64_t{1});
    EXPECT_EQ(values<int8_t>(run(fmod, {&a, &b})), (std::vector<int8_t>{0, 0, -1, 1}));
    const Tensor u = make<uint16_t>({1}, {65535});
    EXPECT_EQ(values<uint16_t>(run(make_node("Mul", 2), {&u, &u})), std::vector<uint16_t>{1});
}

TEST(ArithmeticTest, ErrorsNameTheNode) {
    const Tensor a = make<int32_t>({2}, {1, 2});
    const Tensor z = make<int32_t>({2}, {1, 0});
    expect_validation_error([&] { run(make_node("Div", 2), {&a, &z}); }, {"'nDiv'", "division by zero"});
    const Tensor f = make<float>({2}, {1, 2});
    expect_validation_error([&] { run(make_node("Mod", 2), {&f, &f}); }, {"'nMod'", "fmod"});
    expect_validation_error([&] { run(make_node("Add", 2), {&a, &f}); }, {"'nAdd'", "Int32", "Float32"});
    Node shift = make_node("BitShift", 2);
    shift.set_attribute("direction", "UP");
    expect_validation_error([&] { run(shift, {&a, &a}); }, {"'nBitShift'", "direction"});
    Node gelu = make_node("Gelu", 1);
    gelu.set_attribute("approximate", "fast");
    expect_validation_error([&] { infer(gelu, {TensorInfo{"", DType::Float32, {2}}}); }, {"'nGelu'", "approximate"});
    expect_validation_error([&] { infer(make_node("Sqrt", 1), {TensorInfo{"", DType::Int32, {2}}}); }, {"'nSqrt'", "Int32"});
}

TEST(ArithmeticTest, PowKeepsTheBaseType) {
    const Tensor base = make<int32_t>({3}, {2, 3, -2});
    const Tensor e = make<float>({3}, {0.5f, 2.0f, 3.0f});
    const Tensor r = run(make_node("Pow", 2), {&base, &e});
    EXPECT_EQ(r.dtype(), DType::Int32);
    EXPECT_EQ(values<int32_t>(r), (std::vector<int32_t>{1, 9, -8}));  // sqrt(2) truncates
    const Tensor big = make<int64_t>({1}, {3});
    const Tensor e40 = make<int64_t>({1}, {39});
    EXPECT_EQ(values<int64_t>(run(make_node("Pow", 2), {&big, &e40})), std::vector<int64_t>{4052555153018976267});
}

TEST(ArithmeticTest, ClipBoundsByOpset) {
    const Tensor x = make<float>({4}, {-5.0f, 0.5f, 5.0f, std::nanf("")});
    Node legacy = make_node("Clip", 1);
    legacy.set_attribute("min", -1.0);
    legacy.set_attribute("max", 1.0);
    const auto r = values<float>(run(legacy, {&x}, 1, 6));
    EXPECT_EQ(r[0], -1.0f);
    EXPECT_EQ(r[1], 0.5f);
    EXPECT_EQ(r[2], 1.0f);
    EXPECT_TRUE(std::isnan(r[3]));
    const Tensor lo = make<float>({}, {2.0f}), hi = make<float>({}, {1.0f});
    const auto swapped = values<float>(run(make_node("Clip", 3), {&x, &lo, &hi}));
    EXPECT_EQ(swapped[0], 1.0f);  // min > max: everything becomes max
    EXPECT_EQ(swapped[2], 1.0f);
}

TEST(InferenceTest, DtypesAndBroadcastShapes) {
    const TensorInfo a{"", DType::Float16, {2, std::nullopt, 1}}, b{"", DType::Float16, {5}};
    auto r = infer(make_node("Less", 2), {a, b});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->dtype, DType::Bool);
    EXPECT_EQ(shape_to_string(r->shape), "[2, ?, 5]");
    Node cast = make_node("Cast", 1);
    cast.set_attribute("to", int64_t{17});  // FLOAT8E4M3FN
    r = infer(cast, {a});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->dtype, DType::Float8E4M3FN);
    cast.set_attribute("to", int64_t{99});
    expect_validation_error([&] { infer(cast, {a}); }, {"'nCast'", "99"});
    const TensorInfo i{"", DType::Int64, {3}};
    r = infer(make_node("Pow", 2), {i, TensorInfo{"", DType::Float16, {1}}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->dtype, DType::Int64);
}

// ---- narrow float formats (values from the ONNX Cast tables and the OCP float8 spec) ----

TEST(FloatFormatsTest, Float8EncodeSaturatesOrOverflowsPerTheSpec) {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
    EXPECT_EQ(float_to_float8(448.0, DType::Float8E4M3FN), 0x7E);
    EXPECT_EQ(float_to_float8(464.0, DType::Float8E4M3FN, false), 0x7E);  // tie rounds to even: 448
    EXPECT_EQ(float_to_float8(470.0, DType::Float8E4M3FN, false), 0x7F);  // rounds past max: NaN
    EXPECT_EQ(float_to_float8(1e6, DType::Float8E4M3FN, true), 0x7E);
    EXPECT_EQ(float_to_float8(-inf, DType::Float8E4M3FN, true), 0xFE);
    EXPECT_EQ(float_to_float8(-inf, DType::Float8E4M3FN, false), 0xFF);
    EXPECT_EQ(float_to_float8(inf, DType::Float8E5M2, false), 0x7C);
    EXPECT_EQ(float_to_float8(inf, DType::Float8E5M2, true), 0x7B);
    EXPECT_EQ(float_to_float8(-0.0, DType::Float8E4M3FNUZ), 0x00);  // no -0
    EXPECT_EQ(float_to_float8(nan, DType::Float8E5M2FNUZ), 0x80);
    EXPECT_EQ(float_to_float8(1e9, DType::Float8E5M2FNUZ, false), 0x80);
    EXPECT_EQ(float_to_float8(std::ldexp(1.0, -9), DType::Float8E4M3FN), 0x01);  // smallest subnormal
    EXPECT_EQ(float_to_float8(std::ldexp(1.0, -10), DType::Float8E4M3FN), 0x00);  // half of it: tie to 0
    EXPECT_EQ(float_to_float4e2m1(5.0), 0x6);   // 4 and 6 tie: even mantissa (4)
    EXPECT_EQ(float_to_float4e2m1(-100.0), 0xF);
    EXPECT_EQ(float_to_float8e8m0(1.1f), 128);  // rounds up to 2
    EXPECT_EQ(float_to_float8e8m0(1.1f, true, E8M0Rounding::Down), 127);
}

TEST(FloatFormatsTest, EveryFloat8PatternRoundTrips) {
    for (DType f : {DType::Float8E4M3FN, DType::Float8E4M3FNUZ, DType::Float8E5M2, DType::Float8E5M2FNUZ}) {
        for (int b = 0; b < 256; ++b) {
            const float v = float8_to_float(static_cast<uint8_t>(b), f);
            if (std::isnan(v)) continue;
            EXPECT_EQ(float_to_float8(v, f, false), b) << dtype_to_string(f) << " " << b;
        }
    }
    EXPECT_EQ(float8_to_float(0x7E, DType::Float8E4M3FN), 448.0f);
    EXPECT_EQ(float8_to_float(0x7F, DType::Float8E5M2FNUZ), 57344.0f);
    EXPECT_EQ(float4e2m1_to_float(0x7), 6.0f);
    EXPECT_EQ(float8e8m0_to_float(127), 1.0f);
}

// ---- Cast ----

Tensor cast(const Tensor& x, DType to, int64_t saturate = 1) {
    Node node = make_node("Cast", 1);
    node.set_attribute("to", static_cast<int64_t>(dtype_to_onnx(to)));
    node.set_attribute("saturate", saturate);
    return run(node, {&x});
}

TEST(CastTest, StringsParseAndPrintLikeOnnxRuntime) {
    const Tensor s = make<std::string>({6}, {"1.5", "-INF", "inf", "NaN", "1e-5", " 2 "});
    const auto f = values<float>(cast(s, DType::Float32));
    EXPECT_EQ(f[0], 1.5f);
    EXPECT_EQ(f[1], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(f[2], std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(f[3]));
    EXPECT_EQ(f[4], 1e-5f);
    EXPECT_EQ(f[5], 2.0f);
    EXPECT_EQ(values<int32_t>(cast(make<std::string>({2}, {"100.5", "-7"}), DType::Int32)),
              (std::vector<int32_t>{100, -7}));
    const Tensor x = make<float>({5}, {1.5f, -std::numeric_limits<float>::infinity(), std::nanf(""), 0.1f, 1e20f});
    EXPECT_EQ(values<std::string>(cast(x, DType::String)),
              (std::vector<std::string>{"1.5", "-INF", "NaN", "0.1", "1e+20"}));
    EXPECT_EQ(values<std::string>(cast(make<bool>({2}, {true, false}), DType::String)),
              (std::vector<std::string>{"1", "0"}));
    expect_validation_error([&] { cast(make<std::string>({1}, {"abc"}), DType::Float32); }, {"'nCast'", "abc"});
}

TEST(CastTest, IntegersWrapAndSubByteTypesKeepTheirRange) {
    const Tensor x = make<int16_t>({3}, {200, -129, 9});
    EXPECT_EQ(values<int8_t>(cast(x, DType::Int8)), (std::vector<int8_t>{-56, 127, 9}));
    EXPECT_EQ(values<int8_t>(cast(x, DType::Int4)), (std::vector<int8_t>{-8, -1, -7}));
    EXPECT_EQ(values<uint8_t>(cast(x, DType::UInt2)), (std::vector<uint8_t>{0, 3, 1}));
    const Tensor f = make<float>({3}, {-2.7f, 2.7f, 9.0f});
    EXPECT_EQ(values<int8_t>(cast(f, DType::Int4)), (std::vector<int8_t>{-2, 2, -7}));
    const Tensor i4 = make<int8_t>({2}, {-8, 7}, DType::Int4);
    EXPECT_EQ(values<float>(cast(i4, DType::Float32)), (std::vector<float>{-8.0f, 7.0f}));
}

TEST(CastTest, Float8SaturateAttribute) {
    const Tensor x = make<float>({2}, {1000.0f, -std::numeric_limits<float>::infinity()});
    EXPECT_EQ(values<uint8_t>(cast(x, DType::Float8E4M3FN)), (std::vector<uint8_t>{0x7E, 0xFE}));
    EXPECT_EQ(values<uint8_t>(cast(x, DType::Float8E4M3FN, 0)), (std::vector<uint8_t>{0x7F, 0xFF}));
    EXPECT_EQ(values<uint8_t>(cast(x, DType::Float8E5M2, 0)), (std::vector<uint8_t>{0x64, 0xFC}));  // 1024, -inf
}

}  // namespace
}  // namespace pyflame_rt::ops
