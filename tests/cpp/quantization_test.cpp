// Float16/BFloat16 against an independent reference (values decoded with ldexp, rounding by
// nearest-in-table with ties to the even pattern), QuantConfig validation, QuantParams, and a
// dynamic/static INT8 graph checked against float math.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "pyflame_rt/quantization.hpp"
#include "test_util.hpp"

namespace pyflame_rt {
namespace {

using namespace quantization;
using testing::expect_validation_error;

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// A binary format with `mbits` mantissa bits and `ebits` exponent bits (IEEE layout), decoded
// from first principles.
double decode(uint16_t bits, int ebits, int mbits) {
    const int bias = (1 << (ebits - 1)) - 1;
    const bool neg = bits >> (ebits + mbits);
    const int e = (bits >> mbits) & ((1 << ebits) - 1);
    const int m = bits & ((1 << mbits) - 1);
    double v;
    if (e == (1 << ebits) - 1) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (e == 0) v = std::ldexp(static_cast<double>(m), 1 - bias - mbits);
    else v = std::ldexp(static_cast<double>(m + (1 << mbits)), e - bias - mbits);
    return neg ? -v : v;
}

// Sorted non-negative values of a format (finite ones, then +inf as the value just past the
// largest finite, 2^(emax+1), whose pattern has an even mantissa).
struct Table {
    std::vector<double> values;
    std::vector<uint16_t> bits;
    int ebits, mbits;

    Table(int e, int m) : ebits(e), mbits(m) {
        const uint16_t inf = static_cast<uint16_t>(((1 << e) - 1) << m);
        for (uint32_t b = 0; b < inf; ++b) {
            values.push_back(decode(static_cast<uint16_t>(b), e, m));
            bits.push_back(static_cast<uint16_t>(b));
        }
        values.push_back(std::ldexp(1.0, (1 << (e - 1))));  // 2^(emax+1)
        bits.push_back(inf);
    }

    // Round x to nearest, ties to the even pattern; beyond the largest finite + half ulp: inf.
    uint16_t round(double x) const {
        const uint16_t sign = std::signbit(x) ? static_cast<uint16_t>(1u << (ebits + mbits)) : 0;
        const double a = std::fabs(x);
        if (a >= values.back()) return sign | bits.back();
        const auto it = std::upper_bound(values.begin(), values.end(), a);
        const size_t hi = static_cast<size_t>(it - values.begin()), lo = hi - 1;
        const double dlo = a - values[lo], dhi = values[hi] - a;
        size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((bits[lo] & 1) == 0 ? lo : hi);
        return sign | bits[pick];
    }
};

const Table& half_table() {
    static const Table t(5, 10);
    return t;
}
const Table& bf16_table() {
    static const Table t(8, 7);
    return t;
}

// Floats to round: a stride through all bit patterns, plus every midpoint between neighbours
// of the format and the floats right next to those midpoints.
std::vector<float> probe_floats(const Table& table) {
    std::vector<float> xs;
    for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 9973) xs.push_back(float_of(static_cast<uint32_t>(b)));
    for (size_t i = 0; i + 1 < table.values.size(); ++i) {
        const double mid = (table.values[i] + table.values[i + 1]) / 2;
        const float f = static_cast<float>(mid);
        if (static_cast<double>(f) != mid) continue;  // not representable: not a tie in float
        for (float v : {f, std::nextafter(f, 0.0f), std::nextafter(f, INFINITY)}) {
            xs.push_back(v);
            xs.push_back(-v);
        }
    }
    for (float v : {0.0f, -0.0f, INFINITY, -INFINITY, std::numeric_limits<float>::denorm_min(), 1e-40f, 65504.0f, 65519.99f,
                    65520.0f, 1e30f, 3.4028235e38f})
        xs.push_back(v);
    return xs;
}

TEST(QuantizationFloat16, DecodesAllBitPatterns) {
    for (uint32_t b = 0; b < 65536; ++b) {
        const Float16 h = Float16::from_bits(static_cast<uint16_t>(b));
        const double ref = decode(static_cast<uint16_t>(b), 5, 10);
        if (std::isnan(ref)) {
            EXPECT_TRUE(h.is_nan()) << b;
            EXPECT_TRUE(std::isnan(h.to_float())) << b;
            continue;
        }
        ASSERT_EQ(static_cast<double>(h.to_float()), ref) << "bits " << b;
        EXPECT_EQ(std::signbit(h.to_float()), std::signbit(ref)) << b;
        EXPECT_FALSE(h.is_nan());
        EXPECT_EQ(h.is_inf(), std::isinf(ref)) << b;
        EXPECT_EQ(h.is_zero(), ref == 0.0) << b;
        // Every value converts back to itself exactly.
        ASSERT_EQ(Float16::from_float(h.to_float()).bits, b) << b;
    }
}

TEST(QuantizationFloat16, RoundsFloat32ToNearestEven) {
    const Table& t = half_table();
    for (float x : probe_floats(t)) {
        if (std::isnan(x)) {
            EXPECT_TRUE(Float16::from_float(x).is_nan());
            continue;
        }
        ASSERT_EQ(Float16::from_float(x).bits, t.round(x)) << "x = " << x << " (bits " << bits_of(x) << ")";
    }
    EXPECT_TRUE(Float16::from_float(std::numeric_limits<float>::quiet_NaN()).is_nan());
    EXPECT_TRUE(Float16::from_float(-std::numeric_limits<float>::quiet_NaN()).is_nan());
    EXPECT_EQ(Float16::from_float(65520.0f).bits, 0x7C00);            // tie above the max: to inf (even)
    EXPECT_EQ(Float16::from_float(65519.996f).bits, 0x7BFF);          // just below the tie: the max
    EXPECT_EQ(Float16::from_float(std::ldexp(1.0f, -25)).bits, 0x0000);  // half the smallest subnormal: tie to 0
    EXPECT_EQ(Float16::from_float(std::nextafter(std::ldexp(1.0f, -25), 1.0f)).bits, 0x0001);
    EXPECT_EQ(Float16::from_float(-0.0f).bits, 0x8000);
}

TEST(QuantizationBFloat16, DecodesAllBitPatterns) {
    for (uint32_t b = 0; b < 65536; ++b) {
        const BFloat16 h = BFloat16::from_bits(static_cast<uint16_t>(b));
        const double ref = decode(static_cast<uint16_t>(b), 8, 7);
        if (std::isnan(ref)) {
            EXPECT_TRUE(h.is_nan()) << b;
            EXPECT_TRUE(std::isnan(h.to_float())) << b;
            continue;
        }
        ASSERT_EQ(static_cast<double>(h.to_float()), ref) << "bits " << b;
        EXPECT_EQ(h.is_inf(), std::isinf(ref)) << b;
        EXPECT_EQ(h.is_zero(), ref == 0.0) << b;
        ASSERT_EQ(BFloat16::from_float(h.to_float()).bits, b) << b;
    }
}

TEST(QuantizationBFloat16, RoundsFloat32ToNearestEven) {
    const Table& t = bf16_table();
    for (float x : probe_floats(t)) {
        if (std::isnan(x)) {
            EXPECT_TRUE(BFloat16::from_float(x).is_nan());
            continue;
        }
        ASSERT_EQ(BFloat16::from_float(x).bits, t.round(x)) << "x = " << x << " (bits " << bits_of(x) << ")";
    }
    EXPECT_EQ(BFloat16::from_float(3.4028235e38f).bits, 0x7F80);  // float max rounds up past bf16 max: inf
    EXPECT_TRUE(BFloat16::from_float(std::numeric_limits<float>::signaling_NaN()).is_nan());  // never becomes inf
    EXPECT_EQ(BFloat16::from_float(1.00390625f).bits, 0x3F80);  // 1 + 2^-8: tie, to even (1.0)
    EXPECT_EQ(BFloat16::from_float(1.01171875f).bits, 0x3F82);  // 1 + 3*2^-8: tie, to even (1 + 2^-6)
}

// + - * / against the exactly computed (double) result rounded by the reference; comparisons
// against the decoded values.
template <typename H>
void check_arithmetic(const Table& t, int ebits, int mbits) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> any(0, 65535);
    for (int k = 0; k < 200000; ++k) {
        const auto a = H::from_bits(static_cast<uint16_t>(any(rng))), b = H::from_bits(static_cast<uint16_t>(any(rng)));
        const double x = decode(a.bits, ebits, mbits), y = decode(b.bits, ebits, mbits);
        const std::pair<H, double> cases[] = {{a + b, x + y}, {a - b, x - y}, {a * b, x * y}, {a / b, x / y}};
        for (const auto& [got, exact] : cases) {
            if (std::isnan(exact)) {
                ASSERT_TRUE(got.is_nan()) << x << ", " << y;
                continue;
            }
            // Products and sums of two 16-bit values are exact in double; quotients are rounded
            // once to 53 bits, which cannot move a 16-bit rounding decision.
            const uint16_t want = t.round(exact);
            if ((want & 0x7FFF) == 0 && exact != 0.0) {  // an underflow to zero keeps the sign of the exact result
                ASSERT_EQ(got.bits & 0x7FFF, 0) << x << ", " << y;
                continue;
            }
            if (exact == 0.0) {
                ASSERT_TRUE(got.is_zero()) << x << ", " << y;
            } else {
                ASSERT_EQ(got.bits, want) << x << " op " << y << " exact " << exact;
            }
        }
        if (!std::isnan(x) && !std::isnan(y)) {
            ASSERT_EQ(a < b, x < y);
            ASSERT_EQ(a == b, x == y);
        } else {
            ASSERT_FALSE(a == b);
            ASSERT_FALSE(a < b);
        }
    }
}

TEST(QuantizationFloat16, ArithmeticAndComparison) { check_arithmetic<Float16>(half_table(), 5, 10); }
TEST(QuantizationBFloat16, ArithmeticAndComparison) { check_arithmetic<BFloat16>(bf16_table(), 8, 7); }

// ------------------------------------------------------------------------------------ config

TEST(QuantizationConfig, FactoriesAreValid) {
    for (const auto& c : {QuantConfig(), QuantConfig::fp16(), QuantConfig::bfloat16(), QuantConfig::dynamic_int8(), QuantConfig::static_int8()})
        EXPECT_TRUE(c.is_valid()) << c.validation_error();
    EXPECT_EQ(QuantConfig::static_int8(7).calibration_samples, 7u);
    EXPECT_STREQ(quant_mode_name(QuantMode::DynamicInt8), "DynamicInt8");
}

TEST(QuantizationConfig, RejectsBadConfigs) {
    auto c = QuantConfig::static_int8(0);
    EXPECT_FALSE(c.is_valid());
    EXPECT_NE(c.validation_error().find("calibration"), std::string::npos);
    c = QuantConfig::static_int8();
    c.weight_dtype = DType::Int16;
    EXPECT_NE(c.validation_error().find("8-bit weight_dtype"), std::string::npos);
    expect_validation_error([&] { Quantizer q(c); }, {"invalid QuantConfig", "Int16"});
    c = QuantConfig::dynamic_int8();
    c.activation_dtype = DType::Int8;
    EXPECT_FALSE(c.is_valid());
}

TEST(QuantizationParams, FromMinMaxMatchesTheFormulas) {
    auto p = QuantParams::compute_from_minmax(-1.0f, 2.0f, DType::Int8, true);
    EXPECT_FLOAT_EQ(p.scales[0], 2.0f / 127.0f);
    EXPECT_EQ(p.zero_points[0], 0);
    p = QuantParams::compute_from_minmax(-1.0f, 2.0f, DType::UInt8, false);
    EXPECT_FLOAT_EQ(p.scales[0], 3.0f / 255.0f);
    EXPECT_EQ(p.zero_points[0], 85);  // round(0 - (-1) / (3/255))
    p = QuantParams::compute_from_minmax(0.5f, 2.0f, DType::Int8, false);  // widened to include 0
    EXPECT_FLOAT_EQ(p.scales[0], 2.0f / 255.0f);
    EXPECT_EQ(p.zero_points[0], -128);
    EXPECT_FALSE(p.is_per_channel());
    const auto pc = QuantParams::per_channel({0.1f, 0.2f}, {0, 0}, 1);
    EXPECT_TRUE(pc.is_per_channel());
    EXPECT_EQ(pc.num_channels(), 2u);
    expect_validation_error([] { QuantParams::per_channel({0.1f}, {0, 0}, 0); }, {"1 scales but 2 zero points"});
    expect_validation_error([] { QuantParams::per_channel({0.1f}, {0}, -1); }, {"channel_axis"});
    expect_validation_error([] { QuantParams::per_tensor(0.0f, 0); }, {"scale"});
    expect_validation_error([] { QuantParams::per_tensor(1.0f, 300, DType::UInt8); }, {"zero point 300"});
}

// ------------------------------------------------------------------------------------ graphs

// y = x @ W + b with W [4, 3].
std::shared_ptr<Graph> linear_graph() {
    auto g = std::make_shared<Graph>("linear");
    g->add_input(TensorInfo{"x", DType::Float32, {2, 4}});
    g->add_output(TensorInfo{"y", DType::Float32, {2, 3}});
    std::vector<float> w(12), b = {0.5f, -0.25f, 0.1f};
    for (int i = 0; i < 12; ++i) w[i] = std::sin(0.7f * i) * 0.8f;
    g->add_initializer("W", testing::make_tensor({4, 3}, w));
    g->add_initializer("b", testing::make_tensor({3}, b));
    g->add_node(testing::make_node("MatMul", "mm", {"x", "W"}, {"xw"}));
    g->add_node(testing::make_node("Add", "add", {"xw", "b"}, {"y"}));
    g->opset_imports()[""] = 17;
    return g;
}

std::vector<float> reference_linear(const Graph& g, const std::vector<float>& x) {
    const float* w = g.get_initializer("W").data_ptr<float>();
    const float* b = g.get_initializer("b").data_ptr<float>();
    std::vector<float> y(6);
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 3; ++c) {
            double acc = b[c];
            for (int k = 0; k < 4; ++k) acc += static_cast<double>(x[r * 4 + k]) * w[k * 3 + c];
            y[r * 3 + c] = static_cast<float>(acc);
        }
    return y;
}

TEST(QuantizationGraph, DynamicInt8MatMulIsCloseAndLeavesTheSourceAlone) {
    auto g = linear_graph();
    const size_t nodes_before = g->nodes().size();
    auto cfg = QuantConfig::dynamic_int8();
    cfg.granularity = QuantGranularity::PerChannel;
    auto result = Quantizer(cfg).quantize_dynamic(*g);
    ASSERT_TRUE(result.success);
    EXPECT_EQ(g->nodes().size(), nodes_before);
    EXPECT_EQ(g->get_initializer("W").dtype(), DType::Float32);
    EXPECT_EQ(result.stats.nodes_quantized, 1u);
    bool has_matmul_integer = false;
    for (const auto& n : result.quantized_graph->nodes()) has_matmul_integer |= n->op_type() == "MatMulInteger";
    EXPECT_TRUE(has_matmul_integer);
    const std::vector<float> x = {0.3f, -1.2f, 0.8f, 0.05f, -0.4f, 0.9f, 1.5f, -0.7f};
    InferenceSession session(std::shared_ptr<Graph>(std::move(result.quantized_graph)));
    const auto y = testing::to_vector(session.run({}, {{"x", testing::make_tensor({2, 4}, x)}})[0]);
    const auto ref = reference_linear(*g, x);
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(y[i], ref[i], 0.03f) << i;
}

TEST(QuantizationGraph, StaticInt8NeedsCalibrationParameters) {
    auto g = linear_graph();
    Quantizer q(QuantConfig::static_int8());
    expect_validation_error([&] { q.quantize(*g, GraphQuantInfo{}); }, {"calibration data", "'x'"});
    // Per-channel weight params on an axis the weight does not have.
    Calibrator cal(*g, QuantConfig::static_int8());
    cal.observe({{"x", testing::make_tensor({2, 4}, {0.3f, -1.2f, 0.8f, 0.05f, -0.4f, 0.9f, 1.5f, -0.7f})}});
    auto info = cal.compute_quant_params();
    info.set_params("W", QuantParams::per_channel({0.1f, 0.1f, 0.1f}, {0, 0, 0}, 2));
    expect_validation_error([&] { q.quantize(*g, info); }, {"'W'", "axis 2"});
    EXPECT_EQ(g->get_initializer("W").dtype(), DType::Float32);
}

TEST(QuantizationCalibration, LatticeParamsRepresentGridDataExactly) {
    CalibrationStats grid;
    for (int repeat = 0; repeat < 4; ++repeat)
        for (int k = -16; k <= 16; ++k) grid.update(k / 16.0f);
    auto p = grid.compute_lattice_params(DType::Int8, true);
    ASSERT_TRUE(p.has_value());
    EXPECT_FLOAT_EQ(p->scales[0], 1.0f / 16);
    EXPECT_EQ(p->zero_points[0], 0);
    // Asymmetric int8 over [-1, 1]: 32 steps from zero point -112 (k = -16 -> -128).
    p = grid.compute_lattice_params(DType::Int8, false);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->zero_points[0], -112);
    // Off the grid, or more distinct values than one byte holds: none.
    CalibrationStats off = grid;
    for (int repeat = 0; repeat < 4; ++repeat) off.update(0.123456f);
    EXPECT_FALSE(off.compute_lattice_params(DType::Int8, true).has_value());
    CalibrationStats many;
    for (int k = 0; k < 300; ++k) many.update(static_cast<float>(k));
    EXPECT_TRUE(many.many_values);
    EXPECT_FALSE(many.compute_lattice_params(DType::UInt8, false).has_value());
    // A few values seen once each (continuous data, briefly sampled) lie on some fine grid by
    // chance (0.3 and 0.7 on steps of 0.1): not taken as grid data.
    CalibrationStats few;
    few.update(0.3f);
    few.update(0.7f);
    EXPECT_FALSE(few.compute_lattice_params(DType::UInt8, false).has_value());
    for (int repeat = 0; repeat < 4; ++repeat) few.update(0.3f), few.update(0.7f);
    ASSERT_TRUE(few.compute_lattice_params(DType::UInt8, false).has_value());
    EXPECT_NEAR(few.compute_lattice_params(DType::UInt8, false)->scales[0], 0.1f, 1e-6f);
}

// x [16, 8] -> Gemm(w0) -> Relu -> Gemm(w1) -> y, with an outlier on input feature 0 (which w0
// ignores) in the calibration data: int8 on x loses every other feature, so the accuracy check
// keeps the first Gemm in float.
TEST(QuantizationGraph, QuantizeWithCalibrationKeepsASensitiveFirstLayerInFloat) {
    auto g = std::make_shared<Graph>("outlier");
    g->add_input(TensorInfo{"x", DType::Float32, {16, 8}});
    g->add_output(TensorInfo{"y", DType::Float32, {16, 8}});
    std::vector<float> w0 = testing::random_values(64, 1), w1 = testing::random_values(64, 2);
    for (int c = 0; c < 8; ++c) w0[c] = 0.0f;  // row 0 ([K, N] layout): feature 0 unused
    g->add_initializer("w0", testing::make_tensor({8, 8}, w0));
    g->add_initializer("w1", testing::make_tensor({8, 8}, w1));
    g->add_initializer("b0", testing::make_tensor({8}, std::vector<float>(8, 0.1f)));
    g->add_initializer("b1", testing::make_tensor({8}, std::vector<float>(8, 0.1f)));
    g->add_node(testing::make_node("Gemm", "fc0", {"x", "w0", "b0"}, {"h"}));
    g->add_node(testing::make_node("Relu", "relu0", {"h"}, {"r"}));
    g->add_node(testing::make_node("Gemm", "fc1", {"r", "w1", "b1"}, {"y"}));
    g->opset_imports()[""] = 17;

    int batch = 0;
    auto provider = [&] {
        std::vector<float> x = testing::random_values(128, 10 + batch);
        if (batch++ == 1) x[3 * 8] = 1000.0f;
        return Quantizer::Feed{{"x", testing::make_tensor({16, 8}, x)}};
    };
    const auto result = Quantizer(QuantConfig::static_int8(3)).quantize_with_calibration(*g, provider, 3);
    EXPECT_EQ(result.stats.weights_quantized, 1u);
    const Node* fc0 = nullptr;
    for (const auto& n : result.quantized_graph->nodes())
        if (n->name() == "fc0") fc0 = n.get();
    ASSERT_NE(fc0, nullptr);
    EXPECT_EQ(fc0->inputs()[0], "x");
    EXPECT_EQ(fc0->inputs()[1], "w0");

    // Close to float math on fresh data.
    const std::vector<float> x = testing::random_values(128, 99);
    InferenceSession session(std::make_shared<Graph>(*result.quantized_graph));
    const auto y = testing::to_vector(session.run({}, {{"x", testing::make_tensor({16, 8}, x)}})[0]);
    double dot = 0, yy = 0, rr = 0;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 8; ++c) {
            double out = 0.1;
            for (int m = 0; m < 8; ++m) {
                double h = 0.1;
                for (int k = 0; k < 8; ++k) h += static_cast<double>(x[r * 8 + k]) * w0[k * 8 + m];
                out += std::max(h, 0.0) * w1[m * 8 + c];
            }
            dot += out * y[r * 8 + c];
            rr += out * out;
            yy += static_cast<double>(y[r * 8 + c]) * y[r * 8 + c];
        }
    EXPECT_GE(dot / std::sqrt(rr * yy), Quantizer::kMinOutputCosine);
}

}  // namespace
}  // namespace pyflame_rt
