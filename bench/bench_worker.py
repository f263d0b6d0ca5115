"""One runtime, one model, one batch size, in its own process (run_bench.py --worker ...).

The parent talks to it with one JSON object a line: the worker's original stdout is kept for
the protocol and fd 1 is pointed at stderr, so whatever a library prints cannot corrupt it.
    worker -> {"ready": true, "version": ..., "load_s": ...}   (after loading and one run)
    parent -> {"cmd": "time", "min_runs": N, "min_time": S, "max_time": S}
    worker -> {"times_ms": [...]}
    parent -> {"cmd": "exit"}
    worker -> {"maxrss_mb": ...}                                (peak RSS, VmHWM)
Any failure is answered with {"error": "..."} and the worker exits.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

THREADS = 2


# --- runtime adapters: load(model, onnx_path, x) -> (run callable, version string) ------------

def load_pyflame_rt(name, path, x):
    import pyflame_rt

    opts = pyflame_rt.SessionOptions()
    opts.num_threads = THREADS  # default optimization level (2)
    session = pyflame_rt.InferenceSession(str(path), opts)
    feed = {session.get_inputs()[0].name: x}
    return (lambda: session.run(None, feed)[0]), pyflame_rt.__version__


def load_onnxruntime(name, path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return (lambda: session.run(None, feed)[0]), ort.__version__


def load_openvino(name, path, x, precision=None):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    used = str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: ", "").strip("'>")

    def run():
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    # On a CPU with AVX512_BF16 the default inference precision is bf16, not f32: say which.
    return run, f"{ov.get_version().split('-')[0]} ({used})"


def load_openvino_f32(name, path, x):
    return load_openvino(name, path, x, precision="f32")


def load_torch(name, path, x):
    import torch

    import bench_models

    torch.set_num_threads(THREADS)
    model = bench_models.build_torch_model(name)
    tx = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(tx).numpy()

    return run, torch.__version__


RUNTIMES = {
    "pyflame_rt": load_pyflame_rt,
    "onnxruntime": load_onnxruntime,
    "openvino": load_openvino,
    "openvino_f32": load_openvino_f32,
    "torch": load_torch,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    getrusage(RUSAGE_SELF).ru_maxrss is the obvious call, but Linux carries it over fork+exec:
    a worker started by the parent (which holds torch and the exported models, ~1 GB) would
    report the parent's peak. VmHWM in /proc/self/status is the same high-water mark for this
    process's own address space since exec; ru_maxrss is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_runs(fn, min_runs: int, min_time: float, max_time: float) -> list:
    """Runs FN until min_runs runs and min_time seconds are done, or max_time is exceeded (after
    at least one run). Returns each run's latency in milliseconds."""
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        elapsed = t1 - start
        if (len(times) >= min_runs and elapsed >= min_time) or elapsed >= max_time:
            return times


def main(runtime: str, model: str, onnx_path: str, batch: int, output_npy: str) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter on stdout goes to stderr
    sys.stdout = sys.stderr

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        import numpy as np

        import bench_models

        x = bench_models.make_input(model, batch)
        t0 = time.perf_counter()
        run, version = RUNTIMES[runtime](model, Path(onnx_path), x)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run()
        first_ms = (time.perf_counter() - t0) * 1e3
        np.save(output_npy, np.asarray(out))
        send({"ready": True, "version": version, "load_s": load_s, "first_run_ms": first_ms})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "time":
                send({"times_ms": time_runs(run, cmd["min_runs"], cmd["min_time"], cmd["max_time"])})
            elif cmd["cmd"] == "exit":
                send({"maxrss_mb": peak_rss_mb()})
                return 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which keeps going
        traceback.print_exc()
        msg = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
        send({"error": msg[:300]})
        return 1
    return 0
