"""Plain data types of the serving clients (requests, responses, model descriptions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class IOSpec:
    """One input or output of a served model: its name, v2 datatype ("FP32", "INT64", "BYTES", ...)
    and shape (-1 for a dimension the model leaves free, such as the batch)."""

    name: str
    dtype: str
    shape: List[int]

    @property
    def numpy_dtype(self) -> np.dtype:
        from ._protocol import numpy_dtype_of  # late: _protocol imports this module

        return numpy_dtype_of(self.dtype)


@dataclass
class ModelInfo:
    """A model of the server's repository index: its name, whether any version is ready, and the
    versions the repository holds (numeric ones in ascending order)."""

    name: str
    ready: bool
    versions: List[str] = field(default_factory=list)


@dataclass
class ModelMetadata:
    """What ``GET /v2/models/{name}[/versions/{v}]`` reports, plus the model's ready state."""

    name: str
    version: str
    platform: str
    ready: bool
    inputs: List[IOSpec] = field(default_factory=list)
    outputs: List[IOSpec] = field(default_factory=list)


@dataclass
class ModelStats:
    """Request counts and latency percentiles the server keeps for one model."""

    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    avg_latency_ms: float = 0.0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    p99_latency_ms: float = 0.0


@dataclass
class InferenceRequest:
    """One inference call: the model, its named input arrays, the outputs wanted (None = all), an
    optional request id echoed back by the server, and a priority (higher is served first)."""

    model: str
    inputs: Dict[str, np.ndarray]
    outputs: Optional[List[str]] = None
    request_id: Optional[str] = None
    priority: int = 0


@dataclass
class InferenceResponse:
    """The answer to one inference call.

    ``latency_us`` is the client's wall time for the call (send to last byte received);
    ``queue_time_us`` is the time the request waited in the server's batching queue when the server
    reports it, else 0. ``success`` is False (with ``error_message``) only in the results of
    ``infer_batch``, which reports a failed request in its slot instead of raising.
    """

    request_id: str
    model_name: str
    model_version: str
    outputs: Dict[str, np.ndarray] = field(default_factory=dict)
    success: bool = True
    error_message: Optional[str] = None
    latency_us: int = 0
    queue_time_us: int = 0

    @property
    def latency_ms(self) -> float:
        return self.latency_us / 1000.0
