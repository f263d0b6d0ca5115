"""Clients of pyflame-serve and of any server speaking the Open Inference Protocol (KServe v2).

>>> from pyflame_rt.serving import ModelClient
>>> client = ModelClient("http://localhost:8080")                      # doctest: +SKIP
>>> response = client.infer("mlp", {"input": x})                      # doctest: +SKIP
>>> response.outputs["output"].shape                                   # doctest: +SKIP
"""

from ._protocol import datatype_of, numpy_dtype_of
from .async_client import AsyncModelClient
from .client import ModelClient
from .errors import ServerError
from .types import (InferenceRequest, InferenceResponse, IOSpec, ModelInfo, ModelMetadata,
                    ModelStats)

__all__ = [
    "ModelClient",
    "AsyncModelClient",
    "InferenceRequest",
    "InferenceResponse",
    "ModelInfo",
    "ModelMetadata",
    "ModelStats",
    "IOSpec",
    "ServerError",
    "datatype_of",
    "numpy_dtype_of",
]
