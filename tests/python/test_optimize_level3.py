"""The decomposed LayerNorm fusion (level 2) and the level-3 layout passes: each fires where its
pattern is (checked on the optimized graph's ops) and leaves the graph alone where it must not;
results match onnxruntime, numpy or torch within 1e-4 relative. FusedMatMul's transA/transB
run on the oneDNN kernel and on the reference kernel (oneDNN switched off in a subprocess)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pyflame_rt as rt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------------------------
# Helpers

def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), name=k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def import_graph(model, tmp_path, name="model"):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return rt.import_module.ONNXImporter().import_model(str(path)).graph


def ort_run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def run_graph(graph, feeds, level=0):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    return rt.InferenceSession(graph, opts).run(None, feeds)


def run_without_onednn(graph, feeds, tmp_path):
    """Runs `graph` as it is (level 0) in a fresh process with oneDNN off: reference kernels."""
    rt.save_model(graph, str(tmp_path / "g.pfm"))
    np.savez(tmp_path / "feeds.npz", **feeds)
    script = (
        "import numpy as np, pyflame_rt as rt\n"
        f"feeds = dict(np.load({str(tmp_path / 'feeds.npz')!r}))\n"
        "opts = rt.SessionOptions(); opts.optimization_level = 0\n"
        f"out = rt.InferenceSession({str(tmp_path / 'g.pfm')!r}, opts).run(None, feeds)\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, *out)\n")
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ, PYFLAME_RT_ONEDNN="0"))
    out = np.load(tmp_path / "out.npz")
    return [out[f"arr_{i}"] for i in range(len(out.files))]


def ops(graph):
    return [n.op_type for n in graph.nodes]


def run_passes(graph, *names):
    return rt.PassManager().run(graph, passes=list(names))


# ---------------------------------------------------------------------------------------------
# fuse_layer_norm

def layer_norm_model(opset=13, axes_input=False, axis=-1, square="pow", divide="div", gamma_shape=(16,),
                     beta_shape=(16,), eps_input=False, extra_outputs=(), extra_readers=()):
    """y = LayerNorm(x) over the last axis of x [2, 5, 16], spelled out op by op."""
    rng = np.random.default_rng(0)
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    inputs = [f32("x", [2, 5, 16])]
    nodes = []

    def mean(src, dst):
        if axes_input:
            inits["axes"] = np.array([axis], np.int64)
            nodes.append(helper.make_node("ReduceMean", [src, "axes"], [dst]))
        else:
            nodes.append(helper.make_node("ReduceMean", [src], [dst], axes=[axis]))

    mean("x", "mean")
    nodes.append(helper.make_node("Sub", ["x", "mean"], ["d"]))
    nodes.append(helper.make_node("Pow", ["d", "two"], ["sq"]) if square == "pow" else
                 helper.make_node("Mul", ["d", "d"], ["sq"]))
    mean("sq", "var")
    if eps_input:
        inputs.append(f32("eps_in", []))
    nodes.append(helper.make_node("Add", ["var", "eps_in" if eps_input else "eps"], ["ve"]))
    nodes.append(helper.make_node("Sqrt", ["ve"], ["std"]))
    if divide == "div":
        nodes.append(helper.make_node("Div", ["d", "std"], ["n"]))
    else:
        nodes.append(helper.make_node("Reciprocal", ["std"], ["inv"]))
        nodes.append(helper.make_node("Mul", ["inv", "d"], ["n"]))
    last = "n"
    if gamma_shape is not None:
        inits["gamma"] = rng.uniform(0.5, 1.5, gamma_shape).astype(np.float32)
        nodes.append(helper.make_node("Mul", [last, "gamma"], ["scaled"]))
        last = "scaled"
    if beta_shape is not None:
        inits["beta"] = rng.standard_normal(beta_shape).astype(np.float32)
        nodes.append(helper.make_node("Add", ["beta", last], ["shifted"]))
        last = "shifted"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    for i, value in enumerate(extra_readers):
        nodes.append(helper.make_node("Neg", [value], [f"extra{i}"]))
    shape = lambda v: [2, 5, 1] if v in ("mean", "var", "std") else [2, 5, 16]  # noqa: E731
    outputs = [f32("y", [2, 5, 16])] + [f32(v, shape(v)) for v in extra_outputs]
    outputs += [f32(f"extra{i}", shape(v)) for i, v in enumerate(extra_readers)]
    return make_model(nodes, inputs, outputs, inits, opset)


def layer_norm_feeds(eps_input=False):
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 5, 16)).astype(np.float32) * 3 + 1}
    if eps_input:
        feeds["eps_in"] = np.array(1e-5, np.float32)
    return feeds


@pytest.mark.parametrize("variant", [
    dict(opset=13),                                                      # axes attribute
    dict(opset=18, axes_input=True, square="mul", divide="reciprocal"),  # axes input, Mul(d, d), d * 1/std
    dict(opset=13, axis=2, gamma_shape=None, beta_shape=None),           # explicit last index, no affine part
    dict(opset=17, gamma_shape=(1, 1, 16), beta_shape=(1,)),             # parameters reshaped / broadcast
    dict(opset=13, gamma_shape=(16,), beta_shape=None),
], ids=["opset13", "opset18-axes-input", "last-index-plain", "broadcast-params", "gamma-only"])
def test_decomposed_layer_norm_fuses_and_matches_onnxruntime(tmp_path, variant):
    model = layer_norm_model(**variant)
    graph = import_graph(model, tmp_path)
    results = run_passes(graph, "fuse_layer_norm")
    assert ops(graph) == ["LayerNormalization", "Identity"]
    assert results[0].nodes_fused == len(model.graph.node) - 2  # all but the new node and Identity
    ln = graph.nodes[0]
    assert ln.attributes["axis"] == -1 and ln.attributes["epsilon"] == pytest.approx(1e-5)
    assert list(ln.inputs)[0] == "x"
    feeds = layer_norm_feeds()
    expected = ort_run(model, feeds)[0]
    np.testing.assert_allclose(run_graph(graph, feeds)[0], expected, rtol=RTOL, atol=ATOL)
    # numpy, independently of both
    x = feeds["x"].astype(np.float64)
    normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    y = normalized * inits.get("gamma", 1.0) + inits.get("beta", 0.0)
    np.testing.assert_allclose(expected, y, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("variant", [
    dict(extra_readers=["mean"]),           # the mean read by something else
    dict(extra_readers=["d"]),              # d read a third time
    dict(extra_readers=["std"]),
    dict(extra_outputs=["var"]),            # an intermediate is a graph output
    dict(axis=1),                           # not the last axis
    dict(axis=0, axes_input=True, opset=18),
    dict(eps_input=True),                   # epsilon not a constant
], ids=["mean-read-twice", "d-read-thrice", "std-read-twice", "var-is-output", "axis-1", "axis-0-input", "eps-not-constant"])
def test_layer_norm_fusion_leaves_non_matching_graphs_alone(tmp_path, variant):
    model = layer_norm_model(**variant)
    graph = import_graph(model, tmp_path)
    before = ops(graph)
    results = run_passes(graph, "fuse_layer_norm")
    assert not results[0].changed and ops(graph) == before
    feeds = layer_norm_feeds(variant.get("eps_input", False))
    expected = ort_run(model, feeds)
    for got, want in zip(run_graph(graph, feeds, level=2), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("escaping,remaining", [("scaled", ["Add"]), ("n", ["Mul", "Add"])])
def test_affine_ops_after_an_escaping_value_stay_separate(tmp_path, escaping, remaining):
    """A value after the normalization is also a graph output: the LayerNormalization ends
    there (writing it) and the affine ops after it stay."""
    model = layer_norm_model(extra_outputs=[escaping])
    graph = import_graph(model, tmp_path)
    run_passes(graph, "fuse_layer_norm")
    assert ops(graph) == ["LayerNormalization"] + remaining + ["Identity"]
    feeds = layer_norm_feeds()
    for got, want in zip(run_graph(graph, feeds), ort_run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


torch = pytest.importorskip("torch")


class DecomposedLayerNorm(torch.nn.Module):
    """Linear -> LayerNorm written out as older exporters emit it -> Linear."""

    def __init__(self, hidden=24, eps=1e-6):
        super().__init__()
        self.fc_in, self.fc_out = torch.nn.Linear(12, hidden), torch.nn.Linear(hidden, 8)
        self.gamma = torch.nn.Parameter(torch.rand(hidden) + 0.5)
        self.beta = torch.nn.Parameter(torch.randn(hidden))
        self.eps = eps

    def forward(self, x):
        h = self.fc_in(x)
        mean = h.mean(-1, keepdim=True)
        d = h - mean
        var = d.pow(2).mean(-1, keepdim=True)
        return self.fc_out(d / torch.sqrt(var + self.eps) * self.gamma + self.beta)


class TorchLayerNorm(torch.nn.Module):
    """torch.nn.LayerNorm, which torch's exporter spells out op by op below opset 17."""

    def __init__(self, hidden=24):
        super().__init__()
        self.fc_in, self.norm, self.fc_out = torch.nn.Linear(12, hidden), torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 8)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_()

    def forward(self, x):
        return self.fc_out(self.norm(self.fc_in(x)))


@pytest.mark.parametrize("module,opset", [(DecomposedLayerNorm, 13), (DecomposedLayerNorm, 17), (TorchLayerNorm, 13)],
                         ids=["written-out-opset13", "written-out-opset17", "nn.LayerNorm-opset13"])
def test_torch_decomposed_layer_norm_fuses_and_matches_torch(tmp_path, module, opset):
    torch.manual_seed(3)
    model = module().eval()
    path = tmp_path / "ln.onnx"
    torch.onnx.export(model, (torch.randn(2, 7, 12),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=opset, dynamo=False)
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    assert "LayerNormalization" not in ops(graph) and "ReduceMean" in ops(graph)
    results = rt.PassManager().run(graph, level=2)
    assert sum(r.nodes_fused for r in results if r.pass_name == "fuse_layer_norm") >= 8
    assert ops(graph).count("LayerNormalization") == 1
    assert not {"ReduceMean", "Sqrt", "Pow", "Div"} & set(ops(graph))
    x = np.random.default_rng(4).standard_normal((3, 7, 12)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_graph(graph, {"x": x})[0], expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_graph(str(path), {"x": x}, level=0)[0], expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# cancel_transposes

def test_transposes_that_compose_to_identity_vanish(tmp_path):
    model = make_model([helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
                        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),
                        helper.make_node("Relu", ["t2"], ["y"])],
                       [f32("x", [2, 3, 4])], [f32("y", [2, 3, 4])])
    graph = import_graph(model, tmp_path)
    results = run_passes(graph, "cancel_transposes")
    assert ops(graph) == ["Relu"] and list(graph.nodes[0].inputs) == ["x"]
    assert results[0].nodes_removed == 2
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run_graph(graph, {"x": x})[0], np.maximum(x, 0), rtol=RTOL, atol=ATOL)


def test_transposes_merge_into_one_and_graph_outputs_keep_their_names(tmp_path):
    model = make_model([helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]),
                        helper.make_node("Transpose", ["t1"], ["y"], perm=[0, 2, 1]),     # merged
                        helper.make_node("Transpose", ["x"], ["u1"], perm=[2, 0, 1]),
                        helper.make_node("Transpose", ["u1"], ["z"], perm=[1, 2, 0]),     # identity, output
                        helper.make_node("Transpose", ["x"], ["v1"]),                     # reversed (no perm)
                        helper.make_node("Transpose", ["v1"], ["v2"], perm=[2, 1, 0]),
                        helper.make_node("Sigmoid", ["v1"], ["w"])],                       # keeps v1
                       [f32("x", [2, 3, 4])], [f32("y", [3, 4, 2]), f32("z", [2, 3, 4]), f32("v2", [2, 3, 4]),
                                               f32("w", [4, 3, 2])])
    graph = import_graph(model, tmp_path)
    run_passes(graph, "cancel_transposes")
    by_output = {n.outputs[0]: n for n in graph.nodes}
    assert by_output["y"].op_type == "Transpose" and list(by_output["y"].inputs) == ["x"]
    assert by_output["y"].attributes["perm"] == [1, 2, 0]
    assert by_output["z"].op_type == "Identity" and list(by_output["z"].inputs) == ["x"]
    assert by_output["v2"].op_type == "Identity" and "v1" in by_output  # v1 still read by Sigmoid
    assert "u1" not in by_output and "t1" not in by_output
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    expected = [x.transpose(1, 2, 0), x, x, 1 / (1 + np.exp(-x.transpose(2, 1, 0)))]
    for got, want in zip(run_graph(graph, {"x": x}), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# fold_transpose_into_matmul and FusedMatMul's transA / transB

def matmul_transpose_model():
    """Four products reading transposed operands: a batched B, a 2-D A, a Gemm that already
    transposes A (folding undoes it), and a MatMul whose activation fuses first (level 2)."""
    rng = np.random.default_rng(2)
    inits = {"w": rng.standard_normal((6, 5)).astype(np.float32)}
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),                 # [2,3,4] x [2,4,6]
        helper.make_node("Transpose", ["a"], ["at"], perm=[1, 0]),
        helper.make_node("MatMul", ["at", "w"], ["p"]),                      # [4,6] x [6,5]
        helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]),
        helper.make_node("Gemm", ["gt", "w"], ["h"], transA=1, alpha=0.5),    # op(gt) = g [3, 6]
        helper.make_node("Transpose", ["b3"], ["b3t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "b3t"], ["qb"]),                    # [2,3,4] x [2,4,6]
        helper.make_node("Relu", ["qb"], ["qb_relu"]),
    ]
    inputs = [f32("q", [2, 3, 4]), f32("k", [2, 6, 4]), f32("a", [6, 4]), f32("g", [3, 6]), f32("b3", [2, 6, 4])]
    outputs = [f32("scores", [2, 3, 6]), f32("p", [4, 5]), f32("h", [3, 5]), f32("qb_relu", [2, 3, 6])]
    return make_model(nodes, inputs, outputs, inits)


def matmul_transpose_feeds():
    rng = np.random.default_rng(3)
    shapes = {"q": (2, 3, 4), "k": (2, 6, 4), "a": (6, 4), "g": (3, 6), "b3": (2, 6, 4)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_transposes_fold_into_products_on_both_kernels(tmp_path):
    model = matmul_transpose_model()
    graph = import_graph(model, tmp_path)
    results = rt.PassManager().run(graph, level=3)
    assert sum(r.nodes_fused for r in results if r.pass_name == "fold_transpose_into_matmul") == 4
    assert "Transpose" not in ops(graph)
    by_output = {n.outputs[0]: n for n in graph.nodes}
    assert by_output["scores"].op_type == "FusedMatMul" and by_output["scores"].attributes["transB"] == 1
    assert list(by_output["scores"].inputs) == ["q", "k"]
    assert by_output["p"].op_type == "FusedMatMul" and by_output["p"].attributes["transA"] == 1
    assert by_output["h"].op_type == "Gemm" and by_output["h"].attributes["transA"] == 0
    activated = by_output["qb_relu"]
    assert activated.op_type == "FusedMatMul" and activated.attributes["transB"] == 1
    assert activated.attributes["activation"] == "Relu"

    feeds = matmul_transpose_feeds()
    q, k, a, g, b3 = (feeds[n].astype(np.float64) for n in ("q", "k", "a", "g", "b3"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    expected = [q @ k.transpose(0, 2, 1), a.T @ inits["w"], 0.5 * g @ inits["w"], np.maximum(q @ b3.transpose(0, 2, 1), 0)]
    for got, want in zip(ort_run(model, feeds), expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    for got, want in zip(run_graph(graph, feeds), expected):  # oneDNN (strided operands)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    for got, want in zip(run_without_onednn(graph, feeds, tmp_path), expected):  # reference kernels
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["perm-not-last-two", "second-reader", "graph-output", "reversed-rank-3"])
def test_transposes_that_must_not_fold(tmp_path, case):
    """q [2,3,4] x kt [2,4,6], kt a transpose of k that the product must not absorb."""
    k_shape, perm = {"perm-not-last-two": ([4, 2, 6], [1, 0, 2]),   # swaps the first two axes
                     "reversed-rank-3": ([6, 4, 2], None)}.get(case, ([2, 6, 4], [0, 2, 1]))
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], **({"perm": perm} if perm else {})),
             helper.make_node("MatMul", ["q", "kt"], ["y"])]
    outputs = [f32("y", [2, 3, 6])]
    if case == "second-reader":
        nodes.append(helper.make_node("Relu", ["kt"], ["r"]))
        outputs.append(f32("r", [2, 4, 6]))
    if case == "graph-output":
        outputs.append(f32("kt", [2, 4, 6]))
    model = make_model(nodes, [f32("q", [2, 3, 4]), f32("k", k_shape)], outputs)
    graph = import_graph(model, tmp_path)
    before = ops(graph)
    results = run_passes(graph, "fold_transpose_into_matmul")
    assert not results[0].changed and ops(graph) == before
    rng = np.random.default_rng(5)
    feeds = {"q": rng.standard_normal((2, 3, 4)).astype(np.float32), "k": rng.standard_normal(k_shape).astype(np.float32)}
    for got, want in zip(run_graph(graph, feeds, level=3), ort_run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def fused_matmul_graph(a_shape, b_shape, trans_a, trans_b, bias=None, activation=None):
    g = rt.Graph("fused_matmul")
    g.add_input("a", list(a_shape), rt.DType.Float32)
    inputs = ["a", "b"]
    g.add_input("b", list(b_shape), rt.DType.Float32)
    if bias is not None:
        g.add_initializer("bias", bias)
        inputs.append("bias")
    attributes = {"transA": int(trans_a), "transB": int(trans_b)}
    if activation:
        attributes["activation"] = activation
    g.add_node("mm", "FusedMatMul", inputs=inputs, outputs=["y"], attributes=attributes, domain="com.pyflame")
    g.opset_imports["com.pyflame"] = 1
    g.add_output("y", None, rt.DType.Float32)
    return g


@pytest.mark.parametrize("a_shape,b_shape,trans_a,trans_b", [
    ((5, 3), (4, 3), False, True),            # 2-D, B transposed
    ((3, 5), (3, 4), True, False),            # 2-D, A transposed
    ((3, 5), (4, 3), True, True),
    ((2, 3, 5, 6), (2, 3, 4, 6), False, True),  # batched (attention's Q x K^T)
    ((2, 1, 5, 6), (3, 5, 4), True, False),     # batch dims broadcast
    ((2, 3, 6, 5), (5, 4), False, False),
    ((2, 3, 5, 6), (4, 5), True, True),         # one B for every batch, A transposed
    ((2, 6, 6), (2, 6, 6), True, False),        # square: an ignored transpose would pass shape checks
    ((2, 6, 6), (6, 6), False, True),
], ids=["2d-tb", "2d-ta", "2d-both", "4d-tb", "broadcast-ta", "plain", "shared-b-both", "square-ta", "square-tb"])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "reference"])
def test_fused_matmul_transposed_operands_match_numpy(tmp_path, a_shape, b_shape, trans_a, trans_b, onednn):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    op_a = np.swapaxes(a, -1, -2) if trans_a else a
    op_b = np.swapaxes(b, -1, -2) if trans_b else b
    bias = rng.standard_normal(op_b.shape[-1]).astype(np.float32)
    graph = fused_matmul_graph(a_shape, b_shape, trans_a, trans_b, bias, "Relu")
    expected = np.maximum(op_a.astype(np.float64) @ op_b + bias, 0)
    feeds = {"a": a, "b": b}
    got = run_graph(graph, feeds)[0] if onednn else run_without_onednn(graph, feeds, tmp_path)[0]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("a_shape,w_shape,trans_a,trans_b", [
    ((2, 5, 6), (6, 6), False, True),   # half-precision oneDNN kernel, B read transposed
    ((6, 6), (6, 4), True, False),      # ... A read transposed (square: no shape check catches
    ((2, 6, 6), (6, 4), True, False),   # an ignored transpose); A of rank 3: the reference kernel
], ids=["tb", "ta-2d", "ta-3d"])
def test_half_precision_fused_matmul_transposed_operands(a_shape, w_shape, trans_a, trans_b, dtype):
    """A half-precision constant B selects the bf16/fp16 kernels; numpy computes in float32 on
    the widened values and rounds once."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    half = np.dtype(np.float16) if dtype == "float16" else np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(12)
    a = rng.standard_normal(a_shape).astype(half)
    w = rng.standard_normal(w_shape).astype(half)
    bias = rng.standard_normal(w_shape[0] if trans_b else w_shape[1]).astype(half)
    g = rt.Graph("half")
    g.add_input("a", list(a_shape), rt.DType.Float16 if dtype == "float16" else rt.DType.BFloat16)
    g.add_initializer("w", w)
    g.add_initializer("bias", bias)
    g.add_node("mm", "FusedMatMul", inputs=["a", "w", "bias"], outputs=["y"],
               attributes={"transA": int(trans_a), "transB": int(trans_b)}, domain="com.pyflame")
    g.opset_imports["com.pyflame"] = 1
    g.add_output("y", None, g.inputs[0].dtype)
    wide_a, wide_w = a.astype(np.float32), w.astype(np.float32)
    op_a = np.swapaxes(wide_a, -1, -2) if trans_a else wide_a
    op_w = wide_w.T if trans_b else wide_w
    expected = (op_a @ op_w + bias.astype(np.float32)).astype(half).astype(np.float32)
    got = run_graph(g, {"a": a})[0]
    assert got.dtype == half
    np.testing.assert_allclose(got.astype(np.float32), expected, rtol=2e-2, atol=2e-2)


def test_fused_matmul_constant_transposed_b_is_packed_as_it_lies():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((6, 4)).astype(np.float32)  # read as its transpose [4, 6]
    g = rt.Graph("const_b")
    g.add_input("a", [None, 3, 4], rt.DType.Float32)
    g.add_initializer("w", w)
    g.add_node("mm", "FusedMatMul", inputs=["a", "w"], outputs=["y"], attributes={"transB": 1}, domain="com.pyflame")
    g.opset_imports["com.pyflame"] = 1
    g.add_output("y", None, rt.DType.Float32)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    session = rt.InferenceSession(g)
    for _ in range(2):  # the packed copy is reused
        np.testing.assert_allclose(session.run(None, {"a": a})[0], a @ w.T, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "reference"])
def test_fused_matmul_transposed_vector_is_an_error(tmp_path, onednn):
    graph = fused_matmul_graph((4,), (4, 3), True, False)
    feeds = {"a": np.ones(4, np.float32), "b": np.ones((4, 3), np.float32)}
    if onednn:
        with pytest.raises(rt.ValidationError, match="transA needs input A of rank >= 2"):
            run_graph(graph, feeds)
    else:
        with pytest.raises(subprocess.CalledProcessError):
            run_without_onednn(graph, feeds, tmp_path)


def test_fused_matmul_rejects_a_trans_attribute_other_than_0_or_1():
    g = rt.Graph("bad")
    g.add_input("a", [3, 4], rt.DType.Float32)
    g.add_input("b", [4, 3], rt.DType.Float32)
    g.add_node("mm", "FusedMatMul", inputs=["a", "b"], outputs=["y"], attributes={"transB": 2},
               domain="com.pyflame")
    g.opset_imports["com.pyflame"] = 1
    g.add_output("y", None, rt.DType.Float32)
    with pytest.raises(rt.ValidationError, match="transB must be 0 or 1"):
        rt.InferenceSession(g).run(None, {"a": np.ones((3, 4), np.float32), "b": np.ones((4, 3), np.float32)})


# ---------------------------------------------------------------------------------------------
# push_transpose_through_elementwise

def scaled_attention_scores_model(scale_shape=(), end="matmul"):
    """Q x (K^T * scale) with the transpose before the scaling (as torch exports scaled dot
    product attention): the transpose moves below the Mul, then folds into the product."""
    inits = {"scale": np.full(scale_shape, 0.125, np.float32)}
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("Mul", ["kt", "scale"], ["kt_scaled"]),
             helper.make_node("Tanh", ["kt_scaled"], ["kt_act"])]
    if end == "matmul":
        nodes.append(helper.make_node("MatMul", ["q", "kt_act"], ["y"]))
    else:
        nodes.append(helper.make_node("Softmax", ["kt_act"], ["y"], axis=-1))
    y_shape = [2, 3, 5, 7] if end == "matmul" else [2, 3, 8, 7]
    return make_model(nodes, [f32("q", [2, 3, 5, 8]), f32("k", [2, 3, 7, 8])], [f32("y", y_shape)], inits)


def attention_feeds():
    rng = np.random.default_rng(9)
    return {"q": rng.standard_normal((2, 3, 5, 8)).astype(np.float32),
            "k": rng.standard_normal((2, 3, 7, 8)).astype(np.float32)}


@pytest.mark.parametrize("scale_shape", [(), (1,), (1, 1, 1, 1)], ids=["scalar", "one", "ones-rank-4"])
def test_transpose_moves_below_elementwise_ops_to_fold(tmp_path, scale_shape):
    model = scaled_attention_scores_model(scale_shape)
    graph = import_graph(model, tmp_path)
    results = rt.PassManager().run(graph, level=3)
    moved = sum(r.nodes_added for r in results if r.pass_name == "push_transpose_through_elementwise")
    assert moved == 2  # past the Mul, then past the Tanh
    assert ops(graph) == ["Mul", "Tanh", "FusedMatMul"]
    assert graph.nodes[2].attributes["transB"] == 1
    feeds = attention_feeds()
    expected = ort_run(model, feeds)[0]
    np.testing.assert_allclose(expected, feeds["q"] @ np.tanh(np.swapaxes(feeds["k"], -1, -2) * 0.125),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_graph(graph, feeds)[0], expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_without_onednn(graph, feeds, tmp_path)[0], expected, rtol=RTOL, atol=ATOL)


def test_transpose_moves_past_a_row_operand_of_unknown_length(tmp_path):
    """Mul(K^T, s) with s [n], n known only at run time (BERT's scale is computed from shapes):
    s follows the transpose as a Reshape to [1, 1, n, 1], so it still scales K^T's last axis."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("Mul", ["kt", "s"], ["kt_scaled"]),
             helper.make_node("MatMul", ["q", "kt_scaled"], ["y"])]
    model = make_model(nodes, [f32("q", [2, 3, 5, 8]), f32("k", [2, 3, 7, 8]), f32("s", ["n"])], [f32("y", [2, 3, 5, 7])])
    graph = import_graph(model, tmp_path)
    rt.PassManager().run(graph, level=3)
    assert ops(graph) == ["Reshape", "Mul", "FusedMatMul"]
    assert graph.nodes[2].attributes["transB"] == 1
    assert list(graph.initializers.values())[-1].tolist() == [1, 1, -1, 1]
    for n in (7, 1):  # a scale per column of K^T, then one scale for all
        feeds = dict(attention_feeds(), s=np.random.default_rng(n).uniform(0.5, 2.0, n).astype(np.float32))
        expected = ort_run(model, feeds)[0]
        np.testing.assert_allclose(expected, feeds["q"] @ (np.swapaxes(feeds["k"], -1, -2) * feeds["s"]),
                                   rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(run_graph(graph, feeds)[0], expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["no-match-below", "two-axis-operand"])
def test_transpose_stays_where_moving_it_gains_nothing(tmp_path, case):
    model = (scaled_attention_scores_model(end="softmax") if case == "no-match-below"
             else scaled_attention_scores_model(scale_shape=(3, 1, 7)))  # varies along two axes: stays
    graph = import_graph(model, tmp_path)
    before = ops(graph)
    results = run_passes(graph, "push_transpose_through_elementwise")
    assert not results[0].changed and ops(graph) == before
    feeds = attention_feeds()
    np.testing.assert_allclose(run_graph(graph, feeds, level=3)[0], ort_run(model, feeds)[0], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Whole models at level 3

class HandWrittenAttention(torch.nn.Module):
    """Multi-head self-attention with explicit transposes (the head split, then K scaled and
    transposed again for Q x K^T), a decomposed LayerNorm, and a GELU feed-forward: every level-2 and level-3 pass
    has something to do."""

    def __init__(self, hidden=32, heads=4):
        super().__init__()
        self.heads, self.hidden = heads, hidden
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.ff = torch.nn.Sequential(torch.nn.Linear(hidden, 64), torch.nn.GELU(), torch.nn.Linear(64, hidden))
        self.gamma = torch.nn.Parameter(torch.rand(hidden) + 0.5)
        self.beta = torch.nn.Parameter(torch.randn(hidden) * 0.1)

    def norm(self, x):
        mean = x.mean(-1, keepdim=True)
        d = x - mean
        return d / torch.sqrt((d * d).mean(-1, keepdim=True) + 1e-5) * self.gamma + self.beta

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, s, self.heads, -1).transpose(1, 2)  # noqa: E731
        # K scaled between its two transposes: the exporter cannot merge them.
        q, k, v = split(q), split(k) * (self.hidden // self.heads) ** -0.5, split(v)
        scores = torch.matmul(q, k.transpose(-1, -2))
        context = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, s, self.hidden)
        x = self.norm(x + self.out(context))
        return torch.nn.functional.layer_norm(x + self.ff(x), (self.hidden,))


def test_small_transformer_level_3_matches_level_0_and_torch(tmp_path):
    torch.manual_seed(21)
    model = HandWrittenAttention().eval()
    path = tmp_path / "attn.onnx"
    x = torch.randn(2, 6, 32)
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    with torch.inference_mode():
        expected = model(x).numpy()
    feeds = {"x": x.numpy()}
    level0 = run_graph(str(path), feeds, level=0)[0]
    np.testing.assert_allclose(level0, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_graph(str(path), feeds, level=3)[0], level0, rtol=RTOL, atol=ATOL)

    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    transposes = ops(graph).count("Transpose")
    results = rt.PassManager().run(graph, level=3)
    changed = {r.pass_name for r in results if r.changed}
    assert {"fuse_layer_norm", "fuse_attention"} <= changed  # attention takes K's transpose in
    assert ops(graph).count("LayerNormalization") == 2
    assert ops(graph).count("Transpose") < transposes
    np.testing.assert_allclose(run_graph(graph, feeds)[0], level0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_without_onednn(graph, feeds, tmp_path)[0], level0, rtol=RTOL, atol=ATOL)

    # Without attention fusion, level 3 folds K's transpose into the product instead.
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    manager = rt.PassManager()
    for _ in range(3):  # the named passes run once each, in order: repeat for what they expose
        manager.run(graph, passes=[p for p in manager.list_passes() if p != "fuse_attention"])
    assert any(n.op_type == "FusedMatMul" and n.attributes.get("transB") == 1 for n in graph.nodes)
    assert ops(graph).count("Transpose") < transposes
    np.testing.assert_allclose(run_graph(graph, feeds)[0], level0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_without_onednn(graph, feeds, tmp_path)[0], level0, rtol=RTOL, atol=ATOL)


def test_torch_transformer_encoder_level_3_matches_level_0(tmp_path):
    torch.manual_seed(22)
    model = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, activation="gelu",
                                         batch_first=True), num_layers=2, enable_nested_tensor=False).eval()
    path = tmp_path / "encoder.onnx"
    x = torch.randn(2, 5, 32)
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    feeds = {"x": np.random.default_rng(23).standard_normal((3, 5, 32)).astype(np.float32)}
    with torch.inference_mode():
        expected = model(torch.from_numpy(feeds["x"])).numpy()
    level0 = run_graph(str(path), feeds, level=0)[0]
    np.testing.assert_allclose(level0, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run_graph(str(path), feeds, level=3)[0], level0, rtol=RTOL, atol=ATOL)


def test_level_3_passes_are_listed_with_their_level():
    pm = rt.PassManager()
    names = pm.list_passes()
    for name in ["push_transpose_through_elementwise", "fold_transpose_into_matmul", "cancel_transposes"]:
        assert name in names and pm.pass_level(name) == 3
    assert pm.pass_level("fuse_layer_norm") == 2
    # Level 2 runs none of the level-3 passes.
    g = rt.Graph("t")
    g.add_input("x", [2, 3], rt.DType.Float32)
    g.add_node("t1", "Transpose", inputs=["x"], outputs=["t"], attributes={"perm": [1, 0]})
    g.add_node("t2", "Transpose", inputs=["t"], outputs=["u"], attributes={"perm": [1, 0]})
    g.add_node("r", "Relu", inputs=["u"], outputs=["y"])
    g.add_output("y", [2, 3], rt.DType.Float32)
    ran = {r.pass_name for r in pm.run(g, level=2)}
    assert not ran & {"push_transpose_through_elementwise", "fold_transpose_into_matmul", "cancel_transposes"}
    assert ops(g).count("Transpose") == 2
    pm.run(g, level=3)
    assert ops(g) == ["Relu"]
