"""Models exported from torch run in pyflame_rt and match torch (and ONNX Runtime)."""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pyflame_rt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "models"))
import make_small_cnn  # noqa: E402


def export(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> None:
    torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=opset,
                      dynamo=False)


class ConvZoo(nn.Module):
    """Strided, dilated, depthwise and 1-D convolutions, ceil-mode and padded pools."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 5, stride=2, padding=2, dilation=1)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.c = nn.Conv2d(8, 12, (1, 3), padding=(0, 1))
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.sigmoid(self.b(x)) * x
        x = self.avg(self.pool(self.c(x)))
        x = self.bn(x - 0.1) / 2.0
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)  # GlobalAveragePool
        return torch.tanh(self.fc(x))


@pytest.mark.parametrize("batch", [1, 3])
def test_demo_cnn_matches_torch(tmp_path, batch):
    model = make_small_cnn.build()
    path = tmp_path / "cnn.onnx"
    export(model, torch.randn(1, 3, 32, 32), path)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    session = pyflame_rt.InferenceSession(str(path))
    got = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_conv_zoo_matches_torch_and_ort(tmp_path):
    torch.manual_seed(3)
    model = ConvZoo().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "zoo.onnx"
    export(model, torch.randn(1, 3, 29, 31), path)
    session = pyflame_rt.InferenceSession(str(path))
    x = np.random.default_rng(7).standard_normal((2, 3, 29, 31)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_mlp_via_pfm_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, 10),
                          nn.Softmax(dim=-1)).eval()
    onnx_path, pfm_path = tmp_path / "mlp.onnx", tmp_path / "mlp.pfm"
    export(model, torch.randn(1, 784), onnx_path)
    result = pyflame_rt.import_module.ONNXImporter().import_model(str(onnx_path))
    assert result.success, result.error
    pyflame_rt.save_model(result.graph, str(pfm_path))
    session = pyflame_rt.InferenceSession(str(pfm_path))
    x = np.random.default_rng(0).standard_normal((16, 784)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-6)


def test_transformer_encoder_matches_torch(tmp_path):
    """Attention, LayerNormalization, GELU (Erf), Softmax and batched MatMul, as a BERT layer."""
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0, activation="gelu",
                                       batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    path = tmp_path / "encoder.onnx"
    # torch's fused attention fast path has no ONNX export: off while exporting.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        torch.onnx.export(model, (torch.randn(1, 16, 64),), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    x = np.random.default_rng(8).standard_normal((3, 16, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = pyflame_rt.InferenceSession(str(path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
