"""Quantized and half-precision graphs on the CPU backend's int8 / bf16 kernels, against ONNX
Runtime (the same quantized model) and numpy: the ONNX int8 operators, the QDQ and dynamic forms
onnxruntime.quantization writes (fused by the level-2 passes into int8 nodes), and bf16/fp16
Conv/MatMul/Gemm."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pyflame_rt as rt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17


def make_model(nodes, inputs, outputs, initializers, opset=OPSET):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def save(model, path):
    onnx.save(model, str(path))
    return str(path)


def ours(path, feeds, level=2, threads=2):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    opts.num_threads = threads
    return rt.InferenceSession(str(path), opts).run(None, feeds)


def onnxruntime(path, feeds, optimize=False):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def optimized_ops(path):
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    rt.PassManager().run(graph, level=2)
    return [n.op_type for n in graph.nodes]


def assert_within_steps(actual, expected, steps=1, max_fraction=0.02):
    """Integer tensors equal up to `steps` everywhere, and off at all in only a few places."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= steps, f"max difference {diff.max()} steps"
    assert np.count_nonzero(diff) <= max_fraction * diff.size + 1


# ---- the ONNX int8 operators, one node each ----

@pytest.mark.parametrize("x_type", [np.uint8, np.int8])
@pytest.mark.parametrize("group,per_channel", [(1, True), (1, False), (4, True)])
def test_qlinearconv_matches_onnxruntime(tmp_path, x_type, group, per_channel):
    rng = np.random.default_rng(1)
    info = np.iinfo(x_type)
    x = rng.integers(info.min, info.max + 1, (2, 8, 13, 13)).astype(x_type)
    w = rng.integers(-128, 128, (16, 8 // group, 3, 3)).astype(np.int8)
    ws = (rng.uniform(0.002, 0.01, 16) if per_channel else np.array(0.005)).astype(np.float32)
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(3 if x_type == np.int8 else 130, x_type), "w": w,
             "ws": ws, "wz": np.zeros(ws.shape, np.int8), "ys": np.array(0.07, np.float32),
             "yz": np.array(121 if x_type == np.uint8 else -9, x_type), "b": rng.integers(-4000, 4000, 16).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=[1, 0, 2, 1], strides=[2, 1], group=group)
    x_proto = TensorProto.UINT8 if x_type == np.uint8 else TensorProto.INT8
    model = make_model([node], [helper.make_tensor_value_info("x", x_proto, None)],
                       [helper.make_tensor_value_info("y", x_proto, None)], inits)
    path = save(model, tmp_path / "qconv.onnx")
    expected = onnxruntime(path, {"x": x})[0]
    assert_within_steps(ours(path, {"x": x})[0], expected)


def test_int8_convolution_runs_on_onednn_int8_kernels(tmp_path):
    """ONEDNN_VERBOSE names the primitive each call ran: an int8 convolution, not a reference loop."""
    rng = np.random.default_rng(2)
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8),
             "w": rng.integers(-128, 128, (32, 16, 3, 3)).astype(np.int8), "ws": np.array(0.004, np.float32),
             "wz": np.array(0, np.int8), "ys": np.array(0.05, np.float32), "yz": np.array(128, np.uint8)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                       [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    path = save(model, tmp_path / "qconv.onnx")
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (1, 16, 14, 14)).astype(np.uint8))
    script = (f"import numpy as np, pyflame_rt as rt; x = np.load({str(tmp_path / 'x.npy')!r}); "
              f"rt.InferenceSession({path!r}).run(None, {{'x': x}})")
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    env.pop("PYFLAME_RT_ONEDNN", None)
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True).stdout
    convs = [line for line in out.splitlines() if ",convolution," in line and "exec" in line]
    if not convs:
        pytest.skip("oneDNN has no CPU engine here")
    assert any("src_u8" in line and "wei_s8" in line and "ref" not in line.split(",")[4] for line in convs), convs


def test_matmulinteger_and_convinteger_are_exact(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 7, 40)).astype(np.uint8)
    x = rng.integers(0, 256, (2, 4, 9, 9)).astype(np.uint8)
    inits = {"b": rng.integers(-128, 128, (40, 24)).astype(np.int8), "az": np.array(17, np.uint8),
             "bz": np.zeros(24, np.int8), "w": rng.integers(-128, 128, (6, 4, 3, 3)).astype(np.int8),
             "xz": np.array(140, np.uint8)}
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y1"]),
             helper.make_node("ConvInteger", ["x", "w", "xz"], ["y2"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.UINT8, None),
                               helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                       [helper.make_tensor_value_info("y1", TensorProto.INT32, None),
                        helper.make_tensor_value_info("y2", TensorProto.INT32, None)], inits)
    path = save(model, tmp_path / "int.onnx")
    for got, want in zip(ours(path, {"a": a, "x": x}), onnxruntime(path, {"a": a, "x": x})):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_column", [True, False])
def test_qlinearmatmul_matches_onnxruntime(tmp_path, per_column):
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (4, 9, 64)).astype(np.int8)
    inits = {"as": np.array(0.03, np.float32), "az": np.array(-5, np.int8),
             "b": rng.integers(-128, 128, (64, 32)).astype(np.int8),
             "bs": (rng.uniform(0.001, 0.01, 32) if per_column else np.array(0.004)).astype(np.float32),
             "ys": np.array(0.5, np.float32), "yz": np.array(-2, np.int8)}
    inits["bz"] = np.zeros(inits["bs"].shape, np.int8)
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("a", TensorProto.INT8, None)],
                       [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    path = save(model, tmp_path / "qmm.onnx")
    assert_within_steps(ours(path, {"a": a})[0], onnxruntime(path, {"a": a})[0])


def test_dynamicquantizelinear_is_exact(tmp_path):
    x = np.random.default_rng(5).standard_normal((3, 1001)).astype(np.float32) * 4 + 1
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                       [helper.make_tensor_value_info(n, t, None) for n, t in
                        [("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)]], {})
    path = save(model, tmp_path / "dql.onnx")
    for got, want in zip(ours(path, {"x": x}), onnxruntime(path, {"x": x})):
        np.testing.assert_array_equal(got, want)


# ---- models quantized by onnxruntime.quantization ----

torch = pytest.importorskip("torch")


class SmallCNN(torch.nn.Module):
    """Conv-ReLU-MaxPool, a residual block (Conv-ReLU-Conv + shortcut, ReLU), pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c1 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.down = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=2)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
        x = torch.relu(self.c2(torch.relu(self.c1(x))) + x)
        x = torch.relu(self.down(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def calibration_reader(name, shape, count=4, seed=7):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


@pytest.fixture(scope="module")
def static_cnn(tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    tmp = tmp_path_factory.mktemp("qdq")
    torch.manual_seed(0)
    model = SmallCNN().eval()
    fp32 = tmp / "cnn.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(fp32), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET, dynamo=False)
    paths = {}
    for act in ["int8", "uint8"]:
        paths[act] = tmp / f"cnn_qdq_{act}.onnx"
        quantize_static(str(fp32), str(paths[act]), calibration_reader("x", (4, 3, 16, 16)),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if act == "int8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return paths


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_quantize_static_qdq_cnn_matches_onnxruntime(static_cnn, act):
    path = static_cnn[act]
    ops = optimized_ops(path)
    # Every Conv became an int8 node and the shortcut addition stayed in int8, inside the
    # requantization of the convolution it follows (QLinearConvAdd: oneDNN's sum post-op).
    assert "Conv" not in ops and sum(ops.count(t) for t in ("QLinearConv", "FusedQLinearConv", "QLinearConvAdd")) == 4, ops
    assert ops.count("QLinearConvAdd") == 1 and "QLinearAdd" not in ops, ops
    # MaxPool runs on the int8 values: no DequantizeLinear / QuantizeLinear around it.
    assert ops[ops.index("MaxPool") - 1] in ("QLinearConv", "FusedQLinearConv"), ops
    x = np.random.default_rng(8).standard_normal((3, 3, 16, 16)).astype(np.float32)
    expected = onnxruntime(path, {"x": x})[0]          # the QDQ graph as written, float compute
    expected_fused = onnxruntime(path, {"x": x}, optimize=True)[0]  # ORT's own int8 kernels
    got = ours(path, {"x": x})[0]
    level0 = ours(path, {"x": x}, level=0)[0]
    # The output is DequantizeLinear(int8): its scale is one step. Rounding differences may
    # move an intermediate value by one step; a few output steps bound what that does.
    step = np.abs(np.diff(np.unique(expected))).min()
    for name, value in [("level 2", got), ("level 0", level0)]:
        assert np.abs(value - expected).max() <= 4 * step + 1e-6, name
        assert np.abs(value - expected).mean() <= 0.5 * step, name
    assert np.abs(got - expected_fused).max() <= 4 * step + 1e-6


def test_quantize_static_qdq_mlp_runs_int8_gemm(tmp_path):
    """torch's Linear layers export as Gemm (transB=1): QDQ around them becomes QGemm."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10)).eval()
    fp32 = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(2, 64),), str(fp32), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET, dynamo=False)
    path = tmp_path / "mlp_qdq.onnx"
    quantize_static(str(fp32), str(path), calibration_reader("x", (8, 64)), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    ops = optimized_ops(path)
    assert ops.count("QGemm") == 2 and "Gemm" not in ops, ops
    x = np.random.default_rng(12).standard_normal((6, 64)).astype(np.float32)
    expected = onnxruntime(path, {"x": x})[0]
    step = np.abs(np.diff(np.unique(expected))).min()
    for level in (2, 0):
        got = ours(path, {"x": x}, level=level)[0]
        assert np.abs(got - expected).max() <= 2 * step + 1e-6
        assert np.abs(got - expected).mean() <= 0.5 * step


@pytest.fixture(scope="module")
def dynamic_mlp(tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = tmp_path_factory.mktemp("dyn")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10)).eval()
    fp32 = tmp / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(2, 64),), str(fp32), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET, dynamo=False)
    path = tmp / "mlp_dynamic.onnx"
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    return path


def test_quantize_dynamic_mlp_matches_onnxruntime(dynamic_mlp):
    ops = optimized_ops(dynamic_mlp)
    assert ops.count("DynamicQuantizeMatMul") == 3 and "MatMulInteger" not in ops, ops
    x = np.random.default_rng(9).standard_normal((5, 64)).astype(np.float32)
    expected = onnxruntime(dynamic_mlp, {"x": x})[0]
    scale = np.abs(expected).max()
    for level in (2, 0):
        np.testing.assert_allclose(ours(dynamic_mlp, {"x": x}, level=level)[0], expected, rtol=0, atol=1e-5 * scale)


def test_qdq_around_an_op_without_int8_kernel_stays(tmp_path):
    """DequantizeLinear -> Sigmoid -> QuantizeLinear has no int8 form: it runs as written."""
    x = np.random.default_rng(10).integers(0, 256, (4, 50)).astype(np.uint8)
    inits = {"s": np.array(0.05, np.float32), "z": np.array(100, np.uint8), "s2": np.array(1 / 255, np.float32),
             "z2": np.array(0, np.uint8)}
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]), helper.make_node("Sigmoid", ["d"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "s2", "z2"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
                       [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    path = save(model, tmp_path / "sig.onnx")
    assert optimized_ops(path) == ["DequantizeLinear", "Sigmoid", "QuantizeLinear"]
    np.testing.assert_array_equal(ours(path, {"x": x})[0], onnxruntime(path, {"x": x})[0])


# ---- bfloat16 / float16 ----

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_conv_gemm_match_numpy(tmp_path, dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    half = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    proto = TensorProto.BFLOAT16 if dtype == "bfloat16" else TensorProto.FLOAT16
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 10, 10)).astype(half)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(half)
    b = rng.standard_normal(16).astype(half)
    fw = (rng.standard_normal((10, 16 * 10 * 10)) * 0.05).astype(half)
    fb = rng.standard_normal(10).astype(half)

    def tensor(name, v):
        return helper.make_tensor(name, proto, v.shape, np.ascontiguousarray(v).tobytes(), raw=True)

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", proto, None)],
                              [helper.make_tensor_value_info("y", proto, None)],
                              [tensor("w", w), tensor("b", b), tensor("fw", fw), tensor("fb", fb)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    path = save(model, tmp_path / "half.onnx")
    # numpy: float32 math on the half values, each op's output rounded to the half type.
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    padded = np.pad(xf, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 16, 10, 10), np.float64)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,mc->nmhw", padded[:, :, i:i + 10, j:j + 10], wf[:, :, i, j])
    conv = (conv + b.astype(np.float32)[None, :, None, None]).astype(half)
    flat = np.maximum(conv.astype(np.float32), 0).reshape(2, -1)
    expected = (flat.astype(np.float64) @ fw.astype(np.float64).T + fb.astype(np.float32)).astype(half).astype(np.float32)
    for level in (0, 2):
        got = ours(path, {"x": x}, level=level)[0]
        assert got.dtype == half
        # The conv output's own rounding (one half-precision step) propagates through the Gemm.
        tol = (0.05 if dtype == "bfloat16" else 0.01) * np.abs(expected).max()
        np.testing.assert_allclose(got.astype(np.float32), expected, rtol=0, atol=tol)


def test_our_static_quantizer_cnn_runs_fused_int8_convolutions(tmp_path):
    """Our Quantizer (symmetric int8 activations) gives each ReLU's output uint8 with zero point
    0, which clamps at 0 by itself: the ReLU goes, and each Conv becomes one int8 kernel with a
    single requantization to uint8 (no ReLU, no QDQ pair left between the convolutions).
    Checked against ONNX Runtime on our export."""
    from pyflame_rt.quantization import QuantConfig, Quantizer

    torch.manual_seed(1)
    fp32 = tmp_path / "cnn.onnx"
    torch.onnx.export(SmallCNN().eval(), (torch.randn(2, 3, 16, 16),), str(fp32), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET,
                      dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(fp32)).graph
    rng = np.random.default_rng(3)
    batches = iter([{"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)} for _ in range(4)])
    quantized = Quantizer(QuantConfig.static_int8(4)).quantize_with_calibration(
        graph, lambda: next(batches), 4, progress=False).quantized_graph
    exported = tmp_path / "cnn_ours_qdq.onnx"
    rt.export_onnx(quantized, str(exported))
    ops = optimized_ops(exported)
    assert ops.count("QLinearConv") + ops.count("FusedQLinearConv") >= 2 and "Conv" not in ops and "Relu" not in ops, ops
    # The residual block's second convolution takes the shortcut addition into its requantization.
    assert ops.count("QLinearConvAdd") == 1 and "QLinearAdd" not in ops, ops
    relu_outputs = [n for n in quantized.nodes if n.op_type == "QuantizeLinear"
                    and quantized.initializers[n.inputs[2]].dtype == np.uint8]
    assert relu_outputs and all(quantized.initializers[n.inputs[2]] == 0 for n in relu_outputs)
    # The classifier's output stays float32 (no quantized op reads it): int8 in, float out.
    assert ops[-1] == "MatMulIntegerToFloat", ops
    x = np.random.default_rng(9).standard_normal((3, 3, 16, 16)).astype(np.float32)
    expected = onnxruntime(exported, {"x": x})[0]  # the QDQ graph as written, float compute
    got = ours(exported, {"x": x})[0]
    # Skipping the rounding between a convolution and its shortcut addition moves an activation
    # by about one step; the classifier's float output follows by a little.
    np.testing.assert_allclose(got, expected, atol=0.02 * np.abs(expected).max(), rtol=0)
    a, b = got.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9995


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_matmul_and_gemm_of_activations(tmp_path, dtype):
    """Half inputs with no constant weights (attention's Q·K'): the reference kernels compute in
    float32 and round once, like numpy on the widened values."""
    import ml_dtypes
    np_type = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    onnx_type = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.BFLOAT16
    nodes = [helper.make_node("MatMul", ["a", "b"], ["ab"]),
             helper.make_node("Gemm", ["m", "n", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("MatMul", ["a", "d"], ["ad"])]  # batch broadcast: d is [1, 3, 8, 6]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info(k, onnx_type, None) for k in "abmncd"],
                              [helper.make_tensor_value_info(k, onnx_type, None) for k in ("ab", "g", "ad")])
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    rng = np.random.default_rng(5)
    feeds = {"a": rng.standard_normal((2, 3, 4, 8)), "b": rng.standard_normal((2, 3, 8, 5)),
             "m": rng.standard_normal((4, 6)), "n": rng.standard_normal((7, 6)), "c": rng.standard_normal(7),
             "d": rng.standard_normal((1, 3, 8, 6))}
    feeds = {k: v.astype(np_type) for k, v in feeds.items()}
    wide = {k: v.astype(np.float32) for k, v in feeds.items()}
    expected = [np.matmul(wide["a"], wide["b"]).astype(np_type),
                (0.5 * wide["m"] @ wide["n"].T + 2.0 * wide["c"]).astype(np_type),
                np.matmul(wide["a"], wide["d"]).astype(np_type)]
    for got, want in zip(ours(path, feeds), expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-2)
    # Both activation x activation MatMuls run on oneDNN's native half-precision matmul.
    np.savez(tmp_path / "feeds.npz", **{k: v.view(np.uint16) for k, v in feeds.items()})
    script = (f"import numpy as np, ml_dtypes, pyflame_rt as rt; f = np.load({str(tmp_path / 'feeds.npz')!r}); "
              f"t = np.float16 if {dtype!r} == 'float16' else ml_dtypes.bfloat16; "
              f"rt.InferenceSession({str(path)!r}).run(None, {{k: f[k].view(t) for k in f.files}})")
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    env.pop("PYFLAME_RT_ONEDNN", None)
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True).stdout
    half = "bf16" if dtype == "bfloat16" else "f16"
    batched = [line for line in out.splitlines() if ",matmul," in line and ",exec," in line and f"src_{half}" in line
               and "abcd" in line]
    if not any(",matmul," in line for line in out.splitlines()):
        pytest.skip("oneDNN has no CPU engine here")
    if half == "f16" and not batched:
        pytest.skip("no native f16 matmul on this CPU")
    assert len(batched) == 2, batched


def test_bfloat16_gelu_and_broadcast_arithmetic(tmp_path):
    """A BF16 graph's erf-GELU pattern fuses into one Gelu (its constants are bfloat16), and Gelu,
    Add (bias broadcast, either order), Sub, Div run on bfloat16 in float32 with one rounding
    per result: numpy on the widened values, rounded once."""
    import ml_dtypes
    bf16 = ml_dtypes.bfloat16
    inits = {"sqrt2": np.array(np.sqrt(2.0), bf16), "one": np.array(1.0, bf16), "half": np.array(0.5, bf16)}
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["x", "e1"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["gelu"]),
             helper.make_node("Add", ["bias", "x"], ["biased"]),  # the broadcast operand first
             helper.make_node("Sub", ["x", "y"], ["sub"]), helper.make_node("Div", ["x", "bias"], ["div"])]
    bf = TensorProto.BFLOAT16
    graph = helper.make_graph(nodes, "bf16", [helper.make_tensor_value_info(k, bf, None) for k in ("x", "y", "bias")],
                              [helper.make_tensor_value_info(k, bf, None) for k in ("gelu", "biased", "sub", "div")],
                              [numpy_helper.from_array(v.view(np.uint16), k) for k, v in inits.items()])
    for init in graph.initializer:
        init.data_type = bf
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    assert optimized_ops(path).count("Gelu") == 1
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((2, 64, 96)).astype(bf16), "y": rng.standard_normal((2, 64, 96)).astype(bf16),
             "bias": (rng.standard_normal(96) + 3.0).astype(bf16)}
    w = {k: v.astype(np.float32) for k, v in feeds.items()}
    from math import erf
    gelu = 0.5 * w["x"] * (1.0 + np.vectorize(erf)(w["x"] / np.sqrt(2.0)))
    expected = [gelu, w["bias"] + w["x"], w["x"] - w["y"], w["x"] / w["bias"]]
    for got, want in zip(ours(path, feeds), expected):
        assert got.dtype == bf16 and got.shape == want.shape
        # One bfloat16 rounding of the float32 result (8 significant bits).
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2 ** -8, atol=1e-6)


def test_cast_float32_bfloat16_round_trip_matches_ml_dtypes(tmp_path):
    """The Casts at a BF16 graph's float32 boundaries: round to nearest even like ml_dtypes on
    random bit patterns (ties, denormals, infinities, NaN), and every bfloat16 widens exactly."""
    import ml_dtypes
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    bits[:4] = [0x3F808000, 0x3F818000, 0x7F800000, 0x00008000]  # ties to even (down, up), inf, denormal tie
    x = bits.view(np.float32)
    every = np.arange(2 ** 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    nodes = [helper.make_node("Cast", ["x"], ["narrow"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["h"], ["wide"], to=TensorProto.FLOAT)]
    path = save(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                                   helper.make_tensor_value_info("h", TensorProto.BFLOAT16, None)],
                           [helper.make_tensor_value_info("narrow", TensorProto.BFLOAT16, None),
                            helper.make_tensor_value_info("wide", TensorProto.FLOAT, None)], {}), tmp_path / "cast.onnx")
    narrow, wide = ours(path, {"x": x, "h": every})
    expected = x.astype(ml_dtypes.bfloat16)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(narrow.astype(np.float32)), nan)
    np.testing.assert_array_equal(narrow.view(np.uint16)[~nan], expected.view(np.uint16)[~nan])
    widened = every.astype(np.float32)
    wide_nan = np.isnan(widened)
    assert np.array_equal(np.isnan(wide), wide_nan)
    np.testing.assert_array_equal(wide.view(np.uint32)[~wide_nan], widened.view(np.uint32)[~wide_nan])


def test_bfloat16_cnn_with_residual_block_matches_float32(tmp_path):
    """Our BF16 conversion of a CNN with a residual block: the bfloat16 convolutions pass their
    channels-last outputs straight to the next (and into the fused residual addition); the
    result stays within bfloat16 rounding of ONNX Runtime's float32 output."""
    from pyflame_rt.quantization import QuantConfig, Quantizer

    torch.manual_seed(2)
    fp32 = tmp_path / "cnn.onnx"
    torch.onnx.export(SmallCNN().eval(), (torch.randn(2, 3, 16, 16),), str(fp32), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET,
                      dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(fp32)).graph
    half = Quantizer(QuantConfig.bfloat16()).convert_to_bfloat16(graph).quantized_graph
    x = np.random.default_rng(4).standard_normal((3, 3, 16, 16)).astype(np.float32)
    expected = onnxruntime(fp32, {"x": x})[0]
    opts = rt.SessionOptions()
    opts.num_threads = 2
    got = rt.InferenceSession(half, opts).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, atol=0.03 * np.abs(expected).max(), rtol=0)
    a, b = got.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999
