"""INT8 on the CPU backend's oneDNN int8 kernels: ResNet-50 (torchvision, seeded random weights,
bench_models' export) quantized by onnxruntime.quantization.quantize_static (QDQ, per-channel
int8 weights, int8 activations, a few random calibration batches), timed in pyflame_rt (int8
and the float32 model) and in ONNX Runtime (the same QDQ model, and the float32 model), each in
its own process with 2 threads.

    .venv/bin/python bench/quant_kernels.py --build-dir build/h-kern [--batches 1,8] [--runs 10]
    .venv/bin/python bench/quant_kernels.py --build-dir build/h-kern --verbose   # + oneDNN ISA/kernels

Prints median latency, the speedups, and the int8 outputs' cosine similarity to float32.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_models  # noqa: E402

THREADS = 2
MODEL = "resnet50"


def quantized_model(cache: Path, calibration_batches: int) -> Path:
    """The QDQ model, built once (cached next to the float32 export)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = bench_models.export(MODEL, cache)
    out = cache / f"{MODEL}-{bench_models.EXPORT_TAG}-qdq-int8-per-channel-c{calibration_batches}.onnx"
    if out.exists():
        return out
    from tqdm import tqdm

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(2024)
            self.batches = iter(tqdm([{"input": rng.standard_normal((2, 3, 224, 224), dtype=np.float32)}
                                      for _ in range(calibration_batches)], desc="calibration", leave=False))

        def get_next(self):
            return next(self.batches, None)

    pre = cache / f"{MODEL}-{bench_models.EXPORT_TAG}-preprocessed.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    tmp = out.with_suffix(".tmp.onnx")
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    tmp.replace(out)
    return out


def worker(runtime: str, path: str, batch: int, runs: int, output: str) -> None:
    x = bench_models.make_input(MODEL, batch)
    if runtime == "pyflame_rt":
        import pyflame_rt as rt

        opts = rt.SessionOptions()
        opts.num_threads = THREADS
        session = rt.InferenceSession(path, opts)
        name = session.get_inputs()[0].name
        run = lambda: session.run(None, {name: x})[0]  # noqa: E731
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda: session.run(None, {name: x})[0]  # noqa: E731
    y = run()
    run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    np.save(output, y)
    print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times)}))


def spawn(runtime, path, batch, runs, output, build_dir, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    if build_dir:
        env["PYTHONPATH"] = str(Path(build_dir).resolve() / "python") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, __file__, "--worker", runtime, str(path), str(batch), str(runs), str(output)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{runtime} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def onednn_summary(path, build_dir) -> str:
    """Which oneDNN implementations one int8 batch-1 run executes (ONEDNN_VERBOSE=1)."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    if build_dir:
        env["PYTHONPATH"] = str(Path(build_dir).resolve() / "python")
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_models, pyflame_rt as rt; "
              f"s = rt.InferenceSession({str(path)!r}); s.run(None, {{'input': bench_models.make_input('resnet50', 1)}})")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    counts, isa = {}, ""
    for line in out.splitlines():
        parts = line.split(",")
        if "info,cpu,isa" in line:
            isa = line
        if len(parts) > 6 and parts[1] == "exec":
            key = f"{parts[3]} {parts[5]} {parts[6].split(' ')[0]}"
            counts[key] = counts.get(key, 0) + 1
    rows = "\n".join(f"  {n:4d}  {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{isa}\n{rows}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=5, metavar=("RUNTIME", "PATH", "BATCH", "RUNS", "OUTPUT"))
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--cache-dir", default=str(ROOT / "build" / "bench-models"))
    parser.add_argument("--batches", default="8")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--verbose", action="store_true", help="also list the oneDNN kernels an int8 run uses")
    args = parser.parse_args()
    if args.worker:
        runtime, path, batch, runs, output = args.worker
        worker(runtime, path, int(batch), int(runs), output)
        return 0

    cache = Path(args.cache_dir)
    fp32 = bench_models.export(MODEL, cache)
    qdq = quantized_model(cache, args.calibration_batches)
    out_dir = cache / "quant-outputs"
    out_dir.mkdir(exist_ok=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        result = {}
        for label, runtime, path in [("pyflame_rt fp32", "pyflame_rt", fp32), ("pyflame_rt int8", "pyflame_rt", qdq),
                                     ("onnxruntime fp32", "onnxruntime", fp32), ("onnxruntime int8", "onnxruntime", qdq)]:
            output = out_dir / f"{label.replace(' ', '_')}_b{batch}.npy"
            timing, _ = spawn(runtime, path, batch, args.runs, output, args.build_dir)
            result[label] = (timing["median_ms"], np.load(output), timing["min_ms"])
            print(f"batch {batch}  {label:18s} {timing['median_ms']:9.1f} ms (min {timing['min_ms']:.1f})", flush=True)
        ref = result["pyflame_rt fp32"][1].astype(np.float64).ravel()
        for label in result:
            y = result[label][1].astype(np.float64).ravel()
            cosine = float(ref @ y / (np.linalg.norm(ref) * np.linalg.norm(y)))
            rows.append((batch, label, result[label][0], result[label][2], cosine))
        ours_fp32, ours_int8 = result["pyflame_rt fp32"][0], result["pyflame_rt int8"][0]
        ort_int8 = result["onnxruntime int8"][0]
        rows.append((batch, f"speedup int8 vs our fp32: {ours_fp32 / ours_int8:.2f}x; "
                            f"ORT int8 / our int8: {ort_int8 / ours_int8:.2f}x (medians)", None, None, None))
    print(f"\nResNet-50, {THREADS} threads, QDQ per-channel int8 (onnxruntime.quantization.quantize_static)")
    print("| batch | runtime | median ms | min ms | cosine vs our fp32 |\n| --- | --- | --- | --- | --- |")
    for batch, label, ms, best, cos in rows:
        print(f"| {batch} | {label} | {'' if ms is None else f'{ms:.1f}'} | {'' if best is None else f'{best:.1f}'} | "
              f"{'' if cos is None else f'{cos:.4f}'} |")
    if args.verbose:
        print("\noneDNN kernels of one int8 batch-1 run:\n" + onednn_summary(qdq, args.build_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
