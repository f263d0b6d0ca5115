#include "pyflame_rt/quantization/quant_config.hpp"

#include <algorithm>
#include <cmath>

#include "pyflame_rt/errors.hpp"

namespace pyflame_rt::quantization {

const char* quant_mode_name(QuantMode mode) {
    switch (mode) {
        case QuantMode::None: return "None";
        case QuantMode::FP16: return "FP16";
        case QuantMode::BFloat16: return "BFloat16";
        case QuantMode::DynamicInt8: return "DynamicInt8";
        case QuantMode::StaticInt8: return "StaticInt8";
    }
    return "unknown";
}

QuantMode quant_mode_from_name(const std::string& name) {
    for (QuantMode m : {QuantMode::None, QuantMode::FP16, QuantMode::BFloat16, QuantMode::DynamicInt8, QuantMode::StaticInt8})
        if (name == quant_mode_name(m)) return m;
    throw ValidationError("unknown quantization mode '" + name + "'");
}

const std::vector<std::string>& default_fp32_keep_ops() {
    static const std::vector<std::string> ops = {
        "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
        "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceProd", "Exp", "Log", "Pow", "CumSum", "Range", "Resize", "TopK", "NonMaxSuppression", "RoiAlign"};
    return ops;
}

QuantConfig QuantConfig::fp16() {
    QuantConfig c;
    c.mode = QuantMode::FP16;
    c.weight_dtype = c.activation_dtype = DType::Float16;
    c.exclude_ops = default_fp32_keep_ops();
    return c;
}

QuantConfig QuantConfig::bfloat16() {
    QuantConfig c;
    c.mode = QuantMode::BFloat16;
    c.weight_dtype = c.activation_dtype = DType::BFloat16;
    c.exclude_ops = default_fp32_keep_ops();
    return c;
}

QuantConfig QuantConfig::dynamic_int8() {
    QuantConfig c;
    c.mode = QuantMode::DynamicInt8;
    c.weight_dtype = DType::Int8;
    c.activation_dtype = DType::UInt8;  // DynamicQuantizeLinear produces uint8
    return c;
}

QuantConfig QuantConfig::static_int8(size_t calibration_samples) {
    QuantConfig c;
    c.mode = QuantMode::StaticInt8;
    c.calibration_samples = calibration_samples;
    return c;
}

namespace {
bool is_8bit(DType d) { return d == DType::Int8 || d == DType::UInt8; }
}  // namespace

std::string QuantConfig::validation_error() const {
    for (const auto& op : exclude_ops)
        if (op.empty()) return "exclude_ops holds an empty name";
    switch (mode) {
        case QuantMode::None:
        case QuantMode::FP16:
        case QuantMode::BFloat16:
            return "";
        case QuantMode::DynamicInt8:
            if (!is_8bit(weight_dtype))
                return std::string("DynamicInt8 needs an 8-bit weight_dtype (Int8 or UInt8), got ") + dtype_to_string(weight_dtype);
            if (activation_dtype != DType::UInt8)
                return "DynamicInt8 quantizes activations with DynamicQuantizeLinear, which produces UInt8; activation_dtype is " +
                       dtype_to_string(activation_dtype);
            return "";
        case QuantMode::StaticInt8:
            if (!is_8bit(weight_dtype))
                return std::string("StaticInt8 needs an 8-bit weight_dtype (Int8 or UInt8), got ") + dtype_to_string(weight_dtype);
            if (!is_8bit(activation_dtype))
                return "StaticInt8 needs an 8-bit activation_dtype (Int8 or UInt8), got " + dtype_to_string(activation_dtype);
            if (calibration_samples == 0)
                return "StaticInt8 needs calibration data: calibration_samples is 0";
            return "";
    }
    return "unknown quantization mode";
}

bool QuantConfig::excludes(const std::string& op_type, const std::string& node_name) const {
    return std::find(exclude_ops.begin(), exclude_ops.end(), op_type) != exclude_ops.end() ||
           (!node_name.empty() && std::find(exclude_ops.begin(), exclude_ops.end(), node_name) != exclude_ops.end());
}

std::pair<int64_t, int64_t> quant_range(DType dtype) {
    switch (dtype) {
        case DType::Int8: return {-128, 127};
        case DType::UInt8: return {0, 255};
        case DType::Int32: return {INT32_MIN, INT32_MAX};
        default: throw ValidationError("quantized dtype must be Int8, UInt8 or Int32, got " + dtype_to_string(dtype));
    }
}

namespace {

void check_params(const std::vector<float>& scales, const std::vector<int32_t>& zero_points, DType dtype) {
    const auto [lo, hi] = quant_range(dtype);
    if (scales.empty()) throw ValidationError("QuantParams: at least one scale is needed");
    if (scales.size() != zero_points.size())
        throw ValidationError("QuantParams: " + std::to_string(scales.size()) + " scales but " +
                              std::to_string(zero_points.size()) + " zero points");
    for (float s : scales)
        if (!(s > 0.0f) || !std::isfinite(s)) throw ValidationError("QuantParams: scale " + std::to_string(s) + " is not a positive finite number");
    for (int32_t z : zero_points)
        if (z < lo || z > hi)
            throw ValidationError("QuantParams: zero point " + std::to_string(z) + " is outside the " + dtype_to_string(dtype) +
                                  " range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

}  // namespace

QuantParams QuantParams::per_tensor(float scale, int32_t zero_point, DType dtype) {
    check_params({scale}, {zero_point}, dtype);
    QuantParams p;
    p.scales = {scale};
    p.zero_points = {zero_point};
    p.quantized_dtype = dtype;
    p.channel_axis = -1;
    return p;
}

QuantParams QuantParams::per_channel(const std::vector<float>& scales, const std::vector<int32_t>& zero_points,
                                     int channel_axis, DType dtype) {
    if (channel_axis < 0) throw ValidationError("QuantParams.per_channel: channel_axis must be >= 0, got " + std::to_string(channel_axis));
    check_params(scales, zero_points, dtype);
    QuantParams p;
    p.scales = scales;
    p.zero_points = zero_points;
    p.quantized_dtype = dtype;
    p.channel_axis = channel_axis;
    return p;
}

QuantParams QuantParams::compute_from_minmax(float min_val, float max_val, DType dtype, bool symmetric) {
    if (std::isnan(min_val) || std::isnan(max_val)) throw ValidationError("compute_from_minmax: min/max is NaN");
    if (min_val > max_val) throw ValidationError("compute_from_minmax: min " + std::to_string(min_val) + " > max " + std::to_string(max_val));
    const auto [qmin_full, qmax] = quant_range(dtype);
    double lo = std::min<double>(min_val, 0.0), hi = std::max<double>(max_val, 0.0);
    // Symmetric int8 uses [-127, 127] so that -x quantizes to -q (as onnxruntime does).
    const int64_t qmin = symmetric && dtype == DType::Int8 ? -127 : qmin_full;
    double scale;
    int64_t zero_point;
    if (symmetric) {
        const double a = std::max(-lo, hi);
        lo = -a;
        hi = a;
        scale = (hi - lo) / static_cast<double>(qmax - qmin);
        zero_point = dtype == DType::UInt8 ? 128 : 0;
    } else {
        scale = (hi - lo) / static_cast<double>(qmax - qmin);
        zero_point = scale > 0 ? static_cast<int64_t>(std::nearbyint(static_cast<double>(qmin) - lo / scale)) : 0;
        zero_point = std::clamp<int64_t>(zero_point, qmin, qmax);
    }
    if (!(scale > 0) || !std::isfinite(static_cast<float>(scale)) || static_cast<float>(scale) == 0.0f) {
        scale = 1.0;  // an all-zero range: any scale represents it exactly
        zero_point = symmetric && dtype == DType::UInt8 ? 128 : (dtype == DType::UInt8 ? 0 : 0);
    }
    return per_tensor(static_cast<float>(scale), static_cast<int32_t>(zero_point), dtype);
}

const QuantParams& GraphQuantInfo::get_params(const std::string& tensor_name) const {
    auto it = tensor_params.find(tensor_name);
    if (it == tensor_params.end()) throw ValidationError("no quantization parameters for tensor '" + tensor_name + "'");
    return it->second;
}

}  // namespace pyflame_rt::quantization
