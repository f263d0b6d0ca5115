"""Building Graphs from Python: inputs/outputs, initializers, nodes, attributes, metadata, .pfm I/O."""

import os
import pathlib

import numpy as np
import pytest

import pyflame_rt as rt
from conftest import ATOL, RTOL, MLP


def test_graph_structure(mlp):
    g = mlp.graph()
    assert g.name == "mlp"
    assert [i.name for i in g.inputs] == ["x"]
    assert g.inputs[0].shape == [None, 4]
    assert g.inputs[0].dtype is rt.DType.Float32
    assert [o.name for o in g.outputs] == ["y", "h2"]
    assert [n.name for n in g.nodes] == ["fc1", "relu1", "fc2", "add"]
    assert [n.op_type for n in g.nodes] == ["Gemm", "Relu", "Gemm", "Add"]
    fc1 = g.nodes[0]
    assert fc1.inputs == ["x", "fc1.weight", "fc1.bias"]
    assert fc1.outputs == ["h1"]
    assert fc1.domain == ""
    assert g.validate() == []
    g.name = "renamed"
    assert g.name == "renamed"
    assert "renamed" in repr(g)


def test_initializers(mlp):
    g = mlp.graph()
    inits = g.initializers
    assert list(inits) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "skip"]
    np.testing.assert_array_equal(inits["fc1.weight"], mlp.w1)
    assert inits["fc1.weight"].dtype == np.float32
    assert g.has_initializer("skip") and not g.has_initializer("nope")
    np.testing.assert_array_equal(g.get_initializer("fc2.bias"), mlp.b2)
    with pytest.raises(rt.ValidationError):
        g.get_initializer("nope")
    # copies: changing what we got back changes nothing
    inits["skip"][:] = 0
    np.testing.assert_array_equal(g.get_initializer("skip"), mlp.skip)


def test_initializer_from_tensor_and_array_like():
    g = rt.Graph("g")
    t = rt.from_numpy(np.arange(3, dtype=np.int64))
    g.add_initializer("t", t)
    g.add_initializer("l", [1.0, 2.0])
    np.testing.assert_array_equal(g.get_initializer("t"), [0, 1, 2])
    assert g.get_initializer("l").dtype == np.float64


def test_attributes_conversions():
    sub = rt.Graph("body")
    tensor = rt.from_numpy(np.array([1, 2], np.int32))
    g = rt.Graph("attrs")
    g.add_input("x", [2], rt.DType.Float32)
    node = g.add_node("n", "Custom", inputs=["x"], outputs=["y"], domain="my.domain", attributes={
        "i": 3,
        "b": True,
        "npi": np.int64(-4),
        "f": 0.25,
        "npf": np.float32(1.5),
        "s": "hello",
        "ints": [1, 2, 3],
        "tuple_ints": (4, np.int32(5)),
        "floats": [1.0, 2, 3.5],
        "strings": ["a", "b"],
        "empty": [],
        "arr": np.array([[1.0, 2.0]], np.float32),
        "tensor": tensor,
        "graph": sub,
    })
    assert node.domain == "my.domain"
    a = node.attributes
    assert a["i"] == 3 and type(a["i"]) is int
    assert a["b"] == 1 and type(a["b"]) is int
    assert a["npi"] == -4 and type(a["npi"]) is int
    assert a["f"] == 0.25 and type(a["f"]) is float
    assert a["npf"] == 1.5 and type(a["npf"]) is float
    assert a["s"] == "hello"
    assert a["ints"] == [1, 2, 3]
    assert a["tuple_ints"] == [4, 5]
    assert a["floats"] == [1.0, 2.0, 3.5] and all(type(v) is float for v in a["floats"])
    assert a["strings"] == ["a", "b"]
    assert a["empty"] == []
    assert isinstance(a["arr"], np.ndarray) and a["arr"].dtype == np.float32
    np.testing.assert_array_equal(a["arr"], [[1.0, 2.0]])
    np.testing.assert_array_equal(a["tensor"], [1, 2])
    assert isinstance(a["graph"], rt.Graph) and a["graph"].name == "body"

    assert node.get_attribute("i") == 3
    assert node.get_attribute("missing") is None
    assert node.get_attribute("missing", 17) == 17
    assert node.has_attribute("s") and not node.has_attribute("missing")
    assert sorted(node.attribute_names()) == sorted(a)


@pytest.mark.parametrize("bad", [{"k": 1}, [1, "a"], object(), [[1, 2]]])
def test_bad_attribute_values(bad):
    g = rt.Graph("g")
    with pytest.raises(rt.ValidationError):
        g.add_node("n", "Relu", inputs=["x"], outputs=["y"], attributes={"a": bad})


def test_validate_reports_problems():
    g = rt.Graph("broken")
    g.add_input("x", [1], rt.DType.Float32)
    g.add_node("n", "Relu", inputs=["undefined"], outputs=["y"])
    g.add_output("y", [1], rt.DType.Float32)
    g.add_output("nowhere", [1], rt.DType.Float32)
    problems = g.validate()
    assert isinstance(problems, list) and len(problems) >= 2
    assert all(isinstance(p, str) for p in problems)
    assert any("undefined" in p for p in problems)
    assert any("nowhere" in p for p in problems)


def test_topological_sort_and_cycle():
    g = rt.Graph("order")
    g.add_input("x", [1], rt.DType.Float32)
    g.add_node("second", "Relu", inputs=["a"], outputs=["b"])
    g.add_node("first", "Relu", inputs=["x"], outputs=["a"])
    g.add_output("b", [1], rt.DType.Float32)
    assert [n.name for n in g.topological_sort()] == ["first", "second"]

    c = rt.Graph("cycle")
    c.add_node("p", "Relu", inputs=["q_out"], outputs=["p_out"])
    c.add_node("q", "Relu", inputs=["p_out"], outputs=["q_out"])
    with pytest.raises(rt.ValidationError, match="cycle"):
        c.topological_sort()


def test_metadata_and_opsets():
    g = rt.Graph("meta")
    md = g.metadata
    md.producer_name = "tests"
    md.producer_version = "1.2"
    md.domain = "ai.test"
    md.version = 7
    md.description = "a model"
    md.custom_metadata = {"k": "v"}
    assert g.metadata.producer_name == "tests"
    assert g.metadata.model_version == 7
    assert g.metadata.doc_string == "a model"
    assert g.metadata.custom_metadata == {"k": "v"}
    g.opset_imports = {"": 17}
    assert g.opset_imports == {"": 17}
    assert g.opset_version() == 17


def test_save_load_round_trip(tmp_path, mlp):
    g = mlp.graph()
    g.metadata.producer_name = "pytest"
    g.metadata.version = 3
    g.metadata.custom_metadata = {"author": "me"}
    path = tmp_path / "mlp.pfm"
    rt.save_model(g, path)  # os.PathLike
    assert path.exists()
    assert rt.is_pfm_file(str(path))

    h = rt.load_model(str(path))
    assert h.name == g.name
    assert [(n.name, n.op_type, n.inputs, n.outputs) for n in h.nodes] == \
           [(n.name, n.op_type, n.inputs, n.outputs) for n in g.nodes]
    assert [n.attributes for n in h.nodes][0]["transB"] == 1
    assert h.nodes[2].attributes["alpha"] == pytest.approx(mlp.alpha)
    assert h.inputs == g.inputs and h.outputs == g.outputs
    assert list(h.initializers) == list(g.initializers)
    for k, v in g.initializers.items():
        np.testing.assert_array_equal(h.initializers[k], v)
    assert h.metadata.producer_name == "pytest"
    assert h.metadata.version == 3
    assert h.metadata.custom_metadata == {"author": "me"}

    # the loaded model computes the same thing, also from its path
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    y_ref, _ = mlp.reference(x)
    for session in (rt.InferenceSession(h), rt.InferenceSession(path), rt.InferenceSession(os.fspath(path))):
        y, = session.run(["y"], {"x": x})
        np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)


def test_save_load_attribute_kinds(tmp_path):
    g = rt.Graph("kinds")
    g.add_input("x", [2], rt.DType.Float32)
    g.add_node("n", "Identity", inputs=["x"], outputs=["y"], attributes={
        "i": 1, "f": 2.5, "s": "str", "ints": [1, 2], "floats": [0.5], "strings": ["u", "v"],
        "t": np.array([1, 2, 3], np.int64),
    })
    g.add_output("y", [2], rt.DType.Float32)
    rt.save_model(g, tmp_path / "k.pfm")
    a = rt.load_model(tmp_path / "k.pfm").nodes[0].attributes
    assert a["i"] == 1 and a["f"] == 2.5 and a["s"] == "str"
    assert a["ints"] == [1, 2] and a["floats"] == [0.5] and a["strings"] == ["u", "v"]
    np.testing.assert_array_equal(a["t"], [1, 2, 3])


def test_load_missing_and_corrupt(tmp_path, mlp):
    missing = tmp_path / "missing.pfm"
    with pytest.raises(FileNotFoundError):
        rt.load_model(missing)
    with pytest.raises(rt.PyFlameRTError):
        rt.load_model(missing)

    garbage = tmp_path / "garbage.pfm"
    garbage.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(rt.InvalidModelError):
        rt.load_model(garbage)

    good = tmp_path / "good.pfm"
    rt.save_model(mlp.graph(), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pfm"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(rt.InvalidModelError):
        rt.load_model(truncated)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.pfm"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(rt.InvalidModelError):
        rt.load_model(corrupt)
