"""pyflame-serve over gRPC with tritonclient.grpc unchanged: health, metadata, config, infer,
statistics, repository load/unload with the admin token, errors, batching under concurrency and
streaming. Outputs are checked against ONNX Runtime."""
import threading

import numpy as np
import pytest

from serving_server import add_sub_model, make_repository, mlp_model, onnxruntime_reference, start_server

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MLP = mlp_model(seed=11)
MLP_V2 = mlp_model(seed=12)
ADD_SUB = add_sub_model(np.int64)
TOKEN = {"authorization": "Bearer grpc-token"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = make_repository(tmp_path_factory.mktemp("serving_grpc"),
                           {"mlp": {1: MLP, 2: MLP_V2}, "add_sub": ADD_SUB, "batched": MLP},
                           configs={"batched": {"enable_batching": True, "max_batch_size": 8,
                                                "batch_timeout_us": 3000, "warmup_requests": 1}})
    with start_server(repo, "--admin-token", "grpc-token") as running:
        yield running


@pytest.fixture()
def client(server):
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield client
    client.close()


def mlp_input(x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "pyflame-serve" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("mlp", as_json=True)
    assert model["versions"] == ["1", "2"]
    assert model["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": ["-1", "8"]}
    config = client.get_model_config("batched", as_json=True)["config"]
    assert config["max_batch_size"] == 8 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == ["8"]


def test_infer_matches_onnxruntime(client):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    result = client.infer("mlp", [mlp_input(x)], request_id="g1")
    np.testing.assert_allclose(result.as_numpy("output"), onnxruntime_reference(MLP_V2, {"input": x})["output"],
                               rtol=1e-5, atol=1e-5)
    response = result.get_response(as_json=True)
    assert response["model_version"] == "2" and response["id"] == "g1"
    v1 = client.infer("mlp", [mlp_input(x)], model_version="1")
    np.testing.assert_allclose(v1.as_numpy("output"), onnxruntime_reference(MLP, {"input": x})["output"],
                               rtol=1e-5, atol=1e-5)


def test_infer_two_inputs_requested_output(client):
    a = np.arange(8, dtype=np.int64).reshape(2, 4) * 1000000007
    b = np.full((2, 4), -5, dtype=np.int64)
    inputs = [grpcclient.InferInput("INPUT0", [2, 4], "INT64"), grpcclient.InferInput("INPUT1", [2, 4], "INT64")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("add_sub", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert result.as_numpy("OUTPUT1") is None


def test_errors_have_grpc_status(client):
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [mlp_input(x)])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    wrong_dtype = grpcclient.InferInput("input", [1, 8], "FP64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 8), np.float64))
    with pytest.raises(InferenceServerException, match="datatype") as bad:
        client.infer("mlp", [wrong_dtype])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("mlp", [mlp_input(np.zeros((1, 5), np.float32))])
    with pytest.raises(InferenceServerException, match="max_batch_size"):
        client.infer("batched", [mlp_input(np.zeros((9, 8), np.float32))])
    with pytest.raises(InferenceServerException) as version:
        client.infer("mlp", [mlp_input(x)], model_version="7")
    assert version.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as unimplemented:
        client.get_system_shared_memory_status()
    assert unimplemented.value.status() == "StatusCode.UNIMPLEMENTED"


def test_repository_load_unload_needs_token(client):
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "add_sub", "version": "1", "state": "READY"} in index
    with pytest.raises(InferenceServerException) as missing:
        client.unload_model("add_sub")
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong:
        client.unload_model("add_sub", headers={"authorization": "Bearer nope"})
    assert wrong.value.status() == "StatusCode.PERMISSION_DENIED"
    client.unload_model("add_sub", headers=TOKEN)
    with pytest.raises(InferenceServerException) as gone:
        client.get_model_metadata("add_sub")
    assert gone.value.status() == "StatusCode.NOT_FOUND"
    client.load_model("add_sub", headers=TOKEN)
    assert client.is_model_ready("add_sub")
    with pytest.raises(InferenceServerException, match="not in the repository"):
        client.load_model("ghost", headers=TOKEN)


def test_statistics(client):
    x = np.ones((2, 8), np.float32)
    client.infer("mlp", [mlp_input(x)], model_version="1")
    stats = client.get_inference_statistics("mlp", "1", as_json=True)["model_stats"]
    assert stats[0]["name"] == "mlp" and stats[0]["version"] == "1"
    assert int(stats[0]["inference_stats"]["success"]["count"]) >= 1


def test_batching_under_concurrency_is_exact(server):
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((int(rng.integers(1, 3)), 8)).astype(np.float32) for _ in range(48)]
    results, errors = [None] * len(inputs), []
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    done = threading.Semaphore(0)

    def callback(index):
        def record(result, error):
            if error is not None:
                errors.append(error)
            else:
                results[index] = result.as_numpy("output")
            done.release()
        return record

    for i, x in enumerate(inputs):
        client.async_infer("batched", [mlp_input(x)], callback(i))
    for _ in inputs:
        assert done.acquire(timeout=60)
    client.close()
    assert errors == []
    for x, result in zip(inputs, results):
        np.testing.assert_allclose(result, onnxruntime_reference(MLP, {"input": x})["output"], rtol=1e-5, atol=1e-5)


def test_stream_infer(server):
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    received = []
    finished = threading.Event()

    def callback(result, error):
        received.append((result, error))
        if len(received) == 3:
            finished.set()

    client.start_stream(callback)
    xs = [np.full((1, 8), i, np.float32) for i in range(2)]
    for i, x in enumerate(xs):
        client.async_stream_infer("mlp", [mlp_input(x)], request_id=str(i), model_version="1")
    client.async_stream_infer("nope", [mlp_input(xs[0])], request_id="bad")
    assert finished.wait(30)
    client.stop_stream()
    client.close()
    ok = [r for r, e in received if e is None]
    assert len(ok) == 2 and sum(e is not None for _, e in received) == 1
    for result in ok:
        i = int(result.get_response().id)
        np.testing.assert_allclose(result.as_numpy("output"), onnxruntime_reference(MLP, {"input": xs[i]})["output"],
                                   rtol=1e-5, atol=1e-5)


def test_grpc_tls(tmp_path):
    from test_serving_http import make_self_signed

    cert, key = make_self_signed(tmp_path)
    repo = make_repository(tmp_path, {"mlp": MLP})
    with start_server(repo, "--tls-cert", cert, "--tls-key", key) as server:
        client = grpcclient.InferenceServerClient(url=f"localhost:{server.grpc_port}", ssl=True,
                                                  root_certificates=str(cert))
        x = np.ones((1, 8), np.float32)
        result = client.infer("mlp", [mlp_input(x)])
        np.testing.assert_allclose(result.as_numpy("output"), onnxruntime_reference(MLP, {"input": x})["output"],
                                   rtol=1e-5, atol=1e-5)
        client.close()


def test_sigterm_drains_in_flight_grpc_requests(tmp_path):
    import signal
    import time

    import requests

    repo = make_repository(tmp_path, {"slow": MLP}, configs={"slow": {
        "enable_batching": True, "max_batch_size": 8, "batch_timeout_us": 1_500_000, "warmup_requests": 0}})
    server = start_server(repo)
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    x = np.random.default_rng(8).standard_normal((1, 8)).astype(np.float32)
    outcome = []
    done = threading.Event()
    client.async_infer("slow", [mlp_input(x)], lambda result, error: (outcome.append((result, error)), done.set()))
    deadline = time.monotonic() + 30
    while 'pyflame_queue_size{model="slow"} 1' not in requests.get(server.http_url + "/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    assert done.wait(30)
    result, error = outcome[0]
    assert error is None
    np.testing.assert_allclose(result.as_numpy("output"), onnxruntime_reference(MLP, {"input": x})["output"],
                               rtol=1e-5, atol=1e-5)
    assert server.process.wait(30) == 0
    client.close()


def test_malformed_raw_requests_are_invalid_argument(server):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))

    def request(shape, raw=None, fp32=None, datatype="FP32"):
        message = service_pb2.ModelInferRequest(model_name="mlp")
        tensor = message.inputs.add(name="input", datatype=datatype)
        tensor.shape.extend(shape)
        if raw is not None:
            message.raw_input_contents.append(raw)
        if fp32 is not None:
            tensor.contents.fp32_contents.extend(fp32)
        return message

    for message, fragment in [(request([2**20, 2**20], fp32=[1.0]), "elements"),
                              (request([1, 8], raw=b"\0" * 4), "needs 32 bytes"),
                              (request([-1, 8], raw=b""), "negative"),
                              (request([1, 8], raw=b"", datatype="XX"), "unknown datatype")]:
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(message)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in error.value.details()
    ok = stub.ModelInfer(request([1, 8], fp32=[0.5] * 8))
    expected = onnxruntime_reference(MLP_V2, {"input": np.full((1, 8), 0.5, np.float32)})["output"]
    np.testing.assert_allclose(np.frombuffer(ok.raw_output_contents[0], np.float32).reshape(1, 4), expected,
                               rtol=1e-5, atol=1e-5)
