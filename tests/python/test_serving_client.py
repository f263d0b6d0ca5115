"""pyflame_rt.serving's ModelClient and AsyncModelClient against the real pyflame-serve.

The server is started once for the module (serving_server.start_server, free loopback ports); if
the pyflame-serve binary is not built the fixture fails with a message saying so. Outputs are
checked against ONNX Runtime and numpy on the same models; the v2 codec is checked against the
protocol's byte layout and tritonclient's own implementation of it.
"""
from __future__ import annotations

import asyncio
import http.server
import json
import socket
import subprocess
import threading

import numpy as np
import onnx
import pytest

import serving_server
from pyflame_rt.serving import (AsyncModelClient, InferenceRequest, InferenceResponse, IOSpec,
                                ModelClient, ModelInfo, ModelMetadata, ModelStats, ServerError,
                                datatype_of, numpy_dtype_of)
from pyflame_rt.serving import _protocol

ATOL = 1e-5
RTOL = 1e-5
NEVER_BINARY = 1 << 62  # a binary threshold no tensor reaches: every input goes as JSON
INT_DTYPES = (np.int32, np.int64)


def _models():
    models = {
        "mlp": serving_server.mlp_model(seed=0),
        "versioned": {1: serving_server.mlp_model(seed=1), 2: serving_server.mlp_model(seed=2)},
        "stats_probe": serving_server.mlp_model(seed=3),
    }
    for dtype in INT_DTYPES:
        models[f"add_sub_{np.dtype(dtype).name}"] = serving_server.add_sub_model(dtype)
    return models


MODELS = _models()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = serving_server.make_repository(tmp_path_factory.mktemp("client-repo"), MODELS)
    with serving_server.start_server(repo, grpc=False) as running:
        yield running


@pytest.fixture
def client(server):
    with ModelClient(server.http_url, timeout=30.0, max_retries=2, retry_delay=0.05) as c:
        yield c


def reference(model_name, feeds, version=None):
    model = MODELS[model_name]
    if isinstance(model, dict):
        model = model[version or max(model)]
    return serving_server.onnxruntime_reference(model, feeds)


def mlp_input(rows, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, 8), dtype=np.float32)


def spy_on_answers(client):
    """Records, per request the client sends, whether the answer used binary tensor data."""
    answers = []
    send = client._send

    def recording_send(*args, **kwargs):
        status, header_length, body = send(*args, **kwargs)
        answers.append(header_length is not None)
        return status, header_length, body

    client._send = recording_send
    return answers


def count_attempts(client):
    """Counts the HTTP attempts a ModelClient makes (retries included)."""
    attempts = []
    request = client._pool.request

    def counting_request(*args, **kwargs):
        attempts.append(args[1])
        return request(*args, **kwargs)

    client._pool.request = counting_request
    return attempts


# ------------------------------------------------------------------------- codec (no server)

V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BF16"]


@pytest.mark.parametrize("datatype", V2_DATATYPES + ["BYTES"])
def test_datatype_mapping_agrees_with_tritonclient(datatype):
    from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

    dtype = numpy_dtype_of(datatype)
    assert np.dtype(dtype) == np.dtype(triton_to_np_dtype(datatype))
    assert datatype_of(dtype) == datatype == np_to_triton_dtype(dtype)


def test_unsupported_dtype_and_datatype_are_refused():
    with pytest.raises(TypeError, match="complex64"):
        datatype_of(np.complex64)
    with pytest.raises(TypeError, match="FP8"):
        numpy_dtype_of("FP8")
    with pytest.raises(TypeError, match="complex"):
        _protocol.encode_infer_request(InferenceRequest("m", {"x": np.zeros(2, np.complex64)}))


def test_bytes_tensor_binary_layout_matches_the_protocol_and_tritonclient():
    from tritonclient.utils import serialize_byte_tensor

    array = np.array([b"xy", "z", b""], dtype=object)
    raw = _protocol._serialize_bytes_tensor(array)
    assert raw == b"\x02\x00\x00\x00xy\x01\x00\x00\x00z\x00\x00\x00\x00"
    assert raw == serialize_byte_tensor(array).item()  # a 0-d object array holding the bytes
    assert list(_protocol._deserialize_bytes_tensor(raw, 3)) == [b"xy", b"z", b""]
    with pytest.raises(ValueError, match="ends after"):
        _protocol._deserialize_bytes_tensor(raw[:-1] + b"", 4)


def _echo(body, headers):
    """What a v2 server answering with its inputs as outputs would send back."""
    length = headers.get(_protocol.HEADER_LENGTH)
    header = json.loads(body[:int(length)] if length else body)
    answer = {"model_name": "m", "model_version": "1",
              "outputs": [dict(entry, name="out_" + entry["name"]) for entry in header["inputs"]]}
    answer_bytes = json.dumps(answer).encode()
    if length is None:
        return answer_bytes, None
    return answer_bytes + body[int(length):], str(len(answer_bytes))


@pytest.mark.parametrize("datatype", V2_DATATYPES + ["BYTES"])
@pytest.mark.parametrize("threshold", [0, NEVER_BINARY], ids=["binary", "json"])
def test_codec_round_trips_every_datatype(datatype, threshold):
    dtype = numpy_dtype_of(datatype)
    if datatype == "BYTES":
        array = np.array([[b"a", b"bc", b""], [b"\xff\x00", b"e", b"fgh"]], dtype=object)
        if threshold:  # JSON carries text: only UTF-8 strings survive it unchanged
            array = np.array([[b"a", b"bc", b""], [b"d", b"e", b"fgh"]], dtype=object)
    else:
        array = (np.arange(6) % 3).astype(dtype).reshape(2, 3)
    body, headers = _protocol.encode_infer_request(InferenceRequest("m", {"x": array}), threshold)
    assert (_protocol.HEADER_LENGTH in headers) == (threshold == 0)
    _, outputs = _protocol.decode_infer_response(*_echo(body, headers))
    assert outputs["out_x"].dtype == array.dtype
    assert outputs["out_x"].shape == array.shape
    assert outputs["out_x"].tolist() == array.tolist()


def test_binary_request_layout():
    a = np.arange(4, dtype=np.float32)
    b = np.array([7, 8], dtype=np.int64)
    body, headers = _protocol.encode_infer_request(
        InferenceRequest("m", {"a": a, "b": b}, outputs=["y"], request_id="r1", priority=3), 16)
    length = int(headers[_protocol.HEADER_LENGTH])
    header = json.loads(body[:length])
    # a (16 bytes) reaches the threshold and goes binary; b (16 bytes) too; outputs ask for binary.
    assert header == {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            {"name": "b", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        "parameters": {"priority": 3},
    }
    assert body[length:] == a.astype("<f4").tobytes() + b.astype("<i8").tobytes()


def test_big_endian_and_strided_inputs_are_sent_as_little_endian_row_major():
    array = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    body, headers = _protocol.encode_infer_request(InferenceRequest("m", {"x": array}), 0)
    length = int(headers[_protocol.HEADER_LENGTH])
    assert body[length:] == np.ascontiguousarray(array, dtype="<f4").tobytes()


def test_non_finite_floats_travel_as_binary_and_null_reads_as_nan():
    x = np.array([1.0, np.nan, np.inf], np.float32)
    body, headers = _protocol.encode_infer_request(InferenceRequest("m", {"x": x}), NEVER_BINARY)
    assert _protocol.HEADER_LENGTH in headers  # JSON cannot hold NaN or infinity
    answer = b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1.5, null]}]}'
    _, outputs = _protocol.decode_infer_response(answer, None)
    np.testing.assert_array_equal(outputs["y"], np.array([1.5, np.nan], np.float32))


def test_error_body_is_parsed():
    error = _protocol.error_from_response(404, b'{"error": "model \'nope\' not found"}')
    assert (error.status_code, error.message) == (404, "model 'nope' not found")
    assert str(error) == "HTTP 404: model 'nope' not found"
    assert _protocol.error_from_response(502, b"bad gateway").message == "bad gateway"


def test_settings_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        ModelClient("http://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        ModelClient("http://127.0.0.1:1", max_retries=-1)
    with pytest.raises(ValueError, match="http"):
        ModelClient("ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="max_connections"):
        AsyncModelClient("http://127.0.0.1:1", max_connections=0)
    assert ModelClient("127.0.0.1:8080/").url == "http://127.0.0.1:8080"


def test_response_latency_ms():
    assert InferenceResponse("r", "m", "1", latency_us=1500).latency_ms == 1.5


# ----------------------------------------------------------------------- ModelClient: server

def test_health(client):
    assert client.is_alive()
    assert client.is_ready()
    assert client.wait_for_ready(timeout=5.0, poll_interval=0.1)
    assert client.is_model_ready("mlp")
    assert not client.is_model_ready("no_such_model")


def test_list_models(client):
    models = {m.name: m for m in client.list_models()}
    assert set(models) == set(MODELS)
    assert all(isinstance(m, ModelInfo) and m.ready for m in models.values())
    assert models["mlp"].versions == ["1"]
    assert models["versioned"].versions == ["1", "2"]


def _onnx_specs(values):
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        specs.append(IOSpec(name=value.name, dtype=datatype_of(dtype), shape=shape))
    return specs


@pytest.mark.parametrize("name", ["mlp", "add_sub_int64"])
def test_metadata_matches_the_onnx_model(client, name):
    metadata = client.get_model_metadata(name)
    assert isinstance(metadata, ModelMetadata)
    assert (metadata.name, metadata.version, metadata.ready) == (name, "1", True)
    assert isinstance(metadata.platform, str) and metadata.platform
    assert metadata.inputs == _onnx_specs(MODELS[name].graph.input)
    assert metadata.outputs == _onnx_specs(MODELS[name].graph.output)
    assert metadata.inputs[0].numpy_dtype == numpy_dtype_of(metadata.inputs[0].dtype)


def test_metadata_of_versions(client):
    assert client.get_model_metadata("versioned").version == "2"
    assert client.get_model_metadata("versioned", version="1").version == "1"
    with pytest.raises(ServerError) as info:
        client.get_model_metadata("versioned", version="7")
    assert info.value.status_code == 404


@pytest.mark.parametrize("threshold", [NEVER_BINARY, 0], ids=["json", "binary"])
def test_infer_mlp_matches_onnxruntime(server, threshold):
    x = mlp_input(3)
    with ModelClient(server.http_url, binary_threshold=threshold) as client:
        binary_answers = spy_on_answers(client)
        response = client.infer("mlp", {"input": x}, request_id="req-42")
    assert binary_answers == [threshold == 0]
    assert isinstance(response, InferenceResponse)
    assert (response.model_name, response.model_version, response.request_id) == ("mlp", "1", "req-42")
    assert response.success and response.error_message is None
    assert response.latency_us > 0 and response.latency_ms == response.latency_us / 1000
    assert list(response.outputs) == ["output"]
    np.testing.assert_allclose(response.outputs["output"], reference("mlp", {"input": x})["output"],
                               rtol=RTOL, atol=ATOL)


def test_large_inputs_go_binary_by_default(client):
    x = mlp_input(4096, seed=5)  # 128 KiB, above the default threshold
    assert x.nbytes >= _protocol.DEFAULT_BINARY_THRESHOLD
    binary_answers = spy_on_answers(client)
    response = client.infer("mlp", {"input": x})
    assert binary_answers == [True]
    np.testing.assert_allclose(response.outputs["output"], reference("mlp", {"input": x})["output"],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("threshold", [NEVER_BINARY, 0], ids=["json", "binary"])
def test_infer_integer_model_matches_numpy(server, dtype, threshold):
    rng = np.random.default_rng(7)
    a = rng.integers(-1000, 1000, size=(5, 4)).astype(dtype)
    b = rng.integers(-1000, 1000, size=(5, 4)).astype(dtype)
    with ModelClient(server.http_url, binary_threshold=threshold) as client:
        response = client.infer(f"add_sub_{np.dtype(dtype).name}", {"INPUT0": a, "INPUT1": b})
    assert response.outputs["OUTPUT0"].dtype == dtype
    np.testing.assert_array_equal(response.outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(response.outputs["OUTPUT1"], a - b)


@pytest.mark.parametrize("threshold", [NEVER_BINARY, 0], ids=["json", "binary"])
def test_infer_selected_output(server, threshold):
    a = np.arange(8, dtype=np.int32).reshape(2, 4)
    with ModelClient(server.http_url, binary_threshold=threshold) as client:
        response = client.infer("add_sub_int32", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    assert list(response.outputs) == ["OUTPUT1"]
    np.testing.assert_array_equal(response.outputs["OUTPUT1"], np.zeros_like(a))


def test_infer_routes_versions(client):
    x = mlp_input(2, seed=9)
    latest = client.infer("versioned", {"input": x})
    first = client.infer("versioned", {"input": x}, version="1")
    assert (latest.model_version, first.model_version) == ("2", "1")
    np.testing.assert_allclose(latest.outputs["output"],
                               reference("versioned", {"input": x}, 2)["output"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(first.outputs["output"],
                               reference("versioned", {"input": x}, 1)["output"], rtol=RTOL, atol=ATOL)


def test_infer_with_priority(client):
    x = mlp_input(1, seed=11)
    response = client.infer("mlp", {"input": x}, priority=5)
    np.testing.assert_allclose(response.outputs["output"], reference("mlp", {"input": x})["output"],
                               rtol=RTOL, atol=ATOL)


def test_infer_batch_runs_concurrently_and_keeps_order(server):
    workers = 4
    inputs = [{"input": mlp_input(1 + i % 3, seed=100 + i)} for i in range(12)]
    with ModelClient(server.http_url) as client:
        # Every one of the first `workers` requests waits until all of them are in flight: with
        # fewer than `workers` threads the barrier breaks (BrokenBarrierError) instead of passing.
        barrier = threading.Barrier(workers, timeout=30)
        infer_request = client._infer_request
        started = []
        lock = threading.Lock()

        def gated(request, version):
            with lock:
                first = len(started) < workers
                started.append(request)
            if first:
                barrier.wait()
            return infer_request(request, version)

        client._infer_request = gated
        responses = client.infer_batch("mlp", inputs, max_workers=workers)
    assert len(responses) == len(inputs)
    for feeds, response in zip(inputs, responses):
        assert response.success
        np.testing.assert_allclose(response.outputs["output"], reference("mlp", feeds)["output"],
                                   rtol=RTOL, atol=ATOL)


def test_infer_batch_reports_a_failed_request_in_its_slot(client):
    good = {"input": mlp_input(2, seed=1)}
    bad = {"input": np.zeros((2, 5), np.float32)}
    items = [good, bad, InferenceRequest("add_sub_int32", {"INPUT0": np.ones((1, 4), np.int32),
                                                           "INPUT1": np.ones((1, 4), np.int32)})]
    responses = client.infer_batch("mlp", items, max_workers=2)
    assert [r.success for r in responses] == [True, False, True]
    assert responses[1].error_message.startswith("HTTP 400")
    assert responses[1].outputs == {}
    np.testing.assert_allclose(responses[0].outputs["output"], reference("mlp", good)["output"],
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(responses[2].outputs["OUTPUT0"], np.full((1, 4), 2, np.int32))
    with pytest.raises(ValueError, match="max_workers"):
        client.infer_batch("mlp", [good], max_workers=0)


def test_model_stats_count_requests(client):
    before = client.get_model_stats("stats_probe")
    assert isinstance(before, ModelStats)
    for i in range(5):
        client.infer("stats_probe", {"input": mlp_input(1, seed=i)})
    after = client.get_model_stats("stats_probe")
    assert after.successful_requests - before.successful_requests == 5
    assert after.total_requests == after.successful_requests + after.failed_requests
    assert after.avg_latency_ms > 0
    assert 0 < after.p50_latency_ms <= after.p95_latency_ms <= after.p99_latency_ms


# --------------------------------------------------------------------- ModelClient: errors

def _raises_server_error(call, status, *words):
    with pytest.raises(ServerError) as info:
        call()
    assert info.value.status_code == status, info.value
    assert info.value.message
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value


def test_unknown_model_is_404(client):
    x = mlp_input(1)
    _raises_server_error(lambda: client.infer("no_such_model", {"input": x}), 404, "no_such_model")
    _raises_server_error(lambda: client.get_model_metadata("no_such_model"), 404, "no_such_model")
    _raises_server_error(lambda: client.get_model_stats("no_such_model"), 404, "no_such_model")


def test_wrong_shape_is_400(client):
    _raises_server_error(lambda: client.infer("mlp", {"input": np.zeros((2, 5), np.float32)}),
                         400, "input")


def test_wrong_dtype_is_400(client):
    _raises_server_error(lambda: client.infer("mlp", {"input": np.zeros((2, 8), np.int32)}),
                         400, "input")


def test_wrong_input_name_is_400(client):
    _raises_server_error(lambda: client.infer("mlp", {"nope": mlp_input(1)}), 400, "nope")


def test_bad_arguments_fail_before_sending(client):
    attempts = count_attempts(client)
    with pytest.raises(ValueError, match="inputs"):
        client.infer("mlp", {})
    with pytest.raises(ValueError, match="model name"):
        client.infer("", {"input": mlp_input(1)})
    with pytest.raises(TypeError, match="list of output names"):
        client.infer("mlp", {"input": mlp_input(1)}, outputs="output")
    assert attempts == []


# ----------------------------------------------------------------- retries and timeouts

def test_closed_port_fails_after_the_retries():
    port = serving_server.free_port()
    client = ModelClient(f"http://127.0.0.1:{port}", max_retries=2, retry_delay=0.01)
    attempts = count_attempts(client)
    with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port} after 3 attempts"):
        client.infer("mlp", {"input": mlp_input(1)})
    assert len(attempts) == 3
    assert not client.is_alive() and not client.is_ready()
    assert not client.wait_for_ready(timeout=0.2, poll_interval=0.05)


def test_retries_reach_a_server_that_starts_late(tmp_path):
    """The first attempt is refused; the server is started only then, and the retries get through
    once it listens."""
    binary = serving_server.find_server_binary()
    assert binary, "pyflame-serve is not built: build the pyflame-serve target or set PYFLAME_SERVE_BIN"
    repo = serving_server.make_repository(tmp_path, {"mlp": MODELS["mlp"]})
    port = serving_server.free_port()
    client = ModelClient(f"http://127.0.0.1:{port}", max_retries=600, retry_delay=0.1)
    attempts = count_attempts(client)
    first_attempt_failed = threading.Event()
    request = client._pool.request

    def request_then_signal(*args, **kwargs):
        try:
            return request(*args, **kwargs)
        finally:
            first_attempt_failed.set()

    client._pool.request = request_then_signal
    processes = []

    def start_late():
        first_attempt_failed.wait(30)
        processes.append(subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0",
             "--metrics-port", "0", "--model-repository", str(repo)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        client.list_models()  # refused until the server listens (it may still be loading then)
        assert len(attempts) > 1
        assert client.wait_for_ready(timeout=60, poll_interval=0.05)
        assert [m.name for m in client.list_models()] == ["mlp"]
        x = mlp_input(2)
        response = client.infer("mlp", {"input": x})
        np.testing.assert_allclose(response.outputs["output"], reference("mlp", {"input": x})["output"],
                                   rtol=RTOL, atol=ATOL)
    finally:
        starter.join()
        for process in processes:
            process.terminate()
            process.wait(30)


class _Always503(http.server.BaseHTTPRequestHandler):
    hits = 0

    def _answer(self):
        type(self).hits += 1
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"error": "queue full"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def busy_server():
    """An HTTP endpoint that answers every request 503 (a v2 server whose queue stays full)."""
    handler = type("Handler", (_Always503,), {"hits": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_503_is_retried_then_raised(busy_server):
    url, handler = busy_server
    client = ModelClient(url, max_retries=3, retry_delay=0.01)
    error = _raises_server_error(lambda: client.infer("mlp", {"input": mlp_input(1)}), 503, "queue full")
    assert str(error) == "HTTP 503: queue full"
    assert handler.hits == 4
    assert not client.is_ready()
    assert handler.hits == 5  # health probes are not retried


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_timeout_raises_without_retrying(silent_port):
    client = ModelClient(f"http://127.0.0.1:{silent_port}", timeout=0.3, max_retries=3, retry_delay=0.01)
    attempts = count_attempts(client)
    with pytest.raises(TimeoutError, match="0.3 s"):
        client.infer("mlp", {"input": mlp_input(1)})
    assert len(attempts) == 1
    assert not client.is_alive()


# ------------------------------------------------------------------------ AsyncModelClient

def test_async_client_end_to_end(server):
    x = mlp_input(3, seed=21)
    expected = reference("mlp", {"input": x})["output"]

    async def scenario():
        async with AsyncModelClient(server.http_url, max_connections=4) as client:
            assert await client.is_alive()
            assert await client.is_ready()
            assert await client.wait_for_ready(timeout=5.0)
            assert {m.name for m in await client.list_models()} == set(MODELS)
            metadata = await client.get_model_metadata("mlp")
            assert metadata.inputs == _onnx_specs(MODELS["mlp"].graph.input)
            assert metadata.version == "1" and metadata.ready
            stats = await client.get_model_stats("mlp")
            assert stats.total_requests >= stats.successful_requests
            json_response = await client.infer("mlp", {"input": x}, request_id="a1")
            client.binary_threshold = 0
            binary_response = await client.infer("mlp", {"input": x})
            old = await client.infer("versioned", {"input": x}, version="1")
            with pytest.raises(ServerError) as info:
                await client.infer("no_such_model", {"input": x})
            assert info.value.status_code == 404
            with pytest.raises(ServerError) as info:
                await client.infer("mlp", {"input": np.zeros((1, 5), np.float32)})
            assert info.value.status_code == 400
            return json_response, binary_response, old

    json_response, binary_response, old = asyncio.run(scenario())
    assert json_response.request_id == "a1" and json_response.model_version == "1"
    np.testing.assert_allclose(json_response.outputs["output"], expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(binary_response.outputs["output"], expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(old.outputs["output"],
                               reference("versioned", {"input": x}, 1)["output"], rtol=RTOL, atol=ATOL)


def test_async_infer_batch_runs_concurrently_and_keeps_order(server):
    workers = 4
    inputs = [{"input": mlp_input(2, seed=200 + i)} for i in range(10)] + [
        {"input": np.zeros((1, 3), np.float32)}]

    async def scenario():
        async with AsyncModelClient(server.http_url, max_connections=workers) as client:
            # The first `workers` requests wait until all of them have started: with less
            # concurrency than that the wait times out.
            all_started = asyncio.Event()
            started = []
            infer_request = client._infer_request

            async def gated(request, version):
                if len(started) < workers:
                    started.append(request)
                    if len(started) == workers:
                        all_started.set()
                    await asyncio.wait_for(all_started.wait(), 30)
                return await infer_request(request, version)

            client._infer_request = gated
            return await client.infer_batch("mlp", inputs, max_workers=workers)

    responses = asyncio.run(scenario())
    assert [r.success for r in responses] == [True] * 10 + [False]
    assert responses[-1].error_message.startswith("HTTP 400")
    for feeds, response in zip(inputs, responses[:-1]):
        np.testing.assert_allclose(response.outputs["output"], reference("mlp", feeds)["output"],
                                   rtol=RTOL, atol=ATOL)


def test_async_closed_port_and_timeout(silent_port):
    closed = serving_server.free_port()

    async def scenario():
        async with AsyncModelClient(f"http://127.0.0.1:{closed}", max_retries=2, retry_delay=0.01) as client:
            assert not await client.is_alive()
            with pytest.raises(ConnectionError, match="after 3 attempts"):
                await client.infer("mlp", {"input": mlp_input(1)})
        async with AsyncModelClient(f"http://127.0.0.1:{silent_port}", timeout=0.3) as client:
            with pytest.raises(TimeoutError, match="0.3 s"):
                await client.infer("mlp", {"input": mlp_input(1)})

    asyncio.run(scenario())


def test_async_503_is_retried_then_raised(busy_server):
    url, handler = busy_server

    async def scenario():
        async with AsyncModelClient(url, max_retries=2, retry_delay=0.01) as client:
            with pytest.raises(ServerError) as info:
                await client.infer("mlp", {"input": mlp_input(1)})
            return info.value

    error = asyncio.run(scenario())
    assert (error.status_code, error.message, handler.hits) == (503, "queue full", 3)
