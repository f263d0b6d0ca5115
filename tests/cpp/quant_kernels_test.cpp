// The CPU backend's int8 and half-precision kernels (onednn_quant.cpp, onednn_lowp.cpp) against
// the reference kernels of src/ops on random inputs: integer outputs identical, requantized
// outputs within one quantization step (the kernels round once in float32 where the reference
// rounds in double), half-precision outputs within their rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "backends/cpu/onednn_kernels.hpp"
#include "ops/op.hpp"
#include "test_util.hpp"

namespace pyflame_rt {
namespace {

using Shape64 = std::vector<int64_t>;

const std::map<std::string, ops::KernelFactory>& factories() {
    static const std::map<std::string, ops::KernelFactory> table = [] {
        std::map<std::string, ops::KernelFactory> t;
        for (const ops::OpSchema* s : ops::OpTable::instance().all())
            if (s->reference_kernel) t[(s->domain.empty() ? "" : s->domain) + "::" + s->op_type] = s->reference_kernel;
        register_onednn_kernels(t);
        return t;
    }();
    return table;
}

std::string key(const Node& n) { return n.domain() + "::" + n.op_type(); }

ops::KernelInfo info_of(const Node& node, const std::vector<const Tensor*>& constants) {
    return ops::KernelInfo{node, 21, constants, {}};
}

std::unique_ptr<ops::OpKernel> fast_kernel(const Node& node, const std::vector<const Tensor*>& constants = {}) {
    return factories().at(key(node))(info_of(node, constants));
}

std::unique_ptr<ops::OpKernel> reference_kernel(const Node& node) {
    return ops::OpTable::instance().find(node.op_type(), node.domain())->reference_kernel(info_of(node, {}));
}

std::vector<Tensor> run(const ops::OpKernel& kernel, const std::vector<const Tensor*>& inputs, size_t outputs = 1) {
    ops::KernelContext ctx;
    ctx.inputs = inputs;
    ctx.outputs.resize(outputs);
    ctx.num_threads = 2;
    kernel.compute(ctx);
    return ctx.outputs;
}

template <typename T>
Tensor random_ints(const Shape64& shape, DType dtype, int lo, int hi, uint32_t seed) {
    Tensor t(shape, dtype);
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int> dist(lo, hi);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data_ptr<T>()[i] = static_cast<T>(dist(gen));
    return t;
}

Tensor random_8bit(const Shape64& shape, DType dtype, uint32_t seed) {
    return dtype == DType::Int8 ? random_ints<int8_t>(shape, dtype, -128, 127, seed)
                                : random_ints<uint8_t>(shape, dtype, 0, 255, seed);
}

Tensor random_floats(const Shape64& shape, float lo, float hi, uint32_t seed) {
    Tensor t(shape, DType::Float32);
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data_ptr<float>()[i] = dist(gen);
    return t;
}

Tensor scalar_f32(float v) {
    Tensor t({}, DType::Float32);
    t.data_ptr<float>()[0] = v;
    return t;
}

Tensor scalar_8bit(DType dtype, int v) {
    Tensor t({}, dtype);
    if (dtype == DType::Int8) t.data_ptr<int8_t>()[0] = static_cast<int8_t>(v);
    else t.data_ptr<uint8_t>()[0] = static_cast<uint8_t>(v);
    return t;
}

double element(const Tensor& t, int64_t i) {
    switch (t.dtype()) {
        case DType::Int8: return t.data_ptr<int8_t>()[i];
        case DType::UInt8: return t.data_ptr<uint8_t>()[i];
        case DType::Int32: return t.data_ptr<int32_t>()[i];
        case DType::Float32: return t.data_ptr<float>()[i];
        default: ADD_FAILURE() << "unexpected dtype"; return 0;
    }
}

// Same shape and dtype, |a - e| <= tolerance everywhere; returns how many elements differ.
int64_t expect_within(const Tensor& actual, const Tensor& expected, double tolerance, const std::string& what) {
    EXPECT_EQ(actual.shape(), expected.shape()) << what;
    EXPECT_EQ(actual.dtype(), expected.dtype()) << what;
    if (actual.shape() != expected.shape() || actual.dtype() != expected.dtype()) return -1;
    int64_t differing = 0;
    int reported = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        const double a = element(actual, i), e = element(expected, i);
        if (a != e) ++differing;
        if (!(std::fabs(a - e) <= tolerance) && reported++ < 5)
            ADD_FAILURE() << what << ": element " << i << " is " << a << ", expected " << e;
    }
    return differing;
}

struct ConvCase {
    Shape64 x, w;
    int64_t group = 1;
    Shape64 strides, pads, dilations;
};

void set_conv_attributes(Node& node, const ConvCase& c) {
    if (c.group != 1) node.set_attribute("group", c.group);
    if (!c.strides.empty()) node.set_attribute("strides", c.strides);
    if (!c.pads.empty()) node.set_attribute("pads", c.pads);
    if (!c.dilations.empty()) node.set_attribute("dilations", c.dilations);
}

const std::vector<ConvCase>& conv_cases() {
    static const std::vector<ConvCase> cases = {
        {{2, 8, 9, 9}, {16, 8, 3, 3}, 1, {1, 1}, {1, 1, 1, 1}, {}},        // 3x3, padded
        {{1, 16, 12, 10}, {8, 16, 1, 1}, 1, {2, 2}, {}, {}},               // 1x1, strided
        {{2, 12, 8, 8}, {12, 3, 3, 3}, 4, {1, 1}, {0, 1, 2, 1}, {}},       // grouped, uneven pads
        {{1, 16, 7, 7}, {16, 1, 3, 3}, 16, {2, 2}, {1, 1, 1, 1}, {}},      // depthwise
        {{2, 4, 11, 11}, {8, 4, 3, 3}, 1, {1, 1}, {2, 2, 2, 2}, {2, 2}},   // dilated
        {{3, 6, 20}, {10, 6, 5}, 1, {2}, {2, 2}, {}},                       // 1-D
        {{1, 3, 23, 23}, {32, 3, 7, 7}, 1, {2, 2}, {3, 3, 3, 3}, {}},      // a stem
    };
    return cases;
}

TEST(QuantKernels, QLinearConvMatchesReference) {
    int seed = 1;
    for (const ConvCase& c : conv_cases())
        for (DType x_type : {DType::UInt8, DType::Int8})
            for (bool per_channel : {true, false})
                for (bool constant_weights : {true, false}) {
                    const std::string what = "QLinearConv x " + shape_to_string(c.x) + " w " + shape_to_string(c.w) +
                                             " group " + std::to_string(c.group) + (x_type == DType::Int8 ? " s8" : " u8") +
                                             (per_channel ? " per-channel" : " per-tensor") +
                                             (constant_weights ? " constant w" : "");
                    Node node("QLinearConv", "qconv", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, {"y"});
                    set_conv_attributes(node, c);
                    const int64_t maps = c.w[0];
                    const Tensor x = random_8bit(c.x, x_type, seed++);
                    const Tensor xs = scalar_f32(0.02f), xz = scalar_8bit(x_type, x_type == DType::Int8 ? -7 : 131);
                    const Tensor w = random_8bit(c.w, DType::Int8, seed++);
                    const Tensor ws = per_channel ? random_floats({maps}, 0.001f, 0.01f, seed++) : scalar_f32(0.004f);
                    const Tensor wz = Tensor::zeros(per_channel ? Shape64{maps} : Shape64{}, DType::Int8);
                    const DType y_type = seed % 2 ? DType::UInt8 : DType::Int8;
                    const Tensor ys = scalar_f32(0.05f), yz = scalar_8bit(y_type, y_type == DType::Int8 ? 3 : 120);
                    const Tensor b = random_ints<int32_t>({maps}, DType::Int32, -3000, 3000, seed++);
                    const std::vector<const Tensor*> inputs{&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b};
                    std::vector<const Tensor*> constants(9, nullptr);
                    if (constant_weights) constants = {nullptr, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b};
                    const auto fast = fast_kernel(node, constants);
                    EXPECT_EQ(is_onednn_kernel(*fast), onednn_available()) << what;
                    const Tensor expected = run(*reference_kernel(node), inputs)[0];
                    const int64_t differing = expect_within(run(*fast, inputs)[0], expected, 1.0, what);
                    // Off by one only where the two roundings straddle a .5: rare.
                    EXPECT_LE(differing, expected.num_elements() / 50 + 1) << what;
                }
}

TEST(QuantKernels, ConvIntegerIsExact) {
    int seed = 100;
    for (const ConvCase& c : conv_cases())
        for (DType x_type : {DType::UInt8, DType::Int8}) {
            Node node("ConvInteger", "convi", {"x", "w", "xz", "wz"}, {"y"});
            set_conv_attributes(node, c);
            const Tensor x = random_8bit(c.x, x_type, seed++);
            const Tensor w = random_8bit(c.w, DType::Int8, seed++);
            const Tensor xz = scalar_8bit(x_type, x_type == DType::Int8 ? 5 : 100);
            const Tensor wz = Tensor::zeros({}, DType::Int8);
            const std::vector<const Tensor*> inputs{&x, &w, &xz, &wz};
            const auto fast = fast_kernel(node, {nullptr, &w, nullptr, &wz});
            expect_within(run(*fast, inputs)[0], run(*reference_kernel(node), inputs)[0], 0.0,
                          "ConvInteger " + shape_to_string(c.x) + " * " + shape_to_string(c.w));
        }
}

TEST(QuantKernels, NonZeroWeightZeroPointFallsBackToReference) {
    // oneDNN takes no weight zero points: the kernel must give the reference's answer anyway.
    const ConvCase& c = conv_cases()[0];
    Node node("ConvInteger", "convi", {"x", "w", "xz", "wz"}, {"y"});
    set_conv_attributes(node, c);
    const Tensor x = random_8bit(c.x, DType::UInt8, 7), w = random_8bit(c.w, DType::Int8, 8);
    const Tensor xz = scalar_8bit(DType::UInt8, 3), wz = scalar_8bit(DType::Int8, 2);
    const std::vector<const Tensor*> inputs{&x, &w, &xz, &wz};
    expect_within(run(*fast_kernel(node), inputs)[0], run(*reference_kernel(node), inputs)[0], 0.0, "ConvInteger w_zp 2");
}

TEST(QuantKernels, FusedQLinearConvActivations) {
    const ConvCase& c = conv_cases()[0];
    int seed = 200;
    for (const std::string act : {"Relu", "Clip"}) {
        Node node("FusedQLinearConv", "fqconv", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, {"y"});
        node.set_domain("com.pyflame");
        set_conv_attributes(node, c);
        node.set_attribute("activation", act);
        if (act == "Clip") node.set_attribute("activation_params", std::vector<double>{-0.5, 2.0});
        const Tensor x = random_8bit(c.x, DType::UInt8, seed++), w = random_8bit(c.w, DType::Int8, seed++);
        const Tensor xs = scalar_f32(0.02f), xz = scalar_8bit(DType::UInt8, 128);
        const Tensor ws = random_floats({c.w[0]}, 0.001f, 0.01f, seed++), wz = Tensor::zeros({c.w[0]}, DType::Int8);
        const Tensor ys = scalar_f32(0.03f), yz = scalar_8bit(DType::Int8, -20);
        const Tensor b = random_ints<int32_t>({c.w[0]}, DType::Int32, -3000, 3000, seed++);
        const std::vector<const Tensor*> inputs{&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b};
        const auto fast = fast_kernel(node, {nullptr, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b});
        const Tensor expected = run(*reference_kernel(node), inputs)[0];
        // The activation is a real clamp: some outputs sit on its bounds.
        int64_t at_low = 0;
        for (int64_t i = 0; i < expected.num_elements(); ++i) at_low += expected.data_ptr<int8_t>()[i] == -20;
        EXPECT_GT(at_low, 0) << act;
        expect_within(run(*fast, inputs)[0], expected, 1.0, "FusedQLinearConv " + act);
    }
}

TEST(QuantKernels, QLinearConvAddMatchesReference) {
    // The residual form: Q(conv value + DQ(S)), S int8 or uint8; zero points of 0 (uint8 after
    // a Relu: no zero-point attribute) and not.
    int seed = 250;
    for (const ConvCase& c : {conv_cases()[0], conv_cases()[1], conv_cases()[2]})
        for (DType s_type : {DType::Int8, DType::UInt8})
            for (bool zero_zps : {true, false}) {
                const std::string what = "QLinearConvAdd x " + shape_to_string(c.x) + (s_type == DType::Int8 ? " S s8" : " S u8") +
                                         (zero_zps ? " zero points 0" : "");
                Node node("QLinearConvAdd", "qconvadd", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b", "s", "ss", "sz"}, {"y"});
                node.set_domain("com.pyflame");
                set_conv_attributes(node, c);
                const int64_t maps = c.w[0];
                const DType x_type = zero_zps ? DType::UInt8 : DType::Int8, y_type = zero_zps ? DType::UInt8 : DType::Int8;
                const Tensor x = random_8bit(c.x, x_type, seed++), w = random_8bit(c.w, DType::Int8, seed++);
                const Tensor xs = scalar_f32(0.02f), xz = scalar_8bit(x_type, zero_zps ? 0 : -7);
                const Tensor ws = random_floats({maps}, 0.001f, 0.01f, seed++), wz = Tensor::zeros({maps}, DType::Int8);
                const Tensor ys = scalar_f32(0.08f), yz = scalar_8bit(y_type, zero_zps ? 0 : 3);
                const Tensor b = random_ints<int32_t>({maps}, DType::Int32, -3000, 3000, seed++);
                // S has the convolution's output shape.
                Node plain("QLinearConv", "qconv", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"}, {"y"});
                set_conv_attributes(plain, c);
                const Shape64 out_shape = run(*reference_kernel(plain), {&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b})[0].shape();
                const Tensor sum = random_8bit(out_shape, s_type, seed++);
                const Tensor ss = scalar_f32(0.05f), sz = scalar_8bit(s_type, s_type == DType::Int8 ? -4 : 9);
                const std::vector<const Tensor*> inputs{&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b, &sum, &ss, &sz};
                const auto fast = fast_kernel(node, {nullptr, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b, nullptr, &ss, &sz});
                EXPECT_EQ(is_onednn_kernel(*fast), onednn_available()) << what;
                const Tensor expected = run(*reference_kernel(node), inputs)[0];
                const int64_t differing = expect_within(run(*fast, inputs)[0], expected, 1.0, what);
                EXPECT_LE(differing, expected.num_elements() / 50 + 1) << what;
            }
}

TEST(QuantKernels, MatMulIntegerIsExact) {
    int seed = 300;
    for (DType a_type : {DType::UInt8, DType::Int8})
        for (const Shape64& a_shape : {Shape64{7, 33}, Shape64{2, 5, 64}}) {
            Node node("MatMulInteger", "mmi", {"a", "b", "az", "bz"}, {"y"});
            const Tensor a = random_8bit(a_shape, a_type, seed++);
            const Tensor b = random_8bit({a_shape.back(), 19}, DType::Int8, seed++);
            const Tensor az = scalar_8bit(a_type, 9), bz = Tensor::zeros({19}, DType::Int8);
            const std::vector<const Tensor*> inputs{&a, &b, &az, &bz};
            for (bool constant_b : {true, false}) {
                const auto fast = fast_kernel(node, {nullptr, constant_b ? &b : nullptr, nullptr, nullptr});
                expect_within(run(*fast, inputs)[0], run(*reference_kernel(node), inputs)[0], 0.0,
                              "MatMulInteger " + shape_to_string(a_shape));
            }
        }
}

TEST(QuantKernels, MatMulIntegerToFloatMatchesReference) {
    // int8 in, float32 out (a quantized projection read by float ops): the same float32 value
    // up to summation order.
    int seed = 380;
    for (DType a_type : {DType::UInt8, DType::Int8})
        for (bool with_bias : {true, false}) {
            std::vector<std::string> names{"a", "b", "as", "bs", "az", "bz"};
            if (with_bias) names.push_back("bias");
            Node node("MatMulIntegerToFloat", "mmf", names, {"y"});
            node.set_domain("com.pyflame");
            const Tensor a = random_8bit({2, 5, 64}, a_type, seed++);
            const Tensor b = random_8bit({64, 24}, DType::Int8, seed++);
            const Tensor as = scalar_f32(0.03f), bs = random_floats({24}, 0.001f, 0.01f, seed++);
            const Tensor az = scalar_8bit(a_type, a_type == DType::Int8 ? -3 : 120), bz = Tensor::zeros({24}, DType::Int8);
            const Tensor bias = random_floats({24}, -1.0f, 1.0f, seed++);
            std::vector<const Tensor*> inputs{&a, &b, &as, &bs, &az, &bz};
            if (with_bias) inputs.push_back(&bias);
            std::vector<const Tensor*> constants{nullptr, &b, &as, &bs, &az, &bz};
            if (with_bias) constants.push_back(&bias);
            const auto fast = fast_kernel(node, constants);
            EXPECT_EQ(is_onednn_kernel(*fast), onednn_available());
            const Tensor expected = run(*reference_kernel(node), inputs)[0];
            double peak = 0;
            for (int64_t i = 0; i < expected.num_elements(); ++i) peak = std::max(peak, std::fabs(element(expected, i)));
            expect_within(run(*fast, inputs)[0], expected, 1e-5 * peak + 1e-6, "MatMulIntegerToFloat");
        }
}

TEST(QuantKernels, QLinearMatMulWithinOneStep) {
    int seed = 400;
    for (DType a_type : {DType::UInt8, DType::Int8})
        for (bool per_column : {true, false}) {
            Node node("QLinearMatMul", "qmm", {"a", "as", "az", "b", "bs", "bz", "ys", "yz"}, {"y"});
            const int64_t k = 48, n = 24;
            const Tensor a = random_8bit({3, 10, k}, a_type, seed++), b = random_8bit({k, n}, DType::Int8, seed++);
            const Tensor as = scalar_f32(0.03f), az = scalar_8bit(a_type, a_type == DType::Int8 ? -3 : 125);
            const Tensor bs = per_column ? random_floats({n}, 0.002f, 0.01f, seed++) : scalar_f32(0.005f);
            const Tensor bz = Tensor::zeros(per_column ? Shape64{n} : Shape64{}, DType::Int8);
            const Tensor ys = scalar_f32(0.04f), yz = scalar_8bit(DType::UInt8, 128);
            const std::vector<const Tensor*> inputs{&a, &as, &az, &b, &bs, &bz, &ys, &yz};
            const auto fast = fast_kernel(node, {nullptr, &as, &az, &b, &bs, &bz, &ys, &yz});
            const Tensor expected = run(*reference_kernel(node), inputs)[0];
            const int64_t differing = expect_within(run(*fast, inputs)[0], expected, 1.0, "QLinearMatMul");
            EXPECT_LE(differing, expected.num_elements() / 50 + 1);
        }
}

TEST(QuantKernels, QGemmWithinOneStep) {
    Node node("QGemm", "qgemm", {"a", "as", "az", "b", "bs", "bz", "c", "ys", "yz"}, {"y"});
    node.set_domain("com.pyflame");
    const int64_t k = 96, n = 30;
    const Tensor a = random_8bit({8, k}, DType::UInt8, 41), b = random_8bit({k, n}, DType::Int8, 42);
    const Tensor as = scalar_f32(0.02f), az = scalar_8bit(DType::UInt8, 129);
    const Tensor bs = random_floats({n}, 0.002f, 0.01f, 43), bz = Tensor::zeros({n}, DType::Int8);
    const Tensor c = random_ints<int32_t>({n}, DType::Int32, -20000, 20000, 44);
    const Tensor ys = scalar_f32(0.06f), yz = scalar_8bit(DType::Int8, 5);
    const std::vector<const Tensor*> inputs{&a, &as, &az, &b, &bs, &bz, &c, &ys, &yz};
    const auto fast = fast_kernel(node, {nullptr, &as, &az, &b, &bs, &bz, &c, &ys, &yz});
    const Tensor expected = run(*reference_kernel(node), inputs)[0];
    const int64_t differing = expect_within(run(*fast, inputs)[0], expected, 1.0, "QGemm");
    EXPECT_LE(differing, expected.num_elements() / 50 + 1);
}

TEST(QuantKernels, Int8MaxPoolIsExact) {
    for (DType type : {DType::Int8, DType::UInt8})
        for (int64_t ceil_mode : {0, 1}) {
            Node node("MaxPool", "pool", {"x"}, {"y"});
            node.set_attribute("kernel_shape", Shape64{3, 3});
            node.set_attribute("strides", Shape64{2, 2});
            node.set_attribute("pads", Shape64{1, 1, 0, 0});
            node.set_attribute("ceil_mode", ceil_mode);
            const Tensor x = random_8bit({2, 5, 12, 11}, type, 50 + static_cast<uint32_t>(ceil_mode));
            expect_within(run(*fast_kernel(node), {&x})[0], run(*reference_kernel(node), {&x})[0], 0.0, "int8 MaxPool");
        }
}

TEST(QuantKernels, DynamicQuantizeLinearIsExact) {
    for (int64_t n : {1, 7, 8, 1000, 4099}) {
        Node node("DynamicQuantizeLinear", "dql", {"x"}, {"y", "s", "z"});
        Tensor x = random_floats({n}, -3.0f, 5.0f, static_cast<uint32_t>(n));
        if (n > 10) {
            x.data_ptr<float>()[3] = NAN;  // NaN quantizes to 0 and moves no bound
            x.data_ptr<float>()[5] = 0.0f;
        }
        const auto fast = run(*fast_kernel(node), {&x}, 3), ref = run(*reference_kernel(node), {&x}, 3);
        for (size_t o = 0; o < 3; ++o) expect_within(fast[o], ref[o], 0.0, "DynamicQuantizeLinear n=" + std::to_string(n));
    }
}

TEST(QuantKernels, QuantizeAndDequantizeLinearAreExact) {
    for (DType type : {DType::UInt8, DType::Int8}) {
        const Tensor scale = scalar_f32(0.0625f), zp = scalar_8bit(type, type == DType::Int8 ? -4 : 17);
        // Ties (k + 0.5 steps) round to even; far values saturate.
        Tensor x = random_floats({1037}, -20.0f, 20.0f, 11);
        for (int i = 0; i < 40; ++i) x.data_ptr<float>()[i] = (i - 20 + 0.5f) * 0.0625f;
        x.data_ptr<float>()[41] = NAN;
        Node q("QuantizeLinear", "q", {"x", "s", "z"}, {"y"});
        const Tensor fast_q = run(*fast_kernel(q), {&x, &scale, &zp})[0];
        expect_within(fast_q, run(*reference_kernel(q), {&x, &scale, &zp})[0], 0.0, "QuantizeLinear");
        Node dq("DequantizeLinear", "dq", {"x", "s", "z"}, {"y"});
        expect_within(run(*fast_kernel(dq), {&fast_q, &scale, &zp})[0], run(*reference_kernel(dq), {&fast_q, &scale, &zp})[0],
                      0.0, "DequantizeLinear");
    }
}

TEST(QuantKernels, QLinearAddIsExact) {
    Node node("QLinearAdd", "qadd", {"a", "as", "az", "b", "bs", "bz", "cs", "cz"}, {"c"});
    node.set_domain("com.pyflame");
    const Tensor a = random_8bit({2, 3, 5, 7}, DType::Int8, 1), b = random_8bit({2, 3, 5, 7}, DType::UInt8, 2);
    const Tensor as = scalar_f32(0.1f), az = scalar_8bit(DType::Int8, -3), bs = scalar_f32(0.07f);
    const Tensor bz = scalar_8bit(DType::UInt8, 128), cs = scalar_f32(0.12f), cz = scalar_8bit(DType::Int8, 1);
    const std::vector<const Tensor*> inputs{&a, &as, &az, &b, &bs, &bz, &cs, &cz};
    expect_within(run(*fast_kernel(node), inputs)[0], run(*reference_kernel(node), inputs)[0], 0.0, "QLinearAdd");
}

TEST(QuantKernels, DynamicQuantizeMatMulMatchesReference) {
    Node node("DynamicQuantizeMatMul", "dqmm", {"a", "b", "bs", "bz", "bias"}, {"y"});
    node.set_domain("com.pyflame");
    const Tensor a = random_floats({4, 6, 40}, -2.0f, 3.0f, 5), b = random_8bit({40, 16}, DType::Int8, 6);
    const Tensor bs = random_floats({16}, 0.001f, 0.01f, 7), bz = Tensor::zeros({16}, DType::Int8);
    const Tensor bias = random_floats({16}, -1.0f, 1.0f, 8);
    const std::vector<const Tensor*> inputs{&a, &b, &bs, &bz, &bias};
    const Tensor expected = run(*reference_kernel(node), inputs)[0];
    double biggest = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) biggest = std::max(biggest, std::fabs(element(expected, i)));
    const auto fast = fast_kernel(node, {nullptr, &b, &bs, &bz, &bias});
    expect_within(run(*fast, inputs)[0], expected, 1e-6 * biggest, "DynamicQuantizeMatMul");
}

// ---- bfloat16 / float16 ----

// Conversions by the reference Cast kernel (round to nearest even).
Tensor cast(const Tensor& t, int64_t onnx_type) {
    Node node("Cast", "cast", {"x"}, {"y"});
    node.set_attribute("to", onnx_type);
    return run(*reference_kernel(node), {&t})[0];
}

Tensor to_half(const Tensor& f, DType type) { return cast(f, type == DType::BFloat16 ? 16 : 10); }
Tensor to_float(const Tensor& h) { return cast(h, 1); }

void expect_half_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
    ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
    const Tensor a = to_float(actual), e = to_float(expected);
    double biggest = 0;
    for (int64_t i = 0; i < e.num_elements(); ++i) biggest = std::max(biggest, std::fabs(element(e, i)));
    // One rounding of the output (2^-8 relative for bfloat16) plus summation-order noise.
    const double tol = (expected.dtype() == DType::BFloat16 ? 1.0 / 64 : 1.0 / 512) * std::max(1.0, biggest);
    expect_within(a, e, tol, what);
}

// The reference: float32 kernels on the half values widened, the output rounded to the half
// type once (the reference MatMul and Gemm take no half types).
Tensor half_reference(const Node& node, const std::vector<const Tensor*>& half_inputs) {
    std::vector<Tensor> widened;
    for (const Tensor* t : half_inputs) widened.push_back(to_float(*t));
    std::vector<const Tensor*> inputs;
    for (const Tensor& t : widened) inputs.push_back(&t);
    return to_half(run(*reference_kernel(node), inputs)[0], half_inputs[0]->dtype());
}

TEST(LowpKernels, HalfConvMatMulGemmMatchReference) {
    for (DType type : {DType::BFloat16, DType::Float16}) {
        const std::string tn = type == DType::BFloat16 ? "bf16" : "f16";
        for (const ConvCase& c : conv_cases()) {
            Node node("Conv", "conv", {"x", "w", "b"}, {"y"});
            set_conv_attributes(node, c);
            const Tensor x = to_half(random_floats(c.x, -1, 1, 1), type), w = to_half(random_floats(c.w, -1, 1, 2), type);
            const Tensor b = to_half(random_floats({c.w[0]}, -1, 1, 3), type);
            const auto fast = fast_kernel(node, {nullptr, &w, &b});
            expect_half_close(run(*fast, {&x, &w, &b})[0], half_reference(node, {&x, &w, &b}), tn + " Conv " + shape_to_string(c.x));
        }
        {
            // FusedConv with a residual and an activation (what level 2 makes of ResNet blocks).
            const ConvCase& c = conv_cases()[0];
            Node node("FusedConv", "fconv", {"x", "w", "b", "z"}, {"y"});
            node.set_domain("com.pyflame");
            set_conv_attributes(node, c);
            node.set_attribute("activation", "Relu");
            const Tensor x = to_half(random_floats(c.x, -1, 1, 9), type), w = to_half(random_floats(c.w, -1, 1, 10), type);
            const Tensor b = to_half(random_floats({c.w[0]}, -1, 1, 11), type);
            const Tensor z = to_half(random_floats({c.x[0], c.w[0], c.x[2], c.x[3]}, -2, 2, 12), type);
            expect_half_close(run(*fast_kernel(node, {nullptr, &w, &b}), {&x, &w, &b, &z})[0],
                              half_reference(node, {&x, &w, &b, &z}), tn + " FusedConv residual + Relu");
        }
        {
            Node node("MatMul", "mm", {"a", "b"}, {"y"});
            const Tensor a = to_half(random_floats({2, 9, 64}, -1, 1, 4), type), b = to_half(random_floats({64, 40}, -1, 1, 5), type);
            expect_half_close(run(*fast_kernel(node, {nullptr, &b}), {&a, &b})[0], half_reference(node, {&a, &b}), tn + " MatMul");
            Node fused("FusedMatMul", "fmm", {"a", "b", "bias"}, {"y"});
            fused.set_domain("com.pyflame");
            fused.set_attribute("activation", "Tanh");
            const Tensor bias = to_half(random_floats({40}, -1, 1, 13), type);
            expect_half_close(run(*fast_kernel(fused, {nullptr, &b, &bias}), {&a, &b, &bias})[0],
                              half_reference(fused, {&a, &b, &bias}), tn + " FusedMatMul");
        }
        for (int64_t trans_b : {0, 1}) {
            // Gemm, and FusedGemm (Gemm + activation) as level 2 makes of Linear + ReLU.
            Node node(trans_b ? "FusedGemm" : "Gemm", "gemm", {"a", "b", "c"}, {"y"});
            if (trans_b) node.set_domain("com.pyflame"), node.set_attribute("activation", "Relu");
            node.set_attribute("transB", trans_b);
            const Tensor a = to_half(random_floats({8, 96}, -1, 1, 6), type);
            const Tensor b = to_half(random_floats(trans_b ? Shape64{30, 96} : Shape64{96, 30}, -1, 1, 7), type);
            const Tensor c = to_half(random_floats({30}, -1, 1, 8), type);
            expect_half_close(run(*fast_kernel(node, {nullptr, &b, &c}), {&a, &b, &c})[0], half_reference(node, {&a, &b, &c}),
                              tn + " Gemm transB " + std::to_string(trans_b));
        }
    }
}

}  // namespace
}  // namespace pyflame_rt
