#pragma once
// QuantizationReport: what InferenceSession::quantization_report() says about its model.
#include <cstddef>

#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/quantization/quant_config.hpp"

namespace pyflame_rt::quantization {

struct QuantizationReport {
    QuantMode mode = QuantMode::None;
    size_t nodes_quantized = 0;
    size_t nodes_total = 0;
    float compression_ratio = 1.0f;
    float original_size_mb = 0.0f;
    float quantized_size_mb = 0.0f;
    bool weights_quantized = false;
    bool activations_quantized = false;
};

// From the metadata the Quantizer wrote; for a model quantized elsewhere (an imported QDQ,
// QLinear* or integer-op ONNX model, or half-precision weights) from the graph's ops and
// initializers, counting each quantized weight's float32 size as its original size.
QuantizationReport quantization_report_of(const Graph& graph);

}  // namespace pyflame_rt::quantization
