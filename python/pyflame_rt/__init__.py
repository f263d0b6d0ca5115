"""PyFlameRT: an inference runtime for ONNX-style graphs.

>>> import numpy as np, pyflame_rt
>>> session = pyflame_rt.InferenceSession("model.pfm")            # doctest: +SKIP
>>> outputs = session.run(None, {"input": np.zeros((1, 784), np.float32)})  # doctest: +SKIP
"""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import Callable, Optional, Sequence

from . import _pyflame_rt
from ._pyflame_rt import (
    CompileOptions,
    DType,
    Graph,
    ImportOptions,
    ImportResult,
    ImportStats,
    InferenceSession,
    InvalidModelError,
    ModelMetadata,
    Node,
    NodeArg,
    PassManager,
    PassResult,
    PyFlameRTError,
    RunOptions,
    RunTimeoutError,
    SessionOptions,
    Tensor,
    TensorInfo,
    UnsupportedOperatorError,
    ValidationError,
    compile_model,
    dtype_from_numpy,
    dtype_size,
    export_onnx,
    from_numpy,
    get_available_providers,
    get_device_count,
    has_op,
    is_pfm_file,
    load_model,
    numpy_dtype,
    registered_ops,
    save_model,
    to_numpy,
    unregister_op,
)
from . import import_module
from . import quantization

__version__: str = _pyflame_rt.__version__

# Derives from both PyFlameRTError and the builtin FileNotFoundError. Reachable as
# pyflame_rt.FileNotFoundError but left out of __all__ so `from pyflame_rt import *` does not
# shadow the builtin.
FileNotFoundError = _pyflame_rt.FileNotFoundError  # noqa: A001

__all__ = [
    "__version__",
    # core classes
    "InferenceSession",
    "SessionOptions",
    "RunOptions",
    "CompileOptions",
    "compile_model",
    "Tensor",
    "TensorInfo",
    "NodeArg",
    "DType",
    "ModelMetadata",
    "Graph",
    "Node",
    # functions
    "from_numpy",
    "to_numpy",
    "get_available_providers",
    "get_device_count",
    "save_model",
    "load_model",
    "is_pfm_file",
    "dtype_size",
    "numpy_dtype",
    "dtype_from_numpy",
    "export_onnx",
    # graph optimization
    "PassManager",
    "PassResult",
    # custom operators
    "register_op",
    "unregister_op",
    "has_op",
    "registered_ops",
    # model import
    "from_onnx",
    "ImportOptions",
    "ImportResult",
    "ImportStats",
    "import_module",
    # quantization (submodule pyflame_rt.quantization)
    "quantization",
    # exceptions
    "PyFlameRTError",
    "InvalidModelError",
    "UnsupportedOperatorError",
    "ValidationError",
    "RunTimeoutError",
]


def register_op(op_type: str, fn: Optional[Callable] = None):
    """Registers (or replaces) a custom operator implemented in Python.

    ``fn(inputs, attributes)`` receives a list of numpy arrays (None for an omitted optional
    input) and a dict of the node's attributes, and returns one numpy array. Sessions created
    afterwards run graph nodes of type ``op_type`` with it. Usable as a decorator::

        @pyflame_rt.register_op("Scale")
        def scale(inputs, attrs):
            return inputs[0] * attrs.get("alpha", 1.0)
    """
    if fn is None:
        def decorator(f: Callable) -> Callable:
            _pyflame_rt.register_op(op_type, f)
            return f
        return decorator
    _pyflame_rt.register_op(op_type, fn)
    return fn


def _import_failure(message: str, path: str) -> PyFlameRTError:
    """The exception matching a failed ImportResult (which only carries a message)."""
    text = message.lower()
    if "no such file" in text or not _os.path.exists(path):
        return FileNotFoundError(_errno.ENOENT, _os.strerror(_errno.ENOENT), path)
    if "unsupported operator" in text or "unsupported op" in text:
        return UnsupportedOperatorError(message)
    return InvalidModelError(message or "import failed: " + path)


def from_onnx(
    model_path,
    options: Optional[ImportOptions] = None,
    session_options: Optional[SessionOptions] = None,
    providers: Optional[Sequence[str]] = None,
) -> InferenceSession:
    """Imports an ONNX model (with ONNXImporter) and returns an InferenceSession for it.

    Raises FileNotFoundError (a PyFlameRTError too) when the file is missing,
    UnsupportedOperatorError for operators PyFlameRT lacks, InvalidModelError otherwise.
    """
    path = _os.fsdecode(model_path)
    if not _os.path.exists(path):
        raise FileNotFoundError(_errno.ENOENT, _os.strerror(_errno.ENOENT), path)
    result = import_module.ONNXImporter().import_model(path, options if options is not None else ImportOptions())
    if not result.success or result.graph is None:
        raise _import_failure(result.error, path)
    return InferenceSession(result.graph, session_options, list(providers) if providers is not None else None)


def _set_public_module() -> None:
    # Classes and functions print as pyflame_rt.X rather than pyflame_rt._pyflame_rt.X.
    for name in __all__:
        obj = globals().get(name)
        if obj is None or name in ("__version__", "import_module", "quantization"):
            continue
        try:
            if getattr(obj, "__module__", None) == _pyflame_rt.__name__:
                obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass


_set_public_module()
