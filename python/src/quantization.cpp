// The `quantization` submodule: QuantMode, QuantGranularity, CalibrationMethod, QuantConfig,
// QuantParams, GraphQuantInfo, QuantizationStats/Result, Quantizer, Calibrator,
// CalibrationStats, QuantizationReport, and vectorized Float16/BFloat16 conversions.
// python/pyflame_rt/quantization.py wraps Quantizer and Calibrator to show calibration progress.
#include "bindings.hpp"
#include "pyflame_rt/errors.hpp"
#include "pyflame_rt/graph.hpp"
#include "pyflame_rt/quantization.hpp"

namespace pyflame_rt::python {

namespace {

using namespace pyflame_rt::quantization;

std::string py_repr(py::handle obj) { return py::repr(obj).cast<std::string>(); }

// QuantizationResult holds a unique_ptr graph; Python shares it.
struct PyQuantizationResult {
    std::shared_ptr<Graph> quantized_graph;
    GraphQuantInfo quant_info;
    bool success = false;
    std::string error_message;
    QuantizationResult::Stats stats;
};

PyQuantizationResult to_py_result(QuantizationResult&& r) {
    PyQuantizationResult out;
    out.quantized_graph = std::shared_ptr<Graph>(std::move(r.quantized_graph));
    out.quant_info = std::move(r.quant_info);
    out.success = r.success;
    out.error_message = std::move(r.error_message);
    out.stats = r.stats;
    return out;
}

std::unordered_map<std::string, Tensor> feed_from_py(py::handle feed, std::vector<py::object>& keep_alive) {
    if (!py::hasattr(feed, "items")) throw py::type_error("input_feed must be a dict mapping input names to arrays");
    std::unordered_map<std::string, Tensor> out;
    for (py::handle item : feed.attr("items")()) {
        py::object key = item[py::int_(0)];
        if (!py::isinstance<py::str>(key)) throw py::type_error("input_feed keys must be str input names");
        out.insert_or_assign(key.cast<std::string>(), tensor_from_py(item[py::int_(1)], /*copy=*/false, &keep_alive));
    }
    return out;
}

template <typename Convert>
py::array_t<uint16_t> halves_from_float(py::array_t<float, py::array::c_style | py::array::forcecast> values, Convert convert) {
    py::array_t<uint16_t> out(values.request().shape);
    const float* src = values.data();
    uint16_t* dst = out.mutable_data();
    for (py::ssize_t i = 0; i < values.size(); ++i) dst[i] = convert(src[i]);
    return out;
}

template <typename Convert>
py::array_t<float> halves_to_float(py::array_t<uint16_t, py::array::c_style | py::array::forcecast> bits, Convert convert) {
    py::array_t<float> out(bits.request().shape);
    const uint16_t* src = bits.data();
    float* dst = out.mutable_data();
    for (py::ssize_t i = 0; i < bits.size(); ++i) dst[i] = convert(src[i]);
    return out;
}

std::string params_repr(const QuantParams& p) {
    return "QuantParams(scales=" + py_repr(py::cast(p.scales)) + ", zero_points=" + py_repr(py::cast(p.zero_points)) +
           ", quantized_dtype=" + dtype_to_string(p.quantized_dtype) + ", channel_axis=" + std::to_string(p.channel_axis) + ")";
}

}  // namespace

void init_quantization(py::module_& parent) {
    py::module_ m = parent.def_submodule("quantization", "Model quantization: FP16, BFloat16, dynamic and static INT8.");

    py::enum_<QuantMode>(m, "QuantMode", "Quantization modes.")
        .value("None_", QuantMode::None)
        .value("FP16", QuantMode::FP16)
        .value("BFloat16", QuantMode::BFloat16)
        .value("DynamicInt8", QuantMode::DynamicInt8)
        .value("StaticInt8", QuantMode::StaticInt8);
    py::enum_<QuantGranularity>(m, "QuantGranularity", "One scale per tensor or per output channel.")
        .value("PerTensor", QuantGranularity::PerTensor)
        .value("PerChannel", QuantGranularity::PerChannel);
    py::enum_<CalibrationMethod>(m, "CalibrationMethod", "How activation ranges are chosen from calibration data.")
        .value("MinMax", CalibrationMethod::MinMax)
        .value("Entropy", CalibrationMethod::Entropy)
        .value("Percentile", CalibrationMethod::Percentile);
    m.def("quant_mode_name", [](QuantMode mode) { return std::string(quant_mode_name(mode)); });
    m.def("default_fp32_keep_ops", &default_fp32_keep_ops,
          "Ops QuantConfig.fp16()/bfloat16() keep in FP32 (their exclude_ops).");

    py::class_<QuantConfig>(m, "QuantConfig", "Quantization configuration (QuantConfig() = no quantization).")
        .def(py::init<>())
        .def_static("fp16", &QuantConfig::fp16)
        .def_static("bfloat16", &QuantConfig::bfloat16)
        .def_static("dynamic_int8", &QuantConfig::dynamic_int8)
        .def_static("static_int8", &QuantConfig::static_int8, py::arg("calibration_samples") = 100)
        .def_readwrite("mode", &QuantConfig::mode)
        .def_property(
            "weight_dtype", [](const QuantConfig& c) { return c.weight_dtype; },
            [](QuantConfig& c, py::handle d) { c.weight_dtype = dtype_from_py(d); })
        .def_property(
            "activation_dtype", [](const QuantConfig& c) { return c.activation_dtype; },
            [](QuantConfig& c, py::handle d) { c.activation_dtype = dtype_from_py(d); })
        .def_readwrite("granularity", &QuantConfig::granularity)
        .def_readwrite("calibration_method", &QuantConfig::calibration_method)
        .def_readwrite("symmetric", &QuantConfig::symmetric)
        .def_readwrite("exclude_ops", &QuantConfig::exclude_ops, "List[str]: op types (or node names) left in FP32")
        .def_readwrite("calibration_samples", &QuantConfig::calibration_samples)
        .def("is_valid", &QuantConfig::is_valid)
        .def("validation_error", &QuantConfig::validation_error)
        .def("__repr__", [](const QuantConfig& c) {
            return std::string("QuantConfig(mode=") + quant_mode_name(c.mode) + ", weight_dtype=" + dtype_to_string(c.weight_dtype) +
                   ", activation_dtype=" + dtype_to_string(c.activation_dtype) +
                   ", granularity=" + (c.granularity == QuantGranularity::PerTensor ? "PerTensor" : "PerChannel") +
                   ", calibration_method=" +
                   (c.calibration_method == CalibrationMethod::MinMax    ? "MinMax"
                    : c.calibration_method == CalibrationMethod::Entropy ? "Entropy"
                                                                          : "Percentile") +
                   ", symmetric=" + (c.symmetric ? "True" : "False") + ", exclude_ops=" + py_repr(py::cast(c.exclude_ops)) +
                   ", calibration_samples=" + std::to_string(c.calibration_samples) + ")";
        });

    py::class_<QuantParams>(m, "QuantParams", "Scale(s) and zero point(s) of a quantized tensor.")
        .def(py::init<>())
        .def_static(
            "per_tensor", [](float scale, int32_t zp, py::handle dtype) { return QuantParams::per_tensor(scale, zp, dtype_from_py(dtype)); },
            py::arg("scale"), py::arg("zero_point"), py::arg("dtype") = DType::Int8)
        .def_static(
            "per_channel",
            [](const std::vector<float>& scales, const std::vector<int32_t>& zps, int axis, py::handle dtype) {
                return QuantParams::per_channel(scales, zps, axis, dtype_from_py(dtype));
            },
            py::arg("scales"), py::arg("zero_points"), py::arg("channel_axis"), py::arg("dtype") = DType::Int8)
        .def_static(
            "compute_from_minmax",
            [](float lo, float hi, py::handle dtype, bool symmetric) { return QuantParams::compute_from_minmax(lo, hi, dtype_from_py(dtype), symmetric); },
            py::arg("min_val"), py::arg("max_val"), py::arg("dtype"), py::arg("symmetric") = true)
        .def_readonly("scales", &QuantParams::scales)
        .def_readonly("zero_points", &QuantParams::zero_points)
        .def_readonly("quantized_dtype", &QuantParams::quantized_dtype)
        .def_readonly("channel_axis", &QuantParams::channel_axis)
        .def("is_per_channel", &QuantParams::is_per_channel)
        .def("num_channels", &QuantParams::num_channels)
        .def("__repr__", &params_repr);

    py::class_<GraphQuantInfo>(m, "GraphQuantInfo", "Quantization parameters of a graph's tensors.")
        .def(py::init<>())
        .def_readwrite("tensor_params", &GraphQuantInfo::tensor_params)
        .def_readwrite("weights_quantized", &GraphQuantInfo::weights_quantized)
        .def_readwrite("activations_quantized", &GraphQuantInfo::activations_quantized)
        .def("has_params", &GraphQuantInfo::has_params, py::arg("tensor_name"))
        .def(
            "get_params",
            [](const GraphQuantInfo& info, const std::string& name) {
                if (!info.has_params(name)) throw py::key_error("no quantization parameters for tensor '" + name + "'");
                return info.get_params(name);
            },
            py::arg("tensor_name"), "KeyError when the tensor has none.")
        .def("set_params", &GraphQuantInfo::set_params, py::arg("tensor_name"), py::arg("params"))
        .def("__repr__", [](const GraphQuantInfo& info) {
            return "GraphQuantInfo(tensors=" + std::to_string(info.tensor_params.size()) +
                   ", weights_quantized=" + (info.weights_quantized ? "True" : "False") +
                   ", activations_quantized=" + (info.activations_quantized ? "True" : "False") + ")";
        });

    py::class_<QuantizationResult::Stats>(m, "QuantizationStats", "Statistics of a quantization.")
        .def_readonly("nodes_quantized", &QuantizationResult::Stats::nodes_quantized)
        .def_readonly("nodes_skipped", &QuantizationResult::Stats::nodes_skipped)
        .def_readonly("weights_quantized", &QuantizationResult::Stats::weights_quantized)
        .def_readonly("original_size_bytes", &QuantizationResult::Stats::original_size_bytes)
        .def_readonly("quantized_size_bytes", &QuantizationResult::Stats::quantized_size_bytes)
        .def("compression_ratio", &QuantizationResult::Stats::compression_ratio)
        .def("original_size_mb", &QuantizationResult::Stats::original_size_mb)
        .def("quantized_size_mb", &QuantizationResult::Stats::quantized_size_mb)
        .def("__repr__", [](const QuantizationResult::Stats& s) {
            return "QuantizationStats(nodes_quantized=" + std::to_string(s.nodes_quantized) +
                   ", nodes_skipped=" + std::to_string(s.nodes_skipped) + ", weights_quantized=" + std::to_string(s.weights_quantized) +
                   ", original_size_bytes=" + std::to_string(s.original_size_bytes) +
                   ", quantized_size_bytes=" + std::to_string(s.quantized_size_bytes) + ")";
        });

    py::class_<PyQuantizationResult>(m, "QuantizationResult", "A quantized graph, its parameters and statistics.")
        .def_readonly("success", &PyQuantizationResult::success)
        .def_readonly("quantized_graph", &PyQuantizationResult::quantized_graph)
        .def_readonly("quant_info", &PyQuantizationResult::quant_info)
        .def_readonly("error_message", &PyQuantizationResult::error_message)
        .def_readonly("stats", &PyQuantizationResult::stats)
        .def("__repr__", [](const PyQuantizationResult& r) {
            return std::string("QuantizationResult(success=") + (r.success ? "True" : "False") +
                   ", nodes_quantized=" + std::to_string(r.stats.nodes_quantized) + ")";
        });

    py::class_<Quantizer>(m, "Quantizer", "Rewrites graphs into quantized form (the input graph is never changed).")
        .def(py::init<const QuantConfig&>(), py::arg("config"), "ValidationError for an invalid config.")
        .def_property_readonly("config", &Quantizer::config)
        .def_readonly_static("ACCURACY_SAMPLE_BATCHES", &Quantizer::kAccuracySampleBatches)
        .def_readonly_static("MIN_OUTPUT_COSINE", &Quantizer::kMinOutputCosine)
        .def(
            "convert_to_fp16", [](Quantizer& q, const Graph& g) { return to_py_result(q.convert_to_fp16(g)); }, py::arg("graph"),
            py::call_guard<py::gil_scoped_release>())
        .def(
            "convert_to_bfloat16", [](Quantizer& q, const Graph& g) { return to_py_result(q.convert_to_bfloat16(g)); },
            py::arg("graph"), py::call_guard<py::gil_scoped_release>())
        .def(
            "quantize_dynamic", [](Quantizer& q, const Graph& g) { return to_py_result(q.quantize_dynamic(g)); }, py::arg("graph"),
            py::call_guard<py::gil_scoped_release>())
        .def(
            "quantize", [](Quantizer& q, const Graph& g, const GraphQuantInfo& info) { return to_py_result(q.quantize(g, info)); },
            py::arg("graph"), py::arg("quant_info"), py::call_guard<py::gil_scoped_release>())
        .def(
            "_quantize_calibrated",
            [](Quantizer& q, const Graph& g, const GraphQuantInfo& info, py::iterable samples) {
                std::vector<py::object> keep_alive;
                std::vector<Quantizer::Feed> feeds;
                for (py::handle feed : samples) feeds.push_back(feed_from_py(feed, keep_alive));
                py::gil_scoped_release release;
                return to_py_result(q.quantize_calibrated(g, info, feeds));
            },
            py::arg("graph"), py::arg("quant_info"), py::arg("samples"),
            "quantize(), keeping the shortest float prefix that brings the outputs on `samples` (input "
            "feeds) to cosine similarity 0.99 with the float graph's (used by quantize_with_calibration).");

    py::class_<CalibrationStats>(m, "CalibrationStats", "Range and histogram of one tensor's calibration values.")
        .def(py::init<>())
        .def_readonly("min_val", &CalibrationStats::min_val)
        .def_readonly("max_val", &CalibrationStats::max_val)
        .def_readonly("num_samples", &CalibrationStats::num_samples)
        .def_property_readonly("histogram", [](const CalibrationStats& s) {
            py::array_t<uint64_t> out(static_cast<py::ssize_t>(s.histogram.size()));
            std::copy(s.histogram.begin(), s.histogram.end(), out.mutable_data());
            return out;
        }, "Counts of kHistogramBins bins over [-histogram_range, histogram_range].")
        .def_readonly("histogram_range", &CalibrationStats::histogram_range)
        .def("bin_width", &CalibrationStats::bin_width)
        .def("update", [](CalibrationStats& s, py::handle values) {
            if (py::isinstance<py::float_>(values) || py::isinstance<py::int_>(values)) {
                s.update(values.cast<float>());
                return;
            }
            std::vector<py::object> keep;
            s.update(tensor_from_py(values, /*copy=*/false, &keep));
        }, py::arg("values"))
        .def("compute_minmax_params", &CalibrationStats::compute_minmax_params, py::arg("target_dtype") = DType::Int8,
             py::arg("symmetric") = true)
        .def("compute_entropy_params", &CalibrationStats::compute_entropy_params, py::arg("target_dtype") = DType::Int8,
             py::arg("symmetric") = true)
        .def("compute_percentile_params", &CalibrationStats::compute_percentile_params, py::arg("target_dtype") = DType::Int8,
             py::arg("symmetric") = true, py::arg("percentile") = 99.99f)
        .def("compute_lattice_params", &CalibrationStats::compute_lattice_params, py::arg("target_dtype") = DType::Int8,
             py::arg("symmetric") = true, "Exact parameters for values on a grid of at most 256 steps, else None.")
        .def("__repr__", [](const CalibrationStats& s) {
            return "CalibrationStats(min_val=" + py_repr(py::float_(s.min_val)) + ", max_val=" + py_repr(py::float_(s.max_val)) +
                   ", num_samples=" + std::to_string(s.num_samples) + ")";
        });
    m.attr("HISTOGRAM_BINS") = CalibrationStats::kHistogramBins;

    py::class_<Calibrator>(m, "Calibrator", "Collects activation statistics for static quantization.")
        .def(py::init<const Graph&, const QuantConfig&>(), py::arg("graph"), py::arg("config"))
        .def("observe", [](Calibrator& c, py::handle feed) {
            std::vector<py::object> keep_alive;
            auto tensors = feed_from_py(feed, keep_alive);
            py::gil_scoped_release release;
            c.observe(tensors);
        }, py::arg("input_feed"))
        .def("compute_quant_params", &Calibrator::compute_quant_params, py::call_guard<py::gil_scoped_release>())
        .def("get_stats", [](const Calibrator& c, const std::string& name) {
            if (!c.all_stats().count(name)) throw py::key_error("the Calibrator does not track tensor '" + name + "'");
            return c.get_stats(name);
        }, py::arg("tensor_name"), "KeyError for a tensor the calibrator does not track.")
        .def("all_stats", [](const Calibrator& c) { return c.all_stats(); })
        .def("tracked_tensors", &Calibrator::tracked_tensors)
        .def_property_readonly("batches_observed", &Calibrator::batches_observed);

    py::class_<QuantizationReport>(m, "QuantizationReport", "How a session's model is quantized.")
        .def_readonly("mode", &QuantizationReport::mode)
        .def_readonly("nodes_quantized", &QuantizationReport::nodes_quantized)
        .def_readonly("nodes_total", &QuantizationReport::nodes_total)
        .def_readonly("compression_ratio", &QuantizationReport::compression_ratio)
        .def_readonly("original_size_mb", &QuantizationReport::original_size_mb)
        .def_readonly("quantized_size_mb", &QuantizationReport::quantized_size_mb)
        .def_readonly("weights_quantized", &QuantizationReport::weights_quantized)
        .def_readonly("activations_quantized", &QuantizationReport::activations_quantized)
        .def("__repr__", [](const QuantizationReport& r) {
            return std::string("QuantizationReport(mode=") + quant_mode_name(r.mode) + ", nodes_quantized=" +
                   std::to_string(r.nodes_quantized) + ", nodes_total=" + std::to_string(r.nodes_total) +
                   ", compression_ratio=" + py_repr(py::float_(r.compression_ratio)) + ")";
        });

    // Element-wise conversions through Float16/BFloat16 (round to nearest even), for arrays.
    m.def("float32_to_float16_bits", [](py::array_t<float, py::array::c_style | py::array::forcecast> a) {
        return halves_from_float(a, [](float v) { return Float16::from_float(v).bits; });
    }, py::arg("values"), "uint16 bit patterns of Float16::from_float of each element.");
    m.def("float16_bits_to_float32", [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> a) {
        return halves_to_float(a, [](uint16_t b) { return Float16::from_bits(b).to_float(); });
    }, py::arg("bits"));
    m.def("float32_to_bfloat16_bits", [](py::array_t<float, py::array::c_style | py::array::forcecast> a) {
        return halves_from_float(a, [](float v) { return BFloat16::from_float(v).bits; });
    }, py::arg("values"), "uint16 bit patterns of BFloat16::from_float of each element.");
    m.def("bfloat16_bits_to_float32", [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> a) {
        return halves_to_float(a, [](uint16_t b) { return BFloat16::from_bits(b).to_float(); });
    }, py::arg("bits"));
}

}  // namespace pyflame_rt::python
