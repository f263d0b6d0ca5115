"""Synchronous client of a v2 (Open Inference Protocol) model server such as pyflame-serve."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import urllib3

from . import _protocol
from .errors import ServerError
from .types import InferenceRequest, InferenceResponse, ModelInfo, ModelMetadata, ModelStats

BatchItem = Union[Mapping[str, np.ndarray], InferenceRequest]

# Connections kept open per client. infer_batch may run more workers than this; the extra
# connections are then opened per request, which is correct, only slower.
_POOL_SIZE = 64


def normalize_url(url: str) -> str:
    """``http://host:port`` without a trailing slash; a bare ``host:port`` means plain HTTP."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"server url must be a non-empty string, got {url!r}")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server url must be http:// or https://, got {url!r}")
    return url.rstrip("/")


def check_client_settings(timeout: float, max_retries: int, retry_delay: float) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if int(max_retries) != max_retries or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries}")
    if retry_delay < 0:
        raise ValueError(f"retry_delay must be >= 0 seconds, got {retry_delay}")


def output_list(outputs: Optional[Sequence[str]]) -> Optional[List[str]]:
    if outputs is None:
        return None
    if isinstance(outputs, str):
        raise TypeError("outputs must be a list of output names, not a string")
    return list(outputs)


def as_request(model: str, item: BatchItem) -> InferenceRequest:
    if isinstance(item, InferenceRequest):
        return item
    return InferenceRequest(model=model, inputs=dict(item))


def unreachable_error(url: str, attempts: int, cause: BaseException) -> ConnectionError:
    return ConnectionError(f"cannot reach the model server at {url} after {attempts} "
                           f"attempt{'s' if attempts > 1 else ''}: {cause}")


def timeout_error(url: str, path: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"{url}{path}: no answer within {timeout} s (raise the client's timeout "
                        f"for slow models)")


def build_response(request: InferenceRequest, status: int, header_length: Optional[str],
                   body: bytes, elapsed_ns: int) -> InferenceResponse:
    """InferenceResponse of a 200 answer, or ServerError for any other status."""
    if status != 200:
        raise _protocol.error_from_response(status, body)
    parsed, outputs = _protocol.decode_infer_response(body, header_length)
    parameters = parsed.get("parameters") or {}
    return InferenceResponse(
        request_id=str(parsed.get("id", request.request_id or "")),
        model_name=str(parsed.get("model_name", request.model)),
        model_version=str(parsed.get("model_version", "")),
        outputs=outputs,
        success=True,
        error_message=None,
        latency_us=elapsed_ns // 1000,
        queue_time_us=int(parameters.get("queue_time_us", 0)),
    )


def failed_response(request: InferenceRequest, error: Exception) -> InferenceResponse:
    return InferenceResponse(request_id=str(request.request_id or ""), model_name=request.model,
                             model_version="", outputs={}, success=False, error_message=str(error))


class ModelClient:
    """Talks to a v2 model server over HTTP (thread-safe; one connection pool per client).

    Connection failures and HTTP 503 (server starting, model loading, queue full) are retried up to
    ``max_retries`` times, ``retry_delay`` seconds apart; after that a ConnectionError (server
    unreachable) or ServerError(503) is raised. A request that gets no answer within ``timeout``
    seconds raises TimeoutError and is not retried (the server may still be working on it).
    Other HTTP errors raise ServerError at once. Input tensors of at least ``binary_threshold``
    bytes travel as raw bytes (binary tensor data extension), smaller ones as JSON.
    """

    def __init__(self, url: str, timeout: float = 30.0, max_retries: int = 3,
                 retry_delay: float = 0.5, *,
                 binary_threshold: int = _protocol.DEFAULT_BINARY_THRESHOLD):
        check_client_settings(timeout, max_retries, retry_delay)
        self.url = normalize_url(url)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.retry_delay = float(retry_delay)
        self.binary_threshold = int(binary_threshold)
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=_POOL_SIZE, retries=False)

    # ------------------------------------------------------------------------------ transport

    def _send(self, method: str, path: str, body: Optional[bytes] = None,
              headers: Optional[Dict[str, str]] = None, retry: bool = True
              ) -> Tuple[int, Optional[str], bytes]:
        """(status, Inference-Header-Content-Length or None, body) of one request."""
        attempts = 1 + self.max_retries if retry else 1
        for attempt in range(attempts):
            last_attempt = attempt == attempts - 1
            try:
                answer = self._pool.request(method, self.url + path, body=body, headers=headers,
                                            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout))
            except urllib3.exceptions.ReadTimeoutError:
                raise timeout_error(self.url, path, self.timeout) from None
            except (urllib3.exceptions.ConnectTimeoutError,  # includes NewConnectionError (refused)
                    urllib3.exceptions.ProtocolError) as error:  # connection reset or closed
                if last_attempt:
                    raise unreachable_error(self.url, attempts, error) from error
            else:
                if answer.status not in _protocol.RETRYABLE_STATUSES or last_attempt:
                    return answer.status, answer.headers.get(_protocol.HEADER_LENGTH), answer.data
            time.sleep(self.retry_delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _get_json(self, method: str, path: str, what: str, body: Optional[bytes] = None):
        status, _, payload = self._send(method, path, body,
                                        {"Content-Type": "application/json"} if body else None)
        if status != 200:
            raise _protocol.error_from_response(status, payload)
        return _protocol.parse_json(payload, what)

    def _probe(self, path: str) -> bool:
        # Health probes answer now: no retries, and an unreachable server is simply not alive.
        try:
            status, _, _ = self._send("GET", path, retry=False)
        except (ConnectionError, TimeoutError):
            return False
        return status == 200

    # -------------------------------------------------------------------------------- health

    def is_alive(self) -> bool:
        """True when ``GET /v2/health/live`` answers 200."""
        return self._probe("/v2/health/live")

    def is_ready(self) -> bool:
        """True when ``GET /v2/health/ready`` answers 200 (every model loaded and warmed up)."""
        return self._probe("/v2/health/ready")

    def is_model_ready(self, model: str, version: Optional[str] = None) -> bool:
        """True when ``GET /v2/models/{model}[/versions/{v}]/ready`` answers 200."""
        return self._probe(_protocol.model_path(model, version) + "/ready")

    def wait_for_ready(self, timeout: float = 30.0, poll_interval: float = 0.5) -> bool:
        """Poll readiness every ``poll_interval`` s; True once ready, False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(poll_interval, remaining))

    # ------------------------------------------------------------------------------- models

    def list_models(self) -> List[ModelInfo]:
        """Every model of the server's repository (``POST /v2/repository/index``)."""
        return _protocol.parse_repository_index(
            self._get_json("POST", "/v2/repository/index", "repository index", b"{}"))

    def get_model_metadata(self, model: str, version: Optional[str] = None) -> ModelMetadata:
        """Inputs, outputs and platform of ``model`` (its latest version unless ``version``)."""
        path = _protocol.model_path(model, version)
        body = self._get_json("GET", path, "model metadata")
        return _protocol.parse_metadata(body, version, self.is_model_ready(model, version))

    def get_model_stats(self, model: str, version: Optional[str] = None) -> ModelStats:
        """Request counts and latency percentiles of ``model`` (``GET .../stats``)."""
        path = _protocol.model_path(model, version) + "/stats"
        return _protocol.parse_model_stats(self._get_json("GET", path, "model statistics"))

    # ---------------------------------------------------------------------------- inference

    def _infer_request(self, request: InferenceRequest, version: Optional[str]) -> InferenceResponse:
        body, headers = _protocol.encode_infer_request(request, self.binary_threshold)
        path = _protocol.model_path(request.model, version) + "/infer"
        start = time.perf_counter_ns()
        status, header_length, payload = self._send("POST", path, body, headers)
        return build_response(request, status, header_length, payload,
                              time.perf_counter_ns() - start)

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Optional[Sequence[str]] = None,
              request_id: Optional[str] = None, priority: int = 0, *,
              version: Optional[str] = None) -> InferenceResponse:
        """Run ``model`` (its latest version unless ``version``) on ``inputs``.

        ``outputs`` names the outputs wanted (None: all). Raises ServerError on an error answer
        (unknown model 404, wrong shape or dtype 400, ...).
        """
        request = InferenceRequest(model=model, inputs=dict(inputs), outputs=output_list(outputs),
                                   request_id=request_id, priority=priority)
        return self._infer_request(request, version)

    def infer_batch(self, model: str, batch_inputs: Sequence[BatchItem], max_workers: int = 4, *,
                    version: Optional[str] = None) -> List[InferenceResponse]:
        """Run one request per item of ``batch_inputs``, ``max_workers`` at a time.

        Items are input dicts for ``model`` or InferenceRequest objects. Responses come back in the
        order of the items. A request that fails does not stop the others: its response has
        ``success=False`` and the error in ``error_message``.
        """
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        requests = [as_request(model, item) for item in batch_inputs]

        def run(request: InferenceRequest) -> InferenceResponse:
            try:
                return self._infer_request(request, version)
            except (ServerError, ConnectionError, TimeoutError) as error:
                return failed_response(request, error)

        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pyflame-infer") as pool:
            return list(pool.map(run, requests))

    # ------------------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the pooled connections (the client stays usable and reconnects on demand)."""
        self._pool.clear()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelClient({self.url!r}, timeout={self.timeout}, max_retries={self.max_retries})"
