"""Shape arithmetic (Shape -> Gather/Slice/Concat/... -> Reshape targets, as exporters emit it).

Shape inference tracks these small integer tensors element by element, so a Reshape whose
target mixes a dynamic batch with static dims keeps the static dims; the level-1 pass
`fold_shape_computations` turns what the static dims decide into initializers, and with
dynamic inputs the execution plan computes the rest once per input-shape signature and skips
those nodes. Every result is checked against onnxruntime or torch."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import pyflame_rt as rt

SHAPE_OPS = {"Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Size", "Mod", "Div", "Sub"}


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def arithmetic_model(batch="N") -> onnx.ModelProto:
    """Integer results of every tracked op on x's shape [N, 6, 10], each used as a Reshape
    target or returned, including the corner cases (negative steps and indices, Mod's sign
    rule, fmod, truncating Div, Shape's start/end)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Shape", ["x"], ["s_tail"], start=1),
        helper.make_node("Shape", ["x"], ["s_mid"], start=-2, end=-1),
        helper.make_node("Gather", ["s", "idx"], ["g"]),                      # [10, 6]
        helper.make_node("Slice", ["s", "st", "en", "ax", "step"], ["rev"]),  # [10, 6, N]
        helper.make_node("Sub", ["g", "thirteen"], ["neg"]),                  # [-3, -7]
        helper.make_node("Mod", ["neg", "four"], ["mod"]),                    # [1, 1]
        helper.make_node("Mod", ["neg", "four"], ["fmod"], fmod=1),           # [-3, -3]
        helper.make_node("Div", ["neg", "two"], ["div"]),                     # [-1, -3] (truncates)
        helper.make_node("Size", ["x"], ["size"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"]),                 # scalar N
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Mul", ["s_tail", "s_mid"], ["prod"]),               # [36, 60]
        helper.make_node("Concat", ["batch1", "minus1", "two1"], ["target"], axis=0),  # [N, -1, 2]
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Cast", ["rev"], ["rev32"], to=TensorProto.INT32),
    ]
    inits = [ints("idx", [-1, 1]), ints("st", [-1]), ints("en", [-4]), ints("ax", [0]), ints("step", [-1]),
             ints("thirteen", 13), ints("four", 4), ints("two", 2), ints("zero", 0), ints("axes0", [0]),
             ints("minus1", [-1]), ints("two1", [2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    outputs += [helper.make_tensor_value_info(n, TensorProto.INT64, None)
                for n in ("g", "rev", "mod", "fmod", "div", "size", "prod", "target")]
    outputs.append(helper.make_tensor_value_info("rev32", TensorProto.INT32, None))
    graph = helper.make_graph(nodes, "shape_arithmetic",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6, 10])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class HeadSplit(torch.nn.Module):
    """Multi-head reshapes written with x.shape, as in attention code: [B, S, 48] ->
    [B, 4, S, 12] -> back, between two linear layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(48, 48)
        self.out = torch.nn.Linear(48, 48)

    def forward(self, x):
        b, s = x.shape[0], x.shape[1]
        h = self.inp(x).view(b, s, 4, x.shape[2] // 4).transpose(1, 2)
        h = torch.softmax(h, dim=-1).transpose(1, 2).reshape(b, s, -1)
        return self.out(h)


def export_head_split(path, dynamic: bool):
    model = HeadSplit().eval()
    x = torch.randn(2, 5, 48)
    kwargs = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}} if dynamic else {}
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False, **kwargs)
    return model


def session(path_or_graph, level=2, profile_prefix=None, mode="sequential"):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    opts.execution_mode = mode
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return rt.InferenceSession(str(path_or_graph), opts)


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_shape_arithmetic_matches_onnxruntime(tmp_path, level, mode):
    path = tmp_path / "arith.onnx"
    onnx.save(arithmetic_model(), path)
    s = session(path, level, mode=mode)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (3, 1, 3, 4):  # a signature seen again reuses its precomputed values
        x = rng.standard_normal((batch, 6, 10)).astype(np.float32)
        got, want = s.run(None, {"x": x}), reference.run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_reshape_targets_keep_their_static_dims(tmp_path):
    path = tmp_path / "heads.onnx"
    export_head_split(path, dynamic=True)
    result = rt.import_module.ONNXImporter().import_model(str(path), rt.ImportOptions())
    infos = result.graph.value_infos
    reshapes = [n for n in result.graph.nodes if n.op_type == "Reshape"]
    assert reshapes
    shapes = sorted((tuple(infos[n.outputs[0]].shape) for n in reshapes), key=len)
    # The batch stays dynamic; the sequence, head and feature dims are known. The -1 of
    # reshape(b, s, -1) would need the batch as a symbol to cancel out: only its rank is known.
    assert shapes == [(None, 5, None), (None, 5, 4, 12)], shapes


def test_static_shapes_fold_every_shape_computation(tmp_path):
    path = tmp_path / "arith_static.onnx"
    onnx.save(arithmetic_model(batch=3), path)
    graph = rt.import_module.ONNXImporter().import_model(str(path), rt.ImportOptions()).graph
    results = rt.PassManager().run(graph, level=1)  # passes repeat until nothing changes
    assert sum(r.nodes_removed for r in results if r.pass_name == "fold_shape_computations") > 0
    left = {n.op_type for n in graph.nodes}
    assert left == {"Reshape"}, left  # only the data tensor's reshape is left to run
    x = np.random.default_rng(3).standard_normal((3, 6, 10)).astype(np.float32)
    got = rt.InferenceSession(graph).run(None, {"x": x})
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_dynamic_batch_runs_shape_nodes_once_per_signature(tmp_path):
    path = tmp_path / "heads_dynamic.onnx"
    model = export_head_split(path, dynamic=True)
    s = session(path, profile_prefix=str(tmp_path / "prof"))
    torch.manual_seed(1)
    xs = {b: torch.randn(b, 5, 48) for b in (1, 3)}
    for b in (1, 1, 3, 3, 1):
        got = s.run(None, {"x": xs[b].numpy()})
        np.testing.assert_allclose(got[0], model(xs[b]).detach().numpy(), rtol=1e-4, atol=1e-5)
    events = json.loads(open(s.end_profiling()).read())["traceEvents"]
    graph = rt.import_module.ONNXImporter().import_model(str(path), rt.ImportOptions()).graph
    shape_nodes = {n.name for n in graph.nodes if n.op_type == "Shape"}
    assert shape_nodes
    # Shape nodes read the dynamic batch: no node of the plan computes them at run time.
    ran = {e["name"] for e in events}
    assert not ran & shape_nodes
    assert {e["name"] for e in events if e.get("cat") == "node"}, "the profile records nodes"


def test_many_signatures_stay_correct(tmp_path):
    """Beyond the signatures the plan keeps, runs compute the shape nodes themselves."""
    path = tmp_path / "heads_many.onnx"
    model = export_head_split(path, dynamic=True)
    s = session(path)
    torch.manual_seed(2)
    for b in list(range(1, 12)) + [2, 11]:
        x = torch.randn(b, 5, 48)
        np.testing.assert_allclose(s.run(None, {"x": x.numpy()})[0], model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
