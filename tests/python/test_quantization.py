"""Quantization: Float16/BFloat16 against numpy/ml_dtypes, config validation, each mode on small
torch models against ONNX Runtime's FP32 outputs, calibration methods against numpy, QDQ and
dynamic exports run in ONNX Runtime, compact .pfm storage, InferenceSession.quantization_report."""
import numpy as np
import onnxruntime as ort
import pytest

import pyflame_rt as rt
from pyflame_rt.quantization import (
    CalibrationMethod,
    Calibrator,
    GraphQuantInfo,
    QuantConfig,
    QuantGranularity,
    QuantMode,
    QuantParams,
    Quantizer,
)
from pyflame_rt import quantization as q

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
from torch import nn  # noqa: E402

# ----------------------------------------------------------------------------- Float16/BFloat16


def _probe_float32_bits():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    # Midpoints between neighbouring float16 / bfloat16 values (ties) and their float neighbours.
    h = np.arange(0x7BFF, dtype=np.uint16).view(np.float16).astype(np.float64)
    b = np.arange(0x7F7F, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)
    mids = np.concatenate([(h[:-1] + h[1:]) / 2, (b[:-1] + b[1:]) / 2]).astype(np.float32)
    mids = np.concatenate([mids, -mids])
    near = np.concatenate([mids.view(np.uint32) + 1, mids.view(np.uint32) - 1])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65520, 65519.996, 3.4028235e38, 1e-45, 2.0**-25],
                       np.float32).view(np.uint32)
    return np.concatenate([bits, mids.view(np.uint32), near, special]).view(np.float32)


def test_float16_decodes_all_bit_patterns_like_numpy():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ours = q.float16_bits_to_float32(bits)
    ref = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(ours[ok].view(np.uint32), ref[ok].view(np.uint32))  # -0.0 included
    # And every non-NaN value converts back to its own bits.
    np.testing.assert_array_equal(q.float32_to_float16_bits(ref[ok]), bits[ok])


def test_float16_rounds_float32_like_numpy():
    x = _probe_float32_bits()
    ours = q.float32_to_float16_bits(x)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.all((ours[nan] & 0x7C00) == 0x7C00) and np.all((ours[nan] & 0x3FF) != 0)
    mismatch = np.flatnonzero(ours[~nan] != ref[~nan])
    assert mismatch.size == 0, f"first mismatch: x={x[~nan][mismatch[0]]!r}"


def test_bfloat16_decodes_all_bit_patterns_like_ml_dtypes():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ours = q.bfloat16_bits_to_float32(bits)
    ref = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(ours[ok].view(np.uint32), ref[ok].view(np.uint32))
    np.testing.assert_array_equal(q.float32_to_bfloat16_bits(ref[ok]), bits[ok])


def test_bfloat16_rounds_float32_like_ml_dtypes():
    x = _probe_float32_bits()
    ours = q.float32_to_bfloat16_bits(x)
    ref = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    nan = np.isnan(x)
    assert np.all(np.isnan(q.bfloat16_bits_to_float32(ours[nan])))
    mismatch = np.flatnonzero(ours[~nan] != ref[~nan])
    assert mismatch.size == 0, f"first mismatch: x={x[~nan][mismatch[0]]!r}"


# ------------------------------------------------------------------------------------- models


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(torch.max_pool2d(x, 2), 1))


def _mlp():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def _export(model, example, path):
    torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False)


@pytest.fixture(scope="module", params=["cnn", "mlp"])
def model(request, tmp_path_factory):
    """(graph, onnx path, calibration batches, test input, ORT FP32 output)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    if request.param == "cnn":
        net, shape = SmallCNN().eval(), (1, 16, 16)
    else:
        net, shape = _mlp().eval(), (64,)
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    _export(net, torch.zeros((2,) + shape), path)
    result = rt.import_module.ONNXImporter().import_model(str(path))
    assert result.success, result.error
    calib = [rng.standard_normal((8,) + shape).astype(np.float32) for _ in range(4)]
    x = rng.standard_normal((16,) + shape).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return result.graph, path, calib, x, ref


def _run(graph, x):
    return rt.InferenceSession(graph).run(None, {"input": x})[0]


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _static(graph, calib, **settings):
    config = QuantConfig.static_int8(len(calib))
    for k, v in settings.items():
        setattr(config, k, v)
    batches = iter(calib)
    return Quantizer(config).quantize_with_calibration(graph, lambda: {"input": next(batches)}, len(calib),
                                                       progress=False)


def _snapshot(graph):
    return [(n.op_type, tuple(n.inputs)) for n in graph.nodes], {k: v.dtype for k, v in graph.initializers.items()}


def test_fp16_and_bf16_store_half_weights_and_stay_close(model):
    graph, _, _, x, ref = model
    before = _snapshot(graph)
    fp16 = Quantizer(QuantConfig.fp16()).convert_to_fp16(graph)
    bf16 = Quantizer(QuantConfig.bfloat16()).convert_to_bfloat16(graph)
    assert _snapshot(graph) == before
    for result, half, tol in ((fp16, np.float16, 5e-3), (bf16, ml_dtypes.bfloat16, 4e-2)):
        assert result.success and result.stats.nodes_quantized > 0
        weights = [v for v in result.quantized_graph.initializers.values() if v.ndim >= 2]
        assert weights and all(w.dtype == half for w in weights)
        assert result.stats.compression_ratio() == pytest.approx(2.0, rel=0.05)
        out = _run(result.quantized_graph, x)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=tol * np.abs(ref).max(), rtol=0)


def test_fp16_keeps_excluded_ops_in_float32(model):
    graph, _, _, x, ref = model
    config = QuantConfig.fp16()
    config.exclude_ops = ["Gemm", "MatMul"]
    result = Quantizer(config).convert_to_fp16(graph)
    for node in result.quantized_graph.nodes:
        if node.op_type in ("Gemm", "MatMul"):
            for name in node.inputs[1:]:
                init = result.quantized_graph.initializers.get(name)
                assert init is None or init.dtype == np.float32
    np.testing.assert_allclose(_run(result.quantized_graph, x), ref, atol=5e-3 * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize("granularity", [QuantGranularity.PerTensor, QuantGranularity.PerChannel])
def test_dynamic_int8_matches_onnxruntime_fp32_and_runs_in_onnxruntime(model, granularity, tmp_path):
    graph, _, _, x, ref = model
    config = QuantConfig.dynamic_int8()
    config.granularity = granularity
    result = Quantizer(config).quantize_dynamic(graph)
    ops = {n.op_type for n in result.quantized_graph.nodes}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert result.stats.compression_ratio() > 3.0
    # Convolutions keep float compute on int8 weights (on-the-fly int8 convolution does not pay).
    g = result.quantized_graph
    int8_weights = {n.outputs[0] for n in g.nodes if n.op_type == "DequantizeLinear"
                    and g.initializers[n.inputs[0]].dtype == np.int8}
    assert "ConvInteger" not in ops
    assert all(n.inputs[1] in int8_weights for n in g.nodes if n.op_type == "Conv")
    ours = _run(result.quantized_graph, x)
    assert _cosine(ours, ref) > 0.999
    np.testing.assert_allclose(ours, ref, atol=0.05 * np.abs(ref).max(), rtol=0)
    path = tmp_path / "dynamic.onnx"
    rt.export_onnx(result.quantized_graph, path)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(ref).max() + 1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", [CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile])
@pytest.mark.parametrize("granularity", [QuantGranularity.PerTensor, QuantGranularity.PerChannel])
@pytest.mark.parametrize("symmetric,act", [(True, rt.DType.Int8), (False, rt.DType.UInt8)])
def test_static_int8_qdq_matches_fp32_and_onnxruntime_runs_the_export(model, method, granularity, symmetric, act, tmp_path):
    graph, _, calib, x, ref = model
    result = _static(graph, calib, calibration_method=method, granularity=granularity, symmetric=symmetric,
                     activation_dtype=act)
    g = result.quantized_graph
    ops = [n.op_type for n in g.nodes]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    quantized_weights = [v for k, v in g.initializers.items() if k.endswith("_quantized") and v.ndim >= 2]
    assert quantized_weights and all(w.dtype == np.int8 for w in quantized_weights)
    if granularity == QuantGranularity.PerChannel:
        assert any(n.op_type == "DequantizeLinear" and n.get_attribute("axis") is not None for n in g.nodes)
    ours = _run(g, x)
    # Entropy clips the tails (TensorRT's KL method), which costs more on random data than on
    # trained models' activations (see bench/quant_bench.py for accuracy on real data).
    assert _cosine(ours, ref) > (0.97 if method == CalibrationMethod.Entropy else 0.995)
    np.testing.assert_allclose(ours, ref, atol=0.25 * np.abs(ref).max(), rtol=0)
    path = tmp_path / "qdq.onnx"
    rt.export_onnx(g, path)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    # The last Gemm's output stays float32 (no quantized op reads it). ONNX Runtime runs the QDQ
    # graph with its own integer kernels: a rounding step here and there in the activations
    # before it moves the outputs by a little.
    assert not result.quant_info.has_params("output")
    np.testing.assert_allclose(ours, theirs, atol=0.03 * np.abs(theirs).max(), rtol=0)
    assert _cosine(ours, theirs) > 0.999


def test_static_int8_exclude_ops_leaves_those_nodes_in_float(model):
    graph, _, calib, x, ref = model
    result = _static(graph, calib, exclude_ops=["Gemm"])
    g = result.quantized_graph
    for node in g.nodes:
        if node.op_type == "Gemm":
            assert node.inputs[1] in g.initializers and g.initializers[node.inputs[1]].dtype == np.float32
    assert result.stats.nodes_skipped >= 1
    assert _cosine(_run(g, x), ref) > 0.99


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("setup,needle", [
    (lambda c: setattr(c, "calibration_samples", 0), "calibration"),
    (lambda c: setattr(c, "weight_dtype", rt.DType.Int16), "8-bit weight_dtype"),
    (lambda c: setattr(c, "weight_dtype", rt.DType.Float32), "8-bit weight_dtype"),
    (lambda c: setattr(c, "activation_dtype", rt.DType.Int32), "activation_dtype"),
])
def test_invalid_configs_are_rejected(setup, needle, model):
    graph = model[0]
    config = QuantConfig.static_int8()
    setup(config)
    assert not config.is_valid()
    assert needle in config.validation_error()
    before = _snapshot(graph)
    with pytest.raises(rt.ValidationError, match="invalid QuantConfig"):
        Quantizer(config)
    assert _snapshot(graph) == before
    assert QuantConfig().is_valid() and QuantConfig().validation_error() == ""


def test_static_without_calibration_data_raises_and_leaves_the_graph(model):
    graph, _, calib, _, _ = model
    before = _snapshot(graph)
    quantizer = Quantizer(QuantConfig.static_int8())
    with pytest.raises(rt.ValidationError, match="calibration data"):
        quantizer.quantize(graph, GraphQuantInfo())
    with pytest.raises(rt.ValidationError, match="calibration data"):
        quantizer.quantize_with_calibration(graph, lambda: {"input": calib[0]}, 0)
    with pytest.raises(rt.ValidationError, match="mode StaticInt8"):
        Quantizer(QuantConfig.dynamic_int8()).quantize(graph, GraphQuantInfo())
    assert _snapshot(graph) == before


def test_per_channel_params_on_a_wrong_axis_are_rejected(model):
    graph, _, calib, _, _ = model
    calibrator = Calibrator(graph, QuantConfig.static_int8())
    calibrator.observe({"input": calib[0]})
    info = calibrator.compute_quant_params()
    weight = next(n.inputs[1] for n in graph.nodes if n.op_type in ("Conv", "Gemm"))
    rank = graph.initializers[weight].ndim
    info.set_params(weight, QuantParams.per_channel([0.1] * 3, [0] * 3, rank + 1))
    before = _snapshot(graph)
    with pytest.raises(rt.ValidationError, match="axis"):
        Quantizer(QuantConfig.static_int8()).quantize(graph, info)
    assert _snapshot(graph) == before
    with pytest.raises(rt.ValidationError, match="channel_axis"):
        QuantParams.per_channel([0.1], [0], -1)
    with pytest.raises(KeyError):
        info.get_params("no such tensor")


# ----------------------------------------------------------------------------------- calibration


def _numpy_params(lo, hi, dtype, symmetric):
    """onnxruntime's formulas (quant_utils.compute_scale_zp)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        a = max(-lo, hi)
        qmin, qmax = (-127, 127) if dtype == rt.DType.Int8 else (0, 255)
        scale = 2 * a / (qmax - qmin)
        return scale, 0 if dtype == rt.DType.Int8 else 128
    qmin, qmax = (-128, 127) if dtype == rt.DType.Int8 else (0, 255)
    scale = (hi - lo) / (qmax - qmin)
    return scale, int(np.clip(np.round(qmin - lo / scale), qmin, qmax))


def _identity_graph():
    """x -> MatMul(W) -> y -> MatMul(W2) -> z: y is an activation a quantized MatMul reads (the
    last output, read by nothing quantized, stays float and is not tracked)."""
    g = rt.Graph("calib")
    g.add_input("x", [None, 64], rt.DType.Float32)
    g.add_output("z", [None, 4], rt.DType.Float32)
    g.add_initializer("W", np.linspace(-1, 1, 64 * 8, dtype=np.float32).reshape(64, 8))
    g.add_initializer("W2", np.linspace(-1, 1, 8 * 4, dtype=np.float32).reshape(8, 4))
    g.add_node("mm", "MatMul", ["x", "W"], ["y"])
    g.add_node("mm2", "MatMul", ["y", "W2"], ["z"])
    return g


@pytest.fixture(scope="module")
def calibration_data():
    rng = np.random.default_rng(3)
    # Skewed with a heavy tail, so the three methods disagree.
    return [np.concatenate([rng.standard_normal((4, 60)), rng.standard_t(2, (4, 4)) * 3], 1).astype(np.float32) + 0.3
            for _ in range(3)]


def test_calibration_stats_and_minmax_params_match_numpy(calibration_data):
    calibrator = Calibrator(_identity_graph(), QuantConfig.static_int8())
    for batch in calibration_data:
        calibrator.observe({"x": batch})
    data = np.concatenate(calibration_data)
    stats = calibrator.get_stats("x")
    assert stats.min_val == data.min() and stats.max_val == data.max()
    assert stats.num_samples == data.size and stats.histogram.sum() == data.size
    y = data @ np.linspace(-1, 1, 64 * 8, dtype=np.float32).reshape(64, 8)
    ys = calibrator.get_stats("y")
    assert ys.min_val == pytest.approx(y.min(), rel=1e-5) and ys.max_val == pytest.approx(y.max(), rel=1e-5)
    for dtype, symmetric in ((rt.DType.Int8, True), (rt.DType.Int8, False), (rt.DType.UInt8, True), (rt.DType.UInt8, False)):
        p = stats.compute_minmax_params(dtype, symmetric)
        scale, zp = _numpy_params(float(data.min()), float(data.max()), dtype, symmetric)
        assert p.scales[0] == pytest.approx(scale, rel=1e-6) and p.zero_points[0] == zp
    with pytest.raises(KeyError):
        calibrator.get_stats("W")
    with pytest.raises(KeyError):
        calibrator.get_stats("z")


def _histogram(data):
    r = float(np.abs(data).max())
    counts, _ = np.histogram(data.astype(np.float64), bins=q.HISTOGRAM_BINS, range=(-r, r))
    half = q.HISTOGRAM_BINS // 2
    folded = counts[half:] + counts[:half][::-1]
    return counts, folded, 2 * r / q.HISTOGRAM_BINS


def test_percentile_params_match_numpy():
    rng = np.random.default_rng(5)
    data = np.concatenate([rng.standard_normal(200_000), rng.standard_t(2, 2000) * 3]).astype(np.float32) + 0.3
    stats = q.CalibrationStats()
    stats.update(data)
    counts, folded, w = _histogram(data)
    np.testing.assert_array_equal(stats.histogram, counts)
    for pct in (99.0, 99.9, 99.99):
        k = int(np.searchsorted(np.cumsum(folded), pct / 100 * folded.sum()))
        threshold = min((k + 1) * w, float(np.abs(data).max()))
        p = stats.compute_percentile_params(rt.DType.Int8, True, pct)
        assert p.scales[0] == pytest.approx(threshold / 127, rel=1e-5)
        # Within a bin of the exact percentile of |x|.
        # Within a bin (plus the gap between neighbouring order statistics) of the exact percentile.
        assert abs(p.scales[0] * 127 - np.percentile(np.abs(data), pct)) <= 2 * w
    pa = stats.compute_percentile_params(rt.DType.UInt8, False, 99.0)
    lo_ref, hi_ref = np.percentile(data, [0.5, 99.5])
    lo, hi = -pa.zero_points[0] * pa.scales[0], (255 - pa.zero_points[0]) * pa.scales[0]
    assert lo == pytest.approx(min(lo_ref, 0), abs=2 * w + pa.scales[0]) and hi == pytest.approx(hi_ref, abs=2 * w + pa.scales[0])


def _numpy_entropy_threshold(folded, w, unsigned):
    """NVIDIA pytorch-quantization's _compute_amax_entropy (stride 1, start bin 128)."""
    bins = folded.astype(np.float64).copy()
    bins[0] = bins[1]
    levels = 256 if unsigned else 128
    divergences, arguments = [], []
    for i in range(128 if not unsigned else 256, len(bins) + 1):
        digitized = np.minimum(np.arange(i) * levels // i, levels - 1)
        digitized[bins[:i] == 0] = -1
        counts = np.zeros(levels)
        members = np.zeros(levels)
        np.add.at(counts, digitized[digitized >= 0], bins[:i][digitized >= 0])
        np.add.at(members, digitized[digitized >= 0], 1)
        new = np.zeros(i)
        ok = digitized >= 0
        new[ok] = counts[digitized[ok]] / members[digitized[ok]]
        ref = bins[:i].copy()
        ref[-1] += bins[i:].sum()
        p, qd = ref / ref.sum(), new / new.sum()
        m = p > 0
        kl = np.inf if np.any(qd[m] == 0) else float(np.sum(p[m] * np.log(p[m] / qd[m])))
        divergences.append(kl)
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return arguments[last_argmin] * w


def test_entropy_params_match_numpy(calibration_data):
    data = calibration_data[1]
    stats = q.CalibrationStats()
    stats.update(data)
    _, folded, w = _histogram(data)
    threshold = min(_numpy_entropy_threshold(folded, w, unsigned=False), float(np.abs(data).max()))
    p = stats.compute_entropy_params(rt.DType.Int8, True)
    assert p.scales[0] == pytest.approx(threshold / 127, rel=1e-4)
    assert threshold < float(np.abs(data).max())  # the heavy tail is clipped
    # Never-negative data with a spike of zeros (a ReLU output): 256 levels, the spike evened out.
    relu = np.maximum(np.concatenate(calibration_data), 0)
    stats = q.CalibrationStats()
    stats.update(relu)
    counts, _ = np.histogram(relu.astype(np.float64), bins=q.HISTOGRAM_BINS, range=(-stats.histogram_range, stats.histogram_range))
    half = q.HISTOGRAM_BINS // 2
    folded = counts[half:] + counts[:half][::-1]
    threshold = min(_numpy_entropy_threshold(folded, stats.bin_width(), unsigned=True), float(relu.max()))
    p = stats.compute_entropy_params(rt.DType.UInt8, False)
    assert p.zero_points[0] == 0 and p.scales[0] == pytest.approx(threshold / 255, rel=1e-4)


def test_histogram_range_grows_by_exact_bin_merges():
    stats = q.CalibrationStats()
    stats.update(np.array([0.3, -0.2], np.float32))
    stats.update(np.array([1.7], np.float32))  # range 0.3 -> 0.6 -> 1.2 -> 2.4
    r = np.float32(0.3) * 8
    assert stats.histogram_range == r
    counts, _ = np.histogram([0.3, -0.2, 1.7], bins=q.HISTOGRAM_BINS, range=(-float(r), float(r)))
    np.testing.assert_array_equal(stats.histogram, counts)


# ---------------------------------------------------------------------------- .pfm and report


def test_pfm_stores_quantized_weights_compactly(model, tmp_path):
    graph, _, calib, x, _ = model
    if sum(v.size for v in graph.initializers.values()) < 40_000:
        pytest.skip("node names and metadata outweigh the weights of so small a model")
    rt.save_model(graph, tmp_path / "fp32.pfm")
    fp32_size = (tmp_path / "fp32.pfm").stat().st_size
    for name, result in (("fp16", Quantizer(QuantConfig.fp16()).convert_to_fp16(graph)),
                         ("dynamic", Quantizer(QuantConfig.dynamic_int8()).quantize_dynamic(graph)),
                         ("static", _static(graph, calib))):
        path = tmp_path / f"{name}.pfm"
        rt.save_model(result.quantized_graph, path)
        ratio = fp32_size / path.stat().st_size
        # File overhead (node names, metadata) is small against the weights of these models.
        assert ratio == pytest.approx(result.stats.compression_ratio(), rel=0.25), name
        loaded = rt.InferenceSession(str(path))
        np.testing.assert_array_equal(loaded.run(None, {"input": x})[0], _run(result.quantized_graph, x))
        report = loaded.quantization_report()
        assert report.compression_ratio == pytest.approx(result.stats.compression_ratio(), rel=1e-5)


def test_quantization_report(model):
    graph, _, calib, _, _ = model
    plain = rt.InferenceSession(graph).quantization_report()
    assert plain.mode == QuantMode.None_ and plain.nodes_quantized == 0 and plain.compression_ratio == 1.0
    result = _static(graph, calib)
    report = rt.InferenceSession(result.quantized_graph).quantization_report()
    assert report.mode == QuantMode.StaticInt8
    assert report.nodes_quantized == result.stats.nodes_quantized and report.nodes_total == len(graph.nodes)
    assert report.weights_quantized and report.activations_quantized
    assert report.original_size_mb == pytest.approx(result.stats.original_size_mb())
    assert report.quantized_size_mb == pytest.approx(result.stats.quantized_size_mb())


def test_report_of_an_onnxruntime_quantized_model(model, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, path, _, x, ref = model
    out = tmp_path / "ort_dynamic.onnx"
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    session = rt.InferenceSession(str(out))
    report = session.quantization_report()
    assert report.mode == QuantMode.DynamicInt8 and report.weights_quantized
    assert report.compression_ratio > (2.5 if sum(v.size for v in session.graph.initializers.values()) > 40_000 else 1.5)
    theirs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(session.run(None, {"input": x})[0], theirs, atol=1e-4 * np.abs(ref).max() + 1e-5)


def test_export_onnx_round_trips_a_float_graph(model, tmp_path):
    graph, _, _, x, ref = model
    path = tmp_path / "again.onnx"
    rt.export_onnx(graph, path)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(theirs, ref, rtol=1e-5, atol=1e-6)


def test_onnxruntime_qdq_model_imports_and_matches_onnxruntime(model, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    _, path, calib, x, ref = model

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": b} for b in calib])

        def get_next(self):
            return next(self.it, None)

    out = tmp_path / "ort_qdq.onnx"
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    session = rt.InferenceSession(str(out))
    assert session.quantization_report().mode == QuantMode.StaticInt8
    theirs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ours = session.run(None, {"input": x})[0]
    assert _cosine(ours, ref) > 0.99
    np.testing.assert_allclose(ours, theirs, atol=0.02 * np.abs(ref).max())


def test_calibration_shows_progress(capsys, calibration_data):
    calibrator = Calibrator(_identity_graph(), QuantConfig.static_int8())
    batches = iter(calibration_data)
    calibrator.calibrate(lambda: {"x": next(batches)}, len(calibration_data))
    assert calibrator.batches_observed == len(calibration_data)
    assert "calibrating" in capsys.readouterr().err
    with pytest.raises(TypeError, match="callable"):
        calibrator.calibrate(None, 1)


@pytest.mark.parametrize("convert", ["fp16", "bf16"])
def test_half_conversion_around_kept_ops_and_computed_shapes(convert):
    """FP32-kept ops (LayerNormalization) next to converted ones, a Reshape to a computed shape
    between them: every boundary gets its Cast (the BERT encoder of bench/quant_bench.py covers
    values shape inference leaves untyped)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    gamma, beta = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    g = rt.Graph("mixed")
    g.add_input("x", [None, 4], rt.DType.Float32)
    g.add_output("y", [None, 4], rt.DType.Float32)
    g.add_initializer("W", w)
    g.add_initializer("gamma", gamma)
    g.add_initializer("beta", beta)
    g.add_node("mm", "MatMul", ["x", "W"], ["xw"])
    g.add_node("shape", "Shape", ["x"], ["s"])
    g.add_node("reshape", "Reshape", ["xw", "s"], ["r"])
    g.add_node("ln", "LayerNormalization", ["r", "gamma", "beta"], ["n"], {"axis": -1})
    g.add_node("add", "Add", ["n", "r"], ["y"])
    config = QuantConfig.fp16() if convert == "fp16" else QuantConfig.bfloat16()
    quantizer = Quantizer(config)
    result = quantizer.convert_to_fp16(g) if convert == "fp16" else quantizer.convert_to_bfloat16(g)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    r = x @ w
    n = (r - r.mean(-1, keepdims=True)) / np.sqrt(r.var(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(_run_feed(result.quantized_graph, {"x": x}), n + r, atol=0.05 if convert == "bf16" else 5e-3)


def _run_feed(graph, feed):
    return rt.InferenceSession(graph).run(None, feed)[0]


# --------------------------------------------------------------- transformer encoder (BERT-like)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A 2-layer torch TransformerEncoder (batch_first, GELU) exported as bench/bench_models.py
    exports the BERT-like encoder: 3-D activations into 2-D weight MatMuls and Gemms, Reshapes to
    computed shapes (which shape inference leaves untyped), biases shared through Identity."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0, activation="gelu",
                                       batch_first=True)
    net = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    for module in net.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    path = tmp_path_factory.mktemp("encoder") / "encoder.onnx"
    _export(net, torch.zeros(2, 16, 64), path)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    rng = np.random.default_rng(3)
    calib = [rng.standard_normal((2, 16, 64)).astype(np.float32) for _ in range(4)]
    x = rng.standard_normal((3, 16, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    copies = {n.outputs[0] for n in graph.nodes if n.op_type == "Identity" and n.inputs[0] in graph.initializers}
    weighted = [n for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and n.inputs[1] in graph.initializers]
    shared = [n for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and n.inputs[1] in copies]
    assert len(weighted) == 7 and len(shared) == 1  # layer 2's attention input projection shares layer 1's
    return graph, calib, x, ref, len(weighted) + len(shared)


def _optimized_op_types(graph):
    rt.PassManager().run(graph, level=2)  # in place
    return [n.op_type for n in graph.nodes]


def test_dynamic_int8_quantizes_every_encoder_weight_matmul(encoder, tmp_path):
    graph, _, x, ref, weighted = encoder
    config = QuantConfig.dynamic_int8()
    config.granularity = QuantGranularity.PerChannel
    result = Quantizer(config).quantize_dynamic(graph)
    g = result.quantized_graph
    assert result.stats.nodes_quantized == weighted
    assert [n.op_type for n in g.nodes].count("MatMulInteger") == weighted
    ours = _run(g, x)
    assert _cosine(ours, ref) > 0.999
    path = tmp_path / "encoder-dynamic.onnx"
    rt.export_onnx(g, path)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, theirs, atol=2e-3 * np.abs(theirs).max(), rtol=0)
    # The session runs them on the fused int8 kernel (uint8 activations quantized on the fly).
    assert _optimized_op_types(rt.import_module.ONNXImporter().import_model(str(path)).graph).count(
        "DynamicQuantizeMatMul") == weighted


def test_static_int8_quantizes_every_encoder_weight_matmul(encoder, tmp_path):
    graph, calib, x, ref, weighted = encoder
    result = _static(graph, calib, granularity=QuantGranularity.PerChannel)
    g = result.quantized_graph
    int8_weights = {n.outputs[0] for n in g.nodes if n.op_type == "DequantizeLinear" and n.inputs[0] in g.initializers
                    and g.initializers[n.inputs[0]].dtype == np.int8}
    assert sum(1 for n in g.nodes if n.op_type in ("MatMul", "Gemm") and n.inputs[1] in int8_weights) == weighted
    ours = _run(g, x)
    assert _cosine(ours, ref) > 0.99
    path = tmp_path / "encoder-qdq.onnx"
    rt.export_onnx(g, path)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert _cosine(ours, theirs) > 0.999
    ops = _optimized_op_types(rt.import_module.ONNXImporter().import_model(str(path)).graph)
    # Every projection is int8 in; its output, read by float ops (bias Add, LayerNormalization,
    # the attention's float MatMuls), comes out float32 with the bias added.
    assert ops.count("MatMulIntegerToFloat") == weighted and ops.count("QLinearMatMul") + ops.count("QGemm") == 0
