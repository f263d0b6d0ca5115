#include "pyflame_rt/quantization/calibrator.hpp"

#include <algorithm>
#include <cmath>

#include <unordered_set>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/quantization/float16.hpp"
#include "pyflame_rt/session.hpp"
#include "quantization/graph_util.hpp"

namespace pyflame_rt::quantization {

// ---------------------------------------------------------------------- CalibrationStats

void CalibrationStats::grow_to(float magnitude) {
    if (histogram.empty()) {
        histogram.assign(kHistogramBins, 0);
        histogram_range = magnitude;
        return;
    }
    // Doubling the range merges bin pairs exactly: old bins (2j, 2j+1) become new bin N/4 + j.
    while (histogram_range < magnitude) {
        std::vector<size_t> merged(kHistogramBins, 0);
        for (size_t j = 0; j < kHistogramBins / 2; ++j) merged[kHistogramBins / 4 + j] = histogram[2 * j] + histogram[2 * j + 1];
        histogram.swap(merged);
        histogram_range *= 2.0f;
    }
}

void CalibrationStats::update(const float* values, size_t count) {
    float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
    size_t finite = 0;
    for (size_t i = 0; i < count; ++i) {
        const float v = values[i];
        if (std::isnan(v)) continue;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        ++finite;
    }
    if (finite == 0) return;
    for (size_t i = 0; i < count && !many_values; ++i) {
        const float v = values[i];
        if (std::isnan(v)) continue;
        auto it = std::lower_bound(distinct_values.begin(), distinct_values.end(), v);
        if (it != distinct_values.end() && *it == v) continue;
        if (distinct_values.size() == kMaxDistinctValues) {
            many_values = true;
            distinct_values.clear();
            distinct_values.shrink_to_fit();
        } else {
            distinct_values.insert(it, v);
        }
    }
    min_val = std::min(min_val, lo);
    max_val = std::max(max_val, hi);
    num_samples += finite;
    const float magnitude = std::max(std::fabs(lo), std::fabs(hi));
    if (magnitude == 0.0f && histogram_range == 0.0f) {
        // All zeros so far: the range waits for the first nonzero value; zeros sit in bin N/2.
        if (histogram.empty()) histogram.assign(kHistogramBins, 0);
        histogram[kHistogramBins / 2] += finite;
        return;
    }
    if (histogram.empty() || histogram_range == 0.0f) {
        const std::vector<size_t> zeros = histogram;
        histogram.clear();
        grow_to(magnitude);
        if (!zeros.empty()) histogram[kHistogramBins / 2] += zeros[kHistogramBins / 2];
    } else if (magnitude > histogram_range) {
        grow_to(magnitude);
    }
    const double width = 2.0 * histogram_range / kHistogramBins;
    for (size_t i = 0; i < count; ++i) {
        const float v = values[i];
        if (std::isnan(v)) continue;
        auto bin = static_cast<int64_t>(std::floor((static_cast<double>(v) + histogram_range) / width));
        bin = std::clamp<int64_t>(bin, 0, static_cast<int64_t>(kHistogramBins) - 1);
        ++histogram[static_cast<size_t>(bin)];
    }
}

void CalibrationStats::update(float value) { update(&value, 1); }

void CalibrationStats::update(const Tensor& tensor) {
    if (tensor.dtype() == DType::Float32) {
        update(tensor.data_ptr<float>(), static_cast<size_t>(tensor.num_elements()));
        return;
    }
    std::vector<float> values(static_cast<size_t>(tensor.num_elements()));
    switch (tensor.dtype()) {
        case DType::Float64:
            for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(tensor.data_ptr<double>()[i]);
            break;
        case DType::Float16:
            for (size_t i = 0; i < values.size(); ++i) values[i] = Float16::from_bits(tensor.data_ptr<uint16_t>()[i]).to_float();
            break;
        case DType::BFloat16:
            for (size_t i = 0; i < values.size(); ++i) values[i] = BFloat16::from_bits(tensor.data_ptr<uint16_t>()[i]).to_float();
            break;
        default:
            throw ValidationError("CalibrationStats.update: expected a float tensor, got " + dtype_to_string(tensor.dtype()));
    }
    update(values.data(), values.size());
}

float CalibrationStats::bin_width() const { return histogram.empty() ? 0.0f : 2.0f * histogram_range / kHistogramBins; }

std::vector<size_t> CalibrationStats::abs_histogram() const {
    std::vector<size_t> folded(kHistogramBins / 2, 0);
    if (histogram.empty()) return folded;
    const size_t half = kHistogramBins / 2;
    for (size_t k = 0; k < half; ++k) folded[k] = histogram[half + k] + histogram[half - 1 - k];
    return folded;
}

namespace {

void require_observed(const CalibrationStats& s) {
    if (s.num_samples == 0) throw ValidationError("calibration statistics are empty: observe data first");
}

QuantParams from_threshold(const CalibrationStats& s, double threshold, DType dtype, bool symmetric) {
    if (symmetric) return QuantParams::compute_from_minmax(static_cast<float>(-threshold), static_cast<float>(threshold), dtype, true);
    const double lo = std::max<double>(-threshold, s.min_val), hi = std::min<double>(threshold, s.max_val);
    return QuantParams::compute_from_minmax(static_cast<float>(std::min(lo, 0.0)), static_cast<float>(std::max(hi, 0.0)), dtype, false);
}

}  // namespace

QuantParams CalibrationStats::compute_minmax_params(DType target_dtype, bool symmetric) const {
    require_observed(*this);
    return QuantParams::compute_from_minmax(min_val, max_val, target_dtype, symmetric);
}

std::optional<QuantParams> CalibrationStats::compute_lattice_params(DType target_dtype, bool symmetric) const {
    require_observed(*this);
    if (many_values || distinct_values.empty() || std::isinf(distinct_values.front()) || std::isinf(distinct_values.back()))
        return std::nullopt;
    // Values that repeat: a few samples of continuous data would fit some fine grid by chance.
    if (num_samples < kMinSamplesPerValue * distinct_values.size()) return std::nullopt;
    // The step: the smallest gap between neighbours (or to 0), or an integer fraction of it
    // (values 2/16 and 5/16 lie on steps of 1/16).
    double smallest_gap = 0;
    std::vector<double> points(distinct_values.begin(), distinct_values.end());
    points.push_back(0.0);
    std::sort(points.begin(), points.end());
    for (size_t i = 1; i < points.size(); ++i) {
        const double gap = points[i] - points[i - 1];
        if (gap > 0 && (smallest_gap == 0 || gap < smallest_gap)) smallest_gap = gap;
    }
    if (smallest_gap == 0) return std::nullopt;  // all zeros: compute_from_minmax handles it exactly
    const auto [qmin_full, qmax] = quant_range(target_dtype);
    for (int divisor = 1; divisor <= 16; ++divisor) {
        const double step = smallest_gap / divisor;
        int64_t kmin = 0, kmax = 0;
        bool on_lattice = true;
        for (float v : distinct_values) {
            const double k = std::nearbyint(v / step);
            if (std::fabs(v - k * step) > 1e-5 * step * std::max(1.0, std::fabs(k))) {
                on_lattice = false;
                break;
            }
            kmin = std::min<int64_t>(kmin, static_cast<int64_t>(k));
            kmax = std::max<int64_t>(kmax, static_cast<int64_t>(k));
        }
        if (!on_lattice) continue;
        int64_t zero_point;
        if (symmetric) {  // as compute_from_minmax: int8 zero point 0 over [-127, 127], uint8 zero point 128
            zero_point = target_dtype == DType::UInt8 ? 128 : 0;
            const int64_t qmin = target_dtype == DType::Int8 ? -127 : qmin_full;
            if (kmin + zero_point < qmin || kmax + zero_point > qmax) return std::nullopt;
        } else {
            if (kmax - kmin > qmax - qmin_full) return std::nullopt;
            zero_point = std::clamp<int64_t>(qmin_full - kmin, qmin_full, qmax);
            if (kmin + zero_point < qmin_full || kmax + zero_point > qmax) return std::nullopt;
        }
        if (!(static_cast<float>(step) > 0.0f)) return std::nullopt;
        return QuantParams::per_tensor(static_cast<float>(step), static_cast<int32_t>(zero_point), target_dtype);
    }
    return std::nullopt;
}

QuantParams CalibrationStats::compute_percentile_params(DType target_dtype, bool symmetric, float percentile) const {
    require_observed(*this);
    if (!(percentile > 0.0f && percentile <= 100.0f))
        throw ValidationError("percentile must be in (0, 100], got " + std::to_string(percentile));
    if (histogram_range == 0.0f) return QuantParams::compute_from_minmax(0.0f, 0.0f, target_dtype, symmetric);
    const double w = bin_width();
    if (symmetric) {
        const auto folded = abs_histogram();
        size_t total = 0;
        for (size_t c : folded) total += c;
        const double target = static_cast<double>(percentile) / 100.0 * static_cast<double>(total);
        size_t cum = 0, k = 0;
        for (; k < folded.size(); ++k) {
            cum += folded[k];
            if (static_cast<double>(cum) >= target) break;
        }
        const double threshold = std::min<double>((k + 1) * w, std::max(std::fabs(min_val), std::fabs(max_val)));
        return QuantParams::compute_from_minmax(static_cast<float>(-threshold), static_cast<float>(threshold), target_dtype, true);
    }
    size_t total = 0;
    for (size_t c : histogram) total += c;
    const double tail = (100.0 - percentile) / 200.0 * static_cast<double>(total);
    // Lower: the lower edge of the first bin whose cumulative count exceeds the tail; upper: the
    // upper edge of the first bin whose cumulative count reaches total - tail.
    size_t cum = 0, lo_bin = 0;
    for (; lo_bin < histogram.size(); ++lo_bin) {
        cum += histogram[lo_bin];
        if (static_cast<double>(cum) > tail) break;
    }
    cum = 0;
    size_t hi_bin = 0;
    for (; hi_bin < histogram.size(); ++hi_bin) {
        cum += histogram[hi_bin];
        if (static_cast<double>(cum) >= static_cast<double>(total) - tail) break;
    }
    const double lo = std::max<double>(-histogram_range + lo_bin * w, min_val);
    const double hi = std::min<double>(-histogram_range + (hi_bin + 1) * w, max_val);
    return QuantParams::compute_from_minmax(static_cast<float>(std::min(lo, 0.0)), static_cast<float>(std::max(hi, 0.0)), target_dtype, false);
}

QuantParams CalibrationStats::compute_entropy_params(DType target_dtype, bool symmetric) const {
    require_observed(*this);
    if (histogram_range == 0.0f) return QuantParams::compute_from_minmax(0.0f, 0.0f, target_dtype, symmetric);
    // NVIDIA's entropy calibration (pytorch-quantization, after TensorRT): over the |x|
    // histogram, bin 0 set to bin 1 (the spike of exact zeros after a ReLU would otherwise
    // dominate), 2^(bits-1) levels, or 2^bits for data that is never negative.
    std::vector<double> hist;
    for (size_t c : abs_histogram()) hist.push_back(static_cast<double>(c));
    const size_t nbins = hist.size();
    if (nbins > 1) hist[0] = hist[1];
    const size_t levels = min_val >= 0.0f ? 256 : 128;
    double best_kl = std::numeric_limits<double>::infinity();
    size_t best_i = nbins;
    std::vector<double> q(nbins), group_sum(levels), group_count(levels);
    for (size_t i = levels; i <= nbins; ++i) {
        // Q: bin k < i belongs to level floor(k * levels / i); each level's count spread evenly
        // over its nonzero bins.
        std::fill(group_sum.begin(), group_sum.end(), 0.0);
        std::fill(group_count.begin(), group_count.end(), 0.0);
        for (size_t k = 0; k < i; ++k) {
            if (hist[k] == 0) continue;
            const size_t j = k * levels / i;
            group_sum[j] += hist[k];
            group_count[j] += 1;
        }
        double qsum = 0, psum = 0, outliers = 0;
        for (size_t k = i; k < nbins; ++k) outliers += hist[k];
        for (size_t k = 0; k < i; ++k) {
            q[k] = hist[k] == 0 ? 0.0 : group_sum[k * levels / i] / group_count[k * levels / i];
            qsum += q[k];
            psum += hist[k];
        }
        psum += outliers;  // P: the first i bins with everything beyond folded into the last
        if (psum == 0 || qsum == 0) continue;
        double kl = 0;
        for (size_t k = 0; k < i; ++k) {
            const double pk = (hist[k] + (k == i - 1 ? outliers : 0.0)) / psum;
            if (pk == 0) continue;
            const double qk = q[k] / qsum;
            if (qk == 0) {
                kl = std::numeric_limits<double>::infinity();
                break;
            }
            kl += pk * std::log(pk / qk);
        }
        if (kl <= best_kl) {  // ties: the widest range
            best_kl = kl;
            best_i = i;
        }
    }
    const double threshold = std::min<double>(best_i * static_cast<double>(bin_width()), std::max(std::fabs(min_val), std::fabs(max_val)));
    return from_threshold(*this, threshold, target_dtype, symmetric);
}

// ---------------------------------------------------------------------------- Calibrator

struct Calibrator::Impl {
    QuantConfig config;
    std::shared_ptr<Graph> graph;  // the source graph with the tracked tensors as extra outputs
    std::vector<std::string> input_tracked;   // graph inputs tracked (read from the feed)
    std::vector<std::string> output_tracked;  // intermediates fetched as outputs
    std::unique_ptr<InferenceSession> session;
    std::unordered_map<std::string, CalibrationStats> stats;
    // Per-channel (axis 1) sums and the values per channel seen, of the inputs of the nodes
    // whose bias the quantizer corrects (GraphQuantInfo::channel_means).
    struct ChannelSums {
        std::vector<double> sums;
        size_t per_channel = 0;
        bool usable = true;  // false once a batch had another channel count or a non-float32 dtype
    };
    std::unordered_map<std::string, ChannelSums> channel_sums;
    size_t batches = 0;

    void add_channel_sums(const std::string& name, const Tensor& t) {
        auto it = channel_sums.find(name);
        if (it == channel_sums.end() || !it->second.usable) return;
        auto& cs = it->second;
        if (t.dtype() != DType::Float32 || t.ndim() < 2 || t.num_elements() == 0) {
            cs.usable = false;
            return;
        }
        const int64_t channels = t.shape()[1];
        int64_t inner = 1;
        for (size_t d = 2; d < t.ndim(); ++d) inner *= t.shape()[d];
        if (cs.sums.empty()) cs.sums.assign(channels, 0.0);
        if (static_cast<int64_t>(cs.sums.size()) != channels) {
            cs.usable = false;
            return;
        }
        const Tensor dense = t.plain();
        const float* v = dense.data_ptr<float>();
        const int64_t outer = t.shape()[0];
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t c = 0; c < channels; ++c) {
                const float* p = v + (o * channels + c) * inner;
                double sum = 0;
                for (int64_t k = 0; k < inner; ++k) sum += p[k];
                cs.sums[c] += sum;
            }
        cs.per_channel += static_cast<size_t>(outer * inner);
    }
};

Calibrator::Calibrator(const Graph& graph, const QuantConfig& config) : impl_(std::make_unique<Impl>()) {
    const std::string error = config.validation_error();
    if (!error.empty()) throw ValidationError("invalid QuantConfig: " + error);
    impl_->config = config;
    auto g = std::make_shared<Graph>(graph);
    g->set_nodes(graph.topological_sort());
    const auto dtypes = detail::value_dtypes(*g);
    const auto plan = detail::plan_static(*g, config, dtypes);
    std::unordered_set<std::string> inputs, outputs;
    for (const auto& i : g->inputs()) inputs.insert(i.name);
    for (const auto& o : g->outputs()) outputs.insert(o.name);
    std::vector<TensorInfo> new_outputs = g->outputs();
    for (const auto& name : plan.activations) {
        impl_->stats[name];
        if (inputs.count(name)) {
            impl_->input_tracked.push_back(name);
            continue;
        }
        impl_->output_tracked.push_back(name);
        if (!outputs.count(name)) {
            TensorInfo info{name, DType::Float32, {}};
            info.rank_known = false;
            new_outputs.push_back(info);
        }
    }
    g->set_outputs(new_outputs);
    for (size_t i : plan.weighted_nodes) {
        const Node& n = *g->nodes()[i];
        if ((n.op_type() == "Conv" || n.op_type() == "Gemm") && n.has_input(2)) impl_->channel_sums[n.inputs()[0]];
    }
    impl_->graph = g;
}

Calibrator::~Calibrator() = default;
Calibrator::Calibrator(Calibrator&&) noexcept = default;

void Calibrator::observe(const std::unordered_map<std::string, Tensor>& input_feed) {
    Impl& s = *impl_;
    if (!s.session) {
        SessionOptions options;
        options.optimization_level = 1;  // fusions must not hide the tensors we watch
        s.session = std::make_unique<InferenceSession>(s.graph, options);
    }
    // Nothing to fetch (no quantizable tensor past the inputs): an empty name list would mean
    // every graph output.
    std::vector<Tensor> values;
    if (!s.output_tracked.empty()) values = s.session->run(s.output_tracked, input_feed);
    // Only after the run succeeded: a bad feed leaves the statistics as they were.
    for (const auto& name : s.input_tracked) {
        auto it = input_feed.find(name);
        if (it == input_feed.end()) continue;
        s.stats[name].update(it->second);
        s.add_channel_sums(name, it->second);
    }
    for (size_t i = 0; i < values.size(); ++i) {
        s.stats[s.output_tracked[i]].update(values[i]);
        s.add_channel_sums(s.output_tracked[i], values[i]);
    }
    ++s.batches;
}

void Calibrator::calibrate(CalibrationDataProvider data_provider, size_t num_batches) {
    if (!data_provider) throw ValidationError("Calibrator.calibrate: no data provider");
    for (size_t b = 0; b < num_batches; ++b) observe(data_provider());
}

GraphQuantInfo Calibrator::compute_quant_params() const {
    const Impl& s = *impl_;
    if (s.batches == 0) throw ValidationError("StaticInt8 needs calibration data: the Calibrator has observed no batches");
    GraphQuantInfo info;
    info.activations_quantized = true;
    for (const auto& [name, st] : s.stats) {
        if (st.num_samples == 0) continue;
        // Symmetric int8 would leave the sign bit unused on a tensor that is never negative (a
        // Relu's output): uint8 with zero point 0 keeps zero exact and doubles the resolution,
        // and int8 kernels read unsigned inputs without zero-point compensation.
        const bool non_negative = s.config.symmetric && s.config.activation_dtype == DType::Int8 && st.min_val >= 0.0f;
        const DType dtype = non_negative ? DType::UInt8 : s.config.activation_dtype;
        const bool symmetric = s.config.symmetric && !non_negative;
        // Data on a coarse grid (pixels) quantizes exactly with its own step, whatever the method.
        if (auto exact = st.compute_lattice_params(dtype, symmetric)) {
            info.set_params(name, *exact);
            continue;
        }
        switch (s.config.calibration_method) {
            case CalibrationMethod::MinMax: info.set_params(name, st.compute_minmax_params(dtype, symmetric)); break;
            case CalibrationMethod::Entropy: info.set_params(name, st.compute_entropy_params(dtype, symmetric)); break;
            case CalibrationMethod::Percentile: info.set_params(name, st.compute_percentile_params(dtype, symmetric)); break;
        }
    }
    for (const auto& [name, cs] : s.channel_sums) {
        if (!cs.usable || cs.per_channel == 0) continue;
        std::vector<float> means(cs.sums.size());
        for (size_t c = 0; c < means.size(); ++c) means[c] = static_cast<float>(cs.sums[c] / static_cast<double>(cs.per_channel));
        info.channel_means[name] = std::move(means);
    }
    return info;
}

const CalibrationStats& Calibrator::get_stats(const std::string& tensor_name) const {
    auto it = impl_->stats.find(tensor_name);
    if (it == impl_->stats.end()) throw ValidationError("the Calibrator does not track tensor '" + tensor_name + "'");
    return it->second;
}

const std::unordered_map<std::string, CalibrationStats>& Calibrator::all_stats() const { return impl_->stats; }

std::vector<std::string> Calibrator::tracked_tensors() const {
    std::vector<std::string> names = impl_->input_tracked;
    names.insert(names.end(), impl_->output_tracked.begin(), impl_->output_tracked.end());
    return names;
}

size_t Calibrator::batches_observed() const { return impl_->batches; }

}  // namespace pyflame_rt::quantization
