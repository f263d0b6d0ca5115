"""Custom operators implemented in Python, registered in the OperatorRegistry, run in sessions."""

import numpy as np
import pytest

import pyflame_rt as rt


@pytest.fixture
def op_name(request):
    name = "PyTest" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    yield name
    rt.unregister_op(name)


def single_op_graph(op_type, attributes=None, n_inputs=1, shape=(None, 3)):
    g = rt.Graph("custom")
    names = [f"x{i}" for i in range(n_inputs)]
    for n in names:
        g.add_input(n, list(shape), rt.DType.Float32)
    g.add_node("custom", op_type, inputs=names, outputs=["c"], attributes=attributes or {})
    g.add_node("relu", "Relu", inputs=["c"], outputs=["y"])
    g.add_output("y", list(shape), rt.DType.Float32)
    return g


def test_register_and_run(op_name):
    seen = {}

    def affine(inputs, attrs):
        seen["inputs"] = [(type(a), a.dtype, a.shape) for a in inputs]
        seen["attrs"] = dict(attrs)
        x, b = inputs
        return (x * attrs["alpha"] + b + attrs["shift"]).astype(np.float32)

    rt.register_op(op_name, affine)
    assert rt.has_op(op_name)
    assert op_name in rt.registered_ops()

    attributes = {
        "alpha": 2.0, "shift": -1, "axes": [0, 1], "weights": [0.5, 1.5], "label": "lbl", "names": ["p", "q"],
        "table": np.array([1, 2, 3], np.int32),
    }
    session = rt.InferenceSession(single_op_graph(op_name, attributes, n_inputs=2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    (y,) = session.run(None, {"x0": x, "x1": b})
    np.testing.assert_allclose(y, np.maximum(x * 2.0 + b - 1, 0), rtol=1e-6, atol=1e-6)

    assert seen["inputs"] == [(np.ndarray, np.float32, (4, 3))] * 2
    a = seen["attrs"]
    assert a["alpha"] == 2.0 and type(a["alpha"]) is float
    assert a["shift"] == -1 and type(a["shift"]) is int
    assert a["axes"] == [0, 1]
    assert a["weights"] == [0.5, 1.5]
    assert a["label"] == "lbl"
    assert a["names"] == ["p", "q"]
    assert isinstance(a["table"], np.ndarray) and a["table"].dtype == np.int32
    np.testing.assert_array_equal(a["table"], [1, 2, 3])


def test_decorator_form(op_name):
    @rt.register_op(op_name)
    def negate(inputs, attrs):
        return -inputs[0]

    assert callable(negate)
    session = rt.InferenceSession(single_op_graph(op_name))
    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    (y,) = session.run(None, {"x0": x})
    np.testing.assert_array_equal(y, np.maximum(-x, 0))


def test_returns_array_like_and_tensor(op_name):
    rt.register_op(op_name, lambda inputs, attrs: rt.from_numpy(inputs[0] + 1))
    session = rt.InferenceSession(single_op_graph(op_name))
    (y,) = session.run(None, {"x0": np.zeros((2, 3), np.float32)})
    np.testing.assert_array_equal(y, np.ones((2, 3), np.float32))


def test_python_exception_propagates(op_name):
    def boom(inputs, attrs):
        raise ValueError("boom from python")

    rt.register_op(op_name, boom)
    session = rt.InferenceSession(single_op_graph(op_name))
    with pytest.raises(ValueError, match="boom from python"):
        session.run(None, {"x0": np.zeros((1, 3), np.float32)})
    # the session is still usable after the failure
    rt.register_op(op_name, lambda inputs, attrs: inputs[0])  # affects only new sessions
    with pytest.raises(ValueError):
        session.run(None, {"x0": np.zeros((1, 3), np.float32)})


def test_returning_none_or_bad_dtype(op_name):
    rt.register_op(op_name, lambda inputs, attrs: None)
    session = rt.InferenceSession(single_op_graph(op_name))
    with pytest.raises(rt.ValidationError, match=op_name):
        session.run(None, {"x0": np.zeros((1, 3), np.float32)})

    rt.register_op(op_name, lambda inputs, attrs: np.zeros((1, 3), "datetime64[s]"))
    session = rt.InferenceSession(single_op_graph(op_name))
    with pytest.raises(rt.ValidationError, match="datetime64"):
        session.run(None, {"x0": np.zeros((1, 3), np.float32)})


def test_unregister(op_name):
    rt.register_op(op_name, lambda inputs, attrs: inputs[0])
    assert rt.unregister_op(op_name) is True
    assert rt.unregister_op(op_name) is False
    assert not rt.has_op(op_name)
    with pytest.raises(rt.UnsupportedOperatorError):
        rt.InferenceSession(single_op_graph(op_name))


def test_inputs_are_copies(op_name):
    def mutate(inputs, attrs):
        inputs[0][...] = 100.0  # must not reach the caller's array
        return inputs[0]

    rt.register_op(op_name, mutate)
    session = rt.InferenceSession(single_op_graph(op_name))
    x = np.ones((1, 3), np.float32)
    (y,) = session.run(None, {"x0": x})
    np.testing.assert_array_equal(x, np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(y, np.full((1, 3), 100.0, np.float32))
