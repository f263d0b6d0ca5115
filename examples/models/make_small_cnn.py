"""Exports the demo's small CNN to ONNX with seeded random weights.

    .venv/bin/python examples/models/make_small_cnn.py [OUT.onnx]

The .onnx is committed so the demo needs no torch; rerun this to regenerate it.
"""
import sys
from pathlib import Path

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv/BN/ReLU stem, a residual block, a grouped conv, pooling and a two-layer head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(16, 16, 1))
        self.block_norm = nn.BatchNorm2d(16)  # after the residual add: stays a BatchNormalization node
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Tanh(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.Sigmoid(), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = self.block_norm(x + self.block(x))
        x = self.down(x)
        return torch.softmax(self.head(x), dim=1)


def build(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("small_cnn.onnx")
    model = build()
    example = torch.randn(1, 3, 32, 32)
    torch.onnx.export(model, (example,), str(out), input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
                      opset_version=17, dynamo=False)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
