"""Where the time goes: per-operator time of pyflame_rt and ONNX Runtime on a benchmark model.

    .venv/bin/python bench/profile_ops.py --build-dir build/h-bench --model mobilenet_v2 --batch 1 [--runs 20]

Runs the model (exported by run_bench.py into build/bench-models) with profiling on in both
runtimes (pyflame_rt: SessionOptions.enable_profiling -> Chrome trace; ORT: its JSON profile),
drops the warm-up runs, and prints a Markdown table of the top operator types by time per run
for each. Each runtime runs in its own child process (one runtime per process, as in the
benchmark). Profiling adds a little overhead per node to both.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def profile_pyflame(onnx_path, x, runs, warmup, tmp):
    import pyflame_rt

    opts = pyflame_rt.SessionOptions()
    opts.num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tmp) / "pf")
    s = pyflame_rt.InferenceSession(str(onnx_path), opts)
    feed = {s.get_inputs()[0].name: x}
    for _ in range(warmup + runs):
        s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    starts = sorted(e["ts"] for e in events if e.get("cat") == "session")
    cutoff = starts[warmup]
    return [(e["args"].get("op_type", e["name"]), e["dur"]) for e in events
            if e.get("cat") == "node" and e["ts"] >= cutoff]


def profile_ort(onnx_path, x, runs, warmup, tmp):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tmp) / "ort")
    s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(warmup + runs):
        s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    cutoff = starts[warmup]
    return [(e["args"]["op_name"], e["dur"]) for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cutoff]


def child(runtime, model, batch, runs, warmup):
    import bench_models

    x = bench_models.make_input(model, batch)
    path = bench_models.onnx_path(ROOT / "build" / "bench-models", model)
    with tempfile.TemporaryDirectory() as tmp:
        fn = profile_pyflame if runtime == "pyflame_rt" else profile_ort
        events = fn(path, x, runs, warmup, tmp)
    total = collections.defaultdict(float)
    count = collections.Counter()
    for op, dur in events:
        total[op] += dur / 1e3 / runs
        count[op] += 1
    print(json.dumps({op: [total[op], count[op] // runs] for op in total}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--build-dir", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.model, a.batch, a.runs, a.warmup)
    env = dict(os.environ)
    paths = [str(HERE)] + ([str(a.build_dir.resolve() / "python")] if a.build_dir else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    tables = {}
    for rt in ("pyflame_rt", "onnxruntime"):
        out = subprocess.run([sys.executable, __file__, "--child", rt, "--model", a.model, "--batch", str(a.batch),
                              "--runs", str(a.runs), "--warmup", str(a.warmup)],
                             env=env, capture_output=True, text=True, check=True).stdout
        tables[rt] = sorted(json.loads(out.strip().splitlines()[-1]).items(), key=lambda kv: -kv[1][0])
    print(f"### {a.model}, batch {a.batch}: operator time per run (ms, sum over nodes; {a.runs} runs after "
          f"{a.warmup} warm-up)\n")
    print("| pyflame_rt op (nodes) | ms | % | ORT op (nodes) | ms | % |")
    print("|---|---|---|---|---|---|")
    totals = {rt: sum(v[0] for _, v in t) for rt, t in tables.items()}
    for i in range(a.top):
        cells = []
        for rt in ("pyflame_rt", "onnxruntime"):
            t = tables[rt]
            if i < len(t):
                op, (ms, n) = t[i]
                cells += [f"{op} ({n})", f"{ms:.2f}", f"{100 * ms / totals[rt]:.0f}%"]
            else:
                cells += ["", "", ""]
        print("| " + " | ".join(cells) + " |")
    print(f"| **total** | **{totals['pyflame_rt']:.2f}** | | **total** | **{totals['onnxruntime']:.2f}** | |")


if __name__ == "__main__":
    raise SystemExit(main())
