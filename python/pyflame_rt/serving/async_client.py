"""Asynchronous (asyncio + aiohttp) client of a v2 model server; same methods as ModelClient."""

from __future__ import annotations

import asyncio
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _protocol
from .client import (BatchItem, as_request, build_response, check_client_settings,
                     failed_response, normalize_url, output_list, timeout_error,
                     unreachable_error)
from .errors import ServerError
from .types import InferenceRequest, InferenceResponse, ModelInfo, ModelMetadata, ModelStats


def _aiohttp():
    try:
        import aiohttp
    except ImportError:
        raise ImportError("AsyncModelClient needs the aiohttp package (pip install aiohttp)") from None
    return aiohttp


class AsyncModelClient:
    """Talks to a v2 model server over HTTP from asyncio, with at most ``max_connections`` open
    connections. Use it as ``async with AsyncModelClient(url) as client:`` (or call ``close()``).

    Retries, timeouts, errors and the binary threshold behave as in ModelClient.
    """

    def __init__(self, url: str, timeout: float = 30.0, max_connections: int = 100, *,
                 max_retries: int = 3, retry_delay: float = 0.5,
                 binary_threshold: int = _protocol.DEFAULT_BINARY_THRESHOLD):
        _aiohttp()  # fail at construction, not at the first request, when aiohttp is missing
        check_client_settings(timeout, max_retries, retry_delay)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.url = normalize_url(url)
        self.timeout = float(timeout)
        self.max_connections = int(max_connections)
        self.max_retries = int(max_retries)
        self.retry_delay = float(retry_delay)
        self.binary_threshold = int(binary_threshold)
        self._session = None

    def _get_session(self):
        # Created on first use: an aiohttp session belongs to the event loop that runs it.
        if self._session is None or self._session.closed:
            aiohttp = _aiohttp()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    # ------------------------------------------------------------------------------ transport

    async def _send(self, method: str, path: str, body: Optional[bytes] = None,
                    headers: Optional[Dict[str, str]] = None, retry: bool = True
                    ) -> Tuple[int, Optional[str], bytes]:
        aiohttp = _aiohttp()
        session = self._get_session()
        attempts = 1 + self.max_retries if retry else 1
        for attempt in range(attempts):
            last_attempt = attempt == attempts - 1
            try:
                async with session.request(method, self.url + path, data=body, headers=headers) as answer:
                    payload = await answer.read()
                    status = answer.status
                    header_length = answer.headers.get(_protocol.HEADER_LENGTH)
            except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError is one too
                raise timeout_error(self.url, path, self.timeout) from None
            except aiohttp.ClientConnectionError as error:  # refused, reset, disconnected
                if last_attempt:
                    raise unreachable_error(self.url, attempts, error) from error
            else:
                if status not in _protocol.RETRYABLE_STATUSES or last_attempt:
                    return status, header_length, payload
            await asyncio.sleep(self.retry_delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    async def _get_json(self, method: str, path: str, what: str, body: Optional[bytes] = None):
        status, _, payload = await self._send(method, path, body,
                                              {"Content-Type": "application/json"} if body else None)
        if status != 200:
            raise _protocol.error_from_response(status, payload)
        return _protocol.parse_json(payload, what)

    async def _probe(self, path: str) -> bool:
        try:
            status, _, _ = await self._send("GET", path, retry=False)
        except (ConnectionError, TimeoutError):
            return False
        return status == 200

    # -------------------------------------------------------------------------------- health

    async def is_alive(self) -> bool:
        return await self._probe("/v2/health/live")

    async def is_ready(self) -> bool:
        return await self._probe("/v2/health/ready")

    async def is_model_ready(self, model: str, version: Optional[str] = None) -> bool:
        return await self._probe(_protocol.model_path(model, version) + "/ready")

    async def wait_for_ready(self, timeout: float = 30.0, poll_interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if await self.is_ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(poll_interval, remaining))

    # ------------------------------------------------------------------------------- models

    async def list_models(self) -> List[ModelInfo]:
        return _protocol.parse_repository_index(
            await self._get_json("POST", "/v2/repository/index", "repository index", b"{}"))

    async def get_model_metadata(self, model: str, version: Optional[str] = None) -> ModelMetadata:
        body = await self._get_json("GET", _protocol.model_path(model, version), "model metadata")
        return _protocol.parse_metadata(body, version, await self.is_model_ready(model, version))

    async def get_model_stats(self, model: str, version: Optional[str] = None) -> ModelStats:
        path = _protocol.model_path(model, version) + "/stats"
        return _protocol.parse_model_stats(await self._get_json("GET", path, "model statistics"))

    # ---------------------------------------------------------------------------- inference

    async def _infer_request(self, request: InferenceRequest, version: Optional[str]) -> InferenceResponse:
        body, headers = _protocol.encode_infer_request(request, self.binary_threshold)
        path = _protocol.model_path(request.model, version) + "/infer"
        start = time.perf_counter_ns()
        status, header_length, payload = await self._send("POST", path, body, headers)
        return build_response(request, status, header_length, payload,
                              time.perf_counter_ns() - start)

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray],
                    outputs: Optional[Sequence[str]] = None, request_id: Optional[str] = None,
                    priority: int = 0, *, version: Optional[str] = None) -> InferenceResponse:
        request = InferenceRequest(model=model, inputs=dict(inputs), outputs=output_list(outputs),
                                   request_id=request_id, priority=priority)
        return await self._infer_request(request, version)

    async def infer_batch(self, model: str, batch_inputs: Sequence[BatchItem], max_workers: int = 4, *,
                          version: Optional[str] = None) -> List[InferenceResponse]:
        """As ModelClient.infer_batch: ``max_workers`` requests in flight, results in item order,
        a failed request reported in its slot with ``success=False``."""
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        requests = [as_request(model, item) for item in batch_inputs]
        in_flight = asyncio.Semaphore(max_workers)

        async def run(request: InferenceRequest) -> InferenceResponse:
            async with in_flight:
                try:
                    return await self._infer_request(request, version)
                except (ServerError, ConnectionError, TimeoutError) as error:
                    return failed_response(request, error)

        return list(await asyncio.gather(*(run(r) for r in requests)))

    # ------------------------------------------------------------------------------ lifetime

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> "AsyncModelClient":
        self._get_session()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (f"AsyncModelClient({self.url!r}, timeout={self.timeout}, "
                f"max_connections={self.max_connections})")
