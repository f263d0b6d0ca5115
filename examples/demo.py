"""PyFlameRT demo: ONNX model -> .pfm -> InferenceSession, checked against ONNX Runtime.

Run through ./scripts/demo.sh (which sets everything up), or directly in the venv:
    .venv/bin/python examples/demo.py [--model M.onnx] [--runs N]
"""
import argparse
import statistics
import tempfile
import time
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
