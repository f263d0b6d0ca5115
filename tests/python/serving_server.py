"""Start the real `pyflame-serve` on free loopback ports, and build small model repositories.

Used by the server's own tests and by the Python-client tests:

    repo = make_repository(tmp_path, {"mlp": mlp_model()})
    with start_server(repo) as server:
        requests.get(server.http_url + "/v2/health/ready")

The binary is found through $PYFLAME_SERVE_BIN, then `pyflame-serve` on PATH (or next to the
running Python, as `pip install .` puts it), then the newest build/*/serving/pyflame-serve.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def find_server_binary():
    """Path of the pyflame-serve executable, or None when it is not built."""
    explicit = os.environ.get("PYFLAME_SERVE_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("pyflame-serve")
    if on_path:
        return on_path
    next_to_python = Path(sysconfig.get_path("scripts")) / "pyflame-serve"
    if next_to_python.is_file():
        return str(next_to_python)
    built = sorted(ROOT.glob("build/*/serving/pyflame-serve"), key=lambda p: p.stat().st_mtime)
    return str(built[-1]) if built else None


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A running pyflame-serve; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, process, http_port, grpc_port, metrics_port, log_path, scheme="http"):
        self.process = process
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.http_url = f"{scheme}://127.0.0.1:{http_port}"
        self.grpc_url = f"127.0.0.1:{grpc_port}" if grpc_port else None
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}

    def log(self):
        """Everything the server printed so far."""
        return Path(self.log_path).read_text(errors="replace")

    def is_running(self):
        return self.process.poll() is None

    def stop(self, timeout=30.0):
        """SIGTERM, wait for the drain, return the exit code (kills after `timeout` s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError("pyflame-serve did not exit within %.0f s of SIGTERM:\n%s"
                                   % (timeout, self.log()))
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def _http_status(url, timeout=2.0):
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def start_server(repo_dir=None, *extra_args, env=None, grpc=True, metrics=True,
                 wait_ready=True, ready_timeout=120.0):
    """Start pyflame-serve on free loopback ports and wait for /v2/health/ready.

    `repo_dir`: the model repository (None: no --model-repository; pass --model in extra_args).
    `grpc` / `metrics`: False gives port 0, which disables that listener.
    `extra_args`: more command-line flags, e.g. "--admin-token", "secret".
    """
    binary = find_server_binary()
    if binary is None:
        raise RuntimeError("pyflame-serve is not built: build the 'pyflame-serve' CMake target "
                           "or set PYFLAME_SERVE_BIN")
    http_port = free_port()
    grpc_port = free_port() if grpc else 0
    metrics_port = free_port() if metrics else 0
    args = [binary, "--host", "127.0.0.1", "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    if repo_dir is not None:
        args += ["--model-repository", str(repo_dir)]
    args += [str(a) for a in extra_args]
    scheme = "https" if "--tls-cert" in args else "http"
    log = tempfile.NamedTemporaryFile(prefix="pyflame-serve-", suffix=".log", delete=False)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    log.close()
    server = ServerProcess(process, http_port, grpc_port, metrics_port, log.name, scheme)
    if wait_ready:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError("pyflame-serve exited with %d:\n%s" % (process.returncode, server.log()))
            try:
                if _http_status(server.http_url + "/v2/health/ready") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.process.kill()
                raise RuntimeError("pyflame-serve not ready after %.0f s:\n%s" % (ready_timeout, server.log()))
            time.sleep(0.05)
    return server


# ---------------------------------------------------------------- models and repositories

def mlp_model(in_features=8, hidden=16, out_features=4, seed=0, batch_dim="batch"):
    """An ONNX MLP (MatMul, Add, Relu, MatMul, Add) with seeded weights.

    Input "input" [batch, in_features] float32, output "output" [batch, out_features].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((in_features, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, out_features)).astype(np.float32)
    b2 = rng.standard_normal(out_features).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
        helper.make_node("Add", ["h4", "b2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch_dim, in_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch_dim, out_features])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_sub_model(dtype=np.int32, width=4):
    """Two inputs INPUT0, INPUT1 [batch, width] of `dtype`; outputs OUTPUT0 = a+b, OUTPUT1 = a-b."""
    import onnx
    from onnx import helper

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub",
        [helper.make_tensor_value_info("INPUT0", elem, ["batch", width]),
         helper.make_tensor_value_info("INPUT1", elem, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT0", elem, ["batch", width]),
         helper.make_tensor_value_info("OUTPUT1", elem, ["batch", width])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def identity_model(elem_type=None, name="INPUT0", output="OUTPUT0"):
    """Identity on a [batch, 2] tensor (default: strings, the protocol's BYTES)."""
    import onnx
    from onnx import helper

    elem = onnx.TensorProto.STRING if elem_type is None else elem_type
    graph = helper.make_graph([helper.make_node("Identity", [name], [output])], "identity",
                              [helper.make_tensor_value_info(name, elem, ["batch", 2])],
                              [helper.make_tensor_value_info(output, elem, ["batch", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def add_model_version(repo_dir, name, version, model, config=None):
    """Write `model` (an onnx.ModelProto or bytes) as REPO/NAME/VERSION/model.onnx atomically.

    `config`: a dict written as REPO/NAME/config.json (the model's ModelConfig).
    """
    model_dir = Path(repo_dir) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    target = version_dir / "model.onnx"
    staging = version_dir / ".model.onnx.tmp"
    staging.write_bytes(data)
    os.replace(staging, target)
    if config is not None:
        (model_dir / "config.json").write_text(json.dumps(config))
    return target


def make_repository(root, models, configs=None):
    """A model repository under `root`/models: {name: model} at version 1, or
    {name: {version: model}} for several versions. `configs`: {name: ModelConfig dict}."""
    repo = Path(root) / "models"
    repo.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        versions = model if isinstance(model, dict) else {1: model}
        for version, versioned in versions.items():
            add_model_version(repo, name, version, versioned, (configs or {}).get(name))
    return repo


def onnxruntime_reference(model, feeds):
    """The outputs of `model` on `feeds` computed by ONNX Runtime: {name: array}."""
    import onnxruntime

    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


if __name__ == "__main__":  # manual use: python tests/python/serving_server.py REPO
    with start_server(sys.argv[1] if len(sys.argv) > 1 else None) as running:
        print(running.http_url, running.grpc_url, running.metrics_url, flush=True)
        try:
            running.process.wait()
        except KeyboardInterrupt:
            pass
