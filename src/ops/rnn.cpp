// Recurrent layers RNN, GRU and LSTM (float32 and float64): forward, reverse and bidirectional,
// layouts 0 (time-major) and 1 (batch-major), sequence_lens, initial states, clip, the
// activations list with activation_alpha/beta, GRU linear_before_reset and LSTM peepholes and
// input_forget. Per step: one GEMM of the previous hidden state with R (the input projection
// X*W^T + Wb of every step is one GEMM up front), then the gate arithmetic.
#include <algorithm>
#include <cctype>
#include <cmath>

#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

enum class Cell { RNN, GRU, LSTM };

int gates_of(Cell c) { return c == Cell::RNN ? 1 : c == Cell::GRU ? 3 : 4; }
size_t activations_per_direction(Cell c) { return c == Cell::RNN ? 1 : c == Cell::GRU ? 2 : 3; }

struct Activation {
    enum Kind { Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus };
    Kind kind = Tanh;
    double alpha = 0, beta = 0;

    template <typename T>
    T operator()(T x) const {
        switch (kind) {
            case Relu: return std::max<T>(x, 0);
            case Tanh: return std::tanh(x);
            case Sigmoid: return T(1) / (T(1) + std::exp(-x));
            case Affine: return T(alpha) * x + T(beta);
            case LeakyRelu: return x >= 0 ? x : T(alpha) * x;
            case ThresholdedRelu: return x > T(alpha) ? x : T(0);
            case ScaledTanh: return T(alpha) * std::tanh(T(beta) * x);
            case HardSigmoid: return std::clamp(T(alpha) * x + T(beta), T(0), T(1));
            case Elu: return x >= 0 ? x : T(alpha) * (std::exp(x) - T(1));
            case Softsign: return x / (T(1) + std::abs(x));
            case Softplus: return std::log1p(std::exp(x));
        }
        return x;
    }
};

// Parses `activations` with activation_alpha/beta, consumed in order by the activations that
// take them (defaults as in ONNX Runtime when the lists run out).
std::vector<Activation> parse_activations(const Node& node, Cell cell, int directions) {
    static const std::vector<std::string> defaults[] = {{"Tanh"}, {"Sigmoid", "Tanh"}, {"Sigmoid", "Tanh", "Tanh"}};
    const size_t per_dir = activations_per_direction(cell);
    std::vector<std::string> names = node.get_attribute<std::vector<std::string>>("activations", {});
    const std::vector<double> alphas = node.get_attribute<std::vector<double>>("activation_alpha", {});
    const std::vector<double> betas = node.get_attribute<std::vector<double>>("activation_beta", {});
    if (names.empty()) names = defaults[static_cast<int>(cell)];
    if (names.size() == per_dir && directions == 2) {  // one list for both directions
        const std::vector<std::string> once = names;
        names.insert(names.end(), once.begin(), once.end());
    }
    if (names.size() != per_dir * directions)
        fail_node(node, "attribute 'activations' has " + std::to_string(names.size()) + " entries; expected " +
                            std::to_string(per_dir * directions) + " (" + std::to_string(per_dir) + " per direction)");
    struct Spec {
        const char* name;
        Activation::Kind kind;
        int params;  // 0: none, 1: alpha, 2: alpha and beta
        double alpha, beta;
    };
    static const Spec specs[] = {
        {"relu", Activation::Relu, 0, 0, 0},           {"tanh", Activation::Tanh, 0, 0, 0},
        {"sigmoid", Activation::Sigmoid, 0, 0, 0},     {"affine", Activation::Affine, 2, 1, 0},
        {"leakyrelu", Activation::LeakyRelu, 1, 0.01, 0}, {"thresholdedrelu", Activation::ThresholdedRelu, 1, 1, 0},
        {"scaledtanh", Activation::ScaledTanh, 2, 1, 1}, {"hardsigmoid", Activation::HardSigmoid, 2, 0.2, 0.5},
        {"elu", Activation::Elu, 1, 1, 0},             {"softsign", Activation::Softsign, 0, 0, 0},
        {"softplus", Activation::Softplus, 0, 0, 0},
    };
    std::vector<Activation> out;
    size_t ai = 0, bi = 0;
    for (const std::string& name : names) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        const Spec* spec = nullptr;
        for (const Spec& s : specs)
            if (lower == s.name) spec = &s;
        if (!spec) fail_node(node, "activation '" + name + "' is not supported");
        Activation a{spec->kind, spec->alpha, spec->beta};
        if (spec->params >= 1 && ai < alphas.size()) a.alpha = alphas[ai++];
        if (spec->params >= 2 && bi < betas.size()) a.beta = betas[bi++];
        out.push_back(a);
    }
    return out;
}

struct RnnAttributes {
    Cell cell = Cell::RNN;
    int64_t hidden = 0;  // 0: from R's shape
    int directions = 1;
    bool reverse_only = false;
    int64_t layout = 0;
    std::optional<double> clip;
    std::vector<Activation> activations;
    bool linear_before_reset = false, input_forget = false;

    RnnAttributes(const Node& node, Cell c) : cell(c) {
        hidden = node.get_attribute<int64_t>("hidden_size", 0);
        if (hidden < 0) fail_node(node, "hidden_size must be positive");
        const std::string direction = node.get_attribute<std::string>("direction", "forward");
        if (direction == "bidirectional") directions = 2;
        else if (direction == "reverse") reverse_only = true;
        else if (direction != "forward")
            fail_node(node, "direction '" + direction + "' is not forward, reverse or bidirectional");
        layout = node.get_attribute<int64_t>("layout", 0);
        if (layout != 0 && layout != 1) fail_node(node, "layout must be 0 or 1");
        if (node.has_attribute("clip")) {
            clip = node.get_attribute<double>("clip");
            if (*clip <= 0) fail_node(node, "clip must be positive");
        }
        activations = parse_activations(node, c, directions);
        linear_before_reset = node.get_attribute<int64_t>("linear_before_reset", 0) != 0;
        input_forget = node.get_attribute<int64_t>("input_forget", 0) != 0;
    }
};

class RnnKernel final : public NodeKernel {
public:
    RnnKernel(const Node& node, Cell cell) : NodeKernel(node), a_(node, cell) {}

    void compute(KernelContext& ctx) const override {
        const DType dt = ctx.input(0).dtype();
        if (dt == DType::Float32) run<float>(ctx);
        else if (dt == DType::Float64) run<double>(ctx);
        else fail("dtype " + dtype_to_string(dt) + " is not supported (float32 and float64 only)");
    }

private:
    // A required input's data after dtype and shape checks.
    template <typename T>
    const T* checked(const KernelContext& ctx, size_t i, const char* name, const std::vector<int64_t>& shape) const {
        const Tensor& t = ctx.input(i);
        if (t.dtype() != ctx.input(0).dtype())
            fail(std::string(name) + " is " + dtype_to_string(t.dtype()) + "; X is " + dtype_to_string(ctx.input(0).dtype()));
        if (t.shape() != shape)
            fail(std::string(name) + " has shape " + shape_to_string(t.shape()) + "; expected " + shape_to_string(shape));
        return t.data_ptr<T>();
    }

    template <typename T>
    void run(KernelContext& ctx) const {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 3) fail("X has shape " + shape_to_string(x.shape()) + "; expected rank 3");
        const int64_t seq = x.shape()[a_.layout == 0 ? 0 : 1], batch = x.shape()[a_.layout == 0 ? 1 : 0];
        const int64_t input = x.shape()[2];
        const int64_t dirs = a_.directions, G = gates_of(a_.cell);
        const Tensor& r_t = ctx.input(2);
        const int64_t H = a_.hidden ? a_.hidden : (r_t.ndim() == 3 ? r_t.shape()[2] : 0);
        if (H <= 0) fail("cannot tell hidden_size: give the attribute or a rank-3 R");
        const T* W = checked<T>(ctx, 1, "W", {dirs, G * H, input});
        const T* R = checked<T>(ctx, 2, "R", {dirs, G * H, H});
        const T* B = ctx.has_input(3) ? checked<T>(ctx, 3, "B", {dirs, 2 * G * H}) : nullptr;
        std::vector<int64_t> lens(static_cast<size_t>(batch), seq);
        if (ctx.has_input(4)) {
            const Tensor& sl = ctx.input(4);
            if (sl.shape() != std::vector<int64_t>{batch})
                fail("sequence_lens has shape " + shape_to_string(sl.shape()) + "; expected [" + std::to_string(batch) + "]");
            if (sl.dtype() != DType::Int32 && sl.dtype() != DType::Int64)
                fail("sequence_lens is " + dtype_to_string(sl.dtype()) + "; expected Int32");
            for (int64_t b = 0; b < batch; ++b) {
                lens[b] = sl.dtype() == DType::Int32 ? sl.data_ptr<int32_t>()[b] : sl.data_ptr<int64_t>()[b];
                if (lens[b] < 0 || lens[b] > seq)
                    fail("sequence_lens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                         " is outside [0, " + std::to_string(seq) + "]");
            }
        }
        const std::vector<int64_t> state_shape =
            a_.layout == 0 ? std::vector<int64_t>{dirs, batch, H} : std::vector<int64_t>{batch, dirs, H};
        const T* h0 = ctx.has_input(5) ? checked<T>(ctx, 5, "initial_h", state_shape) : nullptr;
        const T* c0 = a_.cell == Cell::LSTM && ctx.has_input(6) ? checked<T>(ctx, 6, "initial_c", state_shape) : nullptr;
        const T* P = a_.cell == Cell::LSTM && ctx.has_input(7) ? checked<T>(ctx, 7, "P", {dirs, 3 * H}) : nullptr;

        // X as [seq, batch, input].
        std::vector<T> xs(static_cast<size_t>(seq * batch * input));
        const T* xd = x.data_ptr<T>();
        for (int64_t t = 0; t < seq; ++t)
            for (int64_t b = 0; b < batch; ++b) {
                const T* src = xd + (a_.layout == 0 ? t * batch + b : b * seq + t) * input;
                std::copy(src, src + input, xs.data() + (t * batch + b) * input);
            }

        // Outputs in time-major order, [seq, dirs, batch, H] and [dirs, batch, H]; relaid at the end.
        std::vector<T> y(static_cast<size_t>(seq * dirs * batch * H), T(0));
        std::vector<T> yh(static_cast<size_t>(dirs * batch * H)), yc(yh.size());
        for (int64_t d = 0; d < dirs; ++d) {
            std::vector<T> h(static_cast<size_t>(batch * H), T(0)), c(h.size(), T(0));
            for (int64_t b = 0; b < batch; ++b) {
                const int64_t src = (a_.layout == 0 ? d * batch + b : b * dirs + d) * H;
                if (h0) std::copy(h0 + src, h0 + src + H, h.begin() + b * H);
                if (c0) std::copy(c0 + src, c0 + src + H, c.begin() + b * H);
            }
            run_direction<T>(d, xs, seq, batch, input, H, lens, W + d * G * H * input, R + d * G * H * H,
                             B ? B + d * 2 * G * H : nullptr, P ? P + d * 3 * H : nullptr, h, c, y, ctx.num_threads);
            std::copy(h.begin(), h.end(), yh.begin() + d * batch * H);
            std::copy(c.begin(), c.end(), yc.begin() + d * batch * H);
        }

        const DType dt = x.dtype();
        {
            Tensor out(a_.layout == 0 ? std::vector<int64_t>{seq, dirs, batch, H} : std::vector<int64_t>{batch, seq, dirs, H}, dt);
            T* o = out.data_ptr<T>();
            for (int64_t t = 0; t < seq; ++t)
                for (int64_t d = 0; d < dirs; ++d)
                    for (int64_t b = 0; b < batch; ++b) {
                        const T* src = y.data() + ((t * dirs + d) * batch + b) * H;
                        std::copy(src, src + H, o + (a_.layout == 0 ? (t * dirs + d) * batch + b : (b * seq + t) * dirs + d) * H);
                    }
            ctx.outputs[0] = std::move(out);
        }
        for (size_t k = 1; k < ctx.outputs.size() && k < 3; ++k) {
            const std::vector<T>& src = k == 1 ? yh : yc;
            Tensor out(state_shape, dt);
            T* o = out.data_ptr<T>();
            for (int64_t d = 0; d < dirs; ++d)
                for (int64_t b = 0; b < batch; ++b)
                    std::copy(src.begin() + (d * batch + b) * H, src.begin() + (d * batch + b + 1) * H,
                              o + (a_.layout == 0 ? d * batch + b : b * dirs + d) * H);
            ctx.outputs[k] = std::move(out);
        }
    }

    // One direction over all steps. h, c: [batch, H] states, updated in place; y: [seq, dirs, batch, H].
    template <typename T>
    void run_direction(int64_t d, const std::vector<T>& xs, int64_t seq, int64_t batch, int64_t input, int64_t H,
                       const std::vector<int64_t>& lens, const T* W, const T* R, const T* B, const T* P,
                       std::vector<T>& h, std::vector<T>& c, std::vector<T>& y, int threads) const {
        const int64_t G = gates_of(a_.cell), GH = G * H;
        const bool reverse = a_.reverse_only || d == 1;
        const size_t per_dir = activations_per_direction(a_.cell);
        const Activation& f = a_.activations[d * per_dir];
        const Activation& g = a_.activations[std::min(d * per_dir + 1, a_.activations.size() - 1)];
        const Activation& hact = a_.activations[std::min(d * per_dir + 2, a_.activations.size() - 1)];
        auto clip = [&](T v) { return a_.clip ? std::clamp(v, T(-*a_.clip), T(*a_.clip)) : v; };

        // xw[t, b, :] = X_t W^T + Wb (+ Rb, except GRU's hidden gate where the reset gate scales it).
        std::vector<T> xw(static_cast<size_t>(seq * batch * GH));
        gemm(false, true, seq * batch, GH, input, T(1), xs.data(), W, T(0), xw.data(), threads);
        if (B) {
            for (int64_t row = 0; row < seq * batch; ++row)
                for (int64_t j = 0; j < GH; ++j)
                    xw[row * GH + j] += B[j] + (a_.cell == Cell::GRU && j >= 2 * H ? T(0) : B[GH + j]);
        }
        const T* rb_h = B && a_.cell == Cell::GRU ? B + GH + 2 * H : nullptr;  // GRU's Rbh

        std::vector<T> hr(static_cast<size_t>(batch * GH)), rh(static_cast<size_t>(batch * H));
        std::vector<T> next(h.size());
        for (int64_t step = 0; step < seq; ++step) {
            const int64_t t = reverse ? seq - 1 - step : step;
            // hr = H_{t-1} R^T (for GRU without linear_before_reset, the hidden gate's part is redone below).
            gemm(false, true, batch, GH, H, T(1), h.data(), R, T(0), hr.data(), threads);
            if (a_.cell == Cell::GRU && !a_.linear_before_reset) {
                // (r ⊙ H_{t-1}) Rh^T needs r first.
                for (int64_t b = 0; b < batch; ++b)
                    for (int64_t j = 0; j < H; ++j) {
                        const T r = f(clip(xw[(t * batch + b) * GH + H + j] + hr[b * GH + H + j]));
                        rh[b * H + j] = r * h[b * H + j];
                    }
                std::vector<T> tmp(static_cast<size_t>(batch * H));
                gemm(false, true, batch, H, H, T(1), rh.data(), R + 2 * H * H, T(0), tmp.data(), threads);
                for (int64_t b = 0; b < batch; ++b)
                    std::copy(tmp.begin() + b * H, tmp.begin() + (b + 1) * H, hr.begin() + b * GH + 2 * H);
            }
            for (int64_t b = 0; b < batch; ++b) {
                if (t >= lens[b]) continue;  // past this sequence's end: state kept, output stays 0
                const T* xg = xw.data() + (t * batch + b) * GH;
                const T* hg = hr.data() + b * GH;
                T* hb = h.data() + b * H;
                T* cb = c.data() + b * H;
                T* out = y.data() + ((t * a_.directions + d) * batch + b) * H;
                for (int64_t j = 0; j < H; ++j) {
                    T hn = T(0);
                    switch (a_.cell) {
                        case Cell::RNN: hn = f(clip(xg[j] + hg[j])); break;
                        case Cell::GRU: {
                            const T z = f(clip(xg[j] + hg[j]));
                            const T r = f(clip(xg[H + j] + hg[H + j]));
                            const T rbh = rb_h ? rb_h[j] : T(0);
                            const T pre = a_.linear_before_reset ? xg[2 * H + j] + r * (hg[2 * H + j] + rbh)
                                                                 : xg[2 * H + j] + hg[2 * H + j] + rbh;
                            const T cand = g(clip(pre));
                            hn = (T(1) - z) * cand + z * hb[j];
                            break;
                        }
                        case Cell::LSTM: {
                            // Gate order i, o, f, c; peepholes P: i, o, f.
                            const T cprev = cb[j];
                            const T fg = f(clip(xg[2 * H + j] + hg[2 * H + j] + (P ? P[2 * H + j] * cprev : T(0))));
                            const T ig = a_.input_forget ? T(1) - fg
                                                         : f(clip(xg[j] + hg[j] + (P ? P[j] * cprev : T(0))));
                            const T cand = g(clip(xg[3 * H + j] + hg[3 * H + j]));
                            const T cn = fg * cprev + ig * cand;
                            const T og = f(clip(xg[H + j] + hg[H + j] + (P ? P[H + j] * cn : T(0))));
                            cb[j] = cn;
                            hn = og * hact(cn);
                            break;
                        }
                    }
                    next[b * H + j] = hn;
                    out[j] = hn;
                }
                std::copy(next.begin() + b * H, next.begin() + (b + 1) * H, hb);
            }
        }
    }

    RnnAttributes a_;
};

void infer_rnn(InferenceContext& ctx, Cell cell) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 3) fail_node(ctx.node, "X has shape " + shape_to_string(x.shape) + "; expected rank 3");
    const RnnAttributes a(ctx.node, cell);
    std::optional<int64_t> hidden;
    if (a.hidden) hidden = a.hidden;
    else if (ctx.has_input(2) && ctx.input(2).shape.size() == 3) hidden = ctx.input(2).shape[2];
    const auto seq = x.shape[a.layout == 0 ? 0 : 1], batch = x.shape[a.layout == 0 ? 1 : 0];
    const std::optional<int64_t> dirs = a.directions;
    ctx.set_output(0, x.dtype, a.layout == 0 ? Shape{seq, dirs, batch, hidden} : Shape{batch, seq, dirs, hidden});
    const Shape state = a.layout == 0 ? Shape{dirs, batch, hidden} : Shape{batch, dirs, hidden};
    ctx.set_output(1, x.dtype, state);
    if (cell == Cell::LSTM) ctx.set_output(2, x.dtype, state);
}

OpSchema rnn_schema(const char* name, Cell cell, int max_inputs, int max_outputs) {
    return OpSchema{name, "", 7, 3, max_inputs, 0, max_outputs, [cell](InferenceContext& ctx) { infer_rnn(ctx, cell); },
                    [cell](const KernelInfo& info) { return std::make_unique<RnnKernel>(info.node, cell); }};
}

}  // namespace

void register_rnn_ops(OpTable& table) {
    table.add(rnn_schema("RNN", Cell::RNN, 6, 2));
    table.add(rnn_schema("GRU", Cell::GRU, 6, 2));
    table.add(rnn_schema("LSTM", Cell::LSTM, 8, 3));
}

}  // namespace pyflame_rt::ops
