"""PyFlameRT demo: ONNX model -> .pfm -> InferenceSession, checked against ONNX Runtime, then
served by pyflame-serve from ./models (its default repository) and queried over HTTP.

Run through ./scripts/demo.sh (which sets everything up), or directly in the venv:
    .venv/bin/python examples/demo.py [--model M.onnx] [--runs N]
"""
import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort

import pyflame_rt

HERE = Path(__file__).resolve().parent


def latency_ms(fn, runs: int, warmup: int = 10) -> tuple:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(HERE / "models" / "small_cnn.onnx"))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    print(f"pyflame_rt {pyflame_rt.__version__}, providers {pyflame_rt.get_available_providers()}")

    # 1. Import the ONNX model.
    result = pyflame_rt.import_module.ONNXImporter().import_model(args.model)
    if not result.success:
        raise SystemExit(f"import failed: {result.error}")
    s = result.stats
    print(f"imported {Path(args.model).name}: {s.node_count} nodes, {s.initializer_count} initializers, "
          f"{s.parameter_count:,} parameters in {s.import_time_ms:.1f} ms")
    for w in s.warnings:
        print(f"  warning: {w}")

    # What the session's optimizer (level 2, the default) does to this graph, shown on a copy.
    optimized = pyflame_rt.import_module.ONNXImporter().import_model(args.model).graph
    changes = [r for r in pyflame_rt.PassManager().run(optimized, level=2) if r.changed]
    summary = ", ".join(f"{r.pass_name} ({r.nodes_removed + r.nodes_fused})" for r in changes)
    print(f"optimizer: {len(result.graph.nodes)} -> {len(optimized.nodes)} nodes: {summary or 'nothing to do'}")

    with tempfile.TemporaryDirectory() as tmp:
        # 2. Save as .pfm and load it back into a session.
        pfm_path = Path(tmp) / (Path(args.model).stem + ".pfm")
        pyflame_rt.save_model(result.graph, str(pfm_path))
        print(f"saved {pfm_path.name} ({pfm_path.stat().st_size:,} bytes)")
        opts = pyflame_rt.SessionOptions()
        opts.num_threads = 2
        session = pyflame_rt.InferenceSession(str(pfm_path), opts)

    inp = session.get_inputs()[0]
    out = session.get_outputs()[0]
    print(f"input  {inp.name}: {inp.type} {inp.shape}")
    print(f"output {out.name}: {out.type} {out.shape}")

    # 3. Run and check against ONNX Runtime.
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    ort_session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    print()
    print(f"{'batch':>5} {'max |diff| vs ORT':>18} {'pyflame_rt ms':>14} {'ORT ms':>8} {'ORT/pyflame_rt':>15}")
    for batch in (1, 8):
        shape = [batch if d is None else d for d in inp.shape]
        x = rng.standard_normal(shape).astype(np.float32)
        ours = session.run(None, {inp.name: x})[0]
        ref = ort_session.run(None, {inp.name: x})[0]
        diff = float(np.max(np.abs(ours - ref)))
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
        ours_ms, _ = latency_ms(lambda: session.run(None, {inp.name: x}), args.runs)
        ort_ms, _ = latency_ms(lambda: ort_session.run(None, {inp.name: x}), args.runs)
        print(f"{batch:>5} {diff:>18.2e} {ours_ms:>14.3f} {ort_ms:>8.3f} {ort_ms / ours_ms:>14.2f}x")
        if batch == 1:
            top = np.argsort(-ours[0])[:3]
            first = ", ".join(f"class {k}: {ours[0, k]:.4f}" for k in top)
    print(f"\nbatch-1 top-3: {first}")
    print("outputs match ONNX Runtime (rtol 1e-4, atol 1e-5)")

    # 4. Serve it: ./models/NAME/1/model.pfm is what `pyflame-serve` with no arguments serves.
    name = Path(args.model).stem
    version_dir = Path("models") / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    pyflame_rt.save_model(result.graph, str(version_dir / "model.pfm"))
    serve(name, inp.name, session, rng)
    return 0


def serve(name: str, input_name: str, session, rng) -> None:
    server = shutil.which("pyflame-serve")
    if server is None:
        raise SystemExit("pyflame-serve is not on PATH (pip install . puts it into the venv's bin/)")
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([server, "--model-repository", "models", "--host", "127.0.0.1", "--http-port", str(port),
                             "--grpc-port", "0", "--metrics-port", "0"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(300):  # up to 30 s to load and warm up
            try:
                with urllib.request.urlopen(f"{base}/v2/models/{name}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("pyflame-serve did not become ready")
        shape = [1 if d is None else d for d in session.get_inputs()[0].shape]
        x = rng.standard_normal(shape).astype(np.float32)
        body = {"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        request = urllib.request.Request(f"{base}/v2/models/{name}/infer", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.load(r)
        out = answer["outputs"][0]
        served = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_allclose(served, session.run(None, {input_name: x})[0], rtol=1e-5, atol=1e-6)
        print(f"\nserved by pyflame-serve at {base}/v2/models/{name} (KServe v2): output {out['shape']} "
              f"matches the in-process run")
    finally:
        proc.send_signal(signal.SIGTERM)  # drains in-flight requests, then exits 0
        proc.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
