"""Shared fixtures: small graphs built through the Python API, with numpy references."""

import numpy as np
import pytest

import pyflame_rt as rt

# float32 math in a different summation order than numpy: compare with a tolerance.
RTOL = 1e-5
ATOL = 1e-5


class MLP:
    """x[N,4] -> Gemm(transB) -> Relu -> Gemm(alpha, beta) -> Add(skip) -> y[N,3]."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((8, 4)).astype(np.float32)
        self.b1 = rng.standard_normal(8).astype(np.float32)
        self.w2 = rng.standard_normal((8, 3)).astype(np.float32)
        self.b2 = rng.standard_normal(3).astype(np.float32)
        self.skip = rng.standard_normal(3).astype(np.float32)
        self.alpha, self.beta = 0.5, 2.0

    def graph(self) -> rt.Graph:
        g = rt.Graph("mlp")
        g.add_input("x", [None, 4], rt.DType.Float32)
        g.add_initializer("fc1.weight", self.w1)
        g.add_initializer("fc1.bias", self.b1)
        g.add_initializer("fc2.weight", self.w2)
        g.add_initializer("fc2.bias", self.b2)
        g.add_initializer("skip", self.skip)
        g.add_node("fc1", "Gemm", inputs=["x", "fc1.weight", "fc1.bias"], outputs=["h1"],
                   attributes={"transB": 1})
        g.add_node("relu1", "Relu", inputs=["h1"], outputs=["h2"])
        g.add_node("fc2", "Gemm", inputs=["h2", "fc2.weight", "fc2.bias"], outputs=["h3"],
                   attributes={"alpha": self.alpha, "beta": self.beta})
        g.add_node("add", "Add", inputs=["h3", "skip"], outputs=["y"])
        g.add_output("y", [None, 3], rt.DType.Float32)
        g.add_output("h2", [None, 8], rt.DType.Float32)
        return g

    def reference(self, x: np.ndarray):
        h1 = x.astype(np.float64) @ self.w1.T.astype(np.float64) + self.b1
        h2 = np.maximum(h1, 0.0)
        h3 = self.alpha * (h2 @ self.w2.astype(np.float64)) + self.beta * self.b2
        y = h3 + self.skip
        return y.astype(np.float32), h2.astype(np.float32)


@pytest.fixture
def mlp() -> MLP:
    return MLP()


@pytest.fixture
def mlp_session(mlp) -> rt.InferenceSession:
    return rt.InferenceSession(mlp.graph())


def add_graph(dtype=rt.DType.Float32, shape=(None, 3)) -> rt.Graph:
    """z = x + y, both inputs of `shape` and `dtype`."""
    g = rt.Graph("add")
    g.add_input("x", list(shape), dtype)
    g.add_input("y", list(shape), dtype)
    g.add_node("add", "Add", inputs=["x", "y"], outputs=["z"])
    g.add_output("z", list(shape), dtype)
    return g
