"""ONNX import from Python: ONNXImporter, ImportResult/ImportStats, from_onnx; checked against numpy
and ONNX Runtime."""

import numpy as np
import pytest

import pyflame_rt as rt
from conftest import ATOL, RTOL

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(11)
W = RNG.standard_normal((5, 4)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)
SKIP = RNG.standard_normal(5).astype(np.float32)


def reference(x):
    return np.maximum(x @ W.T + B, 0) + SKIP


def make_model(op_for_relu="Relu", opset=17):
    nodes = [
        helper.make_node("Gemm", ["input", "W", "B"], ["h"], name="fc", transB=1),
        helper.make_node(op_for_relu, ["h"], ["r"], name="act"),
        helper.make_node("Add", ["r", "SKIP"], ["output"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "onnx_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
                     numpy_helper.from_array(SKIP, "SKIP")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pytest-onnx", producer_version="0.0.1")
    model.ir_version = 10  # what onnxruntime 1.30 reads (onnx 1.23 writes 14 by default)
    model.model_version = 5
    model.doc_string = "tiny mlp"
    helper.set_model_props(model, {"origin": "test_import"})
    return model


@pytest.fixture
def onnx_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(make_model(), str(path))
    return path


def test_importer_stats_and_graph(onnx_path):
    importer = rt.import_module.ONNXImporter()
    result = importer.import_model(str(onnx_path))
    assert isinstance(result, rt.ImportResult)
    assert result.success, result.error
    assert result.error == ""
    stats = result.stats
    assert isinstance(stats, rt.ImportStats)
    assert stats.node_count == 3
    assert stats.initializer_count == 3
    assert stats.parameter_count == W.size + B.size + SKIP.size
    assert stats.import_time_ms >= 0.0
    assert isinstance(stats.warnings, list)

    g = result.graph
    assert isinstance(g, rt.Graph)
    assert [n.op_type for n in g.nodes] == ["Gemm", "Relu", "Add"]
    assert g.nodes[0].attributes["transB"] == 1
    assert g.inputs[0].shape == [None, 4]
    np.testing.assert_array_equal(g.initializers["W"], W)
    assert g.opset_version() == 17

    session = rt.InferenceSession(result.graph)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    (y,) = session.run(None, {"input": x})
    np.testing.assert_allclose(y, reference(x), rtol=RTOL, atol=ATOL)


def test_importer_options_and_pathlike(onnx_path, tmp_path):
    opts = rt.ImportOptions()
    opts.optimize = True
    result = rt.import_module.ONNXImporter().import_model(onnx_path, opts)  # os.PathLike
    assert result.success, result.error
    assert not result.stats.warnings
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    (y,) = rt.InferenceSession(result.graph).run(None, {"input": x})
    np.testing.assert_allclose(y, reference(x), rtol=RTOL, atol=ATOL)  # optimized graph, same values
    # strict: a warning (here: an operator nobody registered) fails the import
    unknown = tmp_path / "unknown_op.onnx"
    onnx.save(make_model(op_for_relu="NotARealOnnxOp"), str(unknown))
    opts.strict = True
    strict = rt.import_module.ONNXImporter().import_model(unknown, opts)
    assert not strict.success and strict.graph is None and "NotARealOnnxOp" in strict.error


def test_supported_opsets():
    opsets = rt.import_module.ONNXImporter().supported_opsets()
    assert isinstance(opsets, list) and all(isinstance(v, int) for v in opsets)
    assert set(range(9, 22)) <= set(opsets)
    assert opsets == sorted(opsets)


def test_from_onnx_matches_numpy_and_onnxruntime(onnx_path):
    session = rt.from_onnx(str(onnx_path))
    assert isinstance(session, rt.InferenceSession)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert session.get_inputs()[0].shape == [None, 4]
    meta = session.get_modelmeta()
    assert meta.producer_name == "pytest-onnx"
    assert meta.producer_version == "0.0.1"
    assert meta.version == 5
    assert meta.description == "tiny mlp"
    assert meta.custom_metadata == {"origin": "test_import"}

    x = RNG.standard_normal((7, 4)).astype(np.float32)
    (y,) = session.run(None, {"input": x})
    np.testing.assert_allclose(y, reference(x), rtol=RTOL, atol=ATOL)

    ort = pytest.importorskip("onnxruntime")
    ort_session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y_ort,) = ort_session.run(None, {"input": x})
    np.testing.assert_allclose(y, y_ort, rtol=RTOL, atol=ATOL)


def test_from_onnx_with_options(onnx_path):
    opts = rt.ImportOptions()
    opts.infer_shapes = False
    so = rt.SessionOptions(num_threads=1)
    session = rt.from_onnx(onnx_path, opts, session_options=so, providers=["CPUExecutionProvider"])
    assert session.options.num_threads == 1


def test_onnx_path_straight_into_session(onnx_path):
    session = rt.InferenceSession(str(onnx_path))
    x = np.ones((1, 4), np.float32)
    (y,) = session.run(None, {"input": x})
    np.testing.assert_allclose(y, reference(x), rtol=RTOL, atol=ATOL)


def test_from_onnx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        rt.from_onnx(str(tmp_path / "missing.onnx"))
    assert isinstance(info.value, rt.PyFlameRTError)
    with pytest.raises(rt.FileNotFoundError):
        rt.import_module.ONNXImporter().import_model(str(tmp_path / "missing.onnx"))


def test_from_onnx_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07definitely not protobuf" * 3)
    with pytest.raises(rt.InvalidModelError):
        rt.from_onnx(str(bad))
    result = rt.import_module.ONNXImporter().import_model(str(bad))
    assert not result.success and result.graph is None and result.error


def test_from_onnx_unsupported_operator(tmp_path):
    path = tmp_path / "weird.onnx"
    # An op no kernel table has (real ONNX ops keep gaining kernels, so none is used here).
    onnx.save(make_model(op_for_relu="NoSuchFlameOp"), str(path))
    with pytest.raises(rt.UnsupportedOperatorError) as info:
        rt.from_onnx(str(path))
    assert "NoSuchFlameOp" in str(info.value)


def test_importer_registry():
    assert rt.import_module.list_importers()
