#pragma once
// Calibrator: runs a graph on sample inputs and records, for every float tensor the static
// quantizer will quantize, its range and a histogram; CalibrationStats turns those into
// QuantParams by min-max, entropy (KL divergence, TensorRT's method) or percentile.
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/quantization/quant_config.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::quantization {

// The histogram covers [-histogram_range, histogram_range] in kHistogramBins equal bins; the
// range starts at the first nonzero |value| seen and doubles (merging bin pairs exactly) when
// a value falls outside. NaNs are ignored.
struct CalibrationStats {
    static constexpr size_t kHistogramBins = 4096;

    float min_val = std::numeric_limits<float>::max();
    float max_val = std::numeric_limits<float>::lowest();
    size_t num_samples = 0;  // values observed
    std::vector<size_t> histogram;
    float histogram_range = 0.0f;
    // The distinct values seen, sorted, while there are at most kMaxDistinctValues of them
    // (data on an 8-bit grid, such as pixels); cleared, with many_values set, past that.
    static constexpr size_t kMaxDistinctValues = 256;
    static constexpr size_t kMinSamplesPerValue = 4;  // compute_lattice_params wants repeats
    std::vector<float> distinct_values;
    bool many_values = false;

    void update(const Tensor& tensor);  // Float32 (or any float dtype); others raise ValidationError
    void update(float value);
    void update(const float* values, size_t count);

    // ValidationError when nothing was observed.
    QuantParams compute_minmax_params(DType target_dtype, bool symmetric) const;
    // Threshold T minimizing KL(P || Q) over the |x| histogram (its zero bin evened out), P
    // clipped at T and Q its quantization to 128 levels (256 for data never negative), as
    // NVIDIA's pytorch-quantization; the range is [-T, T] clipped to [min_val, max_val].
    QuantParams compute_entropy_params(DType target_dtype, bool symmetric) const;
    // Symmetric: T = the `percentile` of |x|; asymmetric: the (100-p)/2 and (100+p)/2
    // percentiles of x. Read off the histogram (upper/lower bin edges), clipped to [min, max].
    QuantParams compute_percentile_params(DType target_dtype, bool symmetric, float percentile = 99.99f) const;

    // Parameters that represent every observed value exactly: when the values (seen at least
    // kMinSamplesPerValue times each on average) are integer multiples k*d of one step d (0
    // included) and the integers fit the dtype's range around compute_from_minmax's kind of
    // zero point (symmetric: 0 for int8, 128 for uint8; asymmetric: the lowest value at the
    // type's minimum), scale d. nullopt otherwise. Such data (pixels k/255 or k/16) then
    // quantizes without error, where a scale of (max - min) / 255 would round nearly every value.
    std::optional<QuantParams> compute_lattice_params(DType target_dtype, bool symmetric) const;

    // Bin width and the |x| histogram (bin k counts |x| in [k*w, (k+1)*w)), used by the methods.
    float bin_width() const;
    std::vector<size_t> abs_histogram() const;

private:
    void grow_to(float magnitude);
};

class Calibrator {
public:
    // Collects the inputs and outputs of the nodes the static quantizer quantizes (not excluded).
    Calibrator(const Graph& graph, const QuantConfig& config);
    ~Calibrator();
    Calibrator(Calibrator&&) noexcept;

    void observe(const std::unordered_map<std::string, Tensor>& input_feed);

    using CalibrationDataProvider = std::function<std::unordered_map<std::string, Tensor>()>;
    void calibrate(CalibrationDataProvider data_provider, size_t num_batches);

    // Parameters by the config's calibration method for every observed tensor; ValidationError
    // when nothing was observed yet.
    GraphQuantInfo compute_quant_params() const;

    // ValidationError naming the tensor when it is not tracked.
    const CalibrationStats& get_stats(const std::string& tensor_name) const;
    const std::unordered_map<std::string, CalibrationStats>& all_stats() const;
    // Names of the tensors this calibrator tracks.
    std::vector<std::string> tracked_tensors() const;
    size_t batches_observed() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pyflame_rt::quantization
