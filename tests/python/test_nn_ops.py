"""Reductions, softmax/normalization, pooling, convolution and nn_extra ops beyond what the ONNX
conformance data covers: other dtypes, older opsets, shapes known only at run time, errors.
Checked against numpy, ONNX's reference evaluator or ONNX Runtime."""

import numpy as np
import pytest

import pyflame_rt as rt

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

RNG = np.random.default_rng(7)


def model_of(op, inputs, outputs, opset, initializers=(), **attrs):
    """A one-node model. `inputs`: (name, array or (np dtype, shape)); outputs: (name, np dtype) or
    (name, np dtype, shape); shapes may hold None (dynamic) and an output shape of None means
    unknown rank."""
    def info(name, dtype, shape):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)

    in_infos = []
    for name, v in inputs:
        if name == "":
            continue
        dtype, shape = (v.dtype, list(v.shape)) if isinstance(v, np.ndarray) else v
        in_infos.append(info(name, dtype, shape))
    out_infos = [info(o[0], o[1], o[2] if len(o) > 2 else None) for o in outputs]
    node = helper.make_node(op, [n for n, _ in inputs], [o[0] for o in outputs], name="the_node", **attrs)
    graph = helper.make_graph([node], "g", [i for i in in_infos if i.name not in dict(initializers)], out_infos,
                              initializer=[numpy_helper.from_array(v, n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def run_model(tmp_path, model, feeds):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    session = rt.InferenceSession(str(path))
    return session.run([o.name for o in model.graph.output], feeds)


def run_node(tmp_path, op, inputs, outputs, opset=21, initializers=(), **attrs):
    model = model_of(op, inputs, outputs, opset, initializers, **attrs)
    feeds = {n: v for n, v in inputs if n and isinstance(v, np.ndarray) and n not in dict(initializers)}
    return run_model(tmp_path, model, feeds), model, feeds


def reference(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


# ---------------------------------------------------------------------------------------------
# Reductions

REDUCE_NUMPY = {
    "ReduceSum": lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=np.float64),
    "ReduceMean": lambda x, a, k: np.mean(x, axis=a, keepdims=k, dtype=np.float64),
    "ReduceMax": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "ReduceMin": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "ReduceProd": lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=np.float64),
    "ReduceL1": lambda x, a, k: np.sum(np.abs(x.astype(np.float64)), axis=a, keepdims=k),
    "ReduceL2": lambda x, a, k: np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=a, keepdims=k)),
    "ReduceSumSquare": lambda x, a, k: np.sum(x.astype(np.float64) ** 2, axis=a, keepdims=k),
    "ReduceLogSumExp": lambda x, a, k: np.log(np.sum(np.exp(x.astype(np.float64)), axis=a, keepdims=k)),
}


@pytest.mark.parametrize("op", sorted(REDUCE_NUMPY))
@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32, np.int64, np.uint8])
def test_reduce_dtypes_axes_as_input(tmp_path, op, dtype):
    if op == "ReduceLogSumExp" and not np.issubdtype(dtype, np.floating):
        pytest.skip("exp of integers")
    x = (RNG.random((2, 3, 4)) * 4).astype(dtype)
    axes = np.array([0, -1], np.int64)
    (y,), _, _ = run_node(tmp_path, op, [("x", x), ("axes", axes)], [("y", dtype)], opset=18, keepdims=0)
    want = REDUCE_NUMPY[op](x, (0, 2), False)
    assert y.dtype == dtype and y.shape == (3,)
    if np.issubdtype(dtype, np.integer):
        if op in ("ReduceL2", "ReduceLogSumExp"):
            want = np.trunc(want)
        np.testing.assert_array_equal(y, want.astype(dtype))
    else:
        np.testing.assert_allclose(y, want, rtol=2e-3 if dtype == np.float16 else 1e-9)


def test_reduce_axes_attribute_before_opset_18_and_noop(tmp_path):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    (y,), _, _ = run_node(tmp_path, "ReduceMean", [("x", x)], [("y", np.float32)], opset=13, axes=[1])
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    empty = np.array([], np.int64)
    (y,), _, _ = run_node(tmp_path, "ReduceSum", [("x", x), ("axes", empty)], [("y", np.float32)], opset=13,
                          noop_with_empty_axes=1)
    np.testing.assert_array_equal(y, x)
    (y,), _, _ = run_node(tmp_path, "ReduceSum", [("x", x), ("axes", empty)], [("y", np.float32)], opset=13)
    np.testing.assert_allclose(y, x.sum(keepdims=True), rtol=1e-5)


def test_reduce_max_min_bool_and_empty_set_identities(tmp_path):
    b = np.array([[True, False], [False, False]])
    (y,), _, _ = run_node(tmp_path, "ReduceMax", [("x", b), ("axes", np.array([1], np.int64))], [("y", np.bool_)],
                          opset=20)
    np.testing.assert_array_equal(y, [[True], [False]])
    e = np.zeros((2, 0, 3), np.int32)
    axes = np.array([1], np.int64)
    (y,), _, _ = run_node(tmp_path, "ReduceMax", [("x", e), ("axes", axes)], [("y", np.int32)], opset=18)
    np.testing.assert_array_equal(y, np.full((2, 1, 3), np.iinfo(np.int32).min))
    (y,), _, _ = run_node(tmp_path, "ReduceProd", [("x", e), ("axes", axes)], [("y", np.int32)], opset=18)
    np.testing.assert_array_equal(y, np.ones((2, 1, 3)))


def test_reduce_runtime_axes_shapes(tmp_path):
    # axes fed at run time: with keepdims=0 the output rank is unknown until then.
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    model = model_of("ReduceSum", [("x", (np.float32, [2, 3, 4])), ("axes", (np.int64, [None]))], [("y", np.float32)],
                     13, keepdims=0)
    for axes in ([1], [0, 2], []):
        (y,) = run_model(tmp_path, model, {"x": x, "axes": np.array(axes, np.int64)})
        np.testing.assert_allclose(y, x.sum(axis=tuple(axes) or None), rtol=1e-5)


def test_reduce_bad_axes_raise_naming_the_node(tmp_path):
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    model = model_of("ReduceSum", [("x", x), ("axes", (np.int64, [1]))], [("y", np.float32)], 13)
    with pytest.raises(rt.ValidationError, match="the_node"):
        run_model(tmp_path, model, {"x": x, "axes": np.array([2], np.int64)})
    with pytest.raises(rt.PyFlameRTError, match="the_node"):  # repeated axis, found at import
        run_node(tmp_path, "ReduceMax", [("x", x)], [("y", np.float32)], opset=13, axes=[1, -1])


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint64])
def test_arg_reduce_dtypes(tmp_path, op, dtype):
    x = RNG.integers(0, 4, (3, 5)).astype(dtype)  # ties: select_last_index matters
    for last in (0, 1):
        (y,), _, _ = run_node(tmp_path, op, [("x", x)], [("y", np.int64)], opset=13, axis=1, keepdims=0,
                              select_last_index=last)
        f = np.argmax if op == "ArgMax" else np.argmin
        want = f(x, axis=1) if not last else x.shape[1] - 1 - f(x[:, ::-1], axis=1)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.uint32])
def test_cumulative_dtypes(tmp_path, op, dtype):
    x = RNG.integers(1, 4, (3, 4)).astype(dtype)
    (y,), model, feeds = run_node(tmp_path, op, [("x", x), ("axis", np.array(-1, np.int32))], [("y", dtype)], opset=26,
                                  exclusive=1, reverse=1)
    f = np.cumsum if op == "CumSum" else np.cumprod
    r = f(x[:, ::-1].astype(np.float64), axis=1)
    want = np.concatenate([np.full((3, 1), 0 if op == "CumSum" else 1), r[:, :-1]], axis=1)[:, ::-1]
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=1e-3)
    assert y.dtype == dtype


def test_mean_variance_normalization_axes(tmp_path):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    (y,), model, feeds = run_node(tmp_path, "MeanVarianceNormalization", [("x", x)], [("y", np.float32)], opset=13,
                                  axes=[0, 2])
    np.testing.assert_allclose(y, reference(model, feeds)[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Softmax family and normalizations

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family(tmp_path, op, dtype, opset):
    x = RNG.standard_normal((2, 3, 4)).astype(dtype)
    (y,), _, _ = run_node(tmp_path, op, [("x", x)], [("y", dtype)], opset=opset, axis=1)
    assert y.dtype == dtype and y.shape == x.shape
    # Before opset 13 the input is a (2, 12) matrix, each row one group; from 13 on axis 1 only.
    g = x.astype(np.float64).reshape(2, 12, 1) if opset < 13 else x.astype(np.float64)
    if op == "Hardmax":
        want = (np.arange(g.shape[1])[None, :, None] == g.argmax(axis=1)[:, None, :]).astype(np.float64)
    else:
        shifted = g - g.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        want = np.exp(logp) if op == "Softmax" else logp
    tol = 2e-3 if dtype == np.float16 else 1e-12
    np.testing.assert_allclose(y.astype(np.float64), want.reshape(x.shape), rtol=tol, atol=tol)


def test_layer_norm_float16_with_float32_statistics(tmp_path):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float16)
    w = RNG.standard_normal(4).astype(np.float16)
    outs, model, feeds = run_node(tmp_path, "LayerNormalization", [("x", x), ("w", w)],
                                  [("y", np.float16), ("mean", np.float32), ("inv", np.float32)], opset=17)
    assert [o.dtype for o in outs] == [np.float16, np.float32, np.float32]
    assert outs[1].shape == (2, 3, 1)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=-1, keepdims=True)
    inv = 1 / np.sqrt(xd.var(axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(outs[0], (xd - mean) * inv * w, rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(outs[1], mean, rtol=1e-6)
    np.testing.assert_allclose(outs[2], inv, rtol=1e-6)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm_parameters_per_group_then_per_channel(tmp_path, opset):
    x = RNG.standard_normal((2, 4, 3)).astype(np.float32)
    n = 2 if opset == 18 else 4
    scale, bias = RNG.standard_normal(n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)
    (y,), _, _ = run_node(tmp_path, "GroupNormalization", [("x", x), ("s", scale), ("b", bias)], [("y", np.float32)],
                          opset=opset, num_groups=2)
    g = x.reshape(2, 2, 6).astype(np.float64)
    norm = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(2, 4, 3)
    per_channel = np.repeat(scale, 2) if opset == 18 else scale
    per_channel_b = np.repeat(bias, 2) if opset == 18 else bias
    np.testing.assert_allclose(y, norm * per_channel[:, None] + per_channel_b[:, None], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_batch_norm_dtypes(tmp_path, dtype):
    x = RNG.standard_normal((2, 3, 4)).astype(dtype)
    params = [("s", RNG.standard_normal(3)), ("b", RNG.standard_normal(3)), ("m", RNG.standard_normal(3)),
              ("v", RNG.random(3) + 0.5)]
    params = [(n, v.astype(dtype)) for n, v in params]
    (y,), model, feeds = run_node(tmp_path, "BatchNormalization", [("x", x)] + params, [("y", dtype)], opset=15)
    np.testing.assert_allclose(y.astype(np.float64), reference(model, feeds)[0].astype(np.float64),
                               rtol=3e-3 if dtype == np.float16 else 1e-9, atol=3e-3 if dtype == np.float16 else 0)


# ---------------------------------------------------------------------------------------------
# Pools and convolutions (against ONNX Runtime)

ort = pytest.importorskip("onnxruntime")


def against_ort(tmp_path, model, feeds, rtol=1e-5, atol=1e-6):
    ours = run_model(tmp_path, model, feeds)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.float64])
def test_max_pool_dtypes_with_indices(tmp_path, dtype):
    x = (RNG.standard_normal((1, 2, 5, 6)) * 50).astype(dtype)
    model = model_of("MaxPool", [("x", x)], [("y", dtype), ("i", np.int64)], 12, kernel_shape=[3, 2], strides=[2, 1],
                     pads=[1, 0, 1, 1])
    if dtype in (np.int8, np.uint8):  # ONNX Runtime has no Indices for 8-bit types: check y only
        model = model_of("MaxPool", [("x", x)], [("y", dtype)], 12, kernel_shape=[3, 2], strides=[2, 1],
                         pads=[1, 0, 1, 1])
    against_ort(tmp_path, model, {"x": x})


@pytest.mark.parametrize("op", ["AveragePool", "LpPool"])
def test_sum_pools_double(tmp_path, op):
    x = RNG.standard_normal((1, 2, 6, 5))
    model = model_of(op, [("x", x)], [("y", np.float64)], 18, kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 1])
    (y,) = run_model(tmp_path, model, {"x": x})
    np.testing.assert_allclose(y, reference(model, {"x": x})[0], rtol=1e-12)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool"])
def test_global_pools(tmp_path, op):
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    against_ort(tmp_path, model_of(op, [("x", x)], [("y", np.float32)], 13), {"x": x})


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_conv_dtypes(tmp_path, dtype):
    x = RNG.standard_normal((1, 4, 7, 6)).astype(dtype)
    w = RNG.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = RNG.standard_normal(6).astype(dtype)
    model = model_of("Conv", [("x", x), ("w", w), ("b", b)], [("y", dtype)], 13, group=2, strides=[2, 1],
                     pads=[1, 1, 0, 1], dilations=[1, 2])
    feeds = {"x": x, "w": w, "b": b}
    if dtype == np.float16:
        against_ort(tmp_path, model, feeds, rtol=1e-2, atol=1e-2)
    else:  # ONNX Runtime has no double Conv
        (y,) = run_model(tmp_path, model, feeds)
        np.testing.assert_allclose(y, reference(model, feeds)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("attrs", [
    dict(group=3, strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1], output_padding=[1, 2]),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(strides=[3, 2], output_shape=[12, 9]),
])
def test_conv_transpose(tmp_path, attrs):
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = RNG.standard_normal((3, 2, 3, 2)).astype(np.float32)
    b = RNG.standard_normal(2 * attrs.get("group", 1)).astype(np.float32)
    model = model_of("ConvTranspose", [("x", x), ("w", w), ("b", b)], [("y", np.float32)], 13, **attrs)
    against_ort(tmp_path, model, {"x": x, "w": w, "b": b}, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# nn_extra

@pytest.mark.parametrize("mode,coord", [("linear", "half_pixel"), ("cubic", "align_corners"), ("nearest", "asymmetric")])
def test_resize_uint8_rounds_and_saturates(tmp_path, mode, coord):
    x = RNG.integers(0, 256, (1, 1, 4, 5)).astype(np.uint8)
    scales = np.array([1, 1, 1.7, 0.6], np.float32)
    model = model_of("Resize", [("x", x), ("", None), ("scales", scales)], [("y", np.uint8)], 13,
                     initializers=[("scales", scales)], mode=mode, coordinate_transformation_mode=coord)
    (y,) = run_model(tmp_path, model, {"x": x})
    want = reference(model, {"x": x})[0]
    assert y.shape == (1, 1, 6, 3) and y.dtype == np.uint8
    np.testing.assert_array_equal(y, want)


def test_resize_opset_10_nearest_matches_onnxruntime(tmp_path):
    x = RNG.standard_normal((1, 1, 3, 4)).astype(np.float32)
    scales = np.array([1, 1, 2.5, 0.5], np.float32)
    model = model_of("Resize", [("x", x), ("scales", scales)], [("y", np.float32)], 10,
                     initializers=[("scales", scales)], mode="nearest")
    against_ort(tmp_path, model, {"x": x})


def test_resize_sizes_at_run_time(tmp_path):
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    model = model_of("Resize", [("x", x), ("", None), ("", None), ("sizes", (np.int64, [4]))], [("y", np.float32)], 19,
                     mode="linear")
    for sizes in ([1, 2, 5, 2], [1, 2, 3, 4]):
        feeds = {"x": x, "sizes": np.array(sizes, np.int64)}
        (y,) = run_model(tmp_path, model, feeds)
        np.testing.assert_allclose(y, reference(model, feeds)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("equation,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("ii->i", [(3, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ba", [(3, 2)]),
])
def test_einsum(tmp_path, equation, shapes):
    ops = [RNG.standard_normal(s) for s in shapes]
    inputs = [(f"x{i}", v) for i, v in enumerate(ops)]
    (y,), _, _ = run_node(tmp_path, "Einsum", inputs, [("y", np.float64)], opset=12, equation=equation)
    np.testing.assert_allclose(y, np.einsum(equation, *ops), rtol=1e-12, atol=1e-12)


def test_einsum_integers(tmp_path):
    a, b = RNG.integers(-5, 5, (3, 4)).astype(np.int32), RNG.integers(-5, 5, (4,)).astype(np.int32)
    (y,), _, _ = run_node(tmp_path, "Einsum", [("a", a), ("b", b)], [("y", np.int32)], opset=12, equation="ij,j->i")
    np.testing.assert_array_equal(y, a @ b)


def test_det_double(tmp_path):
    x = RNG.standard_normal((2, 3, 4, 4))
    (y,), _, _ = run_node(tmp_path, "Det", [("x", x)], [("y", np.float64)], opset=11)
    np.testing.assert_allclose(y, np.linalg.det(x), rtol=1e-10)


def test_dropout_training_is_seeded_and_inference_is_identity(tmp_path):
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    r, t = np.array(0.3, np.float32), np.array(True)
    model = model_of("Dropout", [("x", x), ("r", r), ("t", t)], [("y", np.float32), ("m", np.bool_)], 13, seed=3)
    y, m = run_model(tmp_path, model, {"x": x, "r": r, "t": t})
    keep = np.random.RandomState(3).uniform(0, 1, x.shape) >= 0.3
    np.testing.assert_array_equal(m, keep)
    np.testing.assert_allclose(y, keep * x / np.float32(0.7), rtol=1e-6)
    y, m = run_model(tmp_path, model, {"x": x, "r": r, "t": np.array(False)})
    np.testing.assert_array_equal(y, x)
    assert m.all()


def test_losses_bad_target_raises_naming_the_node(tmp_path):
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    model = model_of("SoftmaxCrossEntropyLoss", [("x", x), ("t", (np.int64, [2]))], [("y", np.float32)], 13)
    with pytest.raises(rt.ValidationError, match="the_node.*target value 3"):
        run_model(tmp_path, model, {"x": x, "t": np.array([0, 3], np.int64)})


def test_attention_gqa_3d_with_cache_matches_reference(tmp_path):
    q = RNG.standard_normal((2, 3, 4 * 8)).astype(np.float32)
    k = RNG.standard_normal((2, 3, 2 * 8)).astype(np.float32)
    v = RNG.standard_normal((2, 3, 2 * 5)).astype(np.float32)
    pk = RNG.standard_normal((2, 2, 4, 8)).astype(np.float32)
    pv = RNG.standard_normal((2, 2, 4, 5)).astype(np.float32)
    mask = RNG.random((3, 7)) > 0.3
    inputs = [("q", q), ("k", k), ("v", v), ("mask", mask), ("pk", pk), ("pv", pv)]
    outs, model, feeds = run_node(tmp_path, "Attention", inputs,
                                  [("y", np.float32), ("ok", np.float32), ("ov", np.float32), ("qk", np.float32)],
                                  opset=23, q_num_heads=4, kv_num_heads=2, is_causal=1, softcap=2.0,
                                  qk_matmul_output_mode=2)
    for a, b in zip(outs, reference(model, feeds)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
