"""Blocked layouts between oneDNN kernels, the memory plan / arena, and execution_mode="parallel".

Every result is checked against ONNX Runtime on the same model; memory is checked through
InferenceSession.memory_stats() (arena buffers taken from the heap must stop growing)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyflame_rt as rt


def conv_net(batch=None) -> onnx.ModelProto:
    """Convolutions whose outputs go to oneDNN readers only (blocked layout flows), to a mix of
    readers (a Sigmoid and a graph output: reordered at the boundary), residual adds, pools and
    a batch normalization that no Conv absorbs."""
    rng = np.random.default_rng(7)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    inits = [weight("w1", 16, 3, 3, 3), weight("b1", 16), weight("w2", 16, 16, 3, 3), weight("w3", 16, 16, 1, 1),
             weight("w4", 32, 16, 3, 3), weight("wd", 16, 1, 3, 3),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn_scale"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, 16).astype(np.float32), "bn_bias"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, 16).astype(np.float32), "bn_mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "bn_var")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a2"]),            # residual: fused as a sum post-op
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),           # read by a Conv, a Sigmoid and the output
        helper.make_node("Sigmoid", ["c3"], ["s3"]),
        helper.make_node("Conv", ["c3", "wd"], ["d3"], group=16, pads=[1, 1, 1, 1]),  # depthwise
        helper.make_node("Mul", ["d3", "s3"], ["m3"]),
        helper.make_node("MaxPool", ["m3"], ["p3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["p3", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n3"],
                         epsilon=1e-3),  # after a pool: not folded into a Conv
        helper.make_node("Conv", ["n3", "w4"], ["c4"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("AveragePool", ["c4"], ["p4"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p4"], ["g4"]),
        helper.make_node("Flatten", ["g4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "conv_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "N", 3, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c3", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def branches_net() -> onnx.ModelProto:
    """Four independent MatMul+Tanh branches joined by Sum and Concat: work for inter-op threads."""
    rng = np.random.default_rng(3)
    inits, nodes, joined = [], [], []
    for i in range(4):
        inits.append(numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32) * 0.1, f"w{i}"))
        nodes += [helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        joined.append(f"t{i}")
    nodes += [helper.make_node("Sum", joined, ["s"]), helper.make_node("Concat", joined + ["s"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save(model, tmp_path, name):
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def ort_run(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def session(path, level=2, mode="sequential", threads=2, **extra):
    opts = rt.SessionOptions()
    opts.optimization_level = level
    opts.execution_mode = mode
    opts.num_threads = threads
    for k, v in extra.items():
        setattr(opts, k, v)
    return rt.InferenceSession(path, opts)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_conv_layouts_match_onnxruntime(tmp_path, level, mode):
    path = save(conv_net(), tmp_path, "conv.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 20, 20)).astype(np.float32)
    expected = ort_run(path, {"x": x})
    s = session(path, level, mode)
    for _ in range(2):  # the second run reuses the arena's buffers
        got = s.run(None, {"x": x})
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_parallel_mode_matches_sequential_and_onnxruntime(tmp_path, threads):
    path = save(branches_net(), tmp_path, "branches.onnx")
    x = np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)
    expected = ort_run(path, {"x": x})[0]
    sequential = session(path, mode="sequential", threads=threads).run(None, {"x": x})[0]
    parallel = session(path, mode="parallel", threads=threads)
    for _ in range(3):
        got = parallel.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got, sequential)  # same kernels, same order of arithmetic per node


def test_parallel_mode_reports_the_failing_node(tmp_path):
    path = save(branches_net(), tmp_path, "branches.onnx")
    s = session(path, mode="parallel")
    with pytest.raises(rt.ValidationError):
        s.run(None, {"x": np.zeros((5, 63), np.float32)})
    # The session still works after a failed run.
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], ort_run(path, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_static_shapes_are_planned_at_creation_and_runs_allocate_nothing(tmp_path):
    path = save(conv_net(batch=2), tmp_path, "conv_static.onnx")
    s = session(path)
    created = s.memory_stats()
    assert created["planned_bytes"] > 0  # buffers reserved before any run
    x = np.random.default_rng(4).standard_normal((2, 3, 20, 20)).astype(np.float32)
    s.run(None, {"x": x})
    after_first = s.memory_stats()
    for _ in range(5):
        s.run(None, {"x": x})
    steady = s.memory_stats()
    assert steady["heap_allocations"] == after_first["heap_allocations"]
    assert steady["arena_bytes"] == after_first["arena_bytes"]


def test_dynamic_shapes_get_a_plan_per_shape_signature(tmp_path):
    path = save(conv_net(), tmp_path, "conv_dynamic.onnx")
    s = session(path)
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 20, 20)).astype(np.float32)
        s.run(None, {"x": x})
        first = s.memory_stats()["heap_allocations"]
        for _ in range(3):
            got = s.run(None, {"x": x})
        assert s.memory_stats()["heap_allocations"] == first
        np.testing.assert_allclose(got[0], ort_run(path, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_memory_limit_counts_the_plan(tmp_path):
    path = save(conv_net(batch=64), tmp_path, "conv_big.onnx")
    planned = session(path).memory_stats()
    needed = planned["weights_bytes"] + planned["planned_bytes"]
    assert planned["planned_bytes"] > planned["weights_bytes"]  # activations dominate at batch 64
    with pytest.raises(rt.ValidationError, match="memory plan needs"):
        session(path, memory_limit=needed - 1)
    session(path, memory_limit=needed)  # exactly enough is enough


def test_compile_model_caches_the_optimized_graph(tmp_path):
    path = save(conv_net(batch=2), tmp_path, "conv.onnx")
    cache = tmp_path / "cache"
    opts = rt.CompileOptions(cache_dir=str(cache), optimization_level=2, dynamic_batch=True)
    graph = rt.compile_model(path, opts)
    files = list(cache.glob("*.pfm"))
    assert len(files) == 1
    assert any(n.op_type == "FusedConv" for n in graph.nodes)  # optimized: fused, before any session
    assert graph.inputs[0].shape[0] is None  # dynamic_batch
    stamp = files[0].stat().st_mtime_ns
    again = rt.compile_model(path, opts)  # served from the cache: the file is not rewritten
    assert files[0].stat().st_mtime_ns == stamp
    assert [n.op_type for n in again.nodes] == [n.op_type for n in graph.nodes]
    x = np.random.default_rng(6).standard_normal((3, 3, 20, 20)).astype(np.float32)  # batch 3: dynamic
    got = rt.InferenceSession(again).run(None, {"x": x})
    expected = ort_run(save(conv_net(), tmp_path, "conv_dynamic.onnx"), {"x": x})
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    # Other options, other entry; a damaged entry is rebuilt.
    rt.compile_model(path, rt.CompileOptions(cache_dir=str(cache), optimization_level=1))
    assert len(list(cache.glob("*.pfm"))) == 2
    files[0].write_bytes(b"garbage")
    rebuilt = rt.compile_model(path, opts)
    assert [n.op_type for n in rebuilt.nodes] == [n.op_type for n in graph.nodes]
    with pytest.raises(rt.ValidationError, match="optimization_level"):
        rt.compile_model(path, rt.CompileOptions(optimization_level=7))


@pytest.mark.parametrize("dims,stride,pad,out_pad,dilation,group", [
    (2, 2, 1, 1, 1, 1),
    (2, 1, 0, 0, 2, 2),
    (2, 3, 1, 2, 1, 4),   # output_padding past the end pad
    (1, 2, 0, 1, 1, 1),
    (3, 2, 1, 0, 1, 2),
])
def test_conv_transpose_matches_torch(tmp_path, dims, stride, pad, out_pad, dilation, group):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(dims * 10 + stride)
    channels, maps_per_group, k = 8, 3, 3
    x = rng.standard_normal([2, channels] + [7, 6, 5][:dims]).astype(np.float32)
    w = rng.standard_normal([channels, maps_per_group] + [k] * dims).astype(np.float32)
    b = rng.standard_normal(maps_per_group * group).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[stride] * dims, pads=[pad] * 2 * dims,
                            output_padding=[out_pad] * dims, dilations=[dilation] * dims, group=group)
    graph = helper.make_graph([node], "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path, "d.onnx")
    transpose = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                 3: torch.nn.functional.conv_transpose3d}[dims]
    expected = transpose(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride, padding=pad,
                         output_padding=out_pad, groups=group, dilation=dilation).numpy()
    got = rt.InferenceSession(path).run(None, {"x": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,perm", [
    ((5, 7), [1, 0]), ((4, 3, 6), [1, 0, 2]), ((2, 3, 4, 5), [0, 2, 1, 3]), ((2, 3, 4, 5), [0, 1, 3, 2]),
    ((2, 3, 4, 5), None), ((2, 3, 1, 4, 5), [3, 1, 2, 0, 4]), ((2, 1, 3, 2, 2, 3), [5, 3, 1, 0, 4, 2]),
    ((128, 1, 768), [1, 0, 2]), ((1, 4, 1, 6), [2, 1, 3, 0]), ((1, 4, 1, 6), [3, 1, 2, 0])])
def test_transpose_matches_numpy(tmp_path, shape, perm):
    attrs = {} if perm is None else {"perm": perm}
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], **attrs)], "transpose",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path, "t.onnx")
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(session(path).run(None, {"x": x})[0], x.transpose(perm))


def test_transpose_reads_a_convolution_layout(tmp_path):
    """A Transpose after a Conv takes the convolution's blocked output as it is."""
    rng = np.random.default_rng(12)
    w = numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])], "conv_transpose",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path, "ct.onnx")
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    s = session(path)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], ort_run(path, {"x": x})[0], rtol=1e-4, atol=1e-4)


def matmul_model(k, n, trans_b=False, shared=False, batch="M") -> onnx.ModelProto:
    """x[M, K] through MatMul, Gemm (transB as asked) and, when `shared`, a second MatMul
    reading the same weight."""
    rng = np.random.default_rng(21)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "c")]
    if trans_b:
        nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1)]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "c"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["z"]) if not trans_b else
                     helper.make_node("Gemm", ["x", "w"], ["z"], transB=1))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), w


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_prepacked_weights_give_the_same_results(tmp_path, trans_b, shared):
    """Weights packed at session creation (and the row-major copy dropped) serve every M, the
    reference fallback (an empty batch), and read back as the original values."""
    model, w = matmul_model(96, 80, trans_b, shared)
    path = save(model, tmp_path, "mm.onnx")
    s = session(path)
    rng = np.random.default_rng(22)
    for m in (1, 7, 64, 0, 3):
        x = rng.standard_normal((m, 96)).astype(np.float32)
        got, want = s.run(None, {"x": x}), ort_run(path, {"x": x})
        for g, r in zip(got, want):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    # The session's graph gives the weights back as they were, and runs in another session.
    graph = s.graph
    np.testing.assert_array_equal(graph.initializers["w"], w)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    for g, r in zip(rt.InferenceSession(graph).run(None, {"x": x}), ort_run(path, {"x": x})):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    exported = tmp_path / "back.onnx"
    rt.export_onnx(s.graph, str(exported))
    saved = {t.name: numpy_helper.to_array(t) for t in onnx.load(exported).graph.initializer}
    np.testing.assert_array_equal(saved["w"], w)


def conv_model(channels, size):
    """x[N, C, size, size] through two 3x3 convolutions (Winograd-sized), Relu, a residual Add and
    a strided 3x3 one (oneDNN's direct kernel); the batch is dynamic."""
    rng = np.random.default_rng(31)
    weights = {f"w{i}": (rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32) for i in range(3)}
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    inits.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"))
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), weights


@pytest.mark.parametrize("level", [0, 2])
def test_prepacked_conv_weights_give_the_same_results(tmp_path, level):
    """Convolution weights are packed at session creation (the batch planned as 1): every batch,
    the reference fallback (an empty batch) and Winograd's transformed weights agree with
    onnxruntime, and the session's graph gives the weights back bit for bit."""
    model, weights = conv_model(32, 24)
    path = save(model, tmp_path, "convs.onnx")
    s = session(path, level)
    rng = np.random.default_rng(32)
    for n in (1, 4, 0, 2):
        x = rng.standard_normal((n, 32, 24, 24)).astype(np.float32)
        got, want = s.run(None, {"x": x})[0], ort_run(path, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max(initial=0))))
    graph = s.graph
    exported = tmp_path / "back.onnx"
    rt.export_onnx(graph, str(exported))
    saved = {t.name: numpy_helper.to_array(t) for t in onnx.load(exported).graph.initializer}
    for name, w in weights.items():
        np.testing.assert_array_equal(graph.initializers[name], w)
        np.testing.assert_array_equal(saved[name], w)


def test_prepacked_weights_are_in_memory_once(tmp_path):
    """A model loaded from a file holds its MatMul weights once: packed for the kernel, with the
    row-major copy freed (peak RSS of a fresh process, not a timing)."""
    import subprocess
    import sys
    model, w = matmul_model(4096, 4096)
    path = save(model, tmp_path, "big.onnx")
    script = f"""
import resource, numpy as np, pyflame_rt as rt
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = rt.InferenceSession({path!r})
s.run(None, {{"x": np.ones((4, 4096), np.float32)}})
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""
    grown = int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
    weight_bytes = w.nbytes  # 64 MiB
    assert grown < 1.4 * weight_bytes, f"peak RSS grew {grown / 2**20:.0f} MiB for {weight_bytes / 2**20:.0f} MiB of weights"


ACTIVATIONS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}), ("Elu", {"alpha": 0.7}),
               ("HardSwish", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("Mish", {}), ("Exp", {}),
               ("Abs", {}), ("Log", {}), ("Sqrt", {}), ("Gelu", {}), ("Swish", {"alpha": 1.5})]


@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("elements", [37, 64 * 128])  # the reference loop below 4096 elements, oneDNN above
def test_activations_match_numpy(tmp_path, op, attrs, elements):
    from scipy.special import erf  # scipy comes with scikit-learn

    opset = 24 if op == "Swish" else 20 if op == "Gelu" else 18
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "act",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10), tmp_path, "a.onnx")
    x = np.random.default_rng(30).standard_normal(elements).astype(np.float32) * 3
    if op in ("Log", "Sqrt"):
        x = np.abs(x) + 0.1
    d = x.astype(np.float64)
    a = attrs.get("alpha", 0.0)
    expected = {
        "Relu": np.maximum(d, 0), "LeakyRelu": np.where(d < 0, a * d, d), "Sigmoid": 1 / (1 + np.exp(-d)),
        "Tanh": np.tanh(d), "Elu": np.where(d < 0, a * (np.exp(d) - 1), d),
        "HardSwish": d * np.clip(d / 6 + 0.5, 0, 1), "HardSigmoid": np.clip(a * d + attrs.get("beta", 0), 0, 1),
        "Mish": d * np.tanh(np.log1p(np.exp(d))), "Exp": np.exp(d), "Abs": np.abs(d), "Log": np.log(d),
        "Sqrt": np.sqrt(d), "Gelu": 0.5 * d * (1 + erf(d / np.sqrt(2))),
        "Swish": d / (1 + np.exp(-a * d)),
    }[op]
    np.testing.assert_allclose(session(path).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [11, 13])  # before 13: a 2-D softmax of the input flattened at `axis`
@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("shape", [(2, 5), (3, 50, 40)])  # the reference loop, then oneDNN
def test_softmax_matches_numpy(tmp_path, op, opset, axis, shape):
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], axis=axis)], "softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), tmp_path, "s.onnx")
    x = np.random.default_rng(31).standard_normal(shape).astype(np.float32) * 4
    d = x.astype(np.float64)
    a = axis % len(shape)
    if opset < 13:
        d = d.reshape(int(np.prod(shape[:a])), -1)
    reduce_axis = -1 if opset < 13 else a
    shifted = d - d.max(axis=reduce_axis, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=reduce_axis, keepdims=True))
    expected = (log_softmax if op == "LogSoftmax" else np.exp(log_softmax)).reshape(shape)
    np.testing.assert_allclose(session(path).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


def inverted_residual_model():
    """MobileNetV2's first blocks: a 3-channel stem (oneDNN writes it blocked, nChw16c), then
    depthwise 3x3 convolutions at stride 1 and 2 between 1x1 ones (channels-last), Clip(0, 6)
    and a residual Add; the batch is dynamic."""
    rng = np.random.default_rng(41)
    inits = []

    def conv(x, out, maps, channels, k, stride=1, group=1, clip=True):
        w = (rng.standard_normal((maps, channels // group, k, k)) * (2.0 / (channels // group * k * k)) ** 0.5)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{out}_w"))
        inits.append(numpy_helper.from_array((rng.standard_normal(maps) * 0.1).astype(np.float32), f"{out}_b"))
        nodes = [helper.make_node("Conv", [x, f"{out}_w", f"{out}_b"], [out + ("_c" if clip else "")],
                                  pads=[k // 2] * 4, strides=[stride, stride], group=group)]
        if clip:
            nodes.append(helper.make_node("Clip", [out + "_c", "zero", "six"], [out]))
        return nodes

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six")]
    nodes = (conv("x", "stem", 32, 3, 3, stride=2) + conv("stem", "dw1", 32, 32, 3, group=32) +
             conv("dw1", "p1", 16, 32, 1, clip=False) + conv("p1", "e2", 96, 16, 1) +
             conv("e2", "dw2", 96, 96, 3, stride=2, group=96) + conv("dw2", "p2", 24, 96, 1, clip=False) +
             conv("p2", "e3", 144, 24, 1) + conv("e3", "dw3", 144, 144, 3, group=144) +
             conv("dw3", "p3", 24, 144, 1, clip=False) + [helper.make_node("Add", ["p3", "p2"], ["y"])])
    graph = helper.make_graph(nodes, "inverted_residual",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 40, 36])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_depthwise_blocks_match_onnxruntime(tmp_path, level):
    """The depthwise kernel reads the stem's blocked output and the 1x1 convolutions'
    channels-last ones where they lie: every level and batch agrees with onnxruntime."""
    path = save(inverted_residual_model(), tmp_path, "blocks.onnx")
    s = session(path, level)
    rng = np.random.default_rng(42)
    for n in (1, 3):
        x = rng.standard_normal((n, 3, 40, 36)).astype(np.float32)
        got, want = s.run(None, {"x": x})[0], ort_run(path, {"x": x})[0]
        assert got.shape == want.shape == (n, 24, 10, 9)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("channels", [5, 16, 48])
def test_batchnorm_with_constant_statistics_matches_onnxruntime(tmp_path, channels):
    """BatchNormalization with constant statistics runs as one multiply-add per element, in the
    layout that arrives: row-major (a graph input), or what a convolution writes (channels-last;
    nChw16c after a 3-channel one); its output read by a convolution and by graph outputs."""
    rng = np.random.default_rng(channels)
    stats = {n: rng.uniform(0.5, 1.5, channels).astype(np.float32) for n in ("s", "v")}
    stats.update({n: rng.uniform(-0.5, 0.5, channels).astype(np.float32) for n in ("b", "m")})
    inits = [numpy_helper.from_array(v, n) for n, v in stats.items()]
    inits += [numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), "w"),
              numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.3).astype(np.float32), "w1"),
              numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.3).astype(np.float32), "w3")]
    nodes = [
        helper.make_node("Conv", ["z", "w3"], ["c3"], pads=[1, 1, 1, 1]),  # 3 channels in: nChw16c out
        helper.make_node("BatchNormalization", ["c3", "s", "b", "m", "v"], ["y3"]),
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn0"], epsilon=1e-3),
        helper.make_node("Conv", ["bn0", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn1"]),
        helper.make_node("Conv", ["bn1", "w1"], ["c1"]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 9, 7]),
                                            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, 9, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("bn1", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("y3", TensorProto.FLOAT, None)], inits)
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path, "bn.onnx")
    for level in (0, 2):
        s = session(path, level)
        for n in (1, 3):
            feeds = {"x": rng.standard_normal((n, channels, 9, 7)).astype(np.float32),
                     "z": rng.standard_normal((n, 3, 9, 7)).astype(np.float32)}
            for got, want in zip(s.run(None, feeds), ort_run(path, feeds)):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
