// Signal processing: DFT (opset 17 form with the axis attribute, opset 20 form with the axis
// input; forward, inverse, onesided RFFT/IRFFT, real and complex inputs), STFT, the Hann,
// Hamming and Blackman windows and MelWeightMatrix. Transforms run in double precision
// (radix-2 FFT, Bluestein's algorithm for other lengths) and round once to the output type.
#include <cmath>
#include <complex>

#include "ops/dispatch.hpp"
#include "ops/nn_common.hpp"
#include "ops/op.hpp"

namespace pyflame_rt::ops {
namespace {

using cd = std::complex<double>;
constexpr double kPi = 3.141592653589793238462643383279502884;

// In-place iterative radix-2 FFT; n = a.size() is a power of two. sign -1: forward, +1: inverse
// (unnormalized).
void fft_pow2(std::vector<cd>& a, int sign) {
    const size_t n = a.size();
    for (size_t i = 1, j = 0; i < n; ++i) {
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) std::swap(a[i], a[j]);
    }
    for (size_t len = 2; len <= n; len <<= 1) {
        for (size_t i = 0; i < n; i += len)
            for (size_t k = 0; k < len / 2; ++k) {
                // Twiddles from the exact angle each time: no accumulated rounding.
                const cd w = std::polar(1.0, sign * 2 * kPi * static_cast<double>(k) / static_cast<double>(len));
                const cd u = a[i + k], v = a[i + k + len / 2] * w;
                a[i + k] = u + v;
                a[i + k + len / 2] = u - v;
            }
    }
}

// Unnormalized DFT of any length: radix-2 when n is a power of two, else Bluestein's chirp-z
// transform (a convolution done with power-of-two FFTs).
std::vector<cd> dft(const std::vector<cd>& x, int sign) {
    const size_t n = x.size();
    if (n == 0) return {};
    if ((n & (n - 1)) == 0) {
        std::vector<cd> a = x;
        fft_pow2(a, sign);
        return a;
    }
    size_t m = 1;
    while (m < 2 * n - 1) m <<= 1;
    std::vector<cd> chirp(n), a(m), b(m);
    for (size_t k = 0; k < n; ++k) {
        const size_t k2 = (k * k) % (2 * n);  // exact angle pi k^2 / n, reduced mod 2 pi
        chirp[k] = std::polar(1.0, sign * kPi * static_cast<double>(k2) / static_cast<double>(n));
    }
    for (size_t k = 0; k < n; ++k) a[k] = x[k] * chirp[k];
    b[0] = std::conj(chirp[0]);
    for (size_t k = 1; k < n; ++k) b[k] = b[m - k] = std::conj(chirp[k]);
    fft_pow2(a, -1);
    fft_pow2(b, -1);
    for (size_t i = 0; i < m; ++i) a[i] *= b[i];
    fft_pow2(a, 1);
    std::vector<cd> out(n);
    for (size_t k = 0; k < n; ++k) out[k] = a[k] / static_cast<double>(m) * chirp[k];
    return out;
}

// Reads element i of a scalar-like integer input (int32 or int64).
int64_t scalar_int(const Tensor& t, const Node& node, const char* what) {
    if (t.num_elements() != 1) fail_node(node, std::string(what) + " must be a scalar; got shape " + shape_to_string(t.shape()));
    if (t.dtype() == DType::Int64) return t.data_ptr<int64_t>()[0];
    if (t.dtype() == DType::Int32) return t.data_ptr<int32_t>()[0];
    fail_node(node, std::string(what) + " is " + dtype_to_string(t.dtype()) + "; expected Int32 or Int64");
}

std::optional<int64_t> constant_scalar(const InferenceContext& ctx, size_t i, const char* what) {
    const Tensor* t = ctx.constant(i);
    return t ? std::optional<int64_t>(scalar_int(*t, ctx.node, what)) : std::nullopt;
}

// A real/complex floating tensor with a trailing [1] or [2] as complex doubles.
std::vector<cd> to_complex(const Tensor& t, const Node& node) {
    if (t.ndim() < 1 || (t.shape().back() != 1 && t.shape().back() != 2))
        fail_node(node, "input " + shape_to_string(t.shape()) + " must end in a dimension of 1 (real) or 2 (complex)");
    const int64_t parts = t.shape().back(), n = t.num_elements() / parts;
    std::vector<cd> out(static_cast<size_t>(n));
    dispatch_float_types(t.dtype(), node, [&](auto tag) {
        using T = decltype(tag);
        const T* p = t.data_ptr<T>();
        for (int64_t i = 0; i < n; ++i)
            out[i] = cd(static_cast<double>(p[i * parts]), parts == 2 ? static_cast<double>(p[i * parts + 1]) : 0.0);
    });
    return out;
}

// Stores complex values (or their real parts when parts == 1) into a tensor of dtype dt.
Tensor from_complex(const std::vector<cd>& v, std::vector<int64_t> shape, int64_t parts, DType dt, const Node& node) {
    shape.push_back(parts);
    Tensor out(shape, dt);
    dispatch_float_types(dt, node, [&](auto tag) {
        using T = decltype(tag);
        T* p = out.data_ptr<T>();
        for (size_t i = 0; i < v.size(); ++i) {
            p[i * parts] = static_cast<T>(v[i].real());
            if (parts == 2) p[i * parts + 1] = static_cast<T>(v[i].imag());
        }
    });
    return out;
}

// ---------------------------------------------------------------------------------------------
// DFT

struct DftSpec {
    int64_t axis;          // normalized, in [0, rank-2]
    int64_t length;        // dft_length
    bool inverse, onesided;
    int64_t out_bins() const { return onesided && !inverse ? length / 2 + 1 : length; }
    int64_t out_parts() const { return onesided && inverse ? 1 : 2; }
};

int64_t dft_axis(int64_t axis, int64_t rank, const Node& node) {
    if (axis < 0) axis += rank;
    if (axis < 0 || axis > rank - 2)
        fail_node(node, "axis is out of range for input rank " + std::to_string(rank) +
                            " (the last dimension holds the real/imaginary parts)");
    return axis;
}

// Transforms along `axis` of complex signals laid out [outer, dim, inner].
std::vector<cd> dft_along(const std::vector<cd>& x, int64_t outer, int64_t dim, int64_t inner, const DftSpec& s) {
    const int64_t bins = s.out_bins();
    std::vector<cd> out(static_cast<size_t>(outer * bins * inner));
    std::vector<cd> line(static_cast<size_t>(s.length));
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
            std::fill(line.begin(), line.end(), cd(0));
            if (s.inverse && s.onesided) {
                // IRFFT: the one-sided spectrum extended by conjugate symmetry; the real part
                // of the inverse ignores the imaginary parts numpy's irfft ignores.
                const int64_t half = s.length / 2 + 1;
                for (int64_t k = 0; k < std::min(half, dim); ++k) line[k] = x[(o * dim + k) * inner + i];
                for (int64_t k = half; k < s.length; ++k) line[k] = std::conj(line[s.length - k]);
            } else {
                for (int64_t k = 0; k < std::min(s.length, dim); ++k) line[k] = x[(o * dim + k) * inner + i];
            }
            std::vector<cd> r = dft(line, s.inverse ? 1 : -1);
            for (int64_t k = 0; k < bins; ++k) {
                cd v = s.inverse ? r[k] / static_cast<double>(s.length) : r[k];
                if (s.out_parts() == 1) v = cd(v.real(), 0);
                out[(o * bins + k) * inner + i] = v;
            }
        }
    return out;
}

class DftKernel final : public NodeKernel {
public:
    explicit DftKernel(const KernelInfo& info)
        : NodeKernel(info.node),
          axis_input_(info.opset >= 20),
          axis_attr_(info.node.get_attribute<int64_t>("axis", 1)),
          inverse_(info.node.get_attribute<int64_t>("inverse", 0) != 0),
          onesided_(info.node.get_attribute<int64_t>("onesided", 0) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        const auto rank = static_cast<int64_t>(x.ndim());
        if (rank < 2) fail("input has shape " + shape_to_string(x.shape()) + "; expected rank >= 2");
        DftSpec s{0, 0, inverse_, onesided_};
        int64_t axis = axis_input_ ? -2 : axis_attr_;
        if (axis_input_ && ctx.has_input(2)) axis = scalar_int(ctx.input(2), node_, "axis");
        s.axis = dft_axis(axis, rank, node_);
        const int64_t dim = x.shape()[s.axis];
        s.length = inverse_ && onesided_ ? 2 * (dim - 1) : dim;
        if (ctx.has_input(1)) s.length = scalar_int(ctx.input(1), node_, "dft_length");
        if (s.length < 1) fail("dft_length must be positive; got " + std::to_string(s.length));
        if (onesided_ && !inverse_ && x.shape().back() != 1) fail("onesided forward DFT takes a real input ([..., 1])");
        if (onesided_ && inverse_ && x.shape().back() != 2) fail("onesided inverse DFT takes a complex input ([..., 2])");
        int64_t outer = 1, inner = 1;
        for (int64_t i = 0; i < s.axis; ++i) outer *= x.shape()[i];
        for (int64_t i = s.axis + 1; i < rank - 1; ++i) inner *= x.shape()[i];
        const std::vector<cd> y = dft_along(to_complex(x, node_), outer, dim, inner, s);
        std::vector<int64_t> shape(x.shape().begin(), x.shape().end() - 1);
        shape[s.axis] = s.out_bins();
        ctx.outputs[0] = from_complex(y, shape, s.out_parts(), x.dtype(), node_);
    }

private:
    bool axis_input_;
    int64_t axis_attr_;
    bool inverse_, onesided_;
};

void infer_dft(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    const auto rank = static_cast<int64_t>(x.shape.size());
    if (rank < 2) fail_node(ctx.node, "input has shape " + shape_to_string(x.shape) + "; expected rank >= 2");
    const bool inverse = ctx.node.get_attribute<int64_t>("inverse", 0) != 0;
    const bool onesided = ctx.node.get_attribute<int64_t>("onesided", 0) != 0;
    std::optional<int64_t> axis = ctx.opset >= 20 ? std::optional<int64_t>(-2) : ctx.node.get_attribute<int64_t>("axis", 1);
    if (ctx.opset >= 20 && ctx.has_input(2)) axis = constant_scalar(ctx, 2, "axis");
    Shape out(x.shape.begin(), x.shape.end() - 1);
    out.push_back(onesided && inverse ? 1 : 2);
    if (!axis) {  // the transformed axis is unknown: so is every dim but the last
        for (size_t i = 0; i + 1 < out.size(); ++i) out[i] = std::nullopt;
        ctx.set_output(0, x.dtype, out);
        return;
    }
    const int64_t a = dft_axis(*axis, rank, ctx.node);
    std::optional<int64_t> length = x.shape[a];
    if (length && inverse && onesided) length = 2 * (*length - 1);
    if (ctx.has_input(1)) length = constant_scalar(ctx, 1, "dft_length");
    out[a] = length && onesided && !inverse ? std::optional<int64_t>(*length / 2 + 1) : length;
    ctx.set_output(0, x.dtype, out);
}

// ---------------------------------------------------------------------------------------------
// STFT: frames of frame_length every frame_step samples, windowed, each transformed.

class StftKernel final : public NodeKernel {
public:
    explicit StftKernel(const Node& node) : NodeKernel(node), onesided_(node.get_attribute<int64_t>("onesided", 1) != 0) {}

    void compute(KernelContext& ctx) const override {
        const Tensor& x = ctx.input(0);
        if (x.ndim() != 3) fail("signal has shape " + shape_to_string(x.shape()) + "; expected [batch, length, 1 or 2]");
        const int64_t batch = x.shape()[0], len = x.shape()[1];
        const int64_t step = scalar_int(ctx.input(1), node_, "frame_step");
        if (step < 1) fail("frame_step must be positive; got " + std::to_string(step));
        std::vector<double> window;
        if (ctx.has_input(2)) {
            const Tensor& w = ctx.input(2);
            if (w.ndim() != 1) fail("window must be 1-D; got shape " + shape_to_string(w.shape()));
            window = float_values(w, node_);
        }
        int64_t frame = ctx.has_input(2) ? static_cast<int64_t>(window.size()) : len;
        if (ctx.has_input(3)) {
            frame = scalar_int(ctx.input(3), node_, "frame_length");
            if (ctx.has_input(2) && frame != static_cast<int64_t>(window.size()))
                fail("frame_length " + std::to_string(frame) + " differs from the window's length " + std::to_string(window.size()));
        }
        if (frame < 1 || frame > len)
            fail("frame_length " + std::to_string(frame) + " must be in [1, signal length " + std::to_string(len) + "]");
        if (window.empty()) window.assign(static_cast<size_t>(frame), 1.0);
        const int64_t frames = 1 + (len - frame) / step;
        const bool onesided = onesided_;
        const int64_t bins = onesided ? frame / 2 + 1 : frame;
        const std::vector<cd> xs = to_complex(x, node_);
        std::vector<cd> out(static_cast<size_t>(batch * frames * bins)), line(static_cast<size_t>(frame));
        for (int64_t b = 0; b < batch; ++b)
            for (int64_t f = 0; f < frames; ++f) {
                for (int64_t k = 0; k < frame; ++k) line[k] = xs[b * len + f * step + k] * window[k];
                const std::vector<cd> r = dft(line, -1);
                std::copy(r.begin(), r.begin() + bins, out.begin() + (b * frames + f) * bins);
            }
        ctx.outputs[0] = from_complex(out, {batch, frames, bins}, 2, x.dtype(), node_);
    }

private:
    bool onesided_;
};

void infer_stft(InferenceContext& ctx) {
    if (!ctx.has_input(0)) return;
    const TensorInfo& x = ctx.input(0);
    if (x.shape.size() != 3) fail_node(ctx.node, "signal has shape " + shape_to_string(x.shape) + "; expected rank 3");
    const bool onesided = ctx.node.get_attribute<int64_t>("onesided", 1) != 0;
    std::optional<int64_t> frame = x.shape[1];
    if (ctx.has_input(2)) frame = ctx.input(2).shape.size() == 1 ? ctx.input(2).shape[0] : std::nullopt;
    if (ctx.has_input(3)) frame = constant_scalar(ctx, 3, "frame_length");
    const std::optional<int64_t> step = ctx.has_input(1) ? constant_scalar(ctx, 1, "frame_step") : std::nullopt;
    std::optional<int64_t> frames, bins;
    if (frame && step && x.shape[1] && *step > 0 && *frame <= *x.shape[1]) frames = 1 + (*x.shape[1] - *frame) / *step;
    if (frame) bins = onesided ? *frame / 2 + 1 : *frame;
    ctx.set_output(0, x.dtype, {x.shape[0], frames, bins, 2});
}

// ---------------------------------------------------------------------------------------------
// Windows: w[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), N = size (periodic) or size - 1.

struct WindowCoefficients {
    double a0, a1, a2;
};

DType output_datatype(const Node& node) {
    const int64_t code = node.get_attribute<int64_t>("output_datatype", 1);
    try {
        return dtype_from_onnx(static_cast<int>(code));
    } catch (const ValidationError&) {
        fail_node(node, "output_datatype " + std::to_string(code) + " is not a supported type");
    }
}

// Writes doubles into a numeric tensor of dtype dt.
Tensor numeric_from_doubles(const std::vector<double>& v, const std::vector<int64_t>& shape, DType dt, const Node& node) {
    Tensor out(shape, dt);
    dispatch_numeric(dt, node, [&](auto tag) {
        using T = decltype(tag);
        T* p = out.data_ptr<T>();
        for (size_t i = 0; i < v.size(); ++i) {
            if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) p[i] = T(static_cast<float>(v[i]));
            else p[i] = static_cast<T>(v[i]);
        }
    });
    return out;
}

class WindowKernel final : public NodeKernel {
public:
    WindowKernel(const Node& node, WindowCoefficients c)
        : NodeKernel(node), c_(c), periodic_(node.get_attribute<int64_t>("periodic", 1) != 0), dtype_(output_datatype(node)) {}

    void compute(KernelContext& ctx) const override {
        const int64_t size = scalar_int(ctx.input(0), node_, "size");
        if (size < 0) fail("size must be >= 0; got " + std::to_string(size));
        const double n_1 = static_cast<double>(periodic_ ? size : size - 1);
        std::vector<double> w(static_cast<size_t>(size));
        for (int64_t n = 0; n < size; ++n) {
            const double angle = 2 * kPi * static_cast<double>(n) / n_1;
            // A symmetric window of one sample is [1] (N - 1 = 0 would divide by zero).
            w[n] = n_1 == 0 ? 1.0 : c_.a0 - c_.a1 * std::cos(angle) + c_.a2 * std::cos(2 * angle);
        }
        ctx.outputs[0] = numeric_from_doubles(w, {size}, dtype_, node_);
    }

private:
    WindowCoefficients c_;
    bool periodic_;
    DType dtype_;
};

void infer_window(InferenceContext& ctx) {
    const std::optional<int64_t> size = constant_scalar(ctx, 0, "size");
    ctx.set_output(0, output_datatype(ctx.node), {size});
}

OpSchema window_schema(const char* name, WindowCoefficients c) {
    return OpSchema{name, "", 17, 1, 1, 1, 1, infer_window,
                    [c](const KernelInfo& info) { return std::make_unique<WindowKernel>(info.node, c); }};
}

// ---------------------------------------------------------------------------------------------
// MelWeightMatrix: triangular filters, [dft_length/2 + 1, num_mel_bins], as the ONNX reference.

double scalar_float(const Tensor& t, const Node& node, const char* what) {
    if (t.num_elements() != 1) fail_node(node, std::string(what) + " must be a scalar");
    return float_values(t, node)[0];
}

class MelWeightMatrixKernel final : public NodeKernel {
public:
    explicit MelWeightMatrixKernel(const Node& node) : NodeKernel(node), dtype_(output_datatype(node)) {}

    void compute(KernelContext& ctx) const override {
        const int64_t mel_bins = scalar_int(ctx.input(0), node_, "num_mel_bins");
        const int64_t dft_length = scalar_int(ctx.input(1), node_, "dft_length");
        const int64_t sample_rate = scalar_int(ctx.input(2), node_, "sample_rate");
        const double lower = scalar_float(ctx.input(3), node_, "lower_edge_hertz");
        const double upper = scalar_float(ctx.input(4), node_, "upper_edge_hertz");
        if (mel_bins < 1 || dft_length < 1 || sample_rate < 1)
            fail("num_mel_bins, dft_length and sample_rate must be positive");
        if (lower < 0 || upper <= lower) fail("the hertz edges must satisfy 0 <= lower < upper");
        const int64_t spectrogram_bins = dft_length / 2 + 1;
        auto to_mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
        const double low_mel = to_mel(lower), high_mel = to_mel(upper);
        // The reference divides the mel range by num_mel_bins + 2 (ONNX Runtime does too).
        const double step = (high_mel - low_mel) / static_cast<double>(mel_bins + 2);
        std::vector<int64_t> edges(static_cast<size_t>(mel_bins + 2));
        for (int64_t i = 0; i < mel_bins + 2; ++i) {
            const double hz = 700.0 * (std::pow(10.0, (static_cast<double>(i) * step + low_mel) / 2595.0) - 1.0);
            edges[i] = static_cast<int64_t>(std::floor(static_cast<double>(dft_length + 1) * hz / static_cast<double>(sample_rate)));
            if (edges[i] < 0 || edges[i] >= spectrogram_bins)
                fail("upper_edge_hertz " + std::to_string(upper) + " lies beyond the Nyquist frequency of sample_rate " +
                     std::to_string(sample_rate));
        }
        std::vector<double> w(static_cast<size_t>(spectrogram_bins * mel_bins), 0.0);
        for (int64_t i = 0; i < mel_bins; ++i) {
            const int64_t lo = edges[i], center = edges[i + 1], hi = edges[i + 2];
            if (center == lo) w[center * mel_bins + i] = 1;
            else
                for (int64_t j = lo; j <= center; ++j) w[j * mel_bins + i] = double(j - lo) / double(center - lo);
            for (int64_t j = center; j < hi; ++j) w[j * mel_bins + i] = double(hi - j) / double(hi - center);
        }
        ctx.outputs[0] = numeric_from_doubles(w, {spectrogram_bins, mel_bins}, dtype_, node_);
    }

private:
    DType dtype_;
};

void infer_mel(InferenceContext& ctx) {
    const std::optional<int64_t> mel = constant_scalar(ctx, 0, "num_mel_bins");
    const std::optional<int64_t> dft_length = constant_scalar(ctx, 1, "dft_length");
    ctx.set_output(0, output_datatype(ctx.node), {dft_length ? std::optional<int64_t>(*dft_length / 2 + 1) : std::nullopt, mel});
}

}  // namespace

void register_signal_ops(OpTable& table) {
    table.add(OpSchema{"DFT", "", 17, 1, 3, 1, 1, infer_dft,
                       [](const KernelInfo& info) { return std::make_unique<DftKernel>(info); }});
    table.add(OpSchema{"STFT", "", 17, 2, 4, 1, 1, infer_stft,
                       [](const KernelInfo& info) { return std::make_unique<StftKernel>(info.node); }});
    table.add(window_schema("HannWindow", {0.5, 0.5, 0.0}));
    table.add(window_schema("HammingWindow", {25.0 / 46.0, 21.0 / 46.0, 0.0}));
    table.add(window_schema("BlackmanWindow", {0.42, 0.5, 0.08}));
    table.add(OpSchema{"MelWeightMatrix", "", 17, 5, 5, 1, 1, infer_mel,
                       [](const KernelInfo& info) { return std::make_unique<MelWeightMatrixKernel>(info.node); }});
}

}  // namespace pyflame_rt::ops
