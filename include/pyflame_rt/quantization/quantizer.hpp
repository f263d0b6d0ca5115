#pragma once
// Quantizer: rewrites a graph into FP16, BFloat16, dynamic INT8 or static INT8 form using only
// standard ONNX ops, so the result runs here and exports to ONNX Runtime unchanged:
//  - FP16/BF16: half-precision weight initializers, Casts at the boundaries of the ops kept in
//    FP32 (QuantConfig::exclude_ops) and at the graph inputs/outputs (which stay float32).
//  - DynamicInt8 (onnxruntime's quantize_dynamic form): int8 weights; MatMul/Gemm activations
//    through DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x_scale*w_scale) (+ bias);
//    Conv keeps float compute on its int8 weights (DequantizeLinear -> Conv: on-the-fly int8
//    convolution costs more than it saves here).
//  - StaticInt8 (QDQ form): QuantizeLinear/DequantizeLinear pairs on calibrated activations,
//    DequantizeLinear on int8 weights (per tensor or per output channel) and int32 biases. With
//    symmetric int8 activations, a tensor calibrated never negative (a Relu's output) is uint8
//    with zero point 0 (the Calibrator's choice), and a Relu right after a quantized
//    Conv/MatMul/Gemm/Add whose output zero point is the type's minimum is dropped (the
//    quantization clamps at 0 already). With calibration means (GraphQuantInfo::channel_means)
//    Conv/Gemm biases are corrected for their weights' rounding.
// The input graph is never modified; a bad configuration raises ValidationError.
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/quantization/quant_config.hpp"
#include "pyflame_rt/tensor.hpp"

namespace pyflame_rt::quantization {

struct QuantizationResult {
    std::unique_ptr<Graph> quantized_graph;
    GraphQuantInfo quant_info;
    bool success = false;
    std::string error_message;

    struct Stats {
        size_t nodes_quantized = 0;
        size_t nodes_skipped = 0;   // nodes of a quantizable type left in FP32 (excluded or unsupported form)
        size_t weights_quantized = 0;
        size_t original_size_bytes = 0;   // initializer bytes before
        size_t quantized_size_bytes = 0;  // initializer bytes after (scales and zero points included)

        float compression_ratio() const;
        float original_size_mb() const;
        float quantized_size_mb() const;
    } stats;
};

class Quantizer {
public:
    // ValidationError when !config.is_valid().
    explicit Quantizer(const QuantConfig& config);

    const QuantConfig& config() const { return config_; }

    // Each method needs the config's mode to match (FP16, BFloat16, DynamicInt8, StaticInt8).
    QuantizationResult convert_to_fp16(const Graph& graph);
    QuantizationResult convert_to_bfloat16(const Graph& graph);
    QuantizationResult quantize_dynamic(const Graph& graph);
    // `quant_info` holds the activation parameters (Calibrator::compute_quant_params) and may
    // hold weight parameters, which then replace the ones computed from the weights.
    QuantizationResult quantize(const Graph& graph, const GraphQuantInfo& quant_info);

    using Feed = std::unordered_map<std::string, Tensor>;
    using CalibrationDataProvider = std::function<Feed()>;
    // Calibrates on `num_batches` batches, then quantize_calibrated() with the first
    // kAccuracySampleBatches of them as samples.
    QuantizationResult quantize_with_calibration(const Graph& graph, CalibrationDataProvider data_provider,
                                                 size_t num_batches);

    // quantize(), then, when the quantized graph's float outputs on `samples` fall below cosine
    // similarity kMinOutputCosine to the float graph's, keeps the shortest prefix of the graph
    // in float (at most up to an eighth of its Conv/MatMul/Gemm nodes) that reaches it, or the
    // best prefix tried: quantization error of the first layers is amplified by all the layers
    // after them. No samples: quantize() alone.
    QuantizationResult quantize_calibrated(const Graph& graph, const GraphQuantInfo& quant_info,
                                           const std::vector<Feed>& samples);

    static constexpr double kMinOutputCosine = 0.99;
    static constexpr size_t kAccuracySampleBatches = 4;

private:
    QuantConfig config_;
};

// Metadata keys the Quantizer writes into the quantized graph (ModelMetadata::custom_metadata);
// they survive .pfm and ONNX export and feed InferenceSession::quantization_report().
inline constexpr const char* kMetaMode = "pyflame_rt.quantization.mode";
inline constexpr const char* kMetaNodesQuantized = "pyflame_rt.quantization.nodes_quantized";
inline constexpr const char* kMetaNodesTotal = "pyflame_rt.quantization.nodes_total";
inline constexpr const char* kMetaOriginalBytes = "pyflame_rt.quantization.original_size_bytes";
inline constexpr const char* kMetaQuantizedBytes = "pyflame_rt.quantization.quantized_size_bytes";

// Bytes of a graph's initializers (subgraphs included).
size_t initializer_bytes(const Graph& graph);

}  // namespace pyflame_rt::quantization
