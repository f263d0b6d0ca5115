"""Exception classes and the errors the API raises, with their messages."""

import builtins
import errno

import numpy as np
import pytest

import pyflame_rt as rt
from conftest import add_graph


def test_hierarchy():
    assert issubclass(rt.PyFlameRTError, RuntimeError)
    for cls in (rt.InvalidModelError, rt.UnsupportedOperatorError, rt.ValidationError, rt.RunTimeoutError,
                rt.FileNotFoundError):
        assert issubclass(cls, rt.PyFlameRTError), cls
    assert issubclass(rt.FileNotFoundError, builtins.FileNotFoundError)
    assert issubclass(rt.RunTimeoutError, builtins.TimeoutError)
    assert not issubclass(rt.ValidationError, rt.InvalidModelError)


def test_missing_model_file(tmp_path):
    path = tmp_path / "nope.pfm"
    with pytest.raises(FileNotFoundError) as info:
        rt.InferenceSession(str(path))
    e = info.value
    assert isinstance(e, rt.PyFlameRTError)
    assert isinstance(e, rt.FileNotFoundError)
    assert e.errno == errno.ENOENT
    assert e.filename == str(path)
    assert str(path) in str(e)
    with pytest.raises(rt.PyFlameRTError):
        rt.InferenceSession(path)  # os.PathLike


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(rt.InvalidModelError):
        rt.InferenceSession(str(bad))
    empty = tmp_path / "empty.pfm"
    empty.write_bytes(b"")
    with pytest.raises(rt.InvalidModelError):
        rt.InferenceSession(str(empty))


def test_wrong_dtype_feed_is_not_cast():
    s = rt.InferenceSession(add_graph())
    x = np.ones((2, 3), np.float64)  # the model wants float32
    with pytest.raises(rt.ValidationError) as info:
        s.run(None, {"x": x, "y": np.ones((2, 3), np.float32)})
    msg = str(info.value)
    assert "Float32" in msg and "Float64" in msg and "'x'" in msg
    # a plain list becomes float64 / int64 and is refused the same way
    with pytest.raises(rt.ValidationError):
        s.run(None, {"x": [[1.0, 2.0, 3.0]], "y": np.ones((1, 3), np.float32)})


def test_unsupported_feed_dtype():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(rt.ValidationError, match="(?i)complex64"):
        s.run(None, {"x": np.ones((1, 3), np.complex64), "y": np.ones((1, 3), np.float32)})


def test_wrong_shape_feed():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(rt.ValidationError) as info:
        s.run(None, {"x": np.ones((2, 4), np.float32), "y": np.ones((2, 4), np.float32)})
    assert "shape" in str(info.value)
    with pytest.raises(rt.ValidationError):
        s.run(None, {"x": np.ones((3,), np.float32), "y": np.ones((3,), np.float32)})


def test_missing_input():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(rt.ValidationError, match="'y'"):
        s.run(None, {"x": np.ones((1, 3), np.float32)})


def test_unknown_input_name():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(rt.ValidationError, match="bogus"):
        s.run(None, {"x": np.ones((1, 3), np.float32), "y": np.ones((1, 3), np.float32),
                     "bogus": np.ones((1, 3), np.float32)})


def test_unknown_output_name():
    s = rt.InferenceSession(add_graph())
    feed = {"x": np.ones((1, 3), np.float32), "y": np.ones((1, 3), np.float32)}
    with pytest.raises(rt.ValidationError, match="nope"):
        s.run(["nope"], feed)


def test_bad_feed_container():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(TypeError):
        s.run(None, [np.ones((1, 3), np.float32)])
    with pytest.raises(TypeError):
        s.run(None, {1: np.ones((1, 3), np.float32)})


@pytest.mark.parametrize("field,value", [
    ("device", "invalid_device"),
    ("num_threads", -1),
    ("execution_mode", "sideways"),
    ("log_level", "loud"),
    ("memory_limit", -5),
    ("optimization_level", 7),
])
def test_bad_session_options_refused(field, value, tmp_path):
    opts = rt.SessionOptions()
    setattr(opts, field, value)
    assert opts.validate(), field
    with pytest.raises(rt.ValidationError):
        rt.InferenceSession(add_graph(), opts)
    path = tmp_path / "add.pfm"
    rt.save_model(add_graph(), path)
    with pytest.raises(rt.ValidationError):
        rt.InferenceSession(str(path), opts)


def test_bad_run_options():
    s = rt.InferenceSession(add_graph())
    feed = {"x": np.ones((1, 3), np.float32), "y": np.ones((1, 3), np.float32)}
    with pytest.raises(rt.ValidationError):
        s.run(None, feed, rt.RunOptions(log_level="loud"))
    with pytest.raises(rt.ValidationError):
        s.run(None, feed, rt.RunOptions(timeout_ms=-1))


def test_unsupported_operator():
    g = rt.Graph("unsupported")
    g.add_input("x", [1], rt.DType.Float32)
    g.add_node("weird", "NoSuchOperatorAnywhere", inputs=["x"], outputs=["y"])
    g.add_output("y", [1], rt.DType.Float32)
    with pytest.raises(rt.UnsupportedOperatorError) as info:
        rt.InferenceSession(g)
    assert info.value.op_type == "NoSuchOperatorAnywhere"
    assert "NoSuchOperatorAnywhere" in str(info.value)


def test_invalid_graph_refused():
    g = rt.Graph("broken")
    g.add_input("x", [1], rt.DType.Float32)
    g.add_node("n", "Relu", inputs=["undefined"], outputs=["y"])
    g.add_output("y", [1], rt.DType.Float32)
    with pytest.raises(rt.PyFlameRTError, match="undefined"):
        rt.InferenceSession(g)


def test_end_profiling_without_profiling():
    s = rt.InferenceSession(add_graph())
    with pytest.raises(rt.PyFlameRTError):
        s.end_profiling()


def test_session_needs_a_model():
    with pytest.raises(TypeError):
        rt.InferenceSession(None)
    with pytest.raises(TypeError):
        rt.InferenceSession(12345)
