"""pyflame-serve over HTTP: raw requests for every endpoint and error path, tritonclient.http
unchanged, dynamic batching under concurrency, hot reload under load, metrics, limits, shutdown.
Outputs are checked against ONNX Runtime on each request's own input."""
import json
import os
import re
import signal
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serving_server import (add_model_version, add_sub_model, find_server_binary, identity_model, make_repository,
                            mlp_model, onnxruntime_reference, start_server)

MLP_V1 = mlp_model(seed=1)
MLP_V2 = mlp_model(seed=2)
ADD_SUB = add_sub_model(np.int32)
BATCHED_CONFIG = {"enable_batching": True, "max_batch_size": 16, "preferred_batch_sizes": [4, 8],
                  "batch_timeout_us": 2000, "warmup_requests": 2}


def infer_body(name, array, datatype="FP32", **extra):
    body = {"inputs": [{"name": name, "shape": list(array.shape), "datatype": datatype,
                        "data": array.flatten().tolist()}]}
    body.update(extra)
    return body


def output_array(response_json, name):
    for output in response_json["outputs"]:
        if output["name"] == name:
            dtype = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "FP64": np.float64}[output["datatype"]]
            return np.array(output["data"], dtype=dtype).reshape(output["shape"])
    raise KeyError(name)


def wait_until(predicate, timeout=30.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def metric_value(text, name, **labels):
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_http")
    return make_repository(root, {"mlp": {1: MLP_V1, 2: MLP_V2}, "mlp_batched": MLP_V1, "add_sub": ADD_SUB,
                                  "strings": identity_model()},
                           configs={"mlp_batched": BATCHED_CONFIG})


@pytest.fixture(scope="module")
def server(repo):
    with start_server(repo, "--admin-token", "secret-token") as running:
        yield running


@pytest.fixture(scope="module")
def url(server):
    return server.http_url


# ---------------------------------------------------------------- health, metadata, infer

def test_health_and_server_metadata(url):
    assert requests.get(url + "/v2/health/live").json() == {"live": True}
    ready = requests.get(url + "/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = requests.get(url + "/v2").json()
    assert meta["name"] == "pyflame-serve"
    assert "binary_tensor_data" in meta["extensions"] and "model_repository" in meta["extensions"]


def test_model_metadata_versions_and_ready(url):
    meta = requests.get(url + "/v2/models/mlp").json()
    assert meta["name"] == "mlp" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]
    assert requests.get(url + "/v2/models/mlp/versions/1").json()["name"] == "mlp"
    ready = requests.get(url + "/v2/models/mlp/versions/2/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert requests.get(url + "/v2/models/nope/ready").status_code == 404
    config = requests.get(url + "/v2/models/mlp_batched/config").json()
    assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [8]
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert requests.get(url + "/v2/models/mlp/config").json()["max_batch_size"] == 0


def test_infer_json_matches_onnxruntime_and_routes_versions(url):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    latest = requests.post(url + "/v2/models/mlp/infer", json=infer_body("input", x, id="req-7"))
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert body["model_name"] == "mlp" and body["model_version"] == "2" and body["id"] == "req-7"
    np.testing.assert_allclose(output_array(body, "output"), onnxruntime_reference(MLP_V2, {"input": x})["output"],
                               rtol=1e-5, atol=1e-5)
    v1 = requests.post(url + "/v2/models/mlp/versions/1/infer", json=infer_body("input", x)).json()
    assert v1["model_version"] == "1"
    np.testing.assert_allclose(output_array(v1, "output"), onnxruntime_reference(MLP_V1, {"input": x})["output"],
                               rtol=1e-5, atol=1e-5)


def test_many_clients_connecting_at_once_are_all_served(server, url):
    """64 connections opened in the same instant (perf_analyzer at concurrency 32+ does this):
    none may be reset. Debian's httplib listens with a backlog of 5; the server raises it."""
    import http.client
    import socket
    clients = 64
    x = np.random.default_rng(4).standard_normal((1, 8)).astype(np.float32)
    body = json.dumps(infer_body("input", x))
    expected = onnxruntime_reference(MLP_V2, {"input": x})["output"]
    start = threading.Barrier(clients)

    def one_client(_):
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        start.wait()
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        results = []
        for _ in range(3):  # keep-alive: several requests per connection
            conn.request("POST", "/v2/models/mlp/infer", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            results.append((response.status, response.read()))
        conn.close()
        return results

    with ThreadPoolExecutor(clients) as pool:
        for results in pool.map(one_client, range(clients)):
            for status, payload in results:
                assert status == 200, payload
                np.testing.assert_allclose(output_array(json.loads(payload), "output"), expected, rtol=1e-5, atol=1e-5)
    # The listening socket's backlog (ss shows it as Send-Q): a burst past 5 pending connections
    # made curl-based clients fail with "Failure when receiving data from the peer".
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{server.http_port}"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert int(listing[2]) >= 128, listing


def test_infer_nested_data_and_requested_output(url):
    a = np.arange(8, dtype=np.int32).reshape(2, 4)
    b = np.full((2, 4), 3, dtype=np.int32)
    body = {"inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "INT32", "data": a.tolist()},
                       {"name": "INPUT1", "shape": [2, 4], "datatype": "INT32", "data": b.flatten().tolist()}],
            "outputs": [{"name": "OUTPUT1"}]}
    response = requests.post(url + "/v2/models/add_sub/infer", json=body).json()
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(output_array(response, "OUTPUT1"), a - b)


def test_infer_binary_tensor_extension(url):
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    response = requests.post(url + "/v2/models/mlp/infer", data=header + x.tobytes(),
                             headers={"Inference-Header-Content-Length": str(len(header)),
                                      "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    json_length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:json_length])
    output = meta["outputs"][0]
    assert output["parameters"]["binary_data_size"] == 2 * 4 * 4
    result = np.frombuffer(response.content[json_length:], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(result, onnxruntime_reference(MLP_V2, {"input": x})["output"], rtol=1e-5, atol=1e-5)
    # binary_data_output makes every output binary.
    both = requests.post(url + "/v2/models/add_sub/infer", json={
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]},
                   {"name": "INPUT1", "shape": [1, 4], "datatype": "INT32", "data": [4, 3, 2, 1]}],
        "parameters": {"binary_data_output": True}})
    length = int(both.headers["Inference-Header-Content-Length"])
    raw = np.frombuffer(both.content[length:], dtype=np.int32)
    np.testing.assert_array_equal(raw, [5, 5, 5, 5, -3, -1, 1, 3])


def test_bytes_tensors_json_and_binary(server, url):
    body = {"inputs": [{"name": "INPUT0", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "bc", "", "héllo"]}]}
    response = requests.post(url + "/v2/models/strings/infer", json=body)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["datatype"] == "BYTES" and output["data"] == ["a", "bc", "", "héllo"]
    import tritonclient.http as httpclient
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    data = np.array([[b"x\x00y", b"\xff"], [b"", b"long" * 100]], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [2, 2], "BYTES")
    inp.set_data_from_numpy(data, binary_data=True)
    result = client.infer("strings", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()
    client.close()


def test_model_stats(url):
    x = np.ones((1, 8), np.float32)
    for _ in range(3):
        assert requests.post(url + "/v2/models/mlp/versions/1/infer", json=infer_body("input", x)).status_code == 200
    stats = requests.get(url + "/v2/models/mlp/versions/1/stats").json()["model_stats"]
    assert len(stats) == 1 and stats[0]["version"] == "1"
    entry = stats[0]
    assert entry["successful_requests"] >= 3 and entry["inference_stats"]["success"]["count"] >= 3
    assert 0 < entry["p50_latency_ms"] <= entry["p95_latency_ms"] <= entry["p99_latency_ms"]
    all_stats = requests.get(url + "/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in all_stats} >= {("mlp", "1"), ("mlp", "2"), ("add_sub", "1")}


# ---------------------------------------------------------------- error paths

@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [0] * 7}]}).encode(),
     400, "shape"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "INT64", "data": [0] * 8}]}).encode(),
     400, "datatype"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0] * 5}]}).encode(),
     400, "elements"),
    (json.dumps({"inputs": [{"name": "bogus", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8}]}).encode(),
     400, "no input"),
    (json.dumps({"inputs": []}).encode(), 400, "missing input"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP99", "data": [0] * 8}]}).encode(),
     400, "unknown datatype"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": ["a"] * 8}]}).encode(),
     400, "numbers"),
    (json.dumps({"inputs": [{"name": "input", "shape": [-1, 8], "datatype": "FP32", "data": []}]}).encode(),
     400, "negative"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0] * 8}],
                 "outputs": [{"name": "nope"}]}).encode(), 400, "no output"),
])
def test_infer_errors_are_4xx_json(url, body, status, fragment):
    response = requests.post(url + "/v2/models/mlp/infer", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_unknown_model_version_and_path(url):
    x = np.zeros((1, 8), np.float32)
    response = requests.post(url + "/v2/models/nope/infer", json=infer_body("input", x))
    assert response.status_code == 404 and "nope" in response.json()["error"]
    response = requests.post(url + "/v2/models/mlp/versions/9/infer", json=infer_body("input", x))
    assert response.status_code == 404 and "version" in response.json()["error"]
    assert requests.get(url + "/v2/models/nope").status_code == 404
    missing = requests.get(url + "/v2/not/an/endpoint")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = requests.get(url + "/v2/models/mlp/infer")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert "not allowed" in wrong_method.json()["error"]
    assert requests.post(url + "/v2/health/ready").status_code == 405


def test_bad_binary_header(url):
    for header in ("abc", "999999"):
        response = requests.post(url + "/v2/models/mlp/infer", data=b"{}",
                                 headers={"Inference-Header-Content-Length": header})
        assert response.status_code == 400 and "Inference-Header-Content-Length" in response.json()["error"]
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    short = requests.post(url + "/v2/models/mlp/infer", data=header + b"\0" * 16,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


def test_names_escaping_the_repository_are_refused(url):
    auth = {"Authorization": "Bearer secret-token"}
    for name in ("..", "..%2F..%2Fetc", "%2E%2E", ".hidden", "a%00b"):
        response = requests.post(url + f"/v2/repository/models/{name}/load", headers=auth)
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert "error" in response.json()
        response = requests.post(url + f"/v2/models/{name}/infer", json={"inputs": []})
        assert 400 <= response.status_code < 500


def test_hostile_requests_do_not_crash_the_server(server, url):
    import socket
    for payload in (b"GARBAGE\r\n\r\n", b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
                    b"\x00\xff" * 100, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=1) as sock:
            sock.sendall(payload)
            try:
                sock.recv(4096)
            except OSError:
                pass
    deep = "[" * 5000 + "]" * 5000
    response = requests.post(url + "/v2/models/mlp/infer", data=deep)
    assert 400 <= response.status_code < 500
    huge_shape = {"inputs": [{"name": "input", "shape": [2**40, 2**40], "datatype": "FP32", "data": []}]}
    assert requests.post(url + "/v2/models/mlp/infer", json=huge_shape).status_code == 400
    assert server.is_running()
    assert requests.get(url + "/v2/health/live").status_code == 200


# ---------------------------------------------------------------- repository API and admin token

def test_repository_index_load_unload_with_admin_token(url):
    index = requests.post(url + "/v2/repository/index").json()
    assert {"name": "mlp", "version": "2", "state": "READY"} in index
    assert requests.post(url + "/v2/repository/models/add_sub/unload").status_code == 401
    wrong = requests.post(url + "/v2/repository/models/add_sub/unload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "error" in wrong.json()
    auth = {"Authorization": "Bearer secret-token"}
    assert requests.post(url + "/v2/repository/models/add_sub/unload", headers=auth).status_code == 200
    assert requests.get(url + "/v2/models/add_sub").status_code == 404
    states = {(m["name"], m["state"]) for m in requests.post(url + "/v2/repository/index").json()}
    assert ("add_sub", "UNAVAILABLE") in states
    ready_only = requests.post(url + "/v2/repository/index", json={"ready": True}).json()
    assert all(m["state"] == "READY" for m in ready_only) and "add_sub" not in {m["name"] for m in ready_only}
    assert requests.post(url + "/v2/repository/models/add_sub/load", headers=auth).status_code == 200
    assert requests.get(url + "/v2/models/add_sub/ready").status_code == 200
    missing = requests.post(url + "/v2/repository/models/not_there/load", headers=auth)
    assert missing.status_code == 404 and "not in the repository" in missing.json()["error"]
    bad_config = requests.post(url + "/v2/repository/models/add_sub/load", headers=auth,
                               json={"parameters": {"config": '{"max_batch_size": "x"}'}})
    assert bad_config.status_code == 400 and "max_batch_size" in bad_config.json()["error"]
    assert requests.get(url + "/v2/models/add_sub/ready").status_code == 200


# ---------------------------------------------------------------- tritonclient.http unchanged

def test_tritonclient_http(server, repo):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert client.get_server_metadata()["name"] == "pyflame-serve"
    meta = client.get_model_metadata("mlp")
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert client.get_model_config("mlp_batched")["max_batch_size"] == 16

    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    expected = onnxruntime_reference(MLP_V2, {"input": x})["output"]
    for binary in (True, False):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("mlp", [inp], outputs=[out], request_id="t1")
        np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
        assert result.get_response()["model_version"] == "2"

    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.ones((3, 4), np.int32)
    inputs = [httpclient.InferInput("INPUT0", [3, 4], "INT32"), httpclient.InferInput("INPUT1", [3, 4], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    index = client.get_model_repository_index()
    assert any(m["name"] == "mlp_batched" for m in index)
    headers = {"Authorization": "Bearer secret-token"}
    client.unload_model("add_sub", headers=headers)
    assert not client.is_model_ready("add_sub")
    client.load_model("add_sub", headers=headers)
    assert client.is_model_ready("add_sub")
    # A Triton-style config override switches dynamic batching on.
    client.load_model("mlp_batched", headers=headers, config=json.dumps(
        {"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [2], "max_queue_delay_microseconds": 100}}))
    new_config = client.get_model_config("mlp_batched")
    assert new_config["max_batch_size"] == 4 and new_config["dynamic_batching"]["preferred_batch_size"] == [2]
    client.load_model("mlp_batched", headers=headers)  # back to its config.json
    assert client.get_model_config("mlp_batched")["max_batch_size"] == 16
    with pytest.raises(InferenceServerException):
        client.load_model("add_sub")  # no token
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", inputs)
    stats = client.get_inference_statistics("mlp")
    assert stats["model_stats"][0]["name"] == "mlp"
    client.close()


# ---------------------------------------------------------------- dynamic batching

def test_batching_under_concurrency_is_exact(url):
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((int(rng.integers(1, 4)), 8)).astype(np.float32) for _ in range(96)]
    before = requests.get(url + "/v2/models/mlp_batched/stats").json()["model_stats"][0]

    def call(x):
        session = requests.Session()
        response = session.post(url + "/v2/models/mlp_batched/infer", json=infer_body("input", x))
        return x, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, inputs))
    for x, status, body in results:
        assert status == 200, body
        np.testing.assert_allclose(output_array(body, "output"), onnxruntime_reference(MLP_V1, {"input": x})["output"],
                                   rtol=1e-5, atol=1e-5)
    after = requests.get(url + "/v2/models/mlp_batched/stats").json()["model_stats"][0]
    # Every row was inferred exactly once; executions never exceed requests.
    assert after["inference_count"] - before["inference_count"] == sum(len(x) for x in inputs)
    assert after["execution_count"] - before["execution_count"] <= len(inputs)
    assert after["successful_requests"] - before["successful_requests"] == len(inputs)


def test_batch_larger_than_max_batch_size_is_refused(url):
    x = np.zeros((17, 8), np.float32)
    response = requests.post(url + "/v2/models/mlp_batched/infer", json=infer_body("input", x))
    assert response.status_code == 400 and "max_batch_size" in response.json()["error"]


def test_queue_full_and_timeout(tmp_path):
    # A batch waits up to 5 s to fill: one request occupies the single queue slot meanwhile.
    slow = {"enable_batching": True, "max_batch_size": 8, "batch_timeout_us": 5_000_000, "max_queue_size": 1,
            "warmup_requests": 0}
    repo = make_repository(tmp_path, {"slow": MLP_V1}, configs={"slow": slow})
    x = np.ones((1, 8), np.float32)
    with start_server(repo) as server:
        url = server.http_url
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(requests.post, url + "/v2/models/slow/infer", json=infer_body("input", x))
            assert wait_until(lambda: metric_value(requests.get(url + "/metrics").text, "pyflame_queue_size",
                                                   model="slow") == 1)
            full = requests.post(url + "/v2/models/slow/infer", json=infer_body("input", x))
            assert full.status_code == 503 and "full" in full.json()["error"]
            done = first.result()
            assert done.status_code == 200
            np.testing.assert_allclose(output_array(done.json(), "output"),
                                       onnxruntime_reference(MLP_V1, {"input": x})["output"], rtol=1e-5, atol=1e-5)
        # A 1 ms timeout expires long before the 5 s batch window closes.
        timed = requests.post(url + "/v2/models/slow/infer", json=infer_body("input", x, parameters={"timeout": 1000}))
        assert timed.status_code == 504 and "timed out" in timed.json()["error"]
        metrics = requests.get(url + "/metrics").text
        assert metric_value(metrics, "pyflame_request_total", model="slow", status="QueueFull") == 1
        assert metric_value(metrics, "pyflame_request_total", model="slow", status="Timeout") == 1


# ---------------------------------------------------------------- metrics

def test_metrics_names_and_counts(server, url, tmp_path):
    x = np.ones((2, 8), np.float32)
    text = requests.get(url + "/metrics").text
    before = metric_value(text, "pyflame_request_total", model="add_sub", status="success") or 0
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]},
                       {"name": "INPUT1", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]}
    for _ in range(5):
        assert requests.post(url + "/v2/models/add_sub/infer", json=body).status_code == 200
    bad = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert requests.post(url + "/v2/models/add_sub/infer", json=bad).status_code == 400
    requests.post(url + "/v2/models/mlp_batched/infer", json=infer_body("input", x))
    text = requests.get(url + "/metrics").text
    assert metric_value(text, "pyflame_request_total", model="add_sub", status="success") == before + 5
    assert metric_value(text, "pyflame_inference_errors_total", model="add_sub", error="InvalidRequest") >= 1
    assert metric_value(text, "pyflame_model_loaded", model="mlp") == 1
    assert metric_value(text, "pyflame_requests_active", model="add_sub") == 0
    assert metric_value(text, "pyflame_request_latency_seconds_count", model="add_sub") >= 5
    assert metric_value(text, "pyflame_batch_size_count", model="mlp_batched") >= 1
    assert "# TYPE pyflame_request_latency_seconds histogram" in text
    assert "# TYPE pyflame_request_total counter" in text
    assert "pyflame_queue_size" in text
    # The same registry on the metrics port.
    scrape = requests.get(server.metrics_url).text
    assert metric_value(scrape, "pyflame_request_total", model="add_sub", status="success") == before + 5


# ---------------------------------------------------------------- hot reload, memory

def test_hot_reload_under_load_has_zero_failures(tmp_path):
    repo = make_repository(tmp_path, {"hot": MLP_V1}, configs={"hot": {"warmup_requests": 1}})
    models = {("1", 1): MLP_V1}
    x = np.random.default_rng(9).standard_normal((2, 8)).astype(np.float32)
    reference = {seed: onnxruntime_reference(mlp_model(seed=seed), {"input": x})["output"] for seed in (1, 2, 3)}
    failures, served = [], []
    stop = threading.Event()
    with start_server(repo, "--poll-interval-ms", "50") as server:
        url = server.http_url

        def hammer():
            session = requests.Session()
            while not stop.is_set():
                response = session.post(url + "/v2/models/hot/infer", json=infer_body("input", x))
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                body = response.json()
                served.append((body["model_version"], output_array(body, "output")))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            assert wait_until(lambda: len(served) > 20)
            add_model_version(repo, "hot", 2, mlp_model(seed=2))  # a new version
            assert wait_until(lambda: served and served[-1][0] == "2")
            add_model_version(repo, "hot", 2, mlp_model(seed=3))  # version 2 changes in place
            assert wait_until(lambda: served and np.allclose(served[-1][1], reference[3], atol=1e-5))
            count = len(served)
            assert wait_until(lambda: len(served) > count + 20)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert failures == []
        for version, output in served:
            allowed = [reference[1]] if version == "1" else [reference[2], reference[3]]
            assert any(np.allclose(output, ref, rtol=1e-5, atol=1e-5) for ref in allowed)
        # Removing a version directory unloads it.
        import shutil
        shutil.rmtree(repo / "hot" / "2")
        assert wait_until(lambda: requests.get(url + "/v2/models/hot").json()["versions"] == ["1"])


def test_max_memory_refuses_a_load_and_keeps_serving(tmp_path):
    small = mlp_model(seed=1)                          # 212 floats of weights
    big = mlp_model(in_features=8, hidden=512, seed=4)  # ~6.7k floats
    repo = make_repository(tmp_path, {"small": small})
    add_model_version(repo, "big", 1, big)
    (repo / "big" / "1" / "model.onnx").rename(repo / "big" / "1" / "staged.onnx")  # hidden at start
    with start_server(repo, "--max-memory", "4KB") as server:
        url = server.http_url
        (repo / "big" / "1" / "staged.onnx").rename(repo / "big" / "1" / "model.onnx")
        response = requests.post(url + "/v2/repository/models/big/load")
        assert response.status_code == 400
        assert "max_memory" in response.json()["error"]
        assert requests.get(url + "/v2/models/big").status_code == 404
        x = np.ones((1, 8), np.float32)
        ok = requests.post(url + "/v2/models/small/infer", json=infer_body("input", x))
        assert ok.status_code == 200
        np.testing.assert_allclose(output_array(ok.json(), "output"), onnxruntime_reference(small, {"input": x})["output"],
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- limits: size, rate, CORS, TLS

def test_max_request_size_413(tmp_path):
    repo = make_repository(tmp_path, {"mlp": MLP_V1})
    with start_server(repo, "--max-request-size", "1KB") as server:
        x = np.zeros((64, 8), np.float32)
        response = requests.post(server.http_url + "/v2/models/mlp/infer", json=infer_body("input", x))
        assert response.status_code == 413 and "max_request_size" in response.json()["error"]
        small = requests.post(server.http_url + "/v2/models/mlp/infer", json=infer_body("input", x[:1]))
        assert small.status_code == 200


def test_rate_limit_429_and_health_exempt(tmp_path):
    repo = make_repository(tmp_path, {"mlp": MLP_V1})
    with start_server(repo, "--rate-limit", "0.1", "--rate-limit-burst", "3") as server:
        codes = [requests.get(server.http_url + "/v2").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = requests.get(server.http_url + "/v2/models/mlp")
        assert limited.status_code == 429 and "rate limit" in limited.json()["error"]
        assert limited.headers["Retry-After"] == "1"
        assert requests.get(server.http_url + "/v2/health/ready").status_code == 200


def test_cors(tmp_path):
    repo = make_repository(tmp_path, {"mlp": MLP_V1})
    with start_server(repo, "--cors-origin", "https://example.org") as server:
        preflight = requests.options(server.http_url + "/v2/models/mlp/infer",
                                     headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://example.org"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        get = requests.get(server.http_url + "/v2")
        assert get.headers["Access-Control-Allow-Origin"] == "https://example.org"
    with start_server(repo) as server:
        assert "Access-Control-Allow-Origin" not in requests.get(server.http_url + "/v2").headers


def make_self_signed(directory):
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command-line tool is not installed (needed to make a test certificate)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls(tmp_path):
    cert, key = make_self_signed(tmp_path)
    repo = make_repository(tmp_path, {"mlp": MLP_V1})
    with start_server(repo, "--tls-cert", cert, "--tls-key", key, grpc=False) as server:
        assert server.http_url.startswith("https://")
        x = np.ones((1, 8), np.float32)
        response = requests.post(server.http_url + "/v2/models/mlp/infer", json=infer_body("input", x), verify=str(cert))
        assert response.status_code == 200
        np.testing.assert_allclose(output_array(response.json(), "output"),
                                   onnxruntime_reference(MLP_V1, {"input": x})["output"], rtol=1e-5, atol=1e-5)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.http_url.replace("https://", "http://") + "/v2", timeout=5)


# ---------------------------------------------------------------- CLI, config, shutdown

def test_cli_help_and_bad_options():
    binary = find_server_binary()
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--model-repository", "--model", "--http-port", "--grpc-port", "--metrics-port", "--config",
                   "--host", "--admin-token", "--poll-interval-ms", "--max-memory", "--tls-cert", "--tls-key",
                   "--threads", "--rate-limit", "--cors", "--max-request-size"):
        assert option in help_text
    bad = subprocess.run([binary, "--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    bad = subprocess.run([binary, "--http-port", "99999"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--http-port" in bad.stderr
    missing = subprocess.run([binary, "--model", "m=/no/such/model.onnx", "--http-port", "0", "--grpc-port", "0",
                              "--metrics-port", "0"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "/no/such/model.onnx" in missing.stderr


def test_port_in_use_is_a_clear_error(server, tmp_path):
    binary = find_server_binary()
    clash = subprocess.run([binary, "--model-repository", str(tmp_path), "--host", "127.0.0.1",
                            "--http-port", str(server.http_port), "--grpc-port", "0", "--metrics-port", "0"],
                           capture_output=True, text=True, timeout=60)
    assert clash.returncode == 1 and "cannot bind HTTP" in clash.stderr
    clash = subprocess.run([binary, "--model-repository", str(tmp_path), "--host", "127.0.0.1", "--http-port", "0",
                            "--grpc-port", str(server.grpc_port), "--metrics-port", "0"],
                           capture_output=True, text=True, timeout=60)
    assert clash.returncode == 1 and "cannot bind gRPC" in clash.stderr


def test_config_file_yaml_and_flags_override(tmp_path):
    binary = find_server_binary()
    config = tmp_path / "server.yaml"
    config.write_text("http:\n  port: 1234\n  max_request_size: 2MB\n  enable_cors: true\n"
                      "grpc:\n  port: 4321\nmax_memory: 1GB\nmodels:\n  - name: m\n    model_path: /x.onnx\n"
                      "    enable_batching: true\n    preferred_batch_sizes: [2, 4]\n")
    result = subprocess.run([binary, "--config", str(config), "--http-port", "5555", "--print-config"],
                            capture_output=True, text=True, check=True)
    effective = json.loads(result.stdout)
    assert effective["http"]["port"] == 5555 and effective["grpc"]["port"] == 4321
    assert effective["http"]["max_request_size"] == 2 * 1024 * 1024 and effective["http"]["enable_cors"] is True
    assert effective["max_memory"] == 1 << 30
    assert effective["models"][0]["preferred_batch_sizes"] == [2, 4]
    config.write_text('{"http": {"port": "not a number"}}')
    config = config.rename(tmp_path / "server.json")
    bad = subprocess.run([binary, "--config", str(config)], capture_output=True, text=True)
    assert bad.returncode == 2 and "config.http.port" in bad.stderr
    config.write_text('{"htttp": {}}')
    bad = subprocess.run([binary, "--config", str(config)], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key 'htttp'" in bad.stderr


def test_single_model_flag_and_bad_repository_model(tmp_path):
    path = tmp_path / "one.onnx"
    path.write_bytes(MLP_V1.SerializeToString())
    with start_server(None, "--model", f"single:3={path}", grpc=False, metrics=False) as server:
        meta = requests.get(server.http_url + "/v2/models/single").json()
        assert meta["versions"] == ["3"]
    # A corrupt model in the repository: not ready (strict readiness), the index says why.
    repo = make_repository(tmp_path / "r", {"good": MLP_V1})
    add_model_version(repo, "broken", 1, b"this is not a model")
    server = start_server(repo, wait_ready=False)
    try:
        assert wait_until(lambda: "ready:" in server.log())
        assert requests.get(server.http_url + "/v2/health/ready").status_code == 503
        index = {m["name"]: m for m in requests.post(server.http_url + "/v2/repository/index").json()}
        assert index["good"]["state"] == "READY" and index["broken"]["state"] == "UNAVAILABLE"
        assert index["broken"]["reason"]
        # Requests for it say why it serves nothing; an unknown name is just unknown.
        x = np.zeros((1, 8), np.float32)
        broken = requests.post(server.http_url + "/v2/models/broken/infer", json=infer_body("input", x))
        assert broken.status_code == 404 and "failed to load" in broken.json()["error"]
        unknown = requests.post(server.http_url + "/v2/models/nope/infer", json=infer_body("input", x))
        assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
    finally:
        assert server.stop() == 0


def test_sigterm_drains_in_flight_requests(tmp_path):
    slow = {"enable_batching": True, "max_batch_size": 8, "batch_timeout_us": 1_500_000, "warmup_requests": 0}
    repo = make_repository(tmp_path, {"slow": MLP_V1}, configs={"slow": slow})
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    server = start_server(repo)
    url = server.http_url
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(requests.post, url + "/v2/models/slow/infer", json=infer_body("input", x))
        assert wait_until(lambda: metric_value(requests.get(url + "/metrics").text, "pyflame_queue_size",
                                               model="slow") == 1)
        server.process.send_signal(signal.SIGTERM)
        response = pending.result()
    assert response.status_code == 200
    np.testing.assert_allclose(output_array(response.json(), "output"),
                               onnxruntime_reference(MLP_V1, {"input": x})["output"], rtol=1e-5, atol=1e-5)
    assert server.process.wait(30) == 0
    assert "draining" in server.log()


def test_keep_alive_and_request_timeouts_close_connections(tmp_path):
    import socket
    repo = make_repository(tmp_path, {"mlp": MLP_V1})
    with start_server(repo, "--keep-alive-timeout-ms", "1000", "--request-timeout-ms", "500") as server:
        # An idle keep-alive connection is closed after its timeout.
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=15) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := sock.recv(4096):  # the answer, then the server hangs up (else: timeout)
                received += chunk
            assert received.startswith(b"HTTP/1.1 200") and received.endswith(b'{"live":true}')
        # A request that stalls half-way is dropped after the request timeout.
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=15) as sock:
            sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            received = b""
            while chunk := sock.recv(4096):  # an error answer may come first; then the close
                received += chunk
            assert received == b"" or received.startswith(b"HTTP/1.1 4")
        assert requests.get(server.http_url + "/v2/health/live").status_code == 200


def test_server_from_config_file(tmp_path):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(MLP_V2.SerializeToString())
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"models": [{"name": "configured", "model_path": str(path), "version": "4",
                                              "enable_batching": True, "max_batch_size": 4}],
                                  "http": {"enable_cors": True}}))
    with start_server(None, "--config", config, grpc=False) as server:
        response = requests.post(server.http_url + "/v2/models/configured/infer",
                                 json=infer_body("input", np.ones((2, 8), np.float32)))
        assert response.status_code == 200 and response.json()["model_version"] == "4"
        np.testing.assert_allclose(output_array(response.json(), "output"),
                                   onnxruntime_reference(MLP_V2, {"input": np.ones((2, 8), np.float32)})["output"],
                                   rtol=1e-5, atol=1e-5)
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert requests.get(server.http_url + "/v2/models/configured/config").json()["max_batch_size"] == 4
