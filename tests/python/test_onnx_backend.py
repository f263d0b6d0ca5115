"""pyflame_rt.backend under ONNX's own backend test runner (onnx.backend.test.BackendTest).

onnx 1.23 no longer ships node test data files: its runner builds the node tests in memory
from onnx.backend.test.case.node (models plus numpy-computed expected outputs) and calls
backend.prepare(model).run(inputs), so BackendTest works with the installed package as is.
Only a handful of node tests that PyFlameRT passes are included here; the full ONNX test data
(all four suites) runs through tests/conformance.
"""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402
from onnx import helper  # noqa: E402

import pyflame_rt  # noqa: E402
import pyflame_rt.backend as backend  # noqa: E402

NODE_TESTS = [
    "test_relu",
    "test_add",
    "test_add_bcast",
    "test_matmul_2d",
    "test_softmax_axis_1",
    "test_conv_with_strides_padding",
    "test_maxpool_2d_default",
    "test_averagepool_2d_default",
    "test_globalaveragepool",
    "test_flatten_axis0",
    "test_transpose_default",
    "test_concat_2d_axis_0",
    "test_identity",
    "test_reshape_reordered_all_dims",
    "test_gemm_default_no_bias",
    "test_sigmoid",
    "test_tanh",
]

with warnings.catch_warnings():
    # Generating the node cases runs numpy code that overflows or divides by zero on purpose.
    warnings.simplefilter("ignore", RuntimeWarning)
    backend_test = onnx.backend.test.BackendTest(backend, __name__)

for _name in NODE_TESTS:
    backend_test.include(rf"^{_name}_cpu$")


def _selected(test_cases):
    """BackendTest turns every test it does not run into a unittest skip (each of ~1,900 node
    tests on CPU, all on CUDA); keep only the included ones so pytest does not list thousands
    of skips."""
    selected = {}
    for case_name, case in test_cases.items():
        for attr in [a for a in vars(case) if a.startswith("test_")]:
            if getattr(getattr(case, attr), "__unittest_skip__", False):
                delattr(case, attr)
        if any(a.startswith("test_") for a in vars(case)):
            selected[case_name] = case
    return selected


# The ONNX documentation's pattern is globals().update(backend_test.test_cases).
globals().update(_selected(backend_test.test_cases))


def test_all_included_node_tests_are_collected():
    names = {a for case in _selected(backend_test.test_cases).values() for a in vars(case)
             if a.startswith("test_")}
    assert names == {f"{n}_cpu" for n in NODE_TESTS}


# ---- the backend API directly ----

def test_supports_device():
    assert backend.supports_device("CPU")
    assert backend.PyFlameRTBackend.supports_device("CPU")
    assert not backend.supports_device("CUDA")
    assert not backend.supports_device("CUDA:0")
    with pytest.raises(ValueError, match="CPU"):
        backend.prepare(_relu_model(), "CUDA")


def _relu_model():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_prepare_model_proto_bytes_and_path(tmp_path):
    model = _relu_model()
    x = np.array([[-1, 0, 2], [3, -4, 5]], np.float32)
    expected = np.maximum(x, 0)
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    for source in (model, model.SerializeToString(), str(path), path):
        rep = backend.prepare(source, "CPU")
        assert rep.input_names == ["x"] and rep.output_names == ["y"]
        for inputs in ([x], (x,), x, {"x": x}):
            out = rep.run(inputs)
            assert len(out) == 1
            np.testing.assert_array_equal(out[0], expected)
            np.testing.assert_array_equal(out["y"], expected)


def test_prepare_graph_and_session():
    g = pyflame_rt.Graph("relu")
    g.add_input("x", [2], pyflame_rt.DType.Float32)
    g.add_node("relu", "Relu", inputs=["x"], outputs=["y"])
    g.add_output("y", [2], pyflame_rt.DType.Float32)
    x = np.array([-1, 1], np.float32)
    for source in (g, pyflame_rt.InferenceSession(g)):
        np.testing.assert_array_equal(backend.prepare(source).run([x])[0], [0, 1])


def test_prepare_passes_session_options_and_ignores_unknown_keywords():
    rep = backend.prepare(_relu_model(), num_threads=1, rtol=1e-3)
    assert rep.session.options.num_threads == 1


def test_run_model():
    x = np.ones((2, 3), np.float32)
    (y,) = backend.run_model(_relu_model(), [x])
    np.testing.assert_array_equal(y, x)


def test_run_node():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, -1, 2], np.float32)
    out = backend.run_node(helper.make_node("Add", ["a", "b"], ["c"]), [a, b])
    np.testing.assert_array_equal(out["c"], a + b)
    out = backend.run_node(helper.make_node("Relu", ["x"], ["y"]), {"x": a - 3},
                           outputs_info=[(np.float32, (2, 3))])
    np.testing.assert_array_equal(out[0], np.maximum(a - 3, 0))
    out = backend.run_node(helper.make_node("Relu", ["x"], ["y"]), [a - 3], opset_version=13)
    np.testing.assert_array_equal(out.y, np.maximum(a - 3, 0))


def test_errors_are_pyflame_errors():
    with pytest.raises(pyflame_rt.UnsupportedOperatorError):
        backend.run_node(helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example"),
                         [np.ones(2, np.float32)], outputs_info=[(np.float32, (2,))])
    with pytest.raises(ValueError, match="inputs"):
        backend.run_node(helper.make_node("Add", ["a", "b"], ["c"]), [np.ones(2, np.float32)])
    with pytest.raises(TypeError):
        backend.prepare(12)
