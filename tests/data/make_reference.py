"""Writes ONNX Runtime's output for the demo CNN as raw little-endian float32 files, the
independent reference the C++ tests compare against. Rerun when the model changes:
    .venv/bin/python tests/data/make_reference.py
"""
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
model = ROOT / "examples" / "models" / "small_cnn.onnx"
x = np.random.default_rng(42).standard_normal((2, 3, 32, 32)).astype(np.float32)
y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
here = Path(__file__).resolve().parent
x.tofile(here / "small_cnn_input_2x3x32x32.f32")
y.astype(np.float32).tofile(here / "small_cnn_ort_output_2x10.f32")
print(y)
