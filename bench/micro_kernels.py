"""Times a few kernels and the demo CNN on PyFlameRT against ONNX Runtime (2 intra-op threads).

    PYTHONPATH=build/<dir>/python .venv/bin/python bench/micro_kernels.py [--repeat N]

Cases: Conv 64->64 channels 3x3 pad 1 on 56x56 (batch 1), MatMul 512x512x512 with a constant B,
and examples/models/small_cnn.onnx at batch 1 and 8. Each case is run with PyFlameRT's oneDNN
kernels, with them switched off (PYFLAME_RT_ONEDNN=0: the reference kernels, in a child process
since the switch is read once per process) and with ONNX Runtime; the best and the median of N
timed runs after warm-up are printed in milliseconds (the best is the steadier figure on a
shared machine), and outputs are checked against ONNX Runtime's. Not a test: numbers depend on
the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2


def conv_model(path: Path) -> dict:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64, 3, 3), dtype=np.float32) * 0.05, "w")
    b = numpy_helper.from_array(rng.standard_normal(64, dtype=np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return {"x": rng.standard_normal((1, 64, 56, 56), dtype=np.float32)}


def matmul_model(path: Path) -> dict:
    rng = np.random.default_rng(1)
    b = numpy_helper.from_array(rng.standard_normal((512, 512), dtype=np.float32), "b")
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "matmul", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [512, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return {"a": rng.standard_normal((512, 512), dtype=np.float32)}


def cnn_feeds(batch: int) -> dict:
    return {"input": np.random.default_rng(2).standard_normal((batch, 3, 32, 32), dtype=np.float32)}


def time_ms(fns: list, repeat: int) -> list[tuple[float, float]]:
    """(best, median) of `repeat` timed calls of each of `fns`. The functions take turns in
    blocks of 10 calls, so a change in the machine's load weighs on all of them alike; each
    block starts with 2 untimed calls (thread pools left spinning by the other runtime settle)."""
    times = [[] for _ in fns]
    for _ in range(max(1, repeat // 10)):
        for fn, t in zip(fns, times):
            for i in range(12):
                start = time.perf_counter()
                fn()
                if i >= 2:
                    t.append((time.perf_counter() - start) * 1e3)
    return [(min(t), statistics.median(t)) for t in times]


def pyflame_session(model: str):
    import pyflame_rt

    return pyflame_rt.InferenceSession(model, pyflame_rt.SessionOptions(num_threads=THREADS))


def ort_session(model: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def cases(tmp: Path) -> list[tuple[str, str, dict]]:
    conv, matmul = tmp / "conv.onnx", tmp / "matmul.onnx"
    cnn = str(ROOT / "examples" / "models" / "small_cnn.onnx")
    return [("Conv 64x56x56 3x3", str(conv), conv_model(conv)), ("MatMul 512^3", str(matmul), matmul_model(matmul)),
            ("small_cnn batch 1", cnn, cnn_feeds(1)), ("small_cnn batch 8", cnn, cnn_feeds(8))]


def pyflame_only(repeat: int) -> None:
    """Child mode: PyFlameRT times as JSON (used for the PYFLAME_RT_ONEDNN=0 column)."""
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for name, model, feeds in cases(Path(tmp)):
            session = pyflame_session(model)
            times[name] = time_ms([lambda: session.run(None, feeds)], repeat)[0]
        print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="timed runs per case (a multiple of 10)")
    parser.add_argument("--pyflame-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pyflame_only:
        return pyflame_only(args.repeat)

    env = dict(os.environ, PYFLAME_RT_ONEDNN="0")
    child = subprocess.run([sys.executable, __file__, "--pyflame-only", "--repeat", str(args.repeat)], env=env,
                           check=True, capture_output=True, text=True)
    reference = json.loads(child.stdout.strip().splitlines()[-1])

    def cell(ms: tuple[float, float]) -> str:
        return f"{ms[0]:8.3f} / {ms[1]:8.3f}"

    print(f"ms, best / median of {max(1, args.repeat // 10) * 10} runs, {THREADS} threads")
    print(f"{'case':<18} {'oneDNN kernels':>19} {'reference kernels':>19} {'onnxruntime':>19}  max|diff| vs ORT")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, feeds in cases(Path(tmp)):
            fast, ort = pyflame_session(model), ort_session(model)
            fast_out = [np.asarray(o) for o in fast.run(None, feeds)]
            ort_out = ort.run(None, feeds)
            fast_ms, ort_ms = time_ms([lambda: fast.run(None, feeds), lambda: ort.run(None, feeds)], args.repeat)
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(fast_out, ort_out))
            print(f"{name:<18} {cell(fast_ms)} {cell(reference[name])} {cell(ort_ms)}  {diff:.1e}")


if __name__ == "__main__":
    main()
