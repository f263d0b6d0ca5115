"""The package surface: names of the reference's Module Overview, version, providers."""

import builtins

import pyflame_rt as rt

OVERVIEW = [
    "InferenceSession", "SessionOptions", "RunOptions", "CompileOptions", "Tensor", "TensorInfo",
    "NodeArg", "DType", "ModelMetadata", "Graph", "Node",
    "from_numpy", "to_numpy", "get_available_providers", "get_device_count", "save_model", "load_model",
    "from_onnx", "ImportOptions", "ImportResult", "ImportStats", "register_op",
    "PyFlameRTError", "InvalidModelError", "UnsupportedOperatorError", "ValidationError", "RunTimeoutError",
]


def test_version():
    assert rt.__version__ == "0.1.0"
    assert rt._pyflame_rt.__version__ == rt.__version__


def test_overview_names_exported():
    for name in OVERVIEW:
        assert hasattr(rt, name), name
        assert name in rt.__all__, name
    assert "import_module" in rt.__all__


def test_star_import_does_not_shadow_builtins():
    ns = {}
    exec("from pyflame_rt import *", ns)
    assert "FileNotFoundError" not in ns
    assert rt.FileNotFoundError is not builtins.FileNotFoundError


def test_import_module_submodule():
    import pyflame_rt.import_module as im

    assert im is rt.import_module
    assert hasattr(im, "ONNXImporter")
    assert callable(im.ONNXImporter().supported_opsets)


def test_public_module_names():
    assert rt.InferenceSession.__module__ == "pyflame_rt"
    assert rt.PyFlameRTError.__module__ == "pyflame_rt"
    assert repr(rt.DType.Float32) .startswith("<DType.Float32")


def test_providers():
    providers = rt.get_available_providers()
    assert isinstance(providers, list)
    assert "CPUExecutionProvider" in providers
    assert rt.get_device_count("cpu") == 1
    assert rt.get_device_count() == 1
    assert rt.get_device_count("wse") == 0


def test_dtype_enum():
    expected = ["Float32", "Float16", "BFloat16", "Float64", "Int64", "Int32", "Int16", "Int8", "UInt8", "Bool"]
    for value, name in enumerate(expected):
        d = getattr(rt.DType, name)
        assert d.name == name
        assert d.value == value
        assert rt.DType(value) is d
    assert str(rt.DType.Float32) == "DType.Float32"
    assert [d.value for d in rt.DType][:10] == list(range(10))  # the reference codes come first
    assert rt.DType.UInt16.value == 10  # appended types follow


def test_dtype_helpers():
    import numpy as np

    assert rt.dtype_size(rt.DType.Float64) == 8
    assert rt.dtype_size("float16") == 2
    assert rt.numpy_dtype(rt.DType.Int16) == np.int16
    assert rt.dtype_from_numpy(np.uint8) is rt.DType.UInt8
    assert rt.dtype_from_numpy("Bool") is rt.DType.Bool
