#pragma once
// Quantization configuration and parameters: QuantMode, QuantGranularity, CalibrationMethod,
// QuantConfig, QuantParams, GraphQuantInfo.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyflame_rt/dtype.hpp"

namespace pyflame_rt::quantization {

enum class QuantMode : uint8_t { None = 0, FP16 = 1, BFloat16 = 2, DynamicInt8 = 3, StaticInt8 = 4 };
const char* quant_mode_name(QuantMode mode);  // "None", "FP16", "BFloat16", "DynamicInt8", "StaticInt8"
// The inverse of quant_mode_name; ValidationError for an unknown name.
QuantMode quant_mode_from_name(const std::string& name);

enum class QuantGranularity : uint8_t { PerTensor = 0, PerChannel = 1 };
enum class CalibrationMethod : uint8_t { MinMax = 0, Entropy = 1, Percentile = 2 };

// Ops the fp16()/bfloat16() factories keep in FP32 (numerically sensitive: exponentials,
// normalizations, reductions, ranges). Users edit exclude_ops to change it.
const std::vector<std::string>& default_fp32_keep_ops();

struct QuantConfig {
    QuantMode mode = QuantMode::None;
    DType weight_dtype = DType::Int8;      // INT8 modes: Int8 or UInt8
    DType activation_dtype = DType::Int8;  // StaticInt8: Int8 or UInt8 (symmetric Int8: never-negative
                                           // tensors get UInt8, zero point 0); DynamicInt8: UInt8
    QuantGranularity granularity = QuantGranularity::PerTensor;
    CalibrationMethod calibration_method = CalibrationMethod::MinMax;
    bool symmetric = true;                 // zero point at the middle of the range (0 for int8)
    std::vector<std::string> exclude_ops;  // op types (or node names) left in FP32
    size_t calibration_samples = 100;      // batches the calibration runs (StaticInt8)

    static QuantConfig fp16();
    static QuantConfig bfloat16();
    static QuantConfig dynamic_int8();
    static QuantConfig static_int8(size_t calibration_samples = 100);

    bool is_valid() const { return validation_error().empty(); }
    // The first problem found, or "" when valid.
    std::string validation_error() const;
    bool excludes(const std::string& op_type, const std::string& node_name) const;
};

struct QuantParams {
    std::vector<float> scales;
    std::vector<int32_t> zero_points;
    DType quantized_dtype = DType::Int8;
    int channel_axis = -1;  // -1 = per-tensor

    // ValidationError for a non-positive or non-finite scale, a zero point outside the dtype's
    // range, mismatched lengths, a negative channel axis or a dtype other than Int8/UInt8/Int32.
    static QuantParams per_tensor(float scale, int32_t zero_point, DType dtype = DType::Int8);
    static QuantParams per_channel(const std::vector<float>& scales, const std::vector<int32_t>& zero_points,
                                   int channel_axis, DType dtype = DType::Int8);
    // The range is widened to include 0. Symmetric: int8 maps [-a, a] to [-127, 127] (zero point
    // 0), uint8 maps it to [0, 255] (zero point 128); asymmetric maps [min, max] onto the whole
    // integer range. A zero range gives scale 1.
    static QuantParams compute_from_minmax(float min_val, float max_val, DType dtype, bool symmetric = true);

    bool is_per_channel() const { return channel_axis >= 0; }
    size_t num_channels() const { return scales.size(); }
};

struct GraphQuantInfo {
    std::unordered_map<std::string, QuantParams> tensor_params;
    bool weights_quantized = false;
    bool activations_quantized = false;
    // Per-channel (axis 1) means of the data inputs of Conv/Gemm nodes with a bias, from
    // calibration (Calibrator::compute_quant_params): the static quantizer subtracts the mean
    // output shift its weight rounding causes, (W_q - W) . E[x], from those nodes' biases.
    std::unordered_map<std::string, std::vector<float>> channel_means;

    bool has_params(const std::string& tensor_name) const { return tensor_params.count(tensor_name) != 0; }
    // ValidationError naming the tensor when absent.
    const QuantParams& get_params(const std::string& tensor_name) const;
    void set_params(const std::string& tensor_name, QuantParams params) { tensor_params[tensor_name] = std::move(params); }
};

// The integer range of a quantized dtype (Int8, UInt8, Int32); ValidationError otherwise.
std::pair<int64_t, int64_t> quant_range(DType dtype);

}  // namespace pyflame_rt::quantization
