"""Static INT8 accuracy measures, each against a numpy/torch reference: bias correction of
Conv/Gemm biases by the calibration means, exact parameters for data on a coarse grid (pixels),
and the float prefix quantize_with_calibration keeps when the quantized outputs drift."""
import numpy as np
import pytest

import pyflame_rt as rt
from pyflame_rt.quantization import CalibrationStats, Calibrator, GraphQuantInfo, QuantConfig, QuantGranularity, Quantizer

torch = pytest.importorskip("torch")


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _run(graph, x):
    return rt.InferenceSession(graph).run(None, {"x": x})[0]


def _per_channel_rounded(w, axis):
    """Symmetric int8 per-channel weights as onnxruntime: scale max|w| / 127, round half to even."""
    moved = np.moveaxis(w, axis, 0)
    scale = np.abs(moved.reshape(len(moved), -1)).max(1) / 127
    q = np.clip(np.rint(moved / scale.reshape((-1,) + (1,) * (moved.ndim - 1))), -127, 127)
    return np.moveaxis(q * scale.reshape((-1,) + (1,) * (moved.ndim - 1)), 0, axis)


def _without_channel_means(info):
    plain = GraphQuantInfo()
    for name, params in info.tensor_params.items():
        plain.set_params(name, params)
    return plain


def _dequantized_bias(graph, op_type):
    """The bias a quantized node reads: int32 values times their scales (DequantizeLinear)."""
    producer = {n.outputs[0]: n for n in graph.nodes}
    node = next(n for n in graph.nodes if n.op_type == op_type)
    dq = producer[node.inputs[2]]
    assert dq.op_type == "DequantizeLinear"
    inits = graph.initializers
    return inits[dq.inputs[0]].astype(np.float64) * inits[dq.inputs[1]].astype(np.float64), inits[dq.inputs[1]]


# ---------------------------------------------------------------------------- bias correction


@pytest.fixture(scope="module")
def conv_gemm():
    """x [N,4,6,6] -> Conv(8, 3x3, bias) -> Relu -> Flatten -> Gemm(transB, bias) -> y [N,5]: inputs
    far from zero mean, so the weights' rounding shifts every output channel's mean."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((5, 8 * 16)).astype(np.float32) * 0.1
    b2 = rng.standard_normal(5).astype(np.float32)
    g = rt.Graph("conv_gemm")
    g.add_input("x", [None, 4, 6, 6], rt.DType.Float32)
    g.add_output("y", [None, 5], rt.DType.Float32)
    for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        g.add_initializer(name, value)
    g.add_node("conv", "Conv", ["x", "w1", "b1"], ["c"], {"kernel_shape": [3, 3]})
    g.add_node("relu", "Relu", ["c"], ["r"])
    g.add_node("flatten", "Flatten", ["r"], ["f"])
    g.add_node("fc", "Gemm", ["f", "w2", "b2"], ["y"], {"transB": 1})

    def data(n):
        return (rng.random((n, 4, 6, 6)) * 2 + 1).astype(np.float32)

    calib = [data(16) for _ in range(4)]
    return g, (w1, b1, w2, b2), calib, data(64)


def _torch_float(params, x):
    w1, b1, w2, b2 = (torch.from_numpy(p).double() for p in params)
    r = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x).double(), w1, b1))
    f = r.flatten(1)
    return f.numpy(), (f @ w2.T + b2).numpy()


def test_bias_correction_matches_numpy(conv_gemm):
    graph, params, calib, _ = conv_gemm
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    config = QuantConfig.static_int8(len(calib))
    config.granularity = QuantGranularity.PerChannel
    calibrator = Calibrator(graph, config)
    for x in calib:
        calibrator.observe({"x": x})
    result = Quantizer(config).quantize(graph, calibrator.compute_quant_params())

    x_all = np.concatenate(calib).astype(np.float64)
    conv_mean = x_all.mean((0, 2, 3))
    fc_mean = _torch_float(params, np.concatenate(calib))[0].mean(0)
    expected_b1 = b1 - (_per_channel_rounded(w1, 0) - w1).sum((2, 3)) @ conv_mean
    expected_b2 = b2 - (_per_channel_rounded(w2, 0) - w2) @ fc_mean
    for op, expected, original in (("Conv", expected_b1, b1), ("Gemm", expected_b2, b2)):
        got, scale = _dequantized_bias(result.quantized_graph, op)
        # Within the int32 rounding of the bias (plus float32 accumulation of the means).
        assert np.all(np.abs(got - expected) <= scale * 0.5 + 1e-5 * np.abs(expected) + 1e-6), op
        assert np.max(np.abs(expected - original)) > 10 * scale.max(), f"{op}: the correction is too small to test"


def test_bias_correction_reduces_the_output_error(conv_gemm):
    graph, params, calib, x = conv_gemm
    config = QuantConfig.static_int8(len(calib))
    config.granularity = QuantGranularity.PerChannel
    calibrator = Calibrator(graph, config)
    for batch in calib:
        calibrator.observe({"x": batch})
    info = calibrator.compute_quant_params()
    reference = _torch_float(params, x)[1]
    corrected = _run(Quantizer(config).quantize(graph, info).quantized_graph, x) - reference
    plain = _run(Quantizer(config).quantize(graph, _without_channel_means(info)).quantized_graph, x) - reference
    # The mean shift per output is mostly gone, and with it most of the error.
    assert np.abs(corrected.mean(0)).max() < 0.5 * np.abs(plain.mean(0)).max()
    assert np.sqrt((corrected ** 2).mean()) < 0.8 * np.sqrt((plain ** 2).mean())


# ------------------------------------------------------------------------------ grid data


def test_lattice_params_represent_grid_data_exactly():
    pixels = (np.arange(17, dtype=np.float32) / 16).repeat(4)  # 0, 1/16, ..., 1, each 4 times
    stats = CalibrationStats()
    stats.update(pixels)
    unsigned = stats.compute_lattice_params(rt.DType.UInt8, symmetric=False)
    assert unsigned is not None and unsigned.scales[0] == pytest.approx(1 / 16) and unsigned.zero_points[0] == 0
    signed = stats.compute_lattice_params(rt.DType.Int8, symmetric=True)
    assert signed.scales[0] == pytest.approx(1 / 16) and signed.zero_points[0] == 0
    for p, (lo, hi) in ((unsigned, (0, 255)), (signed, (-127, 127))):
        q = np.clip(np.rint(pixels / p.scales[0]) + p.zero_points[0], lo, hi)
        np.testing.assert_array_equal(((q - p.zero_points[0]) * p.scales[0]).astype(np.float32), pixels)

    # Steps of 3/16 and 5/16 lie on the 1/16 grid too; k/255 data gets 1/255.
    odd = CalibrationStats()
    odd.update(np.tile(np.array([-3 / 16, 5 / 16, 0.5], np.float32), 4))
    assert odd.compute_lattice_params(rt.DType.Int8, True).scales[0] == pytest.approx(1 / 16)
    bytes_ = CalibrationStats()
    bytes_.update(np.tile(np.arange(0, 256, 5, dtype=np.float32) / 255, 4))
    assert bytes_.compute_lattice_params(rt.DType.UInt8, False).scales[0] == pytest.approx(5 / 255)


@pytest.mark.parametrize("values", [
    np.tile(np.random.default_rng(0).standard_normal(10).astype(np.float32), 8),  # off any grid
    np.arange(300, dtype=np.float32).repeat(4) / 16,                              # over 256 distinct values
    np.tile(np.array([0.0, 1 / 16, 200 / 16], np.float32), 4),                    # int8: 200 steps > 127
    np.array([0.3, 0.7], np.float32),             # on steps of 0.1, but seen once: continuous data
])
def test_lattice_params_refuse_what_they_cannot_represent(values):
    stats = CalibrationStats()
    stats.update(values)
    assert stats.compute_lattice_params(rt.DType.Int8, symmetric=True) is None


def test_calibrated_pixels_quantize_without_error():
    """The Calibrator gives a pixel input its own grid, where min-max would round it."""
    g = rt.Graph("pixels")
    g.add_input("x", [None, 64], rt.DType.Float32)
    g.add_output("y", [None, 4], rt.DType.Float32)
    g.add_initializer("w", np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32))
    g.add_node("mm", "MatMul", ["x", "w"], ["y"])
    rng = np.random.default_rng(2)
    x = (rng.integers(0, 17, (32, 64)) / 16).astype(np.float32)
    calibrator = Calibrator(g, QuantConfig.static_int8(1))
    calibrator.observe({"x": x})
    p = calibrator.compute_quant_params().get_params("x")
    assert p.quantized_dtype == rt.DType.UInt8 and p.zero_points[0] == 0 and p.scales[0] == pytest.approx(1 / 16)
    minmax_scale = x.max() / 255
    assert np.abs(np.rint(x / minmax_scale) * minmax_scale - x).max() > 1e-3  # what min-max would lose


# ------------------------------------------------------------------------------ float prefix


def _outlier_chain():
    """x [N,32] -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> y. Feature 0 reaches 1000 once in the
    calibration data but no weight reads it: int8 on x rounds every other feature to 0, while
    the first Gemm's output has an ordinary range."""
    rng = np.random.default_rng(5)
    ws = [(rng.standard_normal((32, 32)) / np.sqrt(32)).astype(np.float32) for _ in range(3)]
    ws[0][0, :] = 0
    g = rt.Graph("outlier")
    g.add_input("x", [None, 32], rt.DType.Float32)
    g.add_output("y", [None, 32], rt.DType.Float32)
    prev = "x"
    for i, w in enumerate(ws):
        g.add_initializer(f"w{i}", w)
        g.add_initializer(f"b{i}", np.full(32, 0.1, np.float32))
        out = "y" if i == 2 else f"h{i}"
        g.add_node(f"fc{i}", "Gemm", [prev, f"w{i}", f"b{i}"], [out])
        if i < 2:
            g.add_node(f"relu{i}", "Relu", [out], [f"r{i}"])
            out = f"r{i}"
        prev = out
    calib = [rng.standard_normal((16, 32)).astype(np.float32) for _ in range(3)]
    calib[1][3, 0] = 1000.0
    x = rng.standard_normal((64, 32)).astype(np.float32)

    def reference(v):
        h = v.astype(np.float64)
        for i, w in enumerate(ws):
            h = h @ w + 0.1
            h = np.maximum(h, 0) if i < 2 else h
        return h

    return g, calib, x, reference


def test_quantize_with_calibration_keeps_a_sensitive_first_layer_in_float():
    g, calib, x, reference = _outlier_chain()
    config = QuantConfig.static_int8(len(calib))
    batches = iter(calib)
    result = Quantizer(config).quantize_with_calibration(g, lambda: {"x": next(batches)}, len(calib), progress=False)
    qg = result.quantized_graph
    first = next(n for n in qg.nodes if n.name == "fc0")
    assert first.inputs[0] == "x" and first.inputs[1] == "w0"  # float input and float weight
    assert result.stats.weights_quantized == 2
    assert _cosine(_run(qg, x), reference(x)) >= Quantizer.MIN_OUTPUT_COSINE

    # Without the check (quantize alone) every layer is int8 and the output is far off.
    calibrator = Calibrator(g, config)
    for batch in calib:
        calibrator.observe({"x": batch})
    everything = Quantizer(config).quantize(g, calibrator.compute_quant_params())
    assert everything.stats.weights_quantized == 3
    assert _cosine(_run(everything.quantized_graph, x), reference(x)) < 0.9


def test_accurate_models_stay_fully_quantized(conv_gemm):
    graph, params, calib, x = conv_gemm
    config = QuantConfig.static_int8(len(calib))
    batches = iter(calib)
    result = Quantizer(config).quantize_with_calibration(graph, lambda: {"x": next(batches)}, len(calib), progress=False)
    assert result.stats.weights_quantized == 2
    assert _cosine(_run(result.quantized_graph, x), _torch_float(params, x)[1]) >= Quantizer.MIN_OUTPUT_COSINE


# ------------------------------------------------------------- float -> int8 boundary


# (input channels, output channels, size, kernel): oneDNN picks channels-last for the 3x3
# ones here and channel blocks (nChw8c/16c, padded for 20) for the 7x7 ones over 3 channels.
@pytest.mark.parametrize("cin,channels,size,kernel", [(32, 64, 14, 3), (32, 20, 7, 3), (32, 48, 9, 3), (3, 64, 30, 7),
                                                      (3, 20, 13, 7)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_quantize_linear_after_a_float_conv_matches_numpy(cin, channels, size, kernel, dtype):
    """A float Conv's output (in whatever layout its kernel picks) quantized by QuantizeLinear:
    exactly numpy's round-half-even quantization of the Conv's float output."""
    rng = np.random.default_rng(channels)
    w = (rng.standard_normal((channels, cin, kernel, kernel)) * 0.2).astype(np.float32)
    pad = kernel // 2
    scale, zero_point = np.float32(0.05), dtype(3)

    def graph(quantized):
        g = rt.Graph("conv_q")
        g.add_input("x", [2, cin, size, size], rt.DType.Float32)
        g.add_initializer("w", w)
        g.add_node("conv", "Conv", ["x", "w"], ["c"], {"pads": [pad] * 4})
        if quantized:
            g.add_output("q", [2, channels, size, size], rt.DType.UInt8 if dtype == np.uint8 else rt.DType.Int8)
            g.add_initializer("s", np.array(scale))
            g.add_initializer("z", np.array(zero_point))
            g.add_node("quant", "QuantizeLinear", ["c", "s", "z"], ["q"])
        else:
            g.add_output("c", [2, channels, size, size], rt.DType.Float32)
        return g

    x = rng.standard_normal((2, cin, size, size)).astype(np.float32)
    conv = _run(graph(False), x)
    np.testing.assert_allclose(conv, torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=pad).numpy(),
                               rtol=1e-4, atol=1e-4)
    info = np.iinfo(dtype)
    expected = np.clip(np.rint(conv / scale) + zero_point, info.min, info.max).astype(dtype)
    got = _run(graph(True), x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
