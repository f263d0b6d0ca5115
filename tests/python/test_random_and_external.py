"""Random ops (checked by shape, dtype and distribution) and ONNX models whose weights live in
external data files."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyflame_rt as rt


def single_node_model(node, inputs, outputs, opset=20):
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def run(model, tmp_path, feeds=None, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return rt.InferenceSession(str(path)).run(None, feeds or {})


def test_random_normal_distribution(tmp_path):
    node = helper.make_node("RandomNormal", [], ["y"], shape=[200, 500], mean=3.0, scale=2.0, seed=7.0)
    (y,) = run(single_node_model(node, [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [200, 500])]), tmp_path)
    assert y.shape == (200, 500) and y.dtype == np.float32
    assert abs(y.mean() - 3.0) < 0.05 and abs(y.std() - 2.0) < 0.05
    # normal: about 68.3% within one standard deviation
    assert abs(np.mean(np.abs(y - 3.0) < 2.0) - 0.6827) < 0.01


def test_random_uniform_like_distribution_and_seed(tmp_path):
    node = helper.make_node("RandomUniformLike", ["x"], ["y"], low=-1.0, high=5.0, seed=3.0,
                            dtype=TensorProto.DOUBLE)
    model = single_node_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [400, 250])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [400, 250])])
    x = np.zeros((400, 250), np.float32)
    (y,) = run(model, tmp_path, {"x": x})
    assert y.shape == x.shape and y.dtype == np.float64
    assert y.min() >= -1.0 and y.max() < 5.0
    assert abs(y.mean() - 2.0) < 0.05 and abs(y.var() - 36 / 12) < 0.05
    counts, _ = np.histogram(y, bins=6, range=(-1, 5))
    assert counts.min() > 0.95 * y.size / 6  # flat
    (again,) = run(model, tmp_path, {"x": x}, name="again.onnx")
    np.testing.assert_array_equal(y, again)  # a seed makes runs repeatable


def test_bernoulli_and_multinomial_frequencies(tmp_path):
    p = np.full((100000,), 0.3, np.float32)
    node = helper.make_node("Bernoulli", ["p"], ["y"])
    model = single_node_model(node, [helper.make_tensor_value_info("p", TensorProto.FLOAT, [100000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000])])
    (y,) = run(model, tmp_path, {"p": p})
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert abs(y.mean() - 0.3) < 0.01

    logits = np.log(np.array([[0.1, 0.2, 0.7]], np.float32))
    node = helper.make_node("Multinomial", ["l"], ["s"], sample_size=30000, seed=1.0)
    model = single_node_model(node, [helper.make_tensor_value_info("l", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("s", TensorProto.INT32, [1, 30000])], opset=7)
    (s,) = run(model, tmp_path, {"l": logits}, name="multinomial.onnx")
    assert s.shape == (1, 30000) and s.dtype == np.int32
    freq = np.bincount(s[0], minlength=3) / s.size
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.7], atol=0.01)


def test_onnx_external_data_loads(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").exists()
    x = rng.standard_normal((5, 64)).astype(np.float32)
    (y,) = rt.InferenceSession(str(path)).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(rt.InvalidModelError, match="external data"):
        rt.InferenceSession(str(path))


def test_onnx_model_with_over_2gb_of_external_weights(tmp_path):
    """Weights past protobuf's 2 GB limit live in a side file; they are memory-mapped, not parsed."""
    n = 2**31 + 4096
    weights = tmp_path / "big.bin"
    with open(weights, "wb") as f:  # sparse file: zeros except one marker byte
        f.seek(n - 1)
        f.write(b"\0")
    marker = n - 12345
    with open(weights, "r+b") as f:
        f.seek(marker)
        f.write(b"\x07")
    big = TensorProto(name="big", data_type=TensorProto.UINT8, dims=[n],
                      data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(n))):
        entry = big.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["big"], ["m"], keepdims=0),
         helper.make_node("Cast", ["m"], ["y"], to=TensorProto.INT64)], "big",
        [], [helper.make_tensor_value_info("y", TensorProto.INT64, [])], initializer=[big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "big.onnx"
    path.write_bytes(model.SerializeToString())
    assert path.stat().st_size < 1 << 20
    (y,) = rt.InferenceSession(str(path)).run(None, {})
    assert int(y) == 7
