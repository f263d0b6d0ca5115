"""Attention fusion (level 2, pass fuse_attention): MatMul -> [scale] -> [Add mask] -> Softmax ->
MatMul becomes one com.pyflame FusedAttention node, whose results match onnxruntime and numpy
for every pattern variant; the pass leaves alone what it must not fuse."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pyflame_rt as rt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_model(path, q_shape, k_shape, v_shape, *, q_scale=None, k_scale=None, product_scale=None,
                    mask_shape=None, mask_first=False, k_transposed=False, axis=-1, extra_output=None, opset=17,
                    scale_input=False):
    """An ONNX attention block: MatMul(Q', K') [* or / c] [+ mask] -> Softmax -> MatMul(., V).
    Each *_scale is ("Mul" | "Div", value); K' is Transpose(K) unless `k_transposed`."""
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("q", q_shape), ("k", k_shape), ("v", v_shape))]

    def scaled(x, spec, tag):
        if spec is None:
            return x
        op, value = spec
        const = f"c_{tag}"
        if scale_input:  # a graph input: not a constant
            inputs.append(helper.make_tensor_value_info(const, TensorProto.FLOAT, []))
        else:
            inits.append(numpy_helper.from_array(np.array(value, np.float32), const))
        nodes.append(helper.make_node(op, [x, const], [f"{x}_{tag}"]))
        return f"{x}_{tag}"

    q = scaled("q", q_scale, "qs")
    k = "k"
    if not k_transposed:
        rank = len(k_shape)
        nodes.append(helper.make_node("Transpose", ["k"], ["kt"], perm=list(range(rank - 2)) + [rank - 1, rank - 2]))
        k = "kt"
    k = scaled(k, k_scale, "ks")
    nodes.append(helper.make_node("MatMul", [q, k], ["scores"]))
    s = scaled("scores", product_scale, "ps")
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, mask_shape))
        nodes.append(helper.make_node("Add", ["mask", s] if mask_first else [s, "mask"], ["masked"]))
        s = "masked"
    nodes.append(helper.make_node("Softmax", [s], ["probs"], axis=axis))
    nodes.append(helper.make_node("MatMul", ["probs", "v"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), str(path))
    return path


def feeds_for(path, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in onnx.load(str(path)).graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.name == "mask":
            feeds[vi.name] = np.where(rng.random(shape) < 0.3, -1e4, rng.standard_normal(shape)).astype(np.float32)
        elif vi.name.startswith("c_"):
            feeds[vi.name] = np.array(0.5, np.float32)
        else:
            feeds[vi.name] = (2 * rng.standard_normal(shape)).astype(np.float32)
    return feeds


def optimized_ops(path):
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    results = rt.PassManager().run(graph, level=2)
    fused = sum(r.nodes_fused for r in results if r.pass_name == "fuse_attention")
    return [n.op_type for n in graph.nodes], fused


def run_level(path, feeds, level):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    return rt.InferenceSession(str(path), opts).run(None, feeds)


B, H, S, T, D = 2, 3, 5, 7, 4
VARIANTS = {
    # what torch exports for nn.MultiheadAttention: both operands scaled by sqrt(scale)
    "torch_style_4d": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, 6],
                           q_scale=("Mul", D ** -0.25), k_scale=("Mul", D ** -0.25)),
    "div_product_mask_4d": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D],
                                product_scale=("Div", D ** 0.5), mask_shape=[B, 1, 1, T]),
    "no_scale_3d": dict(q_shape=[B * H, S, D], k_shape=[B * H, T, D], v_shape=[B * H, T, D]),
    "k_pretransposed_mul_product": dict(q_shape=[B, H, S, D], k_shape=[B, H, D, T], v_shape=[B, H, T, D],
                                        k_transposed=True, product_scale=("Mul", 0.3)),
    "div_q_mask_first_causal": dict(q_shape=[B, H, S, D], k_shape=[B, H, S, D], v_shape=[B, H, S, D],
                                    q_scale=("Div", 2.0), mask_shape=[S, S], mask_first=True),
    # one query row; the mask's rows broadcast it (as Add does in the unfused graph)
    "row_broadcast_mask": dict(q_shape=[B, H, 1, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D],
                               product_scale=("Mul", 0.5), mask_shape=[B, 1, S, T]),
    "scaled_after_transpose_3d_opset11": dict(q_shape=[6, S, D], k_shape=[6, T, D], v_shape=[6, T, D],
                                              k_scale=("Mul", 0.5), axis=2, opset=11),
}


def numpy_attention(feeds, spec):
    q, k, v = feeds["q"], feeds["k"], feeds["v"]
    scale = 1.0
    for key in ("q_scale", "k_scale", "product_scale"):
        if spec.get(key):
            op, value = spec[key]
            scale *= value if op == "Mul" else 1.0 / value
    kt = k if spec.get("k_transposed") else np.swapaxes(k, -1, -2)
    scores = scale * (q.astype(np.float64) @ kt)
    if "mask" in feeds:
        scores = scores + feeds["mask"]
    return softmax(scores) @ v


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pattern_fuses_and_matches_onnxruntime_and_numpy(tmp_path, variant):
    spec = VARIANTS[variant]
    path = attention_model(tmp_path / f"{variant}.onnx", **spec)
    ops, fused = optimized_ops(path)
    assert ops == ["FusedAttention"], ops
    assert fused >= 3
    feeds = feeds_for(path)
    expected_ort = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    expected_np = numpy_attention(feeds, spec)
    got = run_level(path, feeds, 2)[0]
    np.testing.assert_allclose(got, expected_np, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, expected_ort, rtol=1e-4, atol=1e-5)


def test_reference_kernel_matches_numpy_without_onednn(tmp_path):
    """The same variants with oneDNN off (PYFLAME_RT_ONEDNN=0 is read once per process)."""
    for variant, spec in VARIANTS.items():
        path = attention_model(tmp_path / f"{variant}.onnx", **spec)
        np.savez(tmp_path / f"{variant}_in.npz", **feeds_for(path))
    script = (
        "import sys, numpy as np, pyflame_rt as rt\n"
        "for name in sys.argv[2:]:\n"
        "    feeds = dict(np.load(f'{sys.argv[1]}/{name}_in.npz'))\n"
        "    y = rt.InferenceSession(f'{sys.argv[1]}/{name}.onnx').run(None, feeds)[0]\n"
        "    np.save(f'{sys.argv[1]}/{name}_out.npy', y)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path), *VARIANTS], check=True,
                   env=dict(os.environ, PYFLAME_RT_ONEDNN="0"))
    for variant, spec in VARIANTS.items():
        feeds = dict(np.load(tmp_path / f"{variant}_in.npz"))
        np.testing.assert_allclose(np.load(tmp_path / f"{variant}_out.npy"), numpy_attention(feeds, spec),
                                   rtol=1e-4, atol=1e-5, err_msg=variant)


NOT_FUSED = {
    # the scores are also a graph output: a second reader
    "scores_read_twice": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D], extra_output="scores"),
    "probs_read_twice": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D], extra_output="probs"),
    "softmax_not_last_axis": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D], axis=2),
    # before opset 13 Softmax flattens from axis 1: not the last axis of a 3-D tensor
    "legacy_softmax_default_axis": dict(q_shape=[6, S, D], k_shape=[6, T, D], v_shape=[6, T, D], axis=1, opset=11),
    "scale_not_constant": dict(q_shape=[B, H, S, D], k_shape=[B, H, T, D], v_shape=[B, H, T, D],
                               product_scale=("Div", 2.0), scale_input=True),
}


@pytest.mark.parametrize("variant", sorted(NOT_FUSED))
def test_pattern_is_left_alone_when_it_must_be(tmp_path, variant):
    path = attention_model(tmp_path / f"{variant}.onnx", **NOT_FUSED[variant])
    ops, fused = optimized_ops(path)
    assert "FusedAttention" not in ops and "Softmax" in ops and fused == 0, ops
    feeds = feeds_for(path)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, want in zip(run_level(path, feeds, 2), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_intermediate_with_a_second_node_reader_is_not_fused(tmp_path):
    """The scaled Q also feeds another node: the Mul must stay, so nothing fuses through it."""
    path = attention_model(tmp_path / "a.onnx", [B, H, S, D], [B, H, T, D], [B, H, T, D], q_scale=("Mul", 0.5))
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Relu", ["q_qs"], ["side"]))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    onnx.save(model, str(path))
    ops, _ = optimized_ops(path)
    # The product and below still fuse, with the Mul (read twice) left as the fused node's Q.
    assert ops.count("Mul") == 1 and "FusedAttention" in ops and "Softmax" not in ops, ops
    feeds = feeds_for(path)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, want in zip(run_level(path, feeds, 2), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_node_has_its_own_shape_inference(tmp_path):
    path = attention_model(tmp_path / "a.onnx", [B, H, S, D], [1, H, T, D], [B, 1, T, 6], product_scale=("Mul", 0.5))
    graph = rt.import_module.ONNXImporter().import_model(str(path)).graph
    rt.PassManager().run(graph, passes=["fuse_attention"])
    (node,) = graph.nodes
    assert node.op_type == "FusedAttention" and node.domain == "com.pyflame"
    assert node.get_attribute("scale") == pytest.approx(0.5) and node.get_attribute("k_transposed") == 0
    session = rt.InferenceSession(graph)
    (out,) = session.get_outputs()
    assert list(out.shape) == [B, H, S, 6]
    feeds = feeds_for(path)
    np.testing.assert_allclose(session.run(None, feeds)[0],
                               softmax(0.5 * feeds["q"] @ np.swapaxes(feeds["k"], -1, -2)) @ feeds["v"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("key_padding_mask", [False, True])
def test_torch_transformer_encoder_matches_torch(tmp_path, key_padding_mask):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, x, padding=None):
            return self.encoder(x, src_key_padding_mask=padding)

    model = Encoder().eval()
    x = torch.randn(2, 10, 32)
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[0, 7:] = True  # the first sequence is 7 long: its last keys are masked out
    args = (x, padding) if key_padding_mask else (x,)
    names = ["x", "padding"][:len(args)]
    path = tmp_path / "encoder.onnx"
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX export
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=names,
                              output_names=["y"])
            expected = model(*args).numpy()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    # The exporter derives the scale from Shape ops; with the batch static, onnxruntime's basic
    # level folds them to constants, as our own shape folding would.
    folded = tmp_path / "encoder_folded.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops, _ = optimized_ops(folded)
    assert ops.count("FusedAttention") == 2 and "Softmax" not in ops, ops
    feeds = {name: a.numpy() for name, a in zip(names, args)}
    for model_path in (folded, path):
        np.testing.assert_allclose(run_level(model_path, feeds, 2)[0], expected, rtol=1e-4, atol=1e-5)


def test_fused_graph_round_trips_through_the_compile_cache(tmp_path):
    spec = VARIANTS["div_product_mask_4d"]
    path = attention_model(tmp_path / "a.onnx", **spec)
    opts = rt.CompileOptions()
    opts.cache_dir = str(tmp_path / "cache")
    rt.compile_model(str(path), opts)
    (cached,) = (tmp_path / "cache").glob("*.pfm")
    graph = rt.compile_model(str(path), opts)  # read back from the cache
    (node,) = graph.nodes
    assert node.op_type == "FusedAttention" and node.get_attribute("scale") == pytest.approx(D ** -0.5)
    feeds = feeds_for(path)
    for model in (graph, str(cached)):
        np.testing.assert_allclose(rt.InferenceSession(model).run(None, feeds)[0], numpy_attention(feeds, spec),
                                   rtol=1e-4, atol=1e-5)


def test_steady_state_runs_take_no_new_memory_from_the_heap(tmp_path):
    """The fused kernel's scores temporary comes from the session's arena."""
    path = attention_model(tmp_path / "a.onnx", **VARIANTS["torch_style_4d"])
    session = rt.InferenceSession(str(path))
    feeds = feeds_for(path)
    for _ in range(2):
        session.run(None, feeds)
    before = session.memory_stats()["heap_allocations"]
    for _ in range(5):
        session.run(None, feeds)
    assert session.memory_stats()["heap_allocations"] == before


def test_fused_node_built_by_hand_is_validated_at_session_creation():
    assert rt.PassManager().pass_level("fuse_attention") == 2
    g = rt.Graph("attention")
    g.add_input("q", [2, 5, 4], rt.DType.Float32)
    g.add_input("k", [2, 7, 3], rt.DType.Float32)  # head size 3, Q's is 4
    g.add_input("v", [2, 7, 4], rt.DType.Float32)
    g.add_node("attn", "FusedAttention", inputs=["q", "k", "v"], outputs=["y"], attributes={"scale": 0.5},
               domain="com.pyflame")
    g.add_output("y", None, rt.DType.Float32)
    with pytest.raises(rt.ValidationError, match="'attn'.*head sizes"):
        rt.InferenceSession(g)


def test_concurrent_runs_with_different_shapes_get_their_own_answers(tmp_path):
    """One session, four threads, sequence lengths that differ per run (one primitive set each)."""
    import threading

    spec = dict(q_shape=[B, H, "s", D], k_shape=[B, H, "t", D], v_shape=[B, H, "t", D],
                product_scale=("Div", 2.0), mask_shape=[B, 1, 1, "t"])
    path = attention_model(tmp_path / "a.onnx", **spec)
    assert optimized_ops(path)[0] == ["FusedAttention"]
    session = rt.InferenceSession(str(path))
    errors = []

    def worker(tid):
        try:
            rng = np.random.default_rng(tid)
            for _ in range(15):
                s, t = (int(n) for n in rng.integers(1, 9, size=2))
                feeds = {"q": rng.standard_normal((B, H, s, D)).astype(np.float32),
                         "k": rng.standard_normal((B, H, t, D)).astype(np.float32),
                         "v": rng.standard_normal((B, H, t, D)).astype(np.float32),
                         "mask": rng.standard_normal((B, 1, 1, t)).astype(np.float32)}
                np.testing.assert_allclose(session.run(None, feeds)[0], numpy_attention(feeds, spec), rtol=1e-4, atol=1e-5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors)
