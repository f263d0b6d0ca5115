"""The conformance harness itself: comparison semantics, the known-failures file, isolation."""

import faulthandler
import os
import signal

import numpy as np
import pytest

from . import conformance_harness as harness

RTOL, ATOL = harness.DEFAULT_RTOL, harness.DEFAULT_ATOL


def mismatch(expected, actual, rtol=RTOL, atol=ATOL):
    try:
        harness.compare_value(expected, actual, rtol, atol, "output 0")
    except harness._Mismatch as m:
        return m.reason
    return None


def test_floats_within_tolerance_pass():
    e = np.array([1.0, 100.0, 0.0, np.nan, np.inf, -np.inf], np.float32)
    a = e * np.float32(1 + 5e-4)
    a[2] = 5e-8
    assert mismatch(e, a) is None


def test_floats_outside_tolerance_fail_with_max_abs_diff():
    e = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    a = e.copy()
    a[1, 0] = 3.5
    assert mismatch(e, a) == "wrong values: max abs diff 0.5 (output 0, 1 of 4 elements)"


def test_nan_only_equals_nan():
    assert mismatch(np.array([np.nan]), np.array([1.0])) == \
        "wrong values: NaN/Inf mismatch (output 0, 1 of 1 elements)"
    assert mismatch(np.array([np.inf]), np.array([-np.inf])).startswith("wrong values: NaN/Inf")


def test_dtype_and_shape_are_exact():
    e = np.zeros((2, 3), np.float32)
    assert mismatch(e, e.astype(np.float64)) == "wrong dtype: output 0 is float64, expected float32"
    assert mismatch(e, e.reshape(3, 2)) == "wrong shape: output 0 is [3, 2], expected [2, 3]"
    assert mismatch(e, e.reshape(1, 2, 3)).startswith("wrong shape")
    assert mismatch(np.ones((), np.float32), np.ones((1,), np.float32)).startswith("wrong shape")


def test_integers_and_bools_are_exact():
    e = np.array([1, 2, 3], np.int64)
    assert mismatch(e, e.copy()) is None
    assert mismatch(e, np.array([1, 2, 4], np.int64)) == \
        "wrong values: max abs diff 1 (output 0, 1 of 3 elements)"
    b = np.array([True, False])
    assert mismatch(b, ~b) == "wrong values: values differ (output 0, 2 of 2 elements)"


def test_strings_compare_bytes_and_str_alike():
    e = np.array([b"a", b"bc"], dtype=object)
    assert mismatch(e, np.array(["a", "bc"], dtype=object)) is None
    assert mismatch(e, np.array(["a", "b"], dtype=object)).startswith("wrong values")


def test_bfloat16_uses_float32_comparison():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    e = np.array([1.0, 2.0], ml_dtypes.bfloat16)
    assert mismatch(e, e.copy()) is None
    assert mismatch(e, np.array([1.0, 3.0], ml_dtypes.bfloat16)).startswith("wrong values: max abs diff 1")


def test_sequences_and_optionals():
    seq = [np.ones(2, np.float32), np.zeros(3, np.float32)]
    assert mismatch(seq, [s.copy() for s in seq]) is None
    assert mismatch(seq, seq[:1]) == "wrong length: output 0 has 1 elements, expected 2"
    assert mismatch(seq, np.ones(2, np.float32)).startswith("wrong type")
    assert mismatch(None, None) is None
    assert mismatch(None, np.ones(1)).startswith("wrong type")
    assert mismatch(seq, [seq[0], np.ones(3, np.float32)]).startswith("wrong values")


def test_data_json_tolerances(tmp_path):
    assert harness.tolerances(tmp_path) == (RTOL, ATOL)
    (tmp_path / "data.json").write_text('{"rtol": 0.01, "atol": 0.001}')
    assert harness.tolerances(tmp_path) == (0.01, 0.001)


def test_known_failures_round_trip(tmp_path):
    path = tmp_path / "known.txt"
    results = [
        harness.Result("simple/test_b", False, "wrong shape: output 0 is [1], expected [2]"),
        harness.Result("node/test_z", False, "ValueError: bad # thing"),
        harness.Result("node/test_a", True),
        harness.Result("pytorch-operator/test_c", False, "crashed: SIGSEGV"),
    ]
    assert harness.write_known_failures(results, path) == 3
    lines = [l for l in path.read_text().splitlines() if not l.startswith("#")]
    assert lines == ["node/test_z  # ValueError: bad # thing",
                     "simple/test_b  # wrong shape: output 0 is [1], expected [2]",
                     "pytorch-operator/test_c  # crashed: SIGSEGV"]
    assert harness.load_known_failures(path) == {
        "node/test_z": "ValueError: bad # thing",
        "simple/test_b": "wrong shape: output 0 is [1], expected [2]",
        "pytorch-operator/test_c": "crashed: SIGSEGV",
    }


def test_exception_reason_is_one_trimmed_line():
    reason = harness.exception_reason(ValueError("first line " + "x" * 300 + "\nsecond"))
    assert reason.startswith("ValueError: first line ")
    assert "\n" not in reason and len(reason) <= harness.REASON_MAX_CHARS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_isolated_crash_becomes_a_failure(monkeypatch, tmp_path):
    test = harness.ConformanceTest("node", "test_fake", tmp_path)
    def segfault(t):
        faulthandler.disable()  # keep pytest's faulthandler from dumping the child's stack
        os.kill(os.getpid(), signal.SIGSEGV)
    monkeypatch.setattr(harness, "_run", segfault)
    result = harness.run_test_isolated(test)
    assert (result.passed, result.reason) == (False, "crashed: SIGSEGV")

    monkeypatch.setattr(harness, "_run", lambda t: None)
    assert harness.run_test_isolated(test).passed

    def raises(t):
        raise RuntimeError("boom\nmore")
    monkeypatch.setattr(harness, "_run", raises)
    result = harness.run_test_isolated(test)
    assert (result.passed, result.reason) == (False, "RuntimeError: boom")
