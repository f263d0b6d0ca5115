"""The benchmark's models: built in torch with seeded random weights, exported to ONNX, and the
deterministic inputs every runtime is fed. torch is imported lazily (only the export, the
reference outputs and the PyTorch worker need it: the other workers must not load it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OPSET = 17
SEED = 0
# Bump when a model definition or the export settings change: cached files are then rebuilt.
EXPORT_TAG = "v1"

# name -> (input shape without the batch dimension, description)
MODELS = {
    "resnet50": ((3, 224, 224), "torchvision ResNet-50, 224x224"),
    "resnet18": ((3, 224, 224), "torchvision ResNet-18, 224x224"),
    "mobilenet_v2": ((3, 224, 224), "torchvision MobileNetV2, 224x224"),
    "bert_base": ((128, 768), "BERT-base-like encoder: 12 layers, hidden 768, 12 heads, FFN 3072, seq 128 (float input)"),
    "mlp": ((784,), "MLP 784-1024-1024-10, ReLU"),
}
# Models whose batch-8 cell is slow (hundreds of ms to seconds per run): fewer runs.
BIG_MODELS = {"resnet50", "bert_base"}


def build_torch_model(name: str):
    """The torch module for NAME, in eval mode, with weights from torch.manual_seed(SEED)."""
    import torch
    import torchvision

    torch.manual_seed(SEED)
    if name == "resnet50":
        model = torchvision.models.resnet50(weights=None)
    elif name == "resnet18":
        model = torchvision.models.resnet18(weights=None)
    elif name == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2(weights=None)
    elif name == "bert_base":
        layer = torch.nn.TransformerEncoderLayer(
            d_model=768, nhead=12, dim_feedforward=3072, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=False)
        model = torch.nn.TransformerEncoder(layer, num_layers=12, enable_nested_tensor=False)
        # TransformerEncoder deep-copies LAYER: re-draw every layer's weights, or all 12 would be
        # equal (and the ONNX exporter would store them once: a 28 MB model instead of 340 MB).
        for module in model.modules():
            if module is not model and hasattr(module, "_reset_parameters"):
                module._reset_parameters()  # MultiheadAttention: xavier in_proj, zero biases
            elif isinstance(module, torch.nn.Linear):
                module.reset_parameters()
    elif name == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 1024), torch.nn.ReLU(),
            torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
            torch.nn.Linear(1024, 10))
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    _calibrate_batchnorm(model, name)
    return model.eval()


def _calibrate_batchnorm(model, name: str) -> None:
    """Sets BatchNorm running statistics from a few seeded random batches (train-mode passes).

    With fresh statistics (mean 0, var 1) and random weights the activations of a deep CNN
    vanish or explode (MobileNetV2's logits come out near 1e-9), which makes the accuracy check
    meaningless and the BatchNorm folding trivial; calibrated statistics keep them O(1).
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn((8, *MODELS[name][0]), generator=g))


def input_shape(name: str, batch: int) -> tuple:
    return (batch, *MODELS[name][0])


def make_input(name: str, batch: int) -> np.ndarray:
    """The same input in every process: a seeded standard normal float32 array."""
    rng = np.random.default_rng(1000 + 17 * batch + list(MODELS).index(name))
    return np.ascontiguousarray(rng.standard_normal(input_shape(name, batch), dtype=np.float32))


def onnx_path(cache: Path, name: str) -> Path:
    return cache / f"{name}-opset{OPSET}-{EXPORT_TAG}.onnx"


def reference_path(cache: Path, name: str, batch: int) -> Path:
    return cache / f"{name}-{EXPORT_TAG}-ref-b{batch}.npy"


def export(name: str, cache: Path, model=None) -> Path:
    """Exports NAME to ONNX (legacy TorchScript exporter, dynamic batch) unless cached."""
    import torch

    path = onnx_path(cache, name)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else build_torch_model(name)
    dummy = torch.from_numpy(make_input(name, 2))
    tmp = path.with_suffix(".tmp.onnx")
    # The fused fast path of nn.TransformerEncoderLayer (taken under no_grad in eval mode) has
    # no ONNX symbolic: trace the plain decomposition (MatMul/Softmax/LayerNorm/Erf-GELU).
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    import onnx  # check the file before it becomes the cached copy

    onnx.checker.check_model(str(tmp))
    tmp.replace(path)
    (cache / f"{name}-{EXPORT_TAG}.json").write_text(json.dumps({
        "model": name, "torch": torch.__version__, "opset": OPSET, "seed": SEED,
        "description": MODELS[name][1]}, indent=1))
    return path


def reference(name: str, batch: int, cache: Path, model=None) -> np.ndarray:
    """torch's output for make_input(name, batch), cached as .npy."""
    path = reference_path(cache, name, batch)
    if path.exists():
        return np.load(path)
    import torch

    model = model if model is not None else build_torch_model(name)
    with torch.inference_mode():
        out = model(torch.from_numpy(make_input(name, batch))).numpy()
    np.save(path, out)
    return out
