"""InferenceSession from Python: results against numpy, feeds, outputs, metadata, options."""

import numpy as np
import pytest

import pyflame_rt as rt
from conftest import ATOL, RTOL, add_graph


def test_mlp_matches_numpy(mlp, mlp_session):
    rng = np.random.default_rng(7)
    for batch in (1, 3, 16):  # dynamic batch dimension
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        y_ref, h2_ref = mlp.reference(x)
        results = mlp_session.run(None, {"x": x})
        assert isinstance(results, list) and len(results) == 2
        y, h2 = results
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (batch, 3)
        np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(h2, h2_ref, rtol=RTOL, atol=ATOL)


def test_output_selection(mlp, mlp_session):
    x = np.ones((2, 4), np.float32)
    y_ref, h2_ref = mlp.reference(x)
    everything = mlp_session.run([], {"x": x})
    assert len(everything) == 2
    h2, y = mlp_session.run(["h2", "y"], {"x": x})
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h2, h2_ref, rtol=RTOL, atol=ATOL)
    (only,) = mlp_session.run(("h2",), {"x": x})
    np.testing.assert_allclose(only, h2_ref, rtol=RTOL, atol=ATOL)
    (single,) = mlp_session.run("y", {"x": x})
    np.testing.assert_allclose(single, y_ref, rtol=RTOL, atol=ATOL)


def test_feed_kinds(mlp, mlp_session):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    view = x[:, ::2]  # non-contiguous
    assert not view.flags.c_contiguous
    y_ref, _ = mlp.reference(np.ascontiguousarray(view))
    for feed in (view, rt.from_numpy(view), np.asfortranarray(view), np.array(view.tolist(), np.float32)):
        (y,) = mlp_session.run(["y"], {"x": feed})
        np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    # a read-only array is fine too
    ro = np.ascontiguousarray(view)
    ro.setflags(write=False)
    (y,) = mlp_session.run(["y"], {"x": ro})
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)


def test_results_are_independent(mlp_session):
    x = np.ones((2, 4), np.float32)
    first, _ = mlp_session.run(None, {"x": x})
    keep = first.copy()
    first[:] = 123.0  # writable, and writing changes nothing in the session
    second, _ = mlp_session.run(None, {"x": x})
    np.testing.assert_array_equal(second, keep)
    np.testing.assert_array_equal(x, np.ones((2, 4), np.float32))


def test_outputs_aliasing_inputs_or_weights_are_copies():
    g = rt.Graph("alias")
    g.add_input("x", [3], rt.DType.Float32)
    g.add_initializer("w", np.array([1.0, 2.0, 3.0], np.float32))
    g.add_node("id_x", "Identity", inputs=["x"], outputs=["x_out"])
    g.add_node("id_w", "Identity", inputs=["w"], outputs=["w_out"])
    g.add_output("x_out", [3], rt.DType.Float32)
    g.add_output("w_out", [3], rt.DType.Float32)
    s = rt.InferenceSession(g)
    x = np.array([4.0, 5.0, 6.0], np.float32)
    x_out, w_out = s.run(None, {"x": x})
    x_out[:] = 0
    w_out[:] = 0
    np.testing.assert_array_equal(x, [4.0, 5.0, 6.0])
    _, w_again = s.run(None, {"x": x})
    np.testing.assert_array_equal(w_again, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("np_dtype,dtype", [
    (np.float32, rt.DType.Float32),
    (np.float64, rt.DType.Float64),
    (np.int64, rt.DType.Int64),
    (np.int32, rt.DType.Int32),
])
def test_add_dtypes(np_dtype, dtype):
    s = rt.InferenceSession(add_graph(dtype))
    x = (np.arange(6) - 2).reshape(2, 3).astype(np_dtype)
    y = (np.arange(6) * 3).reshape(2, 3).astype(np_dtype)
    (z,) = s.run(None, {"x": x, "y": y})
    assert z.dtype == np_dtype
    np.testing.assert_array_equal(z, x + y)


def test_broadcast_add():
    g = rt.Graph("bcast")
    g.add_input("x", [None, 3], rt.DType.Float32)
    g.add_input("y", [3], rt.DType.Float32)
    g.add_node("add", "Add", inputs=["x", "y"], outputs=["z"])
    g.add_output("z", [None, 3], rt.DType.Float32)
    s = rt.InferenceSession(g)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([10, 20, 30], np.float32)
    (z,) = s.run(None, {"x": x, "y": y})
    np.testing.assert_array_equal(z, x + y)


def test_io_description(mlp_session):
    inputs = mlp_session.get_inputs()
    assert len(inputs) == 1
    x = inputs[0]
    assert isinstance(x, rt.NodeArg)
    assert x.name == "x" and x.shape == [None, 4] and x.type == "tensor(float)"
    assert x.dtype is rt.DType.Float32
    outputs = mlp_session.get_outputs()
    assert [o.name for o in outputs] == ["y", "h2"]
    assert outputs[0].shape == [None, 3]
    assert "x" in repr(x)


def test_modelmeta():
    g = add_graph()
    g.metadata.producer_name = "pytest"
    g.metadata.producer_version = "9.9"
    g.metadata.domain = "ai.pyflame.test"
    g.metadata.version = 42
    g.metadata.description = "adds"
    g.metadata.custom_metadata = {"a": "1", "b": "2"}
    meta = rt.InferenceSession(g).get_modelmeta()
    assert isinstance(meta, rt.ModelMetadata)
    assert meta.producer_name == "pytest"
    assert meta.producer_version == "9.9"
    assert meta.domain == "ai.pyflame.test"
    assert meta.version == 42
    assert meta.description == "adds"
    assert meta.custom_metadata == {"a": "1", "b": "2"}


def test_providers_and_options(mlp):
    opts = rt.SessionOptions()
    opts.num_threads = 2
    opts.log_level = "error"
    s = rt.InferenceSession(mlp.graph(), opts, providers=["CPUExecutionProvider"])
    assert s.get_providers() == ["CPUExecutionProvider"]
    assert s.options.num_threads == 2
    assert rt.InferenceSession(mlp.graph(), options=None).get_providers() == ["CPUExecutionProvider"]


def test_graph_changes_after_creation_do_not_reach_session(mlp):
    g = mlp.graph()
    s = rt.InferenceSession(g)
    g.add_node("extra", "Relu", inputs=["y"], outputs=["y2"])
    g.add_output("y2", [None, 3], rt.DType.Float32)
    assert len(s.run(None, {"x": np.ones((1, 4), np.float32)})) == 2


def test_session_graph_is_a_copy(mlp_session):
    g = mlp_session.graph
    assert isinstance(g, rt.Graph)
    # The optimized graph (level 2): fc1 took relu1 in as its activation.
    assert [(n.name, n.op_type) for n in g.nodes] == [("fc1", "FusedGemm"), ("fc2", "Gemm"), ("add", "Add")]
    g.add_node("extra", "Relu", inputs=["y"], outputs=["z"])
    assert [n.name for n in mlp_session.graph.nodes] == ["fc1", "fc2", "add"]


def test_option_defaults():
    o = rt.SessionOptions()
    assert o.device == "cpu"
    assert o.num_threads == 0
    assert o.enable_profiling is False
    assert o.execution_mode == "sequential"
    assert o.log_level == "warning"
    assert o.memory_limit == 0
    assert o.optimization_level == 2
    assert o.profile_file_prefix
    assert o.validate() == []

    r = rt.RunOptions()
    assert r.log_level is None and r.tag is None and r.timeout_ms is None
    r.tag = "t"
    r.timeout_ms = 5000
    assert r.tag == "t" and r.timeout_ms == 5000
    r.timeout_ms = None
    assert r.timeout_ms is None
    assert rt.RunOptions(tag="x", timeout_ms=10).tag == "x"

    c = rt.CompileOptions()
    assert c.cache_dir is None and c.dynamic_batch is False and c.optimization_level == 2
    c.cache_dir = "/tmp/cache"
    assert c.cache_dir == "/tmp/cache"

    i = rt.ImportOptions()
    assert (i.validate, i.infer_shapes, i.optimize, i.strict) == (True, True, False, False)
    assert rt.SessionOptions(num_threads=3).num_threads == 3
    with pytest.raises(AttributeError):
        rt.SessionOptions(no_such_option=1)


def test_session_options_validate_lists_problems():
    o = rt.SessionOptions()
    o.device = "invalid_device"
    o.num_threads = -1
    o.optimization_level = 9
    problems = o.validate()
    assert len(problems) >= 3
    assert any("invalid_device" in p for p in problems)


def test_run_options_accepted(mlp_session):
    ro = rt.RunOptions()
    ro.tag = "batch_1"
    ro.log_level = "error"
    ro.timeout_ms = 60_000
    (y,) = mlp_session.run(["y"], {"x": np.ones((1, 4), np.float32)}, ro)
    assert y.shape == (1, 3)
    (y,) = mlp_session.run(["y"], {"x": np.ones((1, 4), np.float32)}, run_options=None)
    assert y.shape == (1, 3)


def test_run_timeout_zero_raises_timeout_error(mlp_session):
    ro = rt.RunOptions(timeout_ms=0)
    x = np.ones((1, 4), np.float32)
    try:
        mlp_session.run(None, {"x": x}, ro)
    except rt.RunTimeoutError as e:  # a deadline of 0 ms may or may not have passed already
        assert isinstance(e, TimeoutError) and isinstance(e, rt.PyFlameRTError)
    # the session stays usable
    assert len(mlp_session.run(None, {"x": x})) == 2
