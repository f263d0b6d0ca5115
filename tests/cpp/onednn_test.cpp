// The oneDNN kernels of the CPU backend against naive loops written from the ONNX definitions.
// Kernels come from register_onednn_kernels' factories, as the CPU backend makes them; without a
// oneDNN CPU engine those are the reference kernels, which the same expectations then cover.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "backends/cpu/onednn_kernels.hpp"
#include "backends/cpu/depthwise.hpp"
#include "backends/cpu/winograd.hpp"
#include "test_util.hpp"

namespace pyflame_rt {
namespace {

using ops::KernelContext;
using ops::KernelInfo;
using ops::OpKernel;
using Shape64 = std::vector<int64_t>;

const std::map<std::string, ops::KernelFactory>& factories() {
    static const std::map<std::string, ops::KernelFactory> table = [] {
        std::map<std::string, ops::KernelFactory> t;
        register_onednn_kernels(t);
        return t;
    }();
    return table;
}

bool have_engine() { return onednn_available(); }

bool is_fast(const OpKernel& kernel) { return is_onednn_kernel(kernel); }

std::unique_ptr<OpKernel> make_kernel(const Node& node, std::vector<const Tensor*> constants = {}) {
    return factories().at("::" + node.op_type())(KernelInfo{node, 17, std::move(constants)});
}

std::vector<Tensor> run(const OpKernel& kernel, const std::vector<const Tensor*>& inputs, size_t outputs = 1) {
    KernelContext ctx;
    ctx.inputs = inputs;
    ctx.outputs.resize(outputs);
    ctx.num_threads = 2;
    kernel.compute(ctx);
    return ctx.outputs;
}

Tensor random_tensor(const Shape64& shape, uint32_t seed) {
    Tensor t(shape, DType::Float32);
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < t.num_elements(); ++i) t.data_ptr<float>()[i] = dist(gen);
    return t;
}

// |actual - expected| <= 1e-4 * max(1, |expected|) everywhere, same shape.
void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
    ASSERT_EQ(actual.shape(), expected.shape()) << what;
    ASSERT_EQ(actual.dtype(), DType::Float32) << what;
    int reported = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        const float a = actual.data_ptr<float>()[i], e = expected.data_ptr<float>()[i];
        if (!(std::fabs(a - e) <= 1e-4f * std::max(1.0f, std::fabs(e))) && reported++ < 5)
            ADD_FAILURE() << what << ": element " << i << " is " << a << ", expected " << e;
    }
}

std::string str(const Shape64& v) { return shape_to_string(v); }

// ---- window geometry from the ONNX definitions (Conv, MaxPool, AveragePool) ----

struct Window {
    Shape64 kernel, strides, dilations, pads;  // pads: begins then ends; empty = defaults
    std::string auto_pad = "NOTSET";
    bool ceil_mode = false;
};

struct Axis {
    int64_t k, s, d, pb, pe, in, out;
};

std::vector<Axis> axes_of(const Window& w, const Shape64& spatial) {
    const size_t r = spatial.size();
    std::vector<Axis> axes;
    for (size_t i = 0; i < r; ++i) {
        Axis a{w.kernel[i], w.strides.empty() ? 1 : w.strides[i], w.dilations.empty() ? 1 : w.dilations[i], 0, 0,
               spatial[i], 0};
        const int64_t extent = (a.k - 1) * a.d + 1;
        if (w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER") {
            a.out = (a.in + a.s - 1) / a.s;
            const int64_t total = std::max<int64_t>(0, (a.out - 1) * a.s + extent - a.in);
            a.pb = w.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
            a.pe = total - a.pb;
        } else {
            if (w.auto_pad == "NOTSET" && !w.pads.empty()) a.pb = w.pads[i], a.pe = w.pads[i + r];
            const int64_t span = a.in + a.pb + a.pe - extent;
            a.out = w.ceil_mode ? (span + a.s - 1) / a.s + 1 : span / a.s + 1;
            if (w.ceil_mode && (a.out - 1) * a.s >= a.in + a.pb) --a.out;  // no window starting in the end pad
        }
        axes.push_back(a);
    }
    return axes;
}

void set_window(Node& node, const Window& w) {
    if (!w.strides.empty()) node.set_attribute("strides", w.strides);
    if (!w.dilations.empty()) node.set_attribute("dilations", w.dilations);
    if (!w.pads.empty()) node.set_attribute("pads", w.pads);
    if (w.auto_pad != "NOTSET") node.set_attribute("auto_pad", w.auto_pad);
    if (w.ceil_mode) node.set_attribute("ceil_mode", int64_t{1});
}

// Visits every output position (flat index) with its spatial coordinates, for 1 to 3 axes.
template <typename F>
void for_each_output(const std::vector<Axis>& axes, F&& f) {
    std::vector<int64_t> o(axes.size(), 0);
    const int64_t total = [&] {
        int64_t t = 1;
        for (const Axis& a : axes) t *= a.out;
        return t;
    }();
    for (int64_t flat = 0; flat < total; ++flat) {
        int64_t rest = flat;
        for (size_t i = axes.size(); i-- > 0;) o[i] = rest % axes[i].out, rest /= axes[i].out;
        f(flat, o);
    }
}

// Visits the taps of the window at output `o`: kernel offsets and input positions (possibly outside).
template <typename F>
void for_each_tap(const std::vector<Axis>& axes, const std::vector<int64_t>& o, F&& f) {
    int64_t taps = 1;
    for (const Axis& a : axes) taps *= a.k;
    std::vector<int64_t> k(axes.size()), pos(axes.size());
    for (int64_t flat = 0; flat < taps; ++flat) {
        int64_t rest = flat;
        for (size_t i = axes.size(); i-- > 0;) {
            k[i] = rest % axes[i].k, rest /= axes[i].k;
            pos[i] = o[i] * axes[i].s - axes[i].pb + k[i] * axes[i].d;
        }
        f(flat, pos);
    }
}

// Flat offset of `pos` in a plane of `axes` inputs, or -1 when outside.
int64_t input_offset(const std::vector<Axis>& axes, const std::vector<int64_t>& pos) {
    int64_t off = 0;
    for (size_t i = 0; i < axes.size(); ++i) {
        if (pos[i] < 0 || pos[i] >= axes[i].in) return -1;
        off = off * axes[i].in + pos[i];
    }
    return off;
}

// ---- Conv ----

Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor* b, const Window& win, int64_t group) {
    const Shape64 spatial(x.shape().begin() + 2, x.shape().end());
    const std::vector<Axis> axes = axes_of(win, spatial);
    const int64_t n_batch = x.shape()[0], channels = x.shape()[1], maps = w.shape()[0], cg = w.shape()[1];
    const int64_t mg = maps / group;
    int64_t in_plane = 1, out_plane = 1, taps = 1;
    Shape64 out_shape{n_batch, maps};
    for (const Axis& a : axes) in_plane *= a.in, out_plane *= a.out, taps *= a.k, out_shape.push_back(a.out);
    Tensor y(out_shape, DType::Float32);
    const float* xd = x.data_ptr<float>();
    const float* wd = w.data_ptr<float>();
    for (int64_t n = 0; n < n_batch; ++n)
        for (int64_t m = 0; m < maps; ++m) {
            const int64_t g = m / mg;
            for_each_output(axes, [&](int64_t o_flat, const std::vector<int64_t>& o) {
                double acc = b ? b->data_ptr<float>()[m] : 0.0;
                for (int64_t c = 0; c < cg; ++c) {
                    const float* plane = xd + (n * channels + g * cg + c) * in_plane;
                    const float* kernel = wd + (m * cg + c) * taps;
                    for_each_tap(axes, o, [&](int64_t t, const std::vector<int64_t>& pos) {
                        const int64_t off = input_offset(axes, pos);
                        if (off >= 0) acc += static_cast<double>(plane[off]) * kernel[t];
                    });
                }
                y.data_ptr<float>()[(n * maps + m) * out_plane + o_flat] = static_cast<float>(acc);
            });
        }
    return y;
}

struct ConvCase {
    Shape64 x, w;
    Window window;
    int64_t group = 1;
    bool bias = true;
    bool constant_weights = true;
};

std::string describe(const ConvCase& c) {
    return "Conv x" + str(c.x) + " w" + str(c.w) + " group " + std::to_string(c.group) + " strides" +
           str(c.window.strides) + " dilations" + str(c.window.dilations) + " pads" + str(c.window.pads) + " " +
           c.window.auto_pad + (c.bias ? " bias" : "") + (c.constant_weights ? " constW" : "");
}

Node conv_node(const ConvCase& c) {
    Node node("Conv", "conv", {"x", "w", c.bias ? "b" : ""}, {"y"});
    set_window(node, c.window);
    node.set_attribute("kernel_shape", Shape64(c.w.begin() + 2, c.w.end()));
    if (c.group != 1) node.set_attribute("group", c.group);
    return node;
}

void check_conv(const ConvCase& c, uint32_t seed) {
    const std::string what = describe(c);
    Window win = c.window;
    win.kernel.assign(c.w.begin() + 2, c.w.end());
    const Tensor x = random_tensor(c.x, seed), w = random_tensor(c.w, seed + 1), b = random_tensor({c.w[0]}, seed + 2);
    const Node node = conv_node(c);
    const auto kernel = make_kernel(node, {nullptr, c.constant_weights ? &w : nullptr, c.bias ? &b : nullptr});
    if (have_engine()) EXPECT_TRUE(is_fast(*kernel)) << what;
    std::vector<const Tensor*> inputs{&x, &w};
    if (c.bias) inputs.push_back(&b);
    expect_close(run(*kernel, inputs)[0], naive_conv(x, w, c.bias ? &b : nullptr, win, c.group), what);
}

TEST(OneDnnConv, MatchesTheOnnxDefinition) {
    const std::vector<ConvCase> cases = {
        {{2, 8, 12, 12}, {16, 8, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}},                         // padded 3x3, batch 2
        {{1, 8, 10, 10}, {8, 2, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}, 4},                       // grouped
        {{2, 16, 9, 9}, {16, 1, 3, 3}, {{}, {2, 2}, {}, {1, 1, 1, 1}}, 16},                  // depthwise, strided
        {{1, 8, 9, 9}, {16, 1, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}, 8, false},                 // depthwise x2
        {{1, 4, 11, 13}, {6, 4, 3, 3}, {{}, {2, 3}, {}, {0, 1, 1, 0}}},                      // asymmetric pads
        {{1, 4, 14, 14}, {8, 4, 3, 3}, {{}, {}, {2, 2}, {2, 2, 2, 2}}},                      // dilated
        {{1, 4, 15, 16}, {8, 4, 3, 3}, {{}, {2, 2}, {2, 1}, {}, "SAME_UPPER"}},              // SAME_UPPER
        {{1, 4, 10, 10}, {8, 4, 4, 4}, {{}, {1, 1}, {}, {}, "SAME_LOWER"}},                  // SAME_LOWER, even kernel
        {{1, 4, 10, 10}, {8, 4, 2, 2}, {{}, {2, 2}, {}, {}, "SAME_UPPER"}},                  // SAME_UPPER, even kernel
        {{2, 4, 9, 7}, {5, 4, 3, 2}, {{}, {}, {}, {}, "VALID"}, 1, false},                   // VALID
        {{2, 32, 7, 7}, {16, 32, 1, 1}, {}, 1, false},                                       // 1x1
        {{1, 16, 8, 8}, {24, 16, 1, 1}, {{}, {2, 2}}},                                       // 1x1 strided
        {{3, 6, 8, 8}, {12, 6, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}, 1, true, false},           // weights not constant
        {{2, 3, 16, 16}, {16, 3, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}},                         // 3 input channels
        {{1, 5, 9, 13}, {7, 5, 5, 5}, {{}, {1, 2}, {}, {1, 2, 2, 1}}},                       // 5x5, odd shapes
        {{2, 64, 14, 14}, {64, 64, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}},                       // a ResNet-like layer
        {{2, 4, 20}, {6, 4, 5}, {{}, {2}, {2}, {2, 2}}},                                     // 1-D
        {{2, 6, 17}, {6, 2, 3}, {{}, {}, {}, {}, "SAME_LOWER"}, 3, false},                   // 1-D grouped
        {{1, 4, 6, 7, 8}, {6, 4, 3, 3, 3}, {{}, {}, {}, {1, 1, 1, 1, 1, 1}}},                // 3-D
        {{1, 4, 5, 6, 7}, {4, 1, 2, 3, 3}, {{}, {1, 2, 2}, {}, {0, 1, 1, 1, 0, 1}}, 4},      // 3-D depthwise
    };
    uint32_t seed = 1;
    for (const ConvCase& c : cases) check_conv(c, seed += 7);
}

TEST(OneDnnConv, ShapeChangesBetweenCalls) {
    const ConvCase c{{1, 8, 12, 12}, {16, 8, 3, 3}, {{}, {2, 2}, {}, {1, 1, 1, 1}}};
    const Tensor w = random_tensor(c.w, 3), b = random_tensor({16}, 4);
    const Node node = conv_node(c);
    const auto kernel = make_kernel(node, {nullptr, &w, &b});
    Window win = c.window;
    win.kernel = {3, 3};
    for (const Shape64& shape : {Shape64{1, 8, 12, 12}, Shape64{3, 8, 12, 12}, Shape64{2, 8, 7, 9}, Shape64{1, 8, 12, 12}}) {
        const Tensor x = random_tensor(shape, static_cast<uint32_t>(shape[0] * 100 + shape[2]));
        expect_close(run(*kernel, {&x, &w, &b})[0], naive_conv(x, w, &b, win, 1), "x" + str(shape));
    }
}

TEST(OneDnnConv, ConstantWeightsArePackedOnce) {
    if (!have_engine()) GTEST_SKIP() << "oneDNN has no CPU engine here: the reference kernels run";
    const ConvCase c{{1, 16, 8, 8}, {32, 16, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}};
    Tensor w = random_tensor(c.w, 5);
    const Tensor x = random_tensor(c.x, 6), b = random_tensor({32}, 7);
    const Node node = conv_node(c);
    const auto kernel = make_kernel(node, {nullptr, &w, &b});
    const Tensor first = run(*kernel, {&x, &w, &b})[0];
    // The kernel reads its packed copy: changing the initializer's memory afterwards (which a
    // session never does) shows that nothing is reordered again from it.
    std::fill_n(w.data_ptr<float>(), w.num_elements(), 0.0f);
    expect_close(run(*kernel, {&x, &w, &b})[0], first, "second run");
}

TEST(OneDnnConv, InvalidInputsGetTheReferenceErrors) {
    const ConvCase c{{1, 4, 8, 8}, {8, 4, 3, 3}, {}};
    const Node node = conv_node(c);
    const auto kernel = make_kernel(node);
    const Tensor x = random_tensor({1, 5, 8, 8}, 1), w = random_tensor(c.w, 2), b = random_tensor({8}, 3);
    EXPECT_THROW(run(*kernel, {&x, &w, &b}), ValidationError);  // 5 channels for 4 x group 1
    const Tensor small = random_tensor({1, 4, 2, 2}, 4);
    EXPECT_THROW(run(*kernel, {&small, &w, &b}), ValidationError);  // window larger than the input
}

TEST(OneDnnConv, ConcurrentCallsWithDifferentBatchSizes) {
    const ConvCase c{{1, 16, 10, 10}, {32, 16, 3, 3}, {{}, {}, {}, {1, 1, 1, 1}}};
    const Tensor w = random_tensor(c.w, 11), b = random_tensor({32}, 12);
    const Node node = conv_node(c);
    const auto kernel = make_kernel(node, {nullptr, &w, &b});
    Window win = c.window;
    win.kernel = {3, 3};
    std::vector<Tensor> xs, expected;
    for (int t = 0; t < 4; ++t) {
        xs.push_back(random_tensor({t + 1, 16, 10, 10}, 20 + t));
        expected.push_back(naive_conv(xs.back(), w, &b, win, 1));
    }
    std::vector<std::vector<Tensor>> results(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 5; ++i) results[t].push_back(run(*kernel, {&xs[t], &w, &b})[0]);
        });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t)
        for (const Tensor& y : results[t]) expect_close(y, expected[t], "thread " + std::to_string(t));
}

// ---- Winograd 3x3 convolutions ----

// Winograd's transforms magnify rounding error by the size of the layer's outputs, not of each
// element: checked against the exact (double) convolution relative to `scale`, the largest
// output before the activation.
void expect_close_to_scale(const Tensor& actual, const Tensor& expected, float scale, float tolerance,
                           const std::string& what) {
    ASSERT_EQ(actual.shape(), expected.shape()) << what;
    int reported = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        const float a = actual.data_ptr<float>()[i], e = expected.data_ptr<float>()[i];
        if (!(std::fabs(a - e) <= tolerance * scale) && reported++ < 5)
            ADD_FAILURE() << what << ": element " << i << " is " << a << ", expected " << e << " (scale " << scale << ")";
    }
}

// One FusedConv with a 3x3 window (Clip's bounds: -0.5, 0.75).
struct FusedConv3x3 {
    Shape64 x;
    int64_t maps, group;
    Shape64 pads;            // begins then ends
    std::string activation;  // "" for none
    bool residual, bias;
    int64_t stride;
};

// Runs `c` on the kernel the CPU backend makes for it and checks it against the exact
// convolution (+ residual, activation): per element, or with `to_scale` within 1e-5 of the
// largest output before the activation (Winograd's error grows with the layer, not the element).
// Returns the output shape.
Shape64 check_fused_conv(const FusedConv3x3& c, bool to_scale, uint32_t& seed, const std::string& what) {
    Window win;
    win.kernel = {3, 3};
    win.pads = c.pads;
    win.strides = {c.stride, c.stride};
    const Tensor x = random_tensor(c.x, seed++), w = random_tensor({c.maps, c.x[1] / c.group, 3, 3}, seed++),
                 b = random_tensor({c.maps}, seed++);
    Tensor expected = naive_conv(x, w, c.bias ? &b : nullptr, win, c.group);
    Node node("FusedConv", "conv", {"x", "w", c.bias ? "b" : "", c.residual ? "z" : ""}, {"y"});
    node.set_domain("com.pyflame");
    node.set_attribute("kernel_shape", Shape64{3, 3});
    node.set_attribute("group", c.group);
    node.set_attribute("pads", c.pads);
    node.set_attribute("strides", Shape64{c.stride, c.stride});
    if (!c.activation.empty()) node.set_attribute("activation", c.activation);
    if (c.activation == "Clip") node.set_attribute("activation_params", std::vector<double>{-0.5, 0.75});
    const auto kernel = factories().at("com.pyflame::FusedConv")(KernelInfo{node, 17, {nullptr, &w, nullptr, nullptr}});
    const Tensor z = random_tensor(expected.shape(), seed++);
    std::vector<const Tensor*> inputs{&x, &w, c.bias ? &b : nullptr};
    if (c.residual) inputs.push_back(&z);
    float* e = expected.data_ptr<float>();
    float scale = 0;
    for (int64_t i = 0; i < expected.num_elements(); ++i) {
        if (c.residual) e[i] += z.data_ptr<float>()[i];
        scale = std::max(scale, std::fabs(e[i]));
        if (c.activation == "Relu") e[i] = std::max(e[i], 0.0f);
        if (c.activation == "Clip") e[i] = std::min(std::max(e[i], -0.5f), 0.75f);
    }
    const Tensor y = run(*kernel, inputs)[0];
    if (to_scale) expect_close_to_scale(y, expected, scale, 1e-5f, what);
    else expect_close(y, expected, what);
    return expected.shape();
}

// The sizes the hand-written kernels' geometries start from (pads as the window's begins).
onednn::Conv2dSizes sizes_of(const FusedConv3x3& c, const Shape64& out) {
    onednn::Conv2dSizes s;
    s.batch = c.x[0], s.channels = c.x[1], s.height = c.x[2], s.width = c.x[3];
    s.out_height = out[2], s.out_width = out[3], s.pad_top = c.pads[0], s.pad_left = c.pads[1];
    return s;
}

std::string describe(const FusedConv3x3& c) {
    return " x" + str(c.x) + " maps " + std::to_string(c.maps) + " group " + std::to_string(c.group) + " stride " +
           std::to_string(c.stride) + " pads" + str(c.pads) + " " + c.activation + (c.residual ? " residual" : "") +
           (c.bias ? "" : " no bias");
}

// FusedConv (residual and activation fused) on both paths: Winograd (3x3, stride 1, 16 tiles or
// more) and oneDNN's direct kernel (a binary-add post-op reading the residual).
TEST(OneDnnConv, FusedConvMatchesTheOnnxDefinition) {
    if (!have_engine()) GTEST_SKIP() << "oneDNN has no CPU engine here: the reference kernels run";
    struct Case {
        FusedConv3x3 conv;
        bool winograd;  // whether the kernel runs it as a Winograd convolution
    };
    const std::vector<Case> cases = {
        {{{1, 64, 16, 16}, 64, 1, {1, 1, 1, 1}, "Relu", false, true, 1}, true},   // a ResNet layer: 16 tiles
        {{{3, 16, 13, 11}, 48, 1, {1, 1, 1, 1}, "", false, true, 1}, true},       // partial tiles at both edges
        {{{2, 32, 17, 18}, 32, 1, {0, 2, 1, 0}, "", true, true, 1}, true},        // asymmetric pads, residual
        {{{2, 32, 18, 20}, 16, 1, {0, 0, 0, 0}, "Clip", true, true, 1}, true},    // no pads (VALID), Clip
        {{{1, 128, 14, 14}, 128, 1, {1, 1, 1, 1}, "Relu", true, false, 1}, true},  // residual + Relu, no bias
        {{{1, 64, 7, 7}, 64, 1, {1, 1, 1, 1}, "Relu", true, true, 1}, false},     // 4 tiles: direct
        {{{2, 32, 14, 14}, 64, 1, {1, 1, 1, 1}, "Relu", true, true, 2}, false},   // strided: direct
        {{{1, 12, 9, 9}, 20, 1, {1, 1, 1, 1}, "Clip", true, true, 1}, false},     // 12 channels: direct
    };
    uint32_t seed = 300;
    for (const Case& c : cases) {
        const std::string what = std::string(c.winograd ? "Winograd" : "direct") + describe(c.conv);
        const Shape64 out = check_fused_conv(c.conv, true, seed, what);
        // The geometry takes the path the case is meant for.
        onednn::WinogradGeometry g;
        static_cast<onednn::Conv2dSizes&>(g) = sizes_of(c.conv, out);
        g.maps = c.conv.maps;
        if (c.conv.stride == 1) EXPECT_EQ(onednn::WinogradConv::pays(g), c.winograd) << what;
    }
}

// Depthwise 3x3 FusedConv (group = channels = maps): the hand-written channels-last kernel for
// 16k channels at stride 1 or 2, oneDNN's for the rest. Widths of 1 to 23 cover the edge
// columns, the 4-column blocks and the columns left over.
TEST(OneDnnConv, DepthwiseConvMatchesTheOnnxDefinition) {
    if (!have_engine()) GTEST_SKIP() << "oneDNN has no CPU engine here: the reference kernels run";
    struct Case {
        FusedConv3x3 conv;
        bool hand_written;  // whether DepthwiseConv runs it (else oneDNN)
    };
    const std::vector<Case> cases = {
        {{{1, 32, 12, 12}, 32, 32, {1, 1, 1, 1}, "Clip", false, true, 1}, true},   // MobileNet's
        {{{2, 48, 9, 23}, 48, 48, {1, 1, 1, 1}, "Clip", false, true, 2}, true},    // strided, odd sizes
        {{{1, 16, 5, 1}, 16, 16, {1, 1, 1, 1}, "Relu", false, true, 1}, true},     // one column: all edge
        {{{3, 16, 7, 6}, 16, 16, {0, 0, 1, 1}, "", true, true, 2}, true},          // TF-style SAME pads, residual
        {{{1, 64, 6, 10}, 64, 64, {0, 2, 2, 0}, "Relu", true, false, 1}, true},    // asymmetric pads, no bias
        {{{2, 16, 8, 9}, 16, 16, {0, 0, 0, 0}, "", false, true, 1}, true},         // VALID
        {{{1, 24, 8, 8}, 24, 24, {1, 1, 1, 1}, "Clip", false, true, 1}, false},    // 24 channels: oneDNN
        {{{1, 16, 9, 9}, 16, 16, {1, 1, 1, 1}, "Relu", false, true, 3}, false},    // stride 3: oneDNN
    };
    uint32_t seed = 400;
    for (const Case& c : cases) {
        const std::string what = std::string(c.hand_written ? "hand-written" : "oneDNN") + describe(c.conv);
        const Shape64 out = check_fused_conv(c.conv, false, seed, what);
        onednn::DepthwiseGeometry g;
        static_cast<onednn::Conv2dSizes&>(g) = sizes_of(c.conv, out);
        g.stride = c.conv.stride;
        EXPECT_EQ(onednn::DepthwiseConv::handles(g), c.hand_written) << what;
    }
}

TEST(OneDnnConv, WinogradLeavesHugeTransformsToTheDirectKernel) {
    onednn::WinogradGeometry g;
    g.batch = 1, g.channels = 64, g.maps = 64, g.height = g.out_height = 224, g.width = g.out_width = 224;
    EXPECT_TRUE(onednn::WinogradConv::pays(g));  // 3136 tiles: 29 MiB transformed
    g.batch = 4;
    EXPECT_FALSE(onednn::WinogradConv::pays(g));  // 116 MiB: over the 64 MiB bound
    g.batch = 1, g.channels = g.maps = 512, g.height = g.out_height = g.width = g.out_width = 28;
    EXPECT_FALSE(onednn::WinogradConv::pays(g));  // the widest layers keep the direct kernel
}

// ---- MatMul ----

Tensor naive_matmul(const Tensor& a, const Tensor& b) {
    Shape64 as = a.shape(), bs = b.shape();
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
    const size_t rank = std::max(as.size(), bs.size());
    as.insert(as.begin(), rank - as.size(), 1);
    bs.insert(bs.begin(), rank - bs.size(), 1);
    Shape64 batch;
    for (size_t i = 0; i + 2 < rank; ++i) batch.push_back(std::max(as[i], bs[i]));
    Shape64 out = batch;
    if (a.ndim() > 1) out.push_back(m);
    if (b.ndim() > 1) out.push_back(n);
    Tensor y(out, DType::Float32);
    const int64_t count = num_elements_of(batch);
    for (int64_t t = 0; t < count; ++t) {
        int64_t rest = t, a_off = 0, b_off = 0, a_stride = 1, b_stride = 1;
        for (size_t i = batch.size(); i-- > 0;) {  // broadcast batch index into each operand
            const int64_t idx = rest % batch[i];
            rest /= batch[i];
            a_off += (as[i] == 1 ? 0 : idx) * a_stride;
            b_off += (bs[i] == 1 ? 0 : idx) * b_stride;
            a_stride *= as[i];
            b_stride *= bs[i];
        }
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (int64_t p = 0; p < k; ++p)
                    acc += static_cast<double>(a.data_ptr<float>()[a_off * m * k + i * k + p]) *
                           b.data_ptr<float>()[b_off * k * n + p * n + j];
                y.data_ptr<float>()[(t * m + i) * n + j] = static_cast<float>(acc);
            }
    }
    return y;
}

TEST(OneDnnMatMul, MatchesNumpySemantics) {
    const std::vector<std::pair<Shape64, Shape64>> cases = {
        {{64, 48}, {48, 32}},        {{1, 7}, {7, 5}},           {{7}, {7, 5}},          {{5, 7}, {7}},
        {{9}, {9}},                  {{2, 3, 5, 4}, {4, 6}},     {{3, 5, 4}, {2, 1, 4, 6}}, {{1, 5, 4}, {3, 4, 6}},
        {{5, 4}, {3, 4, 6}},         {{2, 1, 5, 4}, {1, 3, 4, 6}}, {{4, 2, 8}, {4, 8, 3}}, {{6}, {2, 6, 3}},
        {{2, 3, 4}, {4}},            {{130, 70}, {70, 90}},
    };
    uint32_t seed = 100;
    for (const auto& [as, bs] : cases)
        for (bool constant_b : {true, false}) {
            const std::string what = "MatMul " + str(as) + " x " + str(bs) + (constant_b ? " constB" : "");
            const Tensor a = random_tensor(as, ++seed), b = random_tensor(bs, ++seed);
            const Node node("MatMul", "mm", {"a", "b"}, {"y"});
            const auto kernel = make_kernel(node, {nullptr, constant_b ? &b : nullptr});
            if (have_engine()) EXPECT_TRUE(is_fast(*kernel)) << what;
            expect_close(run(*kernel, {&a, &b})[0], naive_matmul(a, b), what);
        }
}

TEST(OneDnnMatMul, ConcurrentCallsAndShapeChanges) {
    const Tensor b = random_tensor({32, 24}, 7);
    const Node node("MatMul", "mm", {"a", "b"}, {"y"});
    const auto kernel = make_kernel(node, {nullptr, &b});
    std::vector<Tensor> as, expected;
    for (int t = 0; t < 4; ++t) {
        as.push_back(random_tensor(t % 2 ? Shape64{t + 1, 5, 32} : Shape64{t * 3 + 1, 32}, 30 + t));
        expected.push_back(naive_matmul(as.back(), b));
    }
    std::vector<std::vector<Tensor>> results(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 5; ++i) results[t].push_back(run(*kernel, {&as[t], &b})[0]);
        });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t)
        for (const Tensor& y : results[t]) expect_close(y, expected[t], "thread " + std::to_string(t));
}

TEST(OneDnnMatMul, OtherDtypesGoToTheReferenceKernel) {
    Tensor a({2, 3}, DType::Float64), b({3, 2}, DType::Float64);
    for (int i = 0; i < 6; ++i) a.data_ptr<double>()[i] = i, b.data_ptr<double>()[i] = 1.0 - i;
    const Node node("MatMul", "mm", {"a", "b"}, {"y"});
    const Tensor y = run(*make_kernel(node), {&a, &b})[0];
    ASSERT_EQ(y.dtype(), DType::Float64);
    EXPECT_DOUBLE_EQ(y.data_ptr<double>()[0], 0 * 1 + 1 * -1 + 2 * -3);  // row 0 . column 0
}

// ---- Gemm ----

Tensor naive_gemm(const Tensor& a, const Tensor& b, const Tensor* c, bool ta, bool tb, float alpha, float beta) {
    const int64_t m = a.shape()[ta ? 1 : 0], k = a.shape()[ta ? 0 : 1], n = b.shape()[tb ? 0 : 1];
    Tensor y({m, n}, DType::Float32);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t p = 0; p < k; ++p)
                acc += static_cast<double>(a.data_ptr<float>()[ta ? p * m + i : i * k + p]) *
                       b.data_ptr<float>()[tb ? j * k + p : p * n + j];
            double cv = 0;
            if (c) {  // unidirectional broadcast of C to (M, N)
                const Shape64& cs = c->shape();
                const int64_t rows = cs.size() == 2 ? cs[0] : 1, cols = cs.empty() ? 1 : cs.back();
                cv = c->data_ptr<float>()[(rows == 1 ? 0 : i) * cols + (cols == 1 ? 0 : j)];
            }
            y.data_ptr<float>()[i * n + j] = static_cast<float>(alpha * acc + beta * cv);
        }
    return y;
}

TEST(OneDnnGemm, AllTransposesScalesAndBiasShapes) {
    const int64_t m = 7, k = 5, n = 6;
    const std::vector<Shape64> c_shapes = {{n}, {1, n}, {m, n}, {m, 1}, {1}, {1, 1}, {}};
    uint32_t seed = 500;
    int index = 0;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
            for (float alpha : {1.0f, 0.5f})
                for (float beta : {1.0f, 0.0f, 2.5f})
                    for (int ci = -1; ci < static_cast<int>(c_shapes.size()); ++ci) {
                        const bool constants = ++index % 2 == 0;  // constant B and C every other case
                        const Tensor a = random_tensor(ta ? Shape64{k, m} : Shape64{m, k}, ++seed);
                        const Tensor b = random_tensor(tb ? Shape64{n, k} : Shape64{k, n}, ++seed);
                        const Tensor c = random_tensor(ci < 0 ? Shape64{n} : c_shapes[ci], ++seed);
                        const std::string what = "Gemm transA=" + std::to_string(ta) + " transB=" + std::to_string(tb) +
                                                 " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) +
                                                 " C" + (ci < 0 ? std::string(" none") : str(c.shape())) +
                                                 (constants ? " constants" : "");
                        Node node("Gemm", "gemm", {"a", "b", ci < 0 ? "" : "c"}, {"y"});
                        node.set_attribute("transA", int64_t{ta});
                        node.set_attribute("transB", int64_t{tb});
                        node.set_attribute("alpha", double{alpha});
                        node.set_attribute("beta", double{beta});
                        const auto kernel = make_kernel(
                            node, {nullptr, constants ? &b : nullptr, constants && ci >= 0 ? &c : nullptr});
                        if (have_engine()) EXPECT_TRUE(is_fast(*kernel)) << what;
                        std::vector<const Tensor*> inputs{&a, &b};
                        if (ci >= 0) inputs.push_back(&c);
                        expect_close(run(*kernel, inputs)[0],
                                     naive_gemm(a, b, ci < 0 ? nullptr : &c, ta, tb, alpha, beta), what);
                    }
}

TEST(OneDnnGemm, LinearLayerSizesAndZeroAlpha) {
    const Tensor a = random_tensor({8, 512}, 1), b = random_tensor({256, 512}, 2), c = random_tensor({256}, 3);
    Node node("Gemm", "fc", {"a", "b", "c"}, {"y"});
    node.set_attribute("transB", int64_t{1});
    const auto kernel = make_kernel(node, {nullptr, &b, &c});
    expect_close(run(*kernel, {&a, &b, &c})[0], naive_gemm(a, b, &c, false, true, 1.0f, 1.0f), "Linear 512->256");

    node.set_attribute("alpha", 0.0);  // Y = beta * C: left to the reference kernel
    node.set_attribute("beta", 2.0);
    const auto zero = make_kernel(node, {nullptr, &b, &c});
    EXPECT_FALSE(is_fast(*zero));
    expect_close(run(*zero, {&a, &b, &c})[0], naive_gemm(a, b, &c, false, true, 0.0f, 2.0f), "alpha=0");
}

// ---- pooling ----

enum class PoolKind { Max, AvgExclude, AvgInclude };

Tensor naive_pool(const Tensor& x, const Window& win, PoolKind kind) {
    const Shape64 spatial(x.shape().begin() + 2, x.shape().end());
    const std::vector<Axis> axes = axes_of(win, spatial);
    int64_t in_plane = 1, out_plane = 1;
    Shape64 out_shape{x.shape()[0], x.shape()[1]};
    for (const Axis& a : axes) in_plane *= a.in, out_plane *= a.out, out_shape.push_back(a.out);
    Tensor y(out_shape, DType::Float32);
    for (int64_t p = 0; p < x.shape()[0] * x.shape()[1]; ++p) {
        const float* plane = x.data_ptr<float>() + p * in_plane;
        for_each_output(axes, [&](int64_t o_flat, const std::vector<int64_t>& o) {
            double sum = 0;
            float best = -INFINITY;
            int64_t count = 0, padded = 0;
            for_each_tap(axes, o, [&](int64_t, const std::vector<int64_t>& pos) {
                const int64_t off = input_offset(axes, pos);
                bool in_pads = true;  // count_include_pad counts the explicit pads, not ceil_mode's overhang
                for (size_t i = 0; i < axes.size(); ++i) in_pads = in_pads && pos[i] < axes[i].in + axes[i].pe;
                padded += in_pads;
                if (off < 0) return;
                ++count;
                sum += plane[off];
                best = std::max(best, plane[off]);
            });
            float& out = y.data_ptr<float>()[p * out_plane + o_flat];
            out = kind == PoolKind::Max ? best : static_cast<float>(sum / (kind == PoolKind::AvgInclude ? padded : count));
        });
    }
    return y;
}

struct PoolCase {
    Shape64 x;
    Window window;
};

TEST(OneDnnPool, MaxAndAverageMatchTheOnnxDefinition) {
    const std::vector<PoolCase> cases = {
        {{2, 3, 8, 8}, {{2, 2}, {2, 2}}},
        {{1, 4, 9, 9}, {{3, 3}, {2, 2}, {}, {1, 1, 1, 1}}},
        {{1, 4, 8, 8}, {{3, 3}, {2, 2}, {}, {}, "NOTSET", true}},           // ceil_mode adds a window
        {{1, 2, 10, 7}, {{3, 2}, {2, 2}, {}, {1, 0, 1, 1}, "NOTSET", true}},
        {{1, 2, 11, 11}, {{3, 3}, {2, 2}, {2, 2}, {1, 1, 1, 1}}},            // dilated
        {{1, 3, 7, 10}, {{3, 3}, {2, 3}, {}, {}, "SAME_UPPER"}},
        {{1, 3, 7, 10}, {{2, 2}, {2, 2}, {}, {}, "SAME_LOWER"}},
        {{2, 3, 15}, {{3}, {2}, {}, {1, 1}}},                               // 1-D
        {{1, 2, 5, 6, 7}, {{2, 3, 2}, {2, 1, 2}, {}, {0, 1, 0, 1, 1, 1}}},  // 3-D
    };
    uint32_t seed = 900;
    for (const PoolCase& c : cases)
        for (PoolKind kind : {PoolKind::Max, PoolKind::AvgExclude, PoolKind::AvgInclude}) {
            const std::string op = kind == PoolKind::Max ? "MaxPool" : "AveragePool";
            const std::string what = op + (kind == PoolKind::AvgInclude ? " count_include_pad" : "") + " x" +
                                     str(c.x) + " k" + str(c.window.kernel) + " s" + str(c.window.strides) + " d" +
                                     str(c.window.dilations) + " p" + str(c.window.pads) + " " + c.window.auto_pad +
                                     (c.window.ceil_mode ? " ceil" : "");
            Node node(op, "pool", {"x"}, {"y"});
            node.set_attribute("kernel_shape", c.window.kernel);
            set_window(node, c.window);
            if (kind == PoolKind::AvgInclude) node.set_attribute("count_include_pad", int64_t{1});
            const auto kernel = make_kernel(node);
            if (have_engine()) EXPECT_TRUE(is_fast(*kernel)) << what;
            const Tensor x = random_tensor(c.x, ++seed);
            expect_close(run(*kernel, {&x})[0], naive_pool(x, c.window, kind), what);
        }
}

TEST(OneDnnPool, MaxPoolIndicesStayWithTheReferenceKernel) {
    Node node("MaxPool", "pool", {"x"}, {"y", "indices"});
    node.set_attribute("kernel_shape", Shape64{2, 2});
    const auto kernel = make_kernel(node);
    EXPECT_FALSE(is_fast(*kernel));
    const Tensor x = random_tensor({1, 1, 4, 4}, 1);
    const auto outputs = run(*kernel, {&x}, 2);
    EXPECT_EQ(outputs[1].dtype(), DType::Int64);
}

TEST(OneDnnPool, GlobalAveragePool) {
    uint32_t seed = 1000;
    for (const Shape64& shape : {Shape64{2, 5, 7, 9}, Shape64{1, 8, 33}, Shape64{1, 3, 4, 5, 6}, Shape64{4, 64, 7, 7}}) {
        const Tensor x = random_tensor(shape, ++seed);
        const Node node("GlobalAveragePool", "gap", {"x"}, {"y"});
        const auto kernel = make_kernel(node);
        Window win;
        win.kernel.assign(shape.begin() + 2, shape.end());
        expect_close(run(*kernel, {&x})[0], naive_pool(x, win, PoolKind::AvgExclude), "GlobalAveragePool x" + str(shape));
    }
}

}  // namespace
}  // namespace pyflame_rt
