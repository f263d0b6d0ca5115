"""The Open Inference Protocol (KServe v2) over HTTP, without the transport: URL paths, numpy
datatype mapping, request encoding (JSON tensors or the binary tensor data extension) and response
decoding. ModelClient and AsyncModelClient share it so that both speak exactly the same protocol.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

from .errors import ServerError
from .types import InferenceRequest, IOSpec, ModelInfo, ModelMetadata, ModelStats

# Header of the binary tensor data extension: the length of the JSON part that precedes the
# concatenated raw tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"

# Default size from which an input tensor travels as raw bytes instead of JSON numbers: below it
# JSON is as fast and readable in logs; above it, printing and parsing numbers dominates.
DEFAULT_BINARY_THRESHOLD = 64 * 1024

# HTTP statuses worth another attempt: the server is up but busy (queue full) or not ready yet.
RETRYABLE_STATUSES = frozenset({503})


def _bfloat16() -> Optional[np.dtype]:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


_NUMERIC_DATATYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
if _bfloat16() is not None:
    _NUMERIC_DATATYPES["BF16"] = _bfloat16()
_DATATYPE_OF_DTYPE = {dtype: name for name, dtype in _NUMERIC_DATATYPES.items()}
BYTES_DTYPE = np.dtype(object)


def datatype_of(dtype: np.dtype) -> str:
    """The v2 datatype name of a numpy dtype (object, bytes and str arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    name = _DATATYPE_OF_DTYPE.get(dtype.newbyteorder("="))
    if name is None:
        raise TypeError(f"numpy dtype {dtype} has no v2 datatype; supported: "
                        f"{', '.join(str(d) for d in _DATATYPE_OF_DTYPE)}, bytes/str/object")
    return name


def numpy_dtype_of(datatype: str) -> np.dtype:
    """The numpy dtype of a v2 datatype name (BYTES → object arrays of bytes)."""
    if datatype == "BYTES":
        return BYTES_DTYPE
    if datatype == "BF16" and "BF16" not in _NUMERIC_DATATYPES:
        raise TypeError("BF16 tensors need the ml_dtypes package (pip install ml_dtypes)")
    try:
        return _NUMERIC_DATATYPES[datatype]
    except KeyError:
        raise TypeError(f"unknown v2 datatype {datatype!r}; known: "
                        f"{', '.join(list(_NUMERIC_DATATYPES) + ['BYTES'])}") from None


# ---------------------------------------------------------------------------------------- paths

def model_path(model: str, version: Optional[str] = None) -> str:
    """/v2/models/{name}[/versions/{v}] with both parts percent-encoded (a name is never a path)."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model name must be a non-empty string, got {model!r}")
    path = "/v2/models/" + quote(model, safe="")
    if version is not None and str(version) != "":
        path += "/versions/" + quote(str(version), safe="")
    return path


# ------------------------------------------------------------------------------- tensor coding

def _as_bytes_element(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value)
    raise TypeError(f"BYTES tensor element must be bytes or str, got {type(value).__name__}")


def _serialize_bytes_tensor(array: np.ndarray) -> bytes:
    # Binary form of BYTES: each element as a 4-byte little-endian length, then its bytes.
    parts = []
    for element in array.reshape(-1):
        raw = _as_bytes_element(element)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _deserialize_bytes_tensor(raw: bytes, count: int) -> np.ndarray:
    values = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ValueError(f"BYTES tensor data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        values[i] = raw[offset:offset + length]
        offset += length
    if offset != len(raw):
        raise ValueError(f"BYTES tensor data has {len(raw) - offset} bytes after its {count} elements")
    return values


def _as_input_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise ValueError(f"input names must be non-empty strings, got {name!r}")
    array = np.asarray(value)
    datatype_of(array.dtype)  # refuse unsupported dtypes before anything is sent
    if array.dtype.kind not in "OSU" and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def _json_data(array: np.ndarray) -> list:
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":
        return [_as_bytes_element(v).decode("utf-8", errors="surrogateescape") for v in flat]
    if array.dtype == _NUMERIC_DATATYPES.get("BF16"):
        flat = flat.astype(np.float32)
    return flat.tolist()


def _json_representable(array: np.ndarray) -> bool:
    # JSON has no NaN or infinity: such float tensors travel as raw bytes whatever their size.
    if array.dtype.kind == "f" or array.dtype == _NUMERIC_DATATYPES.get("BF16"):
        return bool(np.isfinite(array.astype(np.float32)).all())
    return True


def encode_infer_request(request: InferenceRequest,
                         binary_threshold: int = DEFAULT_BINARY_THRESHOLD) -> Tuple[bytes, Dict[str, str]]:
    """The body and headers of ``POST .../infer`` for ``request``.

    Inputs of at least ``binary_threshold`` bytes go as raw little-endian data after the JSON
    header (binary tensor data extension); smaller ones as JSON numbers. When any input goes binary,
    the outputs are asked for in binary as well.
    """
    if not isinstance(request.inputs, Mapping) or not request.inputs:
        raise ValueError("inputs must be a non-empty dict of name -> numpy array")
    inputs_json: List[Dict[str, Any]] = []
    blobs: List[bytes] = []
    for name, value in request.inputs.items():
        array = _as_input_array(name, value)
        entry: Dict[str, Any] = {"name": name, "shape": list(array.shape),
                                 "datatype": datatype_of(array.dtype)}
        if array.nbytes >= binary_threshold or not _json_representable(array):
            raw = _serialize_bytes_tensor(array) if array.dtype.kind in "OSU" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(array)
        inputs_json.append(entry)

    binary = bool(blobs)
    header: Dict[str, Any] = {"inputs": inputs_json}
    if request.request_id is not None:
        header["id"] = str(request.request_id)
    parameters: Dict[str, Any] = {}
    if request.priority:
        parameters["priority"] = int(request.priority)
    if request.outputs is not None:
        if isinstance(request.outputs, str):
            raise TypeError("outputs must be a list of output names, not a string")
        header["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in request.outputs]
    elif binary:
        parameters["binary_data_output"] = True
    if parameters:
        header["parameters"] = parameters

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if not binary:
        return header_bytes, {"Content-Type": "application/json"}
    return header_bytes + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header_bytes)),
    }


def _decode_output(entry: Mapping[str, Any], binary: bytes, offset: int) -> Tuple[np.ndarray, int]:
    name = entry.get("name")
    datatype = entry.get("datatype")
    shape = entry.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise ValueError(f"malformed output in server response: {entry!r}")
    dtype = numpy_dtype_of(datatype)
    count = int(np.prod(shape, dtype=np.int64))
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        raw = binary[offset:offset + int(size)]
        if len(raw) != int(size):
            raise ValueError(f"output {name!r}: response ends {int(size) - len(raw)} bytes short")
        offset += int(size)
        if datatype == "BYTES":
            array = _deserialize_bytes_tensor(raw, count)
        else:
            if len(raw) != count * dtype.itemsize:
                raise ValueError(f"output {name!r}: {len(raw)} bytes do not hold {shape} {datatype}")
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)
    else:
        data = entry.get("data")
        if not isinstance(data, list):
            raise ValueError(f"output {name!r} has neither data nor binary_data_size")
        if datatype == "BYTES":
            array = np.empty(len(np.ravel(np.asarray(data, dtype=object))), dtype=object)
            array[:] = [_as_bytes_element(v) for v in np.ravel(np.asarray(data, dtype=object))]
        elif datatype in ("FP16", "BF16", "FP32", "FP64"):
            # A server may write a non-finite value as null: read it back as NaN.
            values = np.asarray(data, dtype=object).reshape(-1)
            values[np.equal(values, None)] = np.nan
            array = values.astype(np.float64).astype(dtype)
        else:
            array = np.asarray(data, dtype=dtype).reshape(-1)
        if array.size != count:
            raise ValueError(f"output {name!r}: {array.size} values for shape {shape}")
    return array.reshape(shape), offset


def decode_infer_response(body: bytes, header_length: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The response JSON and the output arrays (in the server's order) of an infer answer."""
    if header_length is not None:
        json_size = int(header_length)
        header, binary = body[:json_size], body[json_size:]
    else:
        header, binary = body, b""
    try:
        response = json.loads(header)
    except ValueError as exc:
        raise ValueError(f"server sent an infer response that is not JSON: {header[:200]!r}") from exc
    outputs: Dict[str, np.ndarray] = {}
    offset = 0
    for entry in response.get("outputs", []):
        array, offset = _decode_output(entry, binary, offset)
        outputs[entry["name"]] = array
    return response, outputs


# --------------------------------------------------------------------------------- other bodies

def error_from_response(status: int, body: bytes) -> ServerError:
    """ServerError from an error answer: the ``error`` of its JSON body, else the body text."""
    text = body.decode("utf-8", errors="replace")
    message = text.strip() or f"HTTP status {status} without a body"
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            message = parsed["error"]
    except ValueError:
        pass
    return ServerError(status, message)


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ValueError(f"server sent a {what} that is not JSON: {body[:200]!r}") from exc


def _version_key(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def latest_version(versions: Sequence[str]) -> str:
    """The version the server routes unversioned requests to: the highest number."""
    return max(versions, key=_version_key) if versions else ""


def parse_metadata(body: Mapping[str, Any], version: Optional[str], ready: bool) -> ModelMetadata:
    def specs(key):
        return [IOSpec(name=t["name"], dtype=t["datatype"], shape=[int(d) for d in t["shape"]])
                for t in body.get(key, [])]

    versions = [str(v) for v in body.get("versions", [])]
    return ModelMetadata(
        name=body.get("name", ""),
        version=str(version) if version is not None else latest_version(versions),
        platform=body.get("platform", ""),
        ready=ready,
        inputs=specs("inputs"),
        outputs=specs("outputs"),
    )


def parse_repository_index(body: Any) -> List[ModelInfo]:
    """Group the repository index (one entry per name and version) into one ModelInfo per name."""
    if not isinstance(body, list):
        raise ValueError(f"repository index must be a JSON list, got {body!r}")
    models: Dict[str, ModelInfo] = {}
    for entry in body:
        name = entry["name"]
        info = models.setdefault(name, ModelInfo(name=name, ready=False, versions=[]))
        version = entry.get("version")
        if version not in (None, "") and str(version) not in info.versions:
            info.versions.append(str(version))
        if entry.get("state", "") == "READY":
            info.ready = True
    for info in models.values():
        info.versions.sort(key=_version_key)
    return list(models.values())


def parse_model_stats(body: Mapping[str, Any]) -> ModelStats:
    """ModelStats from ``GET /v2/models/{name}[/versions/{v}]/stats``.

    pyflame-serve adds the ModelStats fields (``total_requests``, ..., ``p99_latency_ms``) to each
    entry of Triton's statistics extension; from another v2 server (Triton) the counts and the
    average come from ``inference_stats`` and the percentiles stay 0. Entries of several versions
    are summed; percentiles cannot be merged, so the worst version's are reported.
    """
    stats = ModelStats()
    latency_ms_sum = 0.0
    for entry in body.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        success = inference.get("success", {})
        fail = inference.get("fail", {})
        successful = int(entry.get("successful_requests", success.get("count", 0)))
        failed = int(entry.get("failed_requests", fail.get("count", 0)))
        stats.successful_requests += successful
        stats.failed_requests += failed
        stats.total_requests += int(entry.get("total_requests", successful + failed))
        if "avg_latency_ms" in entry:
            latency_ms_sum += float(entry["avg_latency_ms"]) * successful
        else:
            latency_ms_sum += int(success.get("ns", 0)) / 1e6
        stats.p50_latency_ms = max(stats.p50_latency_ms, float(entry.get("p50_latency_ms", 0.0)))
        stats.p95_latency_ms = max(stats.p95_latency_ms, float(entry.get("p95_latency_ms", 0.0)))
        stats.p99_latency_ms = max(stats.p99_latency_ms, float(entry.get("p99_latency_ms", 0.0)))
    if stats.successful_requests:
        stats.avg_latency_ms = latency_ms_sum / stats.successful_requests
    return stats
