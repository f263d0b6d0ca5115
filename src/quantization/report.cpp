#include "pyflame_rt/quantization/report.hpp"

#include <unordered_set>

#include "pyflame_rt/quantization/quantizer.hpp"

namespace pyflame_rt::quantization {
namespace {

float to_mb(size_t bytes) { return static_cast<float>(bytes / (1024.0 * 1024.0)); }

size_t read_count(const ModelMetadata& meta, const char* key) {
    auto it = meta.custom_metadata.find(key);
    if (it == meta.custom_metadata.end()) return 0;
    try {
        return static_cast<size_t>(std::stoull(it->second));
    } catch (const std::exception&) {
        return 0;
    }
}

bool is_integer_op(const std::string& op) {
    return op == "MatMulInteger" || op == "ConvInteger" || op == "QLinearConv" || op == "QLinearMatMul";
}

// A model quantized elsewhere: what its ops and initializers show.
QuantizationReport infer_report(const Graph& g) {
    QuantizationReport r;
    r.nodes_total = g.nodes().size();
    bool dynamic = false, static_q = false;
    std::unordered_set<std::string> dq_outputs, quantized_weights;
    for (const auto& n : g.nodes()) {
        const std::string& op = n->op_type();
        if (op == "DynamicQuantizeLinear") dynamic = true;
        if (op == "QuantizeLinear" || op == "QLinearConv" || op == "QLinearMatMul") static_q = true;
        if (op == "DequantizeLinear") {
            dq_outputs.insert(n->outputs()[0]);
            if (g.has_initializer(n->inputs()[0])) quantized_weights.insert(n->inputs()[0]);
        }
        if (is_integer_op(op))
            for (size_t k = 0; k < n->inputs().size(); ++k)
                if (g.has_initializer(n->inputs()[k])) quantized_weights.insert(n->inputs()[k]);
    }
    size_t half_weights = 0;
    size_t original = 0, current = 0;
    for (const auto& [name, t] : g.initializers()) {
        current += t.size_bytes();
        const bool half = t.dtype() == DType::Float16 || t.dtype() == DType::BFloat16;
        if (half) ++half_weights;
        const bool narrow_weight = (quantized_weights.count(name) && t.num_elements() > 1) || half;
        original += narrow_weight ? static_cast<size_t>(t.num_elements()) * 4 : t.size_bytes();
    }
    for (const auto& n : g.nodes()) {
        bool quantized = is_integer_op(n->op_type());
        if (!quantized && n->op_type() != "DequantizeLinear" && n->op_type() != "QuantizeLinear")
            for (const auto& in : n->inputs()) quantized |= dq_outputs.count(in) != 0;
        r.nodes_quantized += quantized;
    }
    if (dynamic) r.mode = QuantMode::DynamicInt8;
    else if (static_q) r.mode = QuantMode::StaticInt8;
    else if (!quantized_weights.empty()) r.mode = QuantMode::StaticInt8;  // weight-only QDQ
    else if (half_weights) {
        bool bf16 = false;
        for (const auto& [name, t] : g.initializers()) bf16 |= t.dtype() == DType::BFloat16;
        r.mode = bf16 ? QuantMode::BFloat16 : QuantMode::FP16;
        for (const auto& n : g.nodes()) {
            bool half_node = false;
            for (const auto& in : n->inputs())
                if (g.has_initializer(in)) {
                    const DType d = g.get_initializer(in).dtype();
                    half_node |= d == DType::Float16 || d == DType::BFloat16;
                }
            r.nodes_quantized += half_node;
        }
    }
    r.weights_quantized = !quantized_weights.empty() || half_weights > 0;
    r.activations_quantized = dynamic || static_q || half_weights > 0;
    r.original_size_mb = to_mb(original);
    r.quantized_size_mb = to_mb(current);
    r.compression_ratio = current ? static_cast<float>(static_cast<double>(original) / current) : 1.0f;
    return r;
}

}  // namespace

QuantizationReport quantization_report_of(const Graph& graph) {
    const auto& meta = graph.metadata();
    auto it = meta.custom_metadata.find(kMetaMode);
    if (it == meta.custom_metadata.end()) return infer_report(graph);
    QuantizationReport r;
    r.mode = quant_mode_from_name(it->second);
    r.nodes_quantized = read_count(meta, kMetaNodesQuantized);
    r.nodes_total = read_count(meta, kMetaNodesTotal);
    const size_t original = read_count(meta, kMetaOriginalBytes), quantized = read_count(meta, kMetaQuantizedBytes);
    r.original_size_mb = to_mb(original);
    r.quantized_size_mb = to_mb(quantized);
    r.compression_ratio = quantized ? static_cast<float>(static_cast<double>(original) / quantized) : 1.0f;
    r.weights_quantized = r.mode != QuantMode::None;
    r.activations_quantized = r.mode != QuantMode::None && r.nodes_quantized > 0;
    return r;
}

}  // namespace pyflame_rt::quantization
