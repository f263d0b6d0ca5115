"""Several Python threads calling run() on one session at once get their own right answers."""

import threading

import numpy as np

import pyflame_rt as rt
from conftest import ATOL, RTOL

THREADS = 8
ITERATIONS = 25


def run_concurrently(session, make_input, reference):
    errors = []
    barrier = threading.Barrier(THREADS)

    def worker(tid):
        try:
            rng = np.random.default_rng(1000 + tid)
            barrier.wait()
            for _ in range(ITERATIONS):
                x = make_input(rng)
                (y,) = session.run(["y"], {"x": x})
                np.testing.assert_allclose(y, reference(x), rtol=RTOL, atol=ATOL)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {tid}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors)


def test_concurrent_runs(mlp, mlp_session):
    run_concurrently(
        mlp_session,
        lambda rng: rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32),
        lambda x: mlp.reference(x)[0],
    )


def test_concurrent_runs_with_python_custom_op():
    def scale(inputs, attrs):
        return (inputs[0] * attrs["factor"]).astype(np.float32)

    rt.register_op("PyThreadScale", scale)
    try:
        g = rt.Graph("threads_custom")
        g.add_input("x", [None, 5], rt.DType.Float32)
        g.add_node("scale", "PyThreadScale", inputs=["x"], outputs=["s"], attributes={"factor": 3.0})
        g.add_node("relu", "Relu", inputs=["s"], outputs=["y"])
        g.add_output("y", [None, 5], rt.DType.Float32)
        session = rt.InferenceSession(g)
        run_concurrently(
            session,
            lambda rng: rng.standard_normal((int(rng.integers(1, 5)), 5)).astype(np.float32),
            lambda x: np.maximum(x * 3.0, 0.0),
        )
    finally:
        rt.unregister_op("PyThreadScale")
