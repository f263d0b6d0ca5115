"""Graph optimization: every level gives the results of level 0 (within 1e-4 relative),
each pass reports what it changed, and passes never touch the caller's graph."""
import sys
from pathlib import Path

import numpy as np
import pytest

import pyflame_rt as rt

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "models"))
import make_small_cnn  # noqa: E402


def run_at(model, level, feeds):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    return rt.InferenceSession(model, opts).run(None, feeds)


def run_in_process(model_path, x, tmp_path, onednn="0"):
    """The model's output for input `x` from a fresh process with PYFLAME_RT_ONEDNN=`onednn`
    ("0": every kernel is the reference kernel; the engine is chosen once per process)."""
    import os
    import subprocess
    np.save(tmp_path / "x.npy", x)
    script = (f"import numpy as np, pyflame_rt as rt; x = np.load({str(tmp_path / 'x.npy')!r}); "
              f"np.save({str(tmp_path / 'y.npy')!r}, rt.InferenceSession({str(model_path)!r}).run(None, {{'x': x}})[0])")
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ, PYFLAME_RT_ONEDNN=onednn))
    return np.load(tmp_path / "y.npy")


def export_and_optimize(model, example, path):
    """`model` exported to ONNX at `path` (input x, output y, dynamic batch), imported, and
    optimized at level 2: the graph and the passes' reports."""
    torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    return graph, rt.PassManager().run(graph, level=2)


def test_pass_manager_lists_passes_with_levels():
    pm = rt.PassManager()
    names = pm.list_passes()
    for expected in ["eliminate_identity", "constant_folding", "common_subexpression_elimination",
                     "eliminate_dead_nodes", "fold_conv_batchnorm", "matmul_add_to_gemm"]:
        assert expected in names
    assert pm.pass_level("constant_folding") == 1
    assert pm.pass_level("fold_conv_batchnorm") == 2
    with pytest.raises(rt.ValidationError, match="unknown optimization pass"):
        pm.pass_level("make_it_fast")


def redundant_graph():
    """Identity, a constant subexpression, duplicated Relu -> MatMul chains, a MatMul + bias
    and a dead branch: every level-1 and level-2 pass has something to do."""
    rng = np.random.default_rng(0)
    g = rt.Graph("redundant")
    g.add_input("x", [None, 8], rt.DType.Float32)
    g.add_initializer("W", rng.standard_normal((8, 4)).astype(np.float32))
    g.add_initializer("b", rng.standard_normal(4).astype(np.float32))
    g.add_initializer("two", np.array(2.0, np.float32))
    g.add_node("id", "Identity", inputs=["x"], outputs=["x_id"])
    g.add_node("mm1", "MatMul", inputs=["x_id", "W"], outputs=["h1"])
    g.add_node("b2", "Mul", inputs=["b", "two"], outputs=["b_twice"])  # constant: folded
    g.add_node("add1", "Add", inputs=["h1", "b_twice"], outputs=["y1"])  # with mm1: a Gemm
    g.add_node("r1", "Relu", inputs=["x_id"], outputs=["p"])
    g.add_node("r2", "Relu", inputs=["x_id"], outputs=["q"])  # duplicate of r1
    g.add_node("mm2", "MatMul", inputs=["p", "W"], outputs=["s1"])
    g.add_node("mm3", "MatMul", inputs=["q", "W"], outputs=["s2"])  # duplicate once r2 is merged
    g.add_node("sum1", "Add", inputs=["y1", "s1"], outputs=["t"])
    g.add_node("sum2", "Add", inputs=["t", "s2"], outputs=["y"])
    g.add_node("dead", "Sigmoid", inputs=["x"], outputs=["unused"])
    g.add_output("y", [None, 4], rt.DType.Float32)
    return g


def test_level_results_match_level_0_and_passes_report():
    g = redundant_graph()
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    expected = run_at(g, 0, {"x": x})[0]
    W, b = g.initializers["W"], g.initializers["b"]
    np.testing.assert_allclose(expected, x @ W + 2 * b + 2 * (np.maximum(x, 0) @ W), rtol=1e-5, atol=1e-5)  # numpy
    for level in (1, 2, 3):
        np.testing.assert_allclose(run_at(g, level, {"x": x})[0], expected, rtol=1e-4, atol=1e-6)

    g2 = redundant_graph()
    results = rt.PassManager().run(g2, level=2)
    removed = {r.pass_name: r.nodes_removed for r in results if r.changed}
    fused = {r.pass_name: r.nodes_fused for r in results if r.changed}
    assert removed.get("eliminate_identity") == 1
    assert removed.get("constant_folding") == 1
    assert removed.get("common_subexpression_elimination") == 2  # r2, then mm3
    assert removed.get("eliminate_dead_nodes", 0) >= 1
    ops = [n.op_type for n in g2.nodes]
    assert "Identity" not in ops and "Sigmoid" not in ops and ops.count("Relu") == 1
    assert len(g2.nodes) < len(redundant_graph().nodes)
    assert fused.get("matmul_add_to_gemm") == 1 and "Gemm" in ops  # MatMul + folded bias
    np.testing.assert_allclose(rt.InferenceSession(g2).run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-6)


def test_session_optimization_leaves_the_callers_graph_alone():
    g = redundant_graph()
    before = [(n.name, n.op_type, list(n.inputs)) for n in g.nodes]
    rt.InferenceSession(g)  # optimization level 2 by default
    assert [(n.name, n.op_type, list(n.inputs)) for n in g.nodes] == before


def test_named_passes_run_alone():
    g = redundant_graph()
    results = rt.PassManager().run(g, passes=["eliminate_dead_nodes"])
    assert [r.pass_name for r in results] == ["eliminate_dead_nodes"]
    assert "Sigmoid" not in [n.op_type for n in g.nodes]
    assert "Identity" in [n.op_type for n in g.nodes]
    with pytest.raises(rt.ValidationError):
        rt.PassManager().run(g, passes=["nope"])


def test_conv_batchnorm_folding_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    path = tmp_path / "convbn.onnx"
    # training=TRAINING keeps BatchNormalization as a node in the export (no exporter folding)
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    assert "BatchNormalization" in [n.op_type for n in graph.nodes]
    results = rt.PassManager().run(graph, passes=["fold_conv_batchnorm"])
    assert results[0].nodes_fused == 1
    assert "BatchNormalization" not in [n.op_type for n in graph.nodes]
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    got = rt.InferenceSession(graph).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_demo_cnn_every_level_matches_torch(tmp_path, level):
    model = make_small_cnn.build()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}},
                      opset_version=17, dynamo=False)
    x = np.random.default_rng(level).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_at(str(path), level, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


class ConvActivations(torch.nn.Module):
    """Each conv followed by a different activation the optimizer fuses."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(c_in, 8, 3, padding=1) for c_in in (3, 8, 8, 8, 8, 8)])
        self.acts = [torch.relu, torch.nn.functional.relu6, lambda x: torch.nn.functional.leaky_relu(x, 0.1),
                     torch.sigmoid, torch.tanh, torch.nn.functional.hardswish]

    def forward(self, x):
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return x


def export_conv_activations(path):
    torch.manual_seed(5)
    model = ConvActivations().eval()
    torch.onnx.export(model, (torch.randn(1, 3, 12, 12),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return model


def test_conv_activation_fusion_matches_torch(tmp_path):
    path = tmp_path / "convact.onnx"
    model = export_conv_activations(path)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    results = rt.PassManager().run(graph, level=2)
    fused = sum(r.nodes_fused for r in results if r.pass_name == "fuse_conv_activation")
    assert fused == 6
    assert [n.op_type for n in graph.nodes] == ["FusedConv"] * 6
    x = np.random.default_rng(3).standard_normal((2, 3, 12, 12)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.InferenceSession(graph).run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    # Fused graphs save and load like any other (the op lives in domain com.pyflame).
    rt.save_model(graph, str(tmp_path / "fused.pfm"))
    np.testing.assert_allclose(rt.InferenceSession(str(tmp_path / "fused.pfm")).run(None, {"x": x})[0], expected,
                               rtol=1e-4, atol=1e-5)


def test_fused_conv_reference_kernels_match_torch(tmp_path):
    """The same fused model with oneDNN switched off: FusedConv's reference kernel composes Conv
    and the activation's reference kernels."""
    path = tmp_path / "convact.onnx"
    model = export_conv_activations(path)
    x = np.random.default_rng(4).standard_normal((1, 3, 12, 12)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_in_process(path, x, tmp_path), expected, rtol=1e-4, atol=1e-5)


class ResidualBlocks(torch.nn.Module):
    """Conv -> BN -> (+ shortcut) -> ReLU, twice: the pattern of ResNet's basic blocks."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b1 = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.b1(self.c1(x)) + x)
        return torch.relu(x + self.c2(x))  # residual on the left this time


@pytest.mark.parametrize("onednn", ["1", "0"])
def test_conv_residual_fusion_matches_torch(tmp_path, onednn):
    torch.manual_seed(9)
    model = ResidualBlocks().eval()
    with torch.no_grad():
        model.b1.running_mean.uniform_(-0.5, 0.5)
        model.b1.running_var.uniform_(0.5, 1.5)
    graph, results = export_and_optimize(model, torch.randn(1, 3, 10, 10), tmp_path / "res.onnx")
    fused = {r.pass_name: r.nodes_fused for r in results if r.nodes_fused}
    assert fused.get("fuse_conv_add") == 2 and fused.get("fuse_conv_activation") == 3
    assert [n.op_type for n in graph.nodes] == ["FusedConv"] * 3
    rt.save_model(graph, str(tmp_path / "res.pfm"))
    x = np.random.default_rng(11).standard_normal((2, 3, 10, 10)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_in_process(tmp_path / "res.pfm", x, tmp_path, onednn), expected, rtol=1e-4, atol=1e-5)


def test_gelu_pattern_fusion_matches_torch(tmp_path):
    torch.manual_seed(12)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).eval()
    path = tmp_path / "gelu.onnx"
    torch.onnx.export(model, (torch.randn(2, 32),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    assert "Erf" in [n.op_type for n in graph.nodes]
    results = rt.PassManager().run(graph, level=2)
    assert sum(r.nodes_fused for r in results if r.pass_name == "fuse_gelu") == 4
    ops = [n.op_type for n in graph.nodes]
    assert "Erf" not in ops
    # The Gelu node then goes into the Gemm before it, as its activation.
    assert any(n.op_type == "FusedGemm" and n.attributes.get("activation") == "Gelu" for n in graph.nodes)
    x = np.random.default_rng(13).standard_normal((5, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.InferenceSession(graph).run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_at(str(path), 0, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_silu_pattern_fusion_matches_torch(tmp_path):
    """torch's SiLU exports as x * Sigmoid(x): one Swish node, then a convolution's activation
    (and a standalone one where no convolution precedes it)."""
    torch.manual_seed(14)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.SiLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.MaxPool2d(2),
                                torch.nn.SiLU()).eval()
    path = tmp_path / "silu.onnx"
    graph, results = export_and_optimize(model, torch.randn(2, 3, 12, 12), path)
    assert sum(r.nodes_fused for r in results if r.pass_name == "fuse_silu") == 3
    ops = [(n.op_type, n.attributes.get("activation")) for n in graph.nodes]
    assert ops == [("FusedConv", "Swish"), ("FusedConv", "Swish"), ("MaxPool", None), ("Swish", None)], ops
    rt.save_model(graph, str(tmp_path / "silu.pfm"))
    x = np.random.default_rng(15).standard_normal((3, 3, 12, 12)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.InferenceSession(graph).run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_at(str(path), 0, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_in_process(tmp_path / "silu.pfm", x, tmp_path), expected, rtol=1e-4, atol=1e-5)


class TinyTransformer(torch.nn.Module):
    """A BERT-style encoder layer (torch's erf GELU, LayerNorm, attention) plus a conv stem with
    batch norm and a residual: every pass has something to work on."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.1,
                                                      activation="gelu", batch_first=True)
        self.proj = torch.nn.Linear(8 * 4 * 4, 32)

    def forward(self, image, tokens):
        c = torch.relu(self.bn(self.stem(image)) + self.stem(image))
        c = torch.nn.functional.adaptive_avg_pool2d(c, 4).flatten(1)
        return self.layer(tokens + self.proj(c)[:, None, :])


@pytest.mark.parametrize("pass_name", rt.PassManager().list_passes())
def test_each_pass_alone_keeps_level_0_results(tmp_path, pass_name):
    torch.manual_seed(11)
    model = TinyTransformer().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "tiny.onnx"
    image, tokens = torch.randn(2, 3, 8, 8), torch.randn(2, 6, 32)
    torch.onnx.export(model, (image, tokens), str(path), input_names=["image", "tokens"], output_names=["y"],
                      opset_version=17, dynamo=False)
    feeds = {"image": image.numpy(), "tokens": tokens.numpy()}
    with torch.inference_mode():
        expected = model(image, tokens).numpy()
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    baseline = run_at(graph, 0, feeds)[0]
    np.testing.assert_allclose(baseline, expected, rtol=1e-4, atol=1e-5)
    results = rt.PassManager().run(graph, passes=[pass_name])
    assert [r.pass_name for r in results] == [pass_name]
    np.testing.assert_allclose(run_at(graph, 0, feeds)[0], baseline, rtol=1e-4, atol=1e-5)


class ProjectionStack(torch.nn.Module):
    """Transformer-style projections on [batch, seq, hidden] (MatMul + bias of rank 3) and a 2-D
    head (Gemm), each followed by an activation the optimizer fuses into the product."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(6)])
        self.head = torch.nn.Linear(16, 8)
        self.acts = [torch.nn.functional.gelu, torch.relu, torch.sigmoid, torch.tanh,
                     lambda x: torch.nn.functional.leaky_relu(x, 0.2), torch.nn.functional.silu]

    def forward(self, x):
        for fc, act in zip(self.fc, self.acts):
            x = act(fc(x))
        return torch.nn.functional.hardswish(self.head(x[:, 0, :]))


def test_matmul_bias_activation_fusion_matches_torch(tmp_path):
    torch.manual_seed(9)
    model = ProjectionStack().eval()
    path = tmp_path / "proj.onnx"
    torch.onnx.export(model, (torch.randn(2, 5, 16),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    rt.PassManager().run(graph, level=2)
    fused = [(n.op_type, n.attributes.get("activation")) for n in graph.nodes if n.op_type.startswith("Fused")]
    assert fused == [("FusedMatMul", "Gelu"), ("FusedMatMul", "Relu"), ("FusedMatMul", "Sigmoid"),
                     ("FusedMatMul", "Tanh"), ("FusedMatMul", "LeakyRelu"), ("FusedMatMul", "Swish"),
                     ("FusedGemm", "HardSwish")]
    rt.save_model(graph, str(tmp_path / "proj.pfm"))
    x = np.random.default_rng(8).standard_normal((3, 5, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt.InferenceSession(graph).run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    # The same fused graph on the reference kernels (oneDNN off): they compose MatMul/Gemm, Add
    # and the activation's own kernels.
    np.testing.assert_allclose(run_in_process(tmp_path / "proj.pfm", x, tmp_path), expected, rtol=1e-4, atol=1e-5)


class MobileBlocks(torch.nn.Module):
    """MobileNetV2's stem and inverted residual blocks (torchvision's own): stride 2 and 1, with
    and without the residual, and one without an expand convolution (not fused)."""

    def __init__(self):
        super().__init__()
        from torchvision.models.mobilenetv2 import InvertedResidual
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU6())
        self.blocks = torch.nn.Sequential(InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 2, 6),
                                          InvertedResidual(24, 24, 1, 6), InvertedResidual(24, 32, 2, 6))

    def forward(self, x):
        return self.blocks(self.stem(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_inverted_residual_fusion_matches_torch(tmp_path, threads):
    """Expand -> depthwise -> project (+ residual) becomes one InvertedResidual node. The CPU
    kernel runs it in row slabs (an image tall enough for several per thread, sliding the window
    rows from one slab to the next, at strides 2 and 1), and its reference kernel composes
    FusedConv's: both match torch, batch 1 and 3, and the fused graph saves and loads; the
    weights the kernel packed at creation read back unchanged."""
    torch.manual_seed(13)
    model = MobileBlocks().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    graph, results = export_and_optimize(model, torch.randn(1, 3, 130, 126), tmp_path / "mobile.onnx")
    assert sum(r.nodes_fused for r in results if r.pass_name == "fuse_inverted_residual") == 6
    assert [n.op_type for n in graph.nodes] == ["FusedConv"] * 3 + ["InvertedResidual"] * 3
    rt.save_model(graph, str(tmp_path / "mobile.pfm"))
    x = np.random.default_rng(14).standard_normal((3, 3, 130, 126)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    opts = rt.SessionOptions()
    opts.num_threads = threads
    session = rt.InferenceSession(str(tmp_path / "mobile.pfm"), opts)
    for n in (1, 3):
        np.testing.assert_allclose(session.run(None, {"x": x[:n]})[0], expected[:n], rtol=1e-4, atol=1e-4)
    # The 1x1 weights the kernel keeps packed read back bit for bit.
    for name, value in graph.initializers.items():
        np.testing.assert_array_equal(session.graph.initializers[name], value)
    np.testing.assert_allclose(run_in_process(tmp_path / "mobile.pfm", x, tmp_path), expected, rtol=1e-4, atol=1e-4)
