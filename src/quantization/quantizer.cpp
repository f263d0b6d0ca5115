#include "pyflame_rt/quantization/quantizer.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/session.hpp"
#include "pyflame_rt/quantization/calibrator.hpp"
#include "pyflame_rt/quantization/float16.hpp"
#include "quantization/graph_util.hpp"

namespace pyflame_rt::quantization {

float QuantizationResult::Stats::compression_ratio() const {
    return quantized_size_bytes == 0 ? 1.0f : static_cast<float>(static_cast<double>(original_size_bytes) / quantized_size_bytes);
}
float QuantizationResult::Stats::original_size_mb() const { return static_cast<float>(original_size_bytes / (1024.0 * 1024.0)); }
float QuantizationResult::Stats::quantized_size_mb() const { return static_cast<float>(quantized_size_bytes / (1024.0 * 1024.0)); }

size_t initializer_bytes(const Graph& graph) {
    size_t total = 0;
    for (const auto& [name, t] : graph.initializers()) total += t.size_bytes();
    for (const auto& n : graph.nodes())
        for (const auto& [k, v] : n->attributes())
            if (const auto* sub = std::get_if<std::shared_ptr<Graph>>(&v); sub && *sub) total += initializer_bytes(**sub);
    return total;
}

namespace {

using detail::value_dtypes;

// ------------------------------------------------------------------------------------ helpers

// A graph under rewrite: the nodes in order, fresh value names, and initializer bookkeeping.
class Rewriter {
public:
    explicit Rewriter(const Graph& source) : graph_(std::make_unique<Graph>(source)) {
        graph_->set_nodes(source.topological_sort());
        for (const auto& n : graph_->nodes()) {
            for (const auto& i : n->inputs()) names_.insert(i);
            for (const auto& o : n->outputs()) names_.insert(o);
        }
        for (const auto& i : graph_->inputs()) names_.insert(i.name);
        for (const auto& [name, t] : graph_->initializers()) names_.insert(name);
    }

    Graph& graph() { return *graph_; }
    std::unique_ptr<Graph> take() { return std::move(graph_); }

    // `base`, or base_1, base_2, ... when taken.
    std::string fresh(const std::string& base) {
        std::string name = base;
        for (int k = 1; names_.count(name); ++k) name = base + "_" + std::to_string(k);
        names_.insert(name);
        return name;
    }

    std::shared_ptr<Node> make_node(const std::string& op, const std::string& base_name, std::vector<std::string> inputs,
                                    std::vector<std::string> outputs) {
        return std::make_shared<Node>(op, fresh(base_name), inputs, outputs);
    }

    std::string add_initializer(const std::string& base, Tensor t) {
        const std::string name = fresh(base);
        graph_->add_initializer(name, std::move(t));
        return name;
    }

    // Drops initializers no node (or graph output) reads any more.
    void drop_unused_initializers() {
        std::unordered_set<std::string> used;
        for (const auto& n : graph_->nodes()) {
            for (const auto& i : n->inputs()) used.insert(i);
            for (const auto& [k, v] : n->attributes())
                if (std::holds_alternative<std::shared_ptr<Graph>>(v)) return;  // subgraphs may read anything: keep all
        }
        for (const auto& o : graph_->outputs()) used.insert(o.name);
        for (const auto& i : graph_->inputs()) used.insert(i.name);
        const std::vector<std::string> names = graph_->initializer_names();
        for (const auto& name : names)
            if (!used.count(name)) graph_->remove_initializer(name);
    }

private:
    std::unique_ptr<Graph> graph_;
    std::unordered_set<std::string> names_;
};

// A changed copy of a node (nodes may be shared with the source graph: never mutate them).
std::shared_ptr<Node> copy_node(const Node& n) { return std::make_shared<Node>(n); }

bool is_graph_output(const Graph& g, const std::string& name) {
    for (const auto& o : g.outputs())
        if (o.name == name) return true;
    return false;
}

Tensor scalar_tensor_f32(float v) {
    Tensor t({}, DType::Float32);
    *t.data_ptr<float>() = v;
    return t;
}

Tensor vector_tensor_f32(const std::vector<float>& v, std::vector<int64_t> shape) {
    Tensor t(shape, DType::Float32);
    std::copy(v.begin(), v.end(), t.data_ptr<float>());
    return t;
}

// Zero points as a tensor of the quantized dtype: a scalar for per-tensor params, else 1-D.
Tensor zero_point_tensor(const QuantParams& p, bool per_channel_shape) {
    std::vector<int64_t> shape;
    if (per_channel_shape) shape = {static_cast<int64_t>(p.zero_points.size())};
    Tensor t(shape, p.quantized_dtype);
    for (size_t i = 0; i < p.zero_points.size(); ++i) {
        switch (p.quantized_dtype) {
            case DType::Int8: t.data_ptr<int8_t>()[i] = static_cast<int8_t>(p.zero_points[i]); break;
            case DType::UInt8: t.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(p.zero_points[i]); break;
            case DType::Int32: t.data_ptr<int32_t>()[i] = p.zero_points[i]; break;
            default: throw ValidationError("zero point dtype " + dtype_to_string(p.quantized_dtype));
        }
    }
    return t;
}

// float32 tensor -> dtype `p.quantized_dtype` with round-half-to-even and saturation (as
// QuantizeLinear). Per channel: channel c along p.channel_axis uses scales[c].
// The parameter channel of each element of a row-major tensor of `shape` under `p` (0 when
// per-tensor).
class ChannelOf {
public:
    ChannelOf(const std::vector<int64_t>& shape, const QuantParams& p) {
        if (!p.is_per_channel()) return;
        dim_ = shape[p.channel_axis];
        for (size_t d = p.channel_axis + 1; d < shape.size(); ++d) inner_ *= shape[d];
    }
    int64_t operator()(int64_t i) const { return (i / inner_) % dim_; }

private:
    int64_t inner_ = 1, dim_ = 1;
};

Tensor quantize_tensor(const Tensor& w, const QuantParams& p) {
    const auto [qmin, qmax] = quant_range(p.quantized_dtype);
    Tensor out(w.shape(), p.quantized_dtype);
    const float* src = w.data_ptr<float>();
    const ChannelOf channel_of(w.shape(), p);
    const int64_t n = w.num_elements();
    for (int64_t i = 0; i < n; ++i) {
        const int64_t c = channel_of(i);
        const double q = std::nearbyint(static_cast<double>(src[i]) / p.scales[c]) + p.zero_points[c];
        const int64_t v = static_cast<int64_t>(std::clamp<double>(q, static_cast<double>(qmin), static_cast<double>(qmax)));
        switch (p.quantized_dtype) {
            case DType::Int8: out.data_ptr<int8_t>()[i] = static_cast<int8_t>(v); break;
            case DType::UInt8: out.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(v); break;
            case DType::Int32: out.data_ptr<int32_t>()[i] = static_cast<int32_t>(v); break;
            default: break;
        }
    }
    return out;
}

// The float values a quantized tensor stands for: (q - zero_point) * scale, per channel as
// quantize_tensor.
std::vector<float> dequantize_tensor(const Tensor& q, const QuantParams& p) {
    const ChannelOf channel_of(q.shape(), p);
    std::vector<float> out(static_cast<size_t>(q.num_elements()));
    for (int64_t i = 0; i < q.num_elements(); ++i) {
        const int64_t c = channel_of(i);
        int64_t v = 0;
        switch (p.quantized_dtype) {
            case DType::Int8: v = q.data_ptr<int8_t>()[i]; break;
            case DType::UInt8: v = q.data_ptr<uint8_t>()[i]; break;
            case DType::Int32: v = q.data_ptr<int32_t>()[i]; break;
            default: throw ValidationError("dequantize: dtype " + dtype_to_string(p.quantized_dtype));
        }
        out[i] = static_cast<float>(static_cast<double>(v - p.zero_points[c]) * p.scales[c]);
    }
    return out;
}

// Bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
// Correction", 2019): rounding the weights shifts each output channel's mean by
// (W_q - W) . E[x]; with E[x] the calibration's per-input-channel mean (`channel_means`, of a
// Conv's input channel or a Gemm's input feature) the bias absorbs that shift. A Conv's zero
// padding is ignored (the border taps see the mean too). nullopt when the means do not fit.
std::optional<Tensor> corrected_bias(const Node& n, const Tensor& w, const std::vector<float>& dequantized_w, const Tensor& bias,
                                     const std::vector<float>& channel_means) {
    const float* wf = w.data_ptr<float>();
    const int64_t out_channels = n.op_type() == "Conv" ? w.shape()[0]
                                 : n.get_attribute<int64_t>("transB", 0) != 0 ? w.shape()[0]
                                                                               : w.shape()[1];
    if (bias.num_elements() != out_channels || bias.dtype() != DType::Float32) return std::nullopt;
    std::vector<double> shift(out_channels, 0.0);
    if (n.op_type() == "Conv") {
        const int64_t group = n.get_attribute<int64_t>("group", 1);
        const int64_t in_per_group = w.shape()[1];
        if (group <= 0 || out_channels % group != 0 || static_cast<int64_t>(channel_means.size()) != in_per_group * group)
            return std::nullopt;
        int64_t taps = 1;
        for (size_t d = 2; d < w.ndim(); ++d) taps *= w.shape()[d];
        const int64_t out_per_group = out_channels / group;
        for (int64_t co = 0; co < out_channels; ++co)
            for (int64_t ci = 0; ci < in_per_group; ++ci) {
                const double mean = channel_means[(co / out_per_group) * in_per_group + ci];
                const int64_t base = (co * in_per_group + ci) * taps;
                double err = 0;
                for (int64_t k = 0; k < taps; ++k) err += static_cast<double>(dequantized_w[base + k]) - wf[base + k];
                shift[co] += err * mean;
            }
    } else {  // Gemm: y = x W (+ b), W is [K, N], or [N, K] with transB
        const bool trans_b = n.get_attribute<int64_t>("transB", 0) != 0;
        const int64_t k_dim = trans_b ? w.shape()[1] : w.shape()[0];
        if (static_cast<int64_t>(channel_means.size()) != k_dim) return std::nullopt;
        for (int64_t k = 0; k < k_dim; ++k)
            for (int64_t c = 0; c < out_channels; ++c) {
                const int64_t i = trans_b ? c * k_dim + k : k * out_channels + c;
                shift[c] += (static_cast<double>(dequantized_w[i]) - wf[i]) * channel_means[k];
            }
    }
    Tensor out = bias.clone();
    for (int64_t c = 0; c < out_channels; ++c) out.data_ptr<float>()[c] = static_cast<float>(out.data_ptr<float>()[c] - shift[c]);
    return out;
}

// Weight parameters from the weight's values: per tensor, or per channel along `axis`.
// Symmetric int8 weights use [-127, 127] (zero point 0), as onnxruntime.
QuantParams weight_params(const Tensor& w, const QuantConfig& config, int axis) {
    const float* src = w.data_ptr<float>();
    const int64_t n = w.num_elements();
    if (config.granularity == QuantGranularity::PerTensor || axis < 0) {
        float lo = 0, hi = 0;
        for (int64_t i = 0; i < n; ++i) {
            lo = std::min(lo, src[i]);
            hi = std::max(hi, src[i]);
        }
        return QuantParams::compute_from_minmax(lo, hi, config.weight_dtype, config.symmetric);
    }
    const int64_t dim = w.shape()[axis];
    int64_t inner = 1;
    for (size_t d = axis + 1; d < w.ndim(); ++d) inner *= w.shape()[d];
    std::vector<float> lo(dim, 0.0f), hi(dim, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t c = (i / inner) % dim;
        lo[c] = std::min(lo[c], src[i]);
        hi[c] = std::max(hi[c], src[i]);
    }
    std::vector<float> scales;
    std::vector<int32_t> zps;
    for (int64_t c = 0; c < dim; ++c) {
        const QuantParams pc = QuantParams::compute_from_minmax(lo[c], hi[c], config.weight_dtype, config.symmetric);
        scales.push_back(pc.scales[0]);
        zps.push_back(pc.zero_points[0]);
    }
    return QuantParams::per_channel(scales, zps, axis, config.weight_dtype);
}

// Checks user-given params against the tensor they quantize.
void check_params_fit(const std::string& name, const QuantParams& p, const std::vector<int64_t>& shape, bool activation) {
    if (!p.is_per_channel()) {
        if (p.scales.size() != 1) throw ValidationError("tensor '" + name + "': per-tensor params need exactly one scale");
        return;
    }
    if (activation)
        throw ValidationError("tensor '" + name + "' is an activation: activations are quantized per tensor, but its params are per channel (axis " +
                              std::to_string(p.channel_axis) + ")");
    if (p.channel_axis >= static_cast<int>(shape.size()))
        throw ValidationError("tensor '" + name + "': per-channel axis " + std::to_string(p.channel_axis) + " is out of range for shape " +
                              shape_to_string(shape));
    if (static_cast<int64_t>(p.scales.size()) != shape[p.channel_axis])
        throw ValidationError("tensor '" + name + "': " + std::to_string(p.scales.size()) + " per-channel scales for axis " +
                              std::to_string(p.channel_axis) + " of size " + std::to_string(shape[p.channel_axis]) + " (shape " +
                              shape_to_string(shape) + ")");
}

Tensor transpose_2d(const Tensor& t) {
    const int64_t r = t.shape()[0], c = t.shape()[1];
    Tensor out({c, r}, DType::Float32);
    const float* s = t.data_ptr<float>();
    float* d = out.data_ptr<float>();
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) d[j * r + i] = s[i * c + j];
    return out;
}

// A copy without intermediate type annotations: converted values changed dtype, so the old
// ones would be wrong (shape inference redoes them when a session is created).
std::unique_ptr<Graph> without_value_infos(const Graph& g) {
    auto clean = std::make_unique<Graph>(g.name());
    for (const auto& i : g.inputs()) clean->add_input(i);
    for (const auto& o : g.outputs()) clean->add_output(o);
    for (const auto& name : g.initializer_names()) clean->add_initializer(name, g.get_initializer(name));
    clean->set_nodes(g.nodes());
    clean->opset_imports() = g.opset_imports();
    clean->metadata() = g.metadata();
    return clean;
}

void finish(QuantizationResult& result, const Graph& source, QuantMode mode, size_t nodes_total) {
    result.stats.original_size_bytes = initializer_bytes(source);
    result.stats.quantized_size_bytes = initializer_bytes(*result.quantized_graph);
    auto& meta = result.quantized_graph->metadata().custom_metadata;
    meta[kMetaMode] = quant_mode_name(mode);
    meta[kMetaNodesQuantized] = std::to_string(result.stats.nodes_quantized);
    meta[kMetaNodesTotal] = std::to_string(nodes_total);
    meta[kMetaOriginalBytes] = std::to_string(result.stats.original_size_bytes);
    meta[kMetaQuantizedBytes] = std::to_string(result.stats.quantized_size_bytes);
    const auto problems = result.quantized_graph->validate();
    if (!problems.empty()) throw PyFlameRTError("quantization produced an invalid graph (a bug): " + problems.front());
    result.success = true;
}

void require_mode(const QuantConfig& config, QuantMode wanted, const char* method) {
    if (config.mode != wanted)
        throw ValidationError(std::string("Quantizer.") + method + " needs a QuantConfig with mode " + quant_mode_name(wanted) +
                              ", got " + quant_mode_name(config.mode));
}

// ------------------------------------------------------------------------- FP16 / BFloat16

// Ops computed in half precision: every float input shares the type T (shape operands are
// integers), so converting all float32 inputs is type-correct.
bool converts_to_half(const std::string& op) {
    static const std::unordered_set<std::string> ops = {
        "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid",
        "Tanh", "Erf", "Gelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Softsign", "Neg", "Abs", "Sqrt",
        "Reciprocal", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Concat",
        "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split", "Identity", "Pad", "Clip",
        "Where", "Expand", "Tile", "Dropout", "SpaceToDepth", "DepthToSpace", "Max", "Min", "Sum", "Mean"};
    return ops.count(op) != 0;
}

// Ops whose first output's dtype is not their first input's.
bool changes_dtype(const std::string& op) {
    static const std::unordered_set<std::string> ops = {
        "Shape", "Size", "Cast", "CastLike", "ArgMax", "ArgMin", "NonZero", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "ConstantOfShape", "EyeLike", "RandomNormalLike",
        "RandomUniformLike", "Multinomial", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Where"};
    return ops.count(op) != 0;
}

// Ops that read any input dtype (no Cast needed in front of them).
bool reads_any_dtype(const std::string& op) { return op == "Shape" || op == "Size" || op == "Cast" || op == "CastLike"; }

// Whether this build's kernels run `op` on half-precision inputs (the reference MatMul/Gemm
// take float32/64 only; oneDNN half kernels may add them). Probed once per op and dtype with a
// one-node session; ops not probed here take half in the reference kernels.
bool runs_in_half(const std::string& op, DType half) {
    if (op != "MatMul" && op != "Gemm") return true;
    static std::mutex mutex;
    static std::map<std::pair<std::string, DType>, bool> known;
    std::lock_guard<std::mutex> lock(mutex);
    auto key = std::make_pair(op, half);
    auto it = known.find(key);
    if (it != known.end()) return it->second;
    bool ok = false;
    try {
        auto g = std::make_shared<Graph>("probe");
        g->add_input(TensorInfo{"a", half, {2, 4}});
        g->add_output(TensorInfo{"y", half, {2, 3}});
        g->add_initializer("b", Tensor::zeros({4, 3}, half));
        g->add_node(std::make_shared<Node>(op, "probe", std::vector<std::string>{"a", "b"}, std::vector<std::string>{"y"}));
        g->opset_imports()[""] = 17;
        SessionOptions options;
        options.num_threads = 1;
        options.log_level = "fatal";
        InferenceSession session(g, options);
        session.run({}, {{"a", Tensor::zeros({2, 4}, half)}});
        ok = true;
    } catch (const PyFlameRTError&) {
        ok = false;
    }
    known[key] = ok;
    return ok;
}

Tensor to_half(const Tensor& t, DType half) {
    Tensor out(t.shape(), half);
    const float* s = t.data_ptr<float>();
    auto* d = out.data_ptr<uint16_t>();
    const int64_t n = t.num_elements();
    for (int64_t i = 0; i < n; ++i) d[i] = half == DType::Float16 ? Float16::from_float(s[i]).bits : BFloat16::from_float(s[i]).bits;
    return out;
}

QuantizationResult convert_half(const Graph& source, const QuantConfig& config, DType half) {
    QuantizationResult result;
    const auto dtypes = value_dtypes(source);
    Rewriter rw(source);
    Graph& g = rw.graph();
    const std::string suffix = half == DType::Float16 ? "_fp16" : "_bf16";

    std::unordered_map<std::string, DType> current = dtypes;  // dtype of each value as rewritten
    std::unordered_map<std::string, std::string> casts;       // (value + target) -> cast output
    std::unordered_map<std::string, std::string> half_weights;
    std::vector<std::shared_ptr<Node>> out_nodes;

    auto cast_to = [&](const std::string& value, DType to) {
        const std::string key = value + (to == DType::Float32 ? "#f32" : "#half");
        auto it = casts.find(key);
        if (it != casts.end()) return it->second;
        const std::string out = rw.fresh(value + (to == DType::Float32 ? "_fp32" : suffix));
        auto cast = rw.make_node("Cast", value + "_cast" + (to == DType::Float32 ? "_fp32" : suffix), {value}, {out});
        cast->set_attribute("to", static_cast<int64_t>(dtype_to_onnx(to)));
        out_nodes.push_back(cast);
        current[out] = to;
        casts[key] = out;
        return out;
    };

    for (const auto& node : g.nodes()) {
        const Node& n = *node;
        bool has_float = false;
        for (const auto& i : n.inputs()) has_float |= !i.empty() && current.count(i) && (current[i] == DType::Float32 || current[i] == half);
        for (const auto& o : n.outputs()) has_float |= dtypes.count(o) && dtypes.at(o) == DType::Float32;
        const bool candidate = n.domain().empty() && converts_to_half(n.op_type()) && has_float;
        const bool converted = candidate && !config.excludes(n.op_type(), n.name());
        if (candidate && !converted) ++result.stats.nodes_skipped;
        if (converted) ++result.stats.nodes_quantized;
        // Without a half kernel for the op: half weights, computed in FP32 behind a Cast.
        const bool weight_only = converted && !runs_in_half(n.op_type(), half);
        const bool lp = converted && !weight_only;

        auto copy = copy_node(n);
        bool changed = false;
        for (size_t k = 0; k < n.inputs().size(); ++k) {
            const std::string& in = n.inputs()[k];
            if (in.empty() || !current.count(in)) continue;
            const DType t = current[in];
            const bool is_weight =
                g.has_initializer(in) && g.get_initializer(in).dtype() == DType::Float32 && source.has_initializer(in);
            if ((lp || (weight_only && is_weight)) && t == DType::Float32 && !(n.op_type() == "Dropout" && k > 0)) {
                if (is_weight) {
                    auto it = half_weights.find(in);
                    if (it == half_weights.end()) {
                        it = half_weights.emplace(in, rw.add_initializer(in + suffix, to_half(g.get_initializer(in), half))).first;
                        current[it->second] = half;
                        ++result.stats.weights_quantized;
                    }
                    copy->set_input(k, weight_only ? cast_to(it->second, DType::Float32) : it->second);
                } else {
                    copy->set_input(k, cast_to(in, half));
                }
                changed = true;
            } else if (!lp && t == half && !reads_any_dtype(n.op_type())) {
                copy->set_input(k, cast_to(in, DType::Float32));
                changed = true;
            }
        }
        // Output dtypes, also where shape inference left a value untyped (e.g. a Reshape to a
        // computed shape): the ops converted here output their input type T (Dropout's mask aside).
        for (size_t k = 0; k < n.outputs().size(); ++k) {
            const std::string& o = n.outputs()[k];
            const bool typed = dtypes.count(o) != 0;
            const bool float_out = typed ? dtypes.at(o) == DType::Float32 : (candidate && !(n.op_type() == "Dropout" && k > 0));
            if (lp && float_out) {
                current[o] = half;
            } else if (!typed && float_out) {
                current[o] = DType::Float32;
            } else if (!typed && !candidate && (k == 0 || n.op_type() == "Split") && !changes_dtype(n.op_type()) &&
                       !copy->inputs().empty() && current.count(copy->inputs()[0]) &&
                       current[copy->inputs()[0]] == DType::Float32) {
                current[o] = DType::Float32;  // a float op kept in FP32 (LayerNormalization, Softmax, ...)
            }
        }
        out_nodes.push_back(changed ? copy : node);
    }

    // Graph outputs stay float32: the producer writes NAME_fp16 and a Cast restores NAME.
    for (const auto& o : g.outputs()) {
        if (!current.count(o.name) || current[o.name] != half) continue;
        const std::string renamed = rw.fresh(o.name + suffix);
        for (auto& n : out_nodes) {
            bool touches = false;
            for (const auto& x : n->outputs()) touches |= x == o.name;
            for (const auto& x : n->inputs()) touches |= x == o.name;
            if (!touches) continue;
            auto c = copy_node(*n);
            for (size_t k = 0; k < c->outputs().size(); ++k)
                if (c->outputs()[k] == o.name) c->set_output(k, renamed);
            for (size_t k = 0; k < c->inputs().size(); ++k)
                if (c->inputs()[k] == o.name) c->set_input(k, renamed);
            n = c;
        }
        for (auto& [key, value] : casts)
            if (value == o.name) value = renamed;
        auto cast = rw.make_node("Cast", o.name + "_cast_fp32", {renamed}, {o.name});
        cast->set_attribute("to", static_cast<int64_t>(dtype_to_onnx(DType::Float32)));
        out_nodes.push_back(cast);
    }
    g.set_nodes(std::move(out_nodes));
    rw.drop_unused_initializers();
    result.quantized_graph = without_value_infos(*rw.take());
    result.quant_info.weights_quantized = result.stats.weights_quantized > 0;
    result.quant_info.activations_quantized = result.stats.nodes_quantized > 0;
    return result;
}

}  // namespace

// ------------------------------------------------------------------------------- Quantizer

Quantizer::Quantizer(const QuantConfig& config) : config_(config) {
    const std::string error = config.validation_error();
    if (!error.empty()) throw ValidationError("invalid QuantConfig: " + error);
}

QuantizationResult Quantizer::convert_to_fp16(const Graph& graph) {
    require_mode(config_, QuantMode::FP16, "convert_to_fp16");
    auto result = convert_half(graph, config_, DType::Float16);
    finish(result, graph, QuantMode::FP16, graph.nodes().size());
    return result;
}

QuantizationResult Quantizer::convert_to_bfloat16(const Graph& graph) {
    require_mode(config_, QuantMode::BFloat16, "convert_to_bfloat16");
    auto result = convert_half(graph, config_, DType::BFloat16);
    finish(result, graph, QuantMode::BFloat16, graph.nodes().size());
    return result;
}

// ---------------------------------------------------------------------------- dynamic INT8

QuantizationResult Quantizer::quantize_dynamic(const Graph& graph) {
    require_mode(config_, QuantMode::DynamicInt8, "quantize_dynamic");
    QuantizationResult result;
    const auto dtypes = value_dtypes(graph);
    Rewriter rw(graph);
    Graph& g = rw.graph();
    std::vector<std::shared_ptr<Node>> out_nodes;
    // One DynamicQuantizeLinear per activation, shared by its consumers (e.g. Q/K/V projections).
    std::unordered_map<std::string, std::array<std::string, 3>> dql;
    auto quantize_activation = [&](const std::string& x) {
        auto it = dql.find(x);
        if (it != dql.end()) return it->second;
        std::array<std::string, 3> names = {rw.fresh(x + "_quantized"), rw.fresh(x + "_scale"), rw.fresh(x + "_zero_point")};
        out_nodes.push_back(rw.make_node("DynamicQuantizeLinear", x + "_DynamicQuantizeLinear", {x}, {names[0], names[1], names[2]}));
        dql[x] = names;
        return names;
    };
    auto is_float = [&](const std::string& v) { return dtypes.count(v) && dtypes.at(v) == DType::Float32; };
    // Weights and biases may be Identity copies of initializers (shared parameters).
    const detail::ConstantAliases aliases = detail::constant_aliases(g);
    auto initializer_of = [&](const std::string& v) { return detail::resolve_constant(aliases, v); };
    auto is_initializer = [&](const std::string& v) { return !v.empty() && g.has_initializer(initializer_of(v)); };

    for (const auto& node : g.nodes()) {
        const Node& n = *node;
        const std::string& op = n.op_type();
        const bool candidate = n.domain().empty() && (op == "MatMul" || op == "Gemm" || op == "Conv");
        if (!candidate) {
            out_nodes.push_back(node);
            continue;
        }
        const bool weight_const = n.inputs().size() >= 2 && is_initializer(n.inputs()[1]) &&
                                  g.get_initializer(initializer_of(n.inputs()[1])).dtype() == DType::Float32 &&
                                  !is_initializer(n.inputs()[0]) && is_float(n.inputs()[0]);
        bool ok = weight_const && !config_.excludes(op, n.name());
        const Tensor* w = ok ? &g.get_initializer(initializer_of(n.inputs()[1])) : nullptr;
        if (ok && op == "MatMul") ok = w->ndim() == 2;
        if (ok && op == "Conv") ok = w->ndim() >= 3;
        if (ok && op == "Gemm") {
            ok = w->ndim() == 2 && n.get_attribute<int64_t>("transA", 0) == 0;
            if (ok && n.has_input(2))
                ok = is_initializer(n.inputs()[2]) && g.get_initializer(initializer_of(n.inputs()[2])).dtype() == DType::Float32;
        }
        if (ok && op == "Conv" && n.has_input(2))
            ok = is_initializer(n.inputs()[2]) && g.get_initializer(initializer_of(n.inputs()[2])).ndim() == 1;
        if (!ok) {
            if (weight_const || op != "MatMul") ++result.stats.nodes_skipped;
            out_nodes.push_back(node);
            continue;
        }
        ++result.stats.nodes_quantized;
        ++result.stats.weights_quantized;
        const std::string& x = n.inputs()[0];
        const std::string& y = n.outputs()[0];
        const std::string wname = initializer_of(n.inputs()[1]);
        if (op == "Conv") {
            // Weight-only: quantizing the activation on the fly and rescaling the int32 output
            // (DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul -> Add) costs more passes over
            // a convolution's large outputs than int8 arithmetic saves (ResNet-50 ran 0.77x of
            // FP32), so a Conv keeps float compute on int8 weights behind a DequantizeLinear,
            // which the session folds into float weights once.
            const QuantParams wp = weight_params(*w, config_, 0);
            const std::string wq = rw.add_initializer(wname + "_quantized", quantize_tensor(*w, wp));
            const std::string ws = rw.add_initializer(
                wname + "_scale", wp.is_per_channel() ? vector_tensor_f32(wp.scales, {static_cast<int64_t>(wp.scales.size())})
                                                      : scalar_tensor_f32(wp.scales[0]));
            const std::string wz = rw.add_initializer(wname + "_zero_point", zero_point_tensor(wp, wp.is_per_channel()));
            const std::string dequantized = rw.fresh(wname + "_DequantizeLinear_Output");
            auto dq = rw.make_node("DequantizeLinear", wname + "_DequantizeLinear", {wq, ws, wz}, {dequantized});
            if (wp.is_per_channel()) dq->set_attribute("axis", int64_t{0});
            out_nodes.push_back(dq);
            auto conv = copy_node(n);
            conv->set_input(1, dequantized);
            out_nodes.push_back(conv);
            result.quant_info.set_params(wname, wp);
            continue;
        }
        const auto xq = quantize_activation(x);

        Tensor weight = *w;  // MatMulInteger wants B as [K, N]
        float extra_scale = 1.0f;
        int axis = 1;  // output channels: columns of [K, N]; rows (axis 0) of a Conv weight
        if (op == "Gemm") {
            if (n.get_attribute<int64_t>("transB", 0) != 0) weight = transpose_2d(weight);
            extra_scale = static_cast<float>(n.get_attribute<double>("alpha", 1.0));
        }
        if (op == "Conv") axis = 0;
        QuantParams wp = weight_params(weight, config_, axis);
        const bool per_channel = wp.is_per_channel();
        const std::string wq = rw.add_initializer(wname + "_quantized", quantize_tensor(weight, wp));
        std::vector<float> scales = wp.scales;
        for (auto& s : scales) s *= extra_scale;
        // Conv: the per-channel scale broadcasts over [N, M, spatial...] as [M, 1, ..., 1].
        std::vector<int64_t> scale_shape;
        if (per_channel) {
            scale_shape = {static_cast<int64_t>(scales.size())};
            if (op == "Conv")
                for (size_t d = 2; d < weight.ndim(); ++d) scale_shape.push_back(1);
        }
        const std::string ws = rw.add_initializer(wname + "_scale", per_channel ? vector_tensor_f32(scales, scale_shape) : scalar_tensor_f32(scales[0]));
        // ConvInteger wants a scalar zero point when every channel's is the same (onnxruntime needs it).
        bool uniform_zp = std::all_of(wp.zero_points.begin(), wp.zero_points.end(), [&](int32_t z) { return z == wp.zero_points[0]; });
        QuantParams zp_params = wp;
        if (op == "Conv" && uniform_zp) zp_params.zero_points = {wp.zero_points[0]};
        const std::string wz = rw.add_initializer(wname + "_zero_point", zero_point_tensor(zp_params, per_channel && !(op == "Conv" && uniform_zp)));
        result.quant_info.set_params(wname, wp);

        const std::string scale_mul = rw.fresh(n.name() + "_quant_scales_mul");
        out_nodes.push_back(rw.make_node("Mul", n.name() + "_quant_scales_mul", {xq[1], ws}, {scale_mul}));
        const std::string acc = rw.fresh(y + "_output_quantized");
        std::shared_ptr<Node> integer_op;
        if (op == "Conv") {
            integer_op = rw.make_node("ConvInteger", n.name() + "_quant", {xq[0], wq, xq[2], wz}, {acc});
            for (const char* a : {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
                if (n.has_attribute(a)) integer_op->set_attribute(a, n.attributes().at(a));
        } else {
            integer_op = rw.make_node("MatMulInteger", n.name() + "_quant", {xq[0], wq, xq[2], wz}, {acc});
        }
        out_nodes.push_back(integer_op);
        const std::string acc_f = rw.fresh(y + "_output_quantized_cast_output");
        auto cast = rw.make_node("Cast", n.name() + "_cast", {acc}, {acc_f});
        cast->set_attribute("to", static_cast<int64_t>(dtype_to_onnx(DType::Float32)));
        out_nodes.push_back(cast);

        const bool has_bias = n.has_input(2);
        const std::string scaled = has_bias ? rw.fresh(y + "_quant_scaled_output") : y;
        out_nodes.push_back(rw.make_node("Mul", n.name() + "_scale_output", {acc_f, scale_mul}, {scaled}));
        if (has_bias) {
            Tensor bias = g.get_initializer(initializer_of(n.inputs()[2])).clone();
            if (op == "Gemm") {
                const float beta = static_cast<float>(n.get_attribute<double>("beta", 1.0));
                for (int64_t i = 0; i < bias.num_elements(); ++i) bias.data_ptr<float>()[i] *= beta;
            }
            if (op == "Conv") {
                std::vector<int64_t> shape = {bias.num_elements()};
                for (size_t d = 2; d < weight.ndim(); ++d) shape.push_back(1);
                bias = bias.reshape(shape);
            }
            const std::string b = rw.add_initializer(initializer_of(n.inputs()[2]) + "_reshaped", bias);
            out_nodes.push_back(rw.make_node("Add", n.name() + "_bias_add", {scaled, b}, {y}));
        }
    }
    g.set_nodes(std::move(out_nodes));
    rw.drop_unused_initializers();
    result.quantized_graph = rw.take();
    result.quant_info.weights_quantized = result.stats.weights_quantized > 0;
    result.quant_info.activations_quantized = result.stats.nodes_quantized > 0;
    finish(result, graph, QuantMode::DynamicInt8, graph.nodes().size());
    return result;
}

// ----------------------------------------------------------------------------- static INT8

QuantizationResult Quantizer::quantize(const Graph& graph, const GraphQuantInfo& quant_info) {
    require_mode(config_, QuantMode::StaticInt8, "quantize");
    const auto dtypes = value_dtypes(graph);
    Rewriter rw(graph);
    Graph& g = rw.graph();
    const detail::StaticPlan plan = detail::plan_static(g, config_, dtypes);
    const auto nodes = g.nodes();
    const detail::ConstantAliases aliases = detail::constant_aliases(g);

    QuantizationResult result;
    result.stats.nodes_skipped = plan.skipped;

    // Activation params: calibrated, same-scale ops inherit their input's (in graph order).
    std::unordered_map<std::string, QuantParams> act;
    std::vector<std::string> missing;
    std::unordered_set<std::string> inherited;
    for (size_t i : plan.activation_nodes) {
        const Node& n = *nodes[i];
        if (detail::is_same_scale_op(n.op_type())) inherited.insert(n.outputs()[0]);
    }
    for (const auto& name : plan.activations) {
        if (inherited.count(name)) continue;
        if (!quant_info.has_params(name)) {
            missing.push_back(name);
            continue;
        }
        const QuantParams& p = quant_info.get_params(name);
        check_params_fit(name, p, {}, /*activation=*/true);
        // Besides the config's type: uint8 with zero point 0 for a never-negative tensor of a
        // symmetric int8 config (what the Calibrator gives a Relu's output).
        const bool non_negative_uint8 = config_.symmetric && config_.activation_dtype == DType::Int8 &&
                                        p.quantized_dtype == DType::UInt8 && p.zero_points[0] == 0;
        if (p.quantized_dtype != config_.activation_dtype && !non_negative_uint8)
            throw ValidationError("tensor '" + name + "': params are " + dtype_to_string(p.quantized_dtype) +
                                  " but the config's activation_dtype is " + dtype_to_string(config_.activation_dtype));
        act[name] = p;
    }
    if (!missing.empty())
        throw ValidationError("StaticInt8 needs calibration data: no quantization parameters for " + std::to_string(missing.size()) +
                              " activation tensor(s), e.g. '" + missing.front() +
                              "' (run a Calibrator or quantize_with_calibration first)");
    for (size_t i : plan.activation_nodes) {
        const Node& n = *nodes[i];
        if (detail::is_same_scale_op(n.op_type())) {
            auto it = act.find(n.inputs()[0]);
            if (it != act.end()) act[n.outputs()[0]] = it->second;
            else if (quant_info.has_params(n.outputs()[0])) act[n.outputs()[0]] = quant_info.get_params(n.outputs()[0]);
        }
    }

    // Relu right after a quantized Conv/MatMul/Gemm or Add (its only reader) disappears when the
    // Relu output's zero point is the integer minimum: quantizing then clamps negatives to 0 already.
    std::unordered_map<std::string, size_t> readers;
    for (const auto& n : nodes)
        for (const auto& in : n->inputs()) ++readers[in];
    for (const auto& o : g.outputs()) ++readers[o.name];
    std::unordered_set<size_t> weighted(plan.weighted_nodes.begin(), plan.weighted_nodes.end());
    std::unordered_set<size_t> removed;
    std::unordered_map<std::string, std::string> rename_output;  // weighted node output -> Relu output
    std::unordered_map<std::string, size_t> producer;
    for (size_t i = 0; i < nodes.size(); ++i)
        for (const auto& o : nodes[i]->outputs()) producer[o] = i;
    for (size_t i : plan.activation_nodes) {
        const Node& n = *nodes[i];
        if (n.op_type() != "Relu") continue;
        const std::string& in = n.inputs()[0];
        auto p = producer.find(in);
        if (p == producer.end() || readers[in] != 1 || is_graph_output(g, in)) continue;
        const bool quantized_add = nodes[p->second]->op_type() == "Add" &&
                                   std::find(plan.activation_nodes.begin(), plan.activation_nodes.end(), p->second) !=
                                       plan.activation_nodes.end();
        if (!weighted.count(p->second) && !quantized_add) continue;
        auto it = act.find(n.outputs()[0]);
        if (it == act.end() || it->second.zero_points[0] != quant_range(it->second.quantized_dtype).first) continue;
        removed.insert(i);
        rename_output[in] = n.outputs()[0];
    }

    // Weights, biases and the node rewrites.
    std::vector<std::shared_ptr<Node>> out_nodes;
    std::unordered_map<std::string, std::string> weight_dq;
    std::unordered_set<std::string> quantized_acts(plan.activations.begin(), plan.activations.end());
    for (const auto& [from, to] : rename_output) quantized_acts.erase(from);

    // Q/DQ pairs: for each quantized activation, consumers read NAME_DequantizeLinear_Output; a
    // graph output keeps its name on the DequantizeLinear (the producer writes NAME_QuantizeLinear_Input).
    std::unordered_map<std::string, std::string> dq_name, producer_rename;
    for (const auto& name : plan.activations) {
        if (!quantized_acts.count(name) || !act.count(name)) continue;
        if (is_graph_output(g, name)) {
            producer_rename[name] = rw.fresh(name + "_QuantizeLinear_Input");
            dq_name[name] = name;
        } else {
            dq_name[name] = rw.fresh(name + "_DequantizeLinear_Output");
        }
    }
    std::unordered_map<std::string, std::pair<std::string, std::string>> act_param_names;
    auto param_initializers = [&](const std::string& name) {
        auto it = act_param_names.find(name);
        if (it != act_param_names.end()) return it->second;
        const QuantParams& p = act.at(name);
        auto names = std::make_pair(rw.add_initializer(name + "_scale", scalar_tensor_f32(p.scales[0])),
                                    rw.add_initializer(name + "_zero_point", zero_point_tensor(p, false)));
        act_param_names[name] = names;
        return names;
    };
    std::unordered_set<std::string> emitted;
    auto emit_qdq = [&](const std::string& name) {
        if (!dq_name.count(name) || !emitted.insert(name).second) return;
        const auto [scale, zp] = param_initializers(name);
        const std::string src = producer_rename.count(name) ? producer_rename[name] : name;
        const std::string q = rw.fresh(name + "_QuantizeLinear_Output");
        out_nodes.push_back(rw.make_node("QuantizeLinear", name + "_QuantizeLinear", {src, scale, zp}, {q}));
        out_nodes.push_back(rw.make_node("DequantizeLinear", name + "_DequantizeLinear", {q, scale, zp}, {dq_name[name]}));
    };
    for (const auto& in : g.inputs()) emit_qdq(in.name);

    for (size_t i = 0; i < nodes.size(); ++i) {
        if (removed.count(i)) continue;
        const Node& n = *nodes[i];
        auto copy = copy_node(n);
        bool changed = false;
        for (size_t k = 0; k < n.inputs().size(); ++k) {
            auto it = dq_name.find(n.inputs()[k]);
            if (it != dq_name.end() && it->second != n.inputs()[k]) {
                copy->set_input(k, it->second);
                changed = true;
            }
        }
        for (size_t k = 0; k < n.outputs().size(); ++k) {
            std::string o = n.outputs()[k];
            if (rename_output.count(o)) o = rename_output[o];
            if (producer_rename.count(o)) o = producer_rename[o];
            if (o != n.outputs()[k]) {
                copy->set_output(k, o);
                changed = true;
            }
        }
        if (weighted.count(i)) {
            ++result.stats.nodes_quantized;
            const std::string& op = n.op_type();
            const std::string wname = detail::resolve_constant(aliases, n.inputs()[1]);
            const Tensor& w = g.get_initializer(wname);
            const int axis = op == "Conv" ? 0 : op == "MatMul" ? 1 : (n.get_attribute<int64_t>("transB", 0) != 0 ? 0 : 1);
            QuantParams wp;
            if (quant_info.has_params(wname)) {
                wp = quant_info.get_params(wname);
                check_params_fit(wname, wp, w.shape(), /*activation=*/false);
                if (wp.quantized_dtype != DType::Int8 && wp.quantized_dtype != DType::UInt8)
                    throw ValidationError("weight '" + wname + "': params must be Int8 or UInt8, got " + dtype_to_string(wp.quantized_dtype));
            } else {
                wp = weight_params(w, config_, axis);
            }
            result.quant_info.set_params(wname, wp);
            auto wit = weight_dq.find(wname);
            const Tensor w_quantized = quantize_tensor(w, wp);
            if (wit == weight_dq.end()) {
                ++result.stats.weights_quantized;
                const std::string wq = rw.add_initializer(wname + "_quantized", w_quantized);
                const std::string ws = rw.add_initializer(
                    wname + "_scale", wp.is_per_channel() ? vector_tensor_f32(wp.scales, {static_cast<int64_t>(wp.scales.size())})
                                                          : scalar_tensor_f32(wp.scales[0]));
                const std::string wz = rw.add_initializer(wname + "_zero_point", zero_point_tensor(wp, wp.is_per_channel()));
                const std::string out = rw.fresh(wname + "_DequantizeLinear_Output");
                auto dq = rw.make_node("DequantizeLinear", wname + "_DequantizeLinear", {wq, ws, wz}, {out});
                if (wp.is_per_channel()) dq->set_attribute("axis", static_cast<int64_t>(wp.channel_axis));
                out_nodes.push_back(dq);
                wit = weight_dq.emplace(wname, out).first;
            }
            copy->set_input(1, wit->second);
            changed = true;
            // Bias: int32 with scale x_scale * w_scale (per output channel), zero point 0.
            if (n.has_input(2)) {
                const std::string bname = detail::resolve_constant(aliases, n.inputs()[2]);
                Tensor b = g.get_initializer(bname);
                std::optional<Tensor> corrected;
                auto means = quant_info.channel_means.find(n.inputs()[0]);
                if (means != quant_info.channel_means.end() && (op == "Conv" || op == "Gemm"))
                    corrected = corrected_bias(n, w, dequantize_tensor(w_quantized, wp), b, means->second);
                if (corrected) b = *corrected;
                const float x_scale = act.at(n.inputs()[0]).scales[0];
                const int64_t nb = b.num_elements();
                std::vector<float> bscales(wp.is_per_channel() ? nb : 1);
                for (size_t c = 0; c < bscales.size(); ++c) bscales[c] = x_scale * wp.scales[wp.is_per_channel() ? c : 0];
                bool representable = true;
                for (float s : bscales) representable &= s > 0 && std::isfinite(s);
                if (representable) {
                    QuantParams bp = bscales.size() == 1 ? QuantParams::per_tensor(bscales[0], 0, DType::Int32)
                                                         : QuantParams::per_channel(bscales, std::vector<int32_t>(nb, 0), 0, DType::Int32);
                    const std::string bq = rw.add_initializer(bname + "_quantized", quantize_tensor(b, bp));
                    const std::string bs = rw.add_initializer(bname + "_quantized_scale", bp.is_per_channel()
                                                                                            ? vector_tensor_f32(bscales, {nb})
                                                                                            : scalar_tensor_f32(bscales[0]));
                    const std::string bz = rw.add_initializer(bname + "_quantized_zero_point", zero_point_tensor(bp, bp.is_per_channel()));
                    const std::string out = rw.fresh(bname + "_DequantizeLinear_Output");
                    auto dq = rw.make_node("DequantizeLinear", bname + "_DequantizeLinear", {bq, bs, bz}, {out});
                    if (bp.is_per_channel()) dq->set_attribute("axis", int64_t{0});
                    out_nodes.push_back(dq);
                    copy->set_input(2, out);
                } else if (corrected) {
                    copy->set_input(2, rw.add_initializer(bname + "_corrected", b));
                }
            }
        } else if (std::find(plan.activation_nodes.begin(), plan.activation_nodes.end(), i) != plan.activation_nodes.end()) {
            ++result.stats.nodes_quantized;
        }
        out_nodes.push_back(changed ? copy : nodes[i]);
        for (const auto& o : n.outputs()) emit_qdq(rename_output.count(o) ? rename_output[o] : o);
    }
    for (const auto& [name, p] : act) result.quant_info.set_params(name, p);
    result.quant_info.weights_quantized = result.stats.weights_quantized > 0;
    result.quant_info.activations_quantized = !dq_name.empty();

    g.set_nodes(std::move(out_nodes));
    rw.drop_unused_initializers();
    result.quantized_graph = rw.take();
    finish(result, graph, QuantMode::StaticInt8, graph.nodes().size());
    return result;
}

namespace {

// Cosine similarity of the quantized graph's float outputs to the float graph's on `samples`:
// the lowest over the outputs (each output's values of every sample taken as one vector).
double output_cosine(const std::vector<std::vector<Tensor>>& reference, InferenceSession& session,
                     const std::vector<Quantizer::Feed>& samples) {
    const size_t outputs = reference.empty() ? 0 : reference.front().size();
    std::vector<double> dot(outputs, 0.0), ref_sq(outputs, 0.0), out_sq(outputs, 0.0);
    std::vector<bool> is_float(outputs, false);
    for (size_t b = 0; b < samples.size(); ++b) {
        const std::vector<Tensor> got = session.run({}, samples[b]);
        for (size_t o = 0; o < outputs && o < got.size(); ++o) {
            const Tensor r = reference[b][o].plain(), q = got[o].plain();
            if (r.dtype() != DType::Float32 || q.dtype() != DType::Float32 || r.num_elements() != q.num_elements()) continue;
            is_float[o] = true;
            const float* rp = r.data_ptr<float>();
            const float* qp = q.data_ptr<float>();
            for (int64_t i = 0; i < r.num_elements(); ++i) {
                dot[o] += static_cast<double>(rp[i]) * qp[i];
                ref_sq[o] += static_cast<double>(rp[i]) * rp[i];
                out_sq[o] += static_cast<double>(qp[i]) * qp[i];
            }
        }
    }
    double lowest = 1.0;
    for (size_t o = 0; o < outputs; ++o) {
        if (!is_float[o]) continue;
        const double cosine = ref_sq[o] == 0 && out_sq[o] == 0 ? 1.0 : dot[o] / std::sqrt(ref_sq[o] * out_sq[o]);
        lowest = std::isfinite(cosine) ? std::min(lowest, cosine) : -1.0;
    }
    return lowest;
}

}  // namespace

QuantizationResult Quantizer::quantize_calibrated(const Graph& graph, const GraphQuantInfo& quant_info,
                                                  const std::vector<Feed>& samples) {
    require_mode(config_, QuantMode::StaticInt8, "quantize_calibrated");
    QuantizationResult full = quantize(graph, quant_info);
    if (samples.empty()) return full;

    // Float prefixes: every node before the k-th Conv/MatMul/Gemm (in the order the quantizer
    // visits them) stays float, so a prefix ends right before a quantized weighted node and the
    // Relu/pooling after its last float node stay float too (quantizing a Conv's output before
    // its Relu would waste the sign bit). Excluded by node name, so only prefixes of uniquely
    // named nodes, none named like an op type, are candidates.
    auto sorted = std::make_unique<Graph>(graph);
    sorted->set_nodes(graph.topological_sort());
    const auto plan = detail::plan_static(*sorted, config_, value_dtypes(*sorted));
    const auto& nodes = sorted->nodes();
    std::unordered_map<std::string, int> name_count;
    std::unordered_set<std::string> op_types;
    for (const auto& n : nodes) {
        ++name_count[n->name()];
        op_types.insert(n->op_type());
    }
    const size_t max_float = std::max<size_t>(1, plan.weighted_nodes.size() / 8);
    std::vector<std::vector<std::string>> prefixes = {{}};  // prefixes[k]: the names kept float
    for (size_t k = 1; k <= max_float && k < plan.weighted_nodes.size(); ++k) {
        std::vector<std::string> names;
        bool nameable = true;
        for (size_t i = 0; i < plan.weighted_nodes[k]; ++i) {
            const std::string& name = nodes[i]->name();
            nameable &= !name.empty() && name_count[name] == 1 && !op_types.count(name);
            names.push_back(name);
        }
        if (!nameable) break;
        prefixes.push_back(std::move(names));
    }
    if (prefixes.size() == 1) return full;

    SessionOptions options;
    options.log_level = "error";
    std::vector<std::vector<Tensor>> reference;
    try {
        InferenceSession float_session(std::make_shared<Graph>(graph), options);
        for (const auto& feed : samples) reference.push_back(float_session.run({}, feed));
    } catch (const PyFlameRTError&) {
        return full;  // samples this graph cannot run: nothing to check against
    }

    std::map<size_t, std::pair<double, QuantizationResult>> tried;
    auto evaluate = [&](size_t k) -> double {
        auto it = tried.find(k);
        if (it != tried.end()) return it->second.first;
        QuantizationResult result;
        if (k == 0) {
            result = std::move(full);
        } else {
            QuantConfig config = config_;
            config.exclude_ops.insert(config.exclude_ops.end(), prefixes[k].begin(), prefixes[k].end());
            result = Quantizer(config).quantize(graph, quant_info);
        }
        double cosine;
        try {
            InferenceSession session(std::make_shared<Graph>(*result.quantized_graph), options);
            cosine = output_cosine(reference, session, samples);
        } catch (const PyFlameRTError&) {
            if (k == 0) throw;
            return -2.0;  // below any cosine: never chosen
        }
        tried.emplace(k, std::make_pair(cosine, std::move(result)));
        return cosine;
    };
    // A graph this build cannot run (a kernel missing) is left as quantize() made it: the check
    // needs a run, the quantized graph itself may still be meant for another runtime.
    double full_cosine;
    try {
        full_cosine = evaluate(0);
    } catch (const PyFlameRTError&) {
        return quantize(graph, quant_info);  // (evaluate took `full`)
    }
    // The smallest k reaching the target (error amplified through the layers after it makes
    // the first layers the most sensitive, so the cosine grows with k), else the best tried.
    size_t chosen = 0;
    if (full_cosine < kMinOutputCosine) {
        size_t lo = 0, hi = prefixes.size();  // cosine(lo) < target <= cosine(hi); hi = size: none reached it yet
        while (hi - lo > 1) {
            const size_t mid = (lo + hi) / 2;
            (evaluate(mid) >= kMinOutputCosine ? hi : lo) = mid;
        }
        if (hi < prefixes.size()) {
            chosen = hi;
        } else {
            for (const auto& [k, tried_k] : tried)
                if (tried_k.first > tried.at(chosen).first) chosen = k;
        }
    }
    return std::move(tried.at(chosen).second);
}

QuantizationResult Quantizer::quantize_with_calibration(const Graph& graph, CalibrationDataProvider data_provider,
                                                        size_t num_batches) {
    require_mode(config_, QuantMode::StaticInt8, "quantize_with_calibration");
    if (num_batches == 0) throw ValidationError("StaticInt8 needs calibration data: num_batches is 0");
    if (!data_provider) throw ValidationError("quantize_with_calibration: no data provider");
    Calibrator calibrator(graph, config_);
    std::vector<Feed> samples;
    for (size_t b = 0; b < num_batches; ++b) {
        Feed feed = data_provider();
        calibrator.observe(feed);
        if (samples.size() < kAccuracySampleBatches) {  // copies: a provider may reuse its buffers
            Feed copy;
            for (const auto& [name, t] : feed) copy.emplace(name, t.clone());
            samples.push_back(std::move(copy));
        }
    }
    return quantize_calibrated(graph, calibrator.compute_quant_params(), samples);
}

}  // namespace pyflame_rt::quantization
