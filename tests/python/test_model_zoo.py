"""Models beyond the benchmark's: torchvision architectures with seeded random weights (small
configurations where the family allows), exported with a dynamic batch, run at every
optimization level and checked against torch. Each family brings patterns of its own:
squeeze-excitation and SiLU (EfficientNet, MobileNetV3), channel shuffles (ShuffleNet),
depthwise 7x7 convolutions with LayerNorm over permuted channels (ConvNeXt), patch embedding
and multi-head attention (ViT), windowed attention with rolls and masks (Swin), grouped
convolutions (RegNet), fire modules (SqueezeNet)."""

import numpy as np
import pytest
import torch
import torchvision

import pyflame_rt as rt


def small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10)
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # zero-initialized: the output would be 0
    return model


def small_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(24, 48, 2), CNBlockConfig(48, None, 2)], num_classes=10)


def small_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=10)


MODELS = {
    # name: (constructor, input size)
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=10), 64),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), 64),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10), 64),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(weights=None, num_classes=10), 64),
    "regnet_x_400mf": (lambda: torchvision.models.regnet_x_400mf(weights=None, num_classes=10), 64),
    # Their 3x3 layers run as Winograd convolutions (at 64x64, where they have 16 tiles or more).
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 64),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None, num_classes=10), 64),
    "vit": (small_vit, 32),
    "convnext": (small_convnext, 32),
    "swin": (small_swin, 32),
}


def calibrated(model, size):
    """BatchNorm statistics from a few random batches: with fresh ones (mean 0, var 1) deep
    random networks' activations vanish and the comparison means little."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, 3, size, size))
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_model_matches_torch_at_every_level(tmp_path, name):
    make, size = MODELS[name]
    torch.manual_seed(0)
    model = calibrated(make(), size)
    path = tmp_path / f"{name}.onnx"
    # nn.MultiheadAttention's fused fast path (taken under no_grad) has no ONNX export: trace the
    # plain decomposition.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (torch.randn(2, 3, size, size),), str(path), input_names=["x"],
                              output_names=["y"], opset_version=17, dynamo=False,
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        expected = model(x).numpy()
    assert np.abs(expected).max() > 1e-3, "the reference must not be degenerate"
    for level in (0, 1, 2, 3):
        opts = rt.SessionOptions()
        opts.optimization_level = level
        got = rt.InferenceSession(str(path), opts).run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error < 1e-4, f"level {level}: max relative error {error:.2e}"
