"""The ONNX backend conformance harness: finds the tests, runs one, compares, keeps the list.

One test is a folder ``SUITE/test_NAME`` of the ONNX backend test data (see
``../shared/conformance/README.md`` in the workspace) holding ``model.onnx`` and
``test_data_set_K/{input_I.pb,output_I.pb}``. :func:`run_test` loads the model once into an
``InferenceSession``, runs every data set and compares each output with the expected one:
floating-point values within ``rtol=1e-3, atol=1e-7`` (numpy ``assert_allclose`` semantics,
NaN equal to NaN; a ``data.json`` may set its own ``rtol``/``atol``), everything else exactly;
dtype and shape always exactly. It never raises: the outcome is a :class:`Result`.

Used by ``test_conformance.py`` (pytest, one case per folder) and by
``update_known_failures.py`` (rewrites ``known_failures.txt``).

Environment:
  PYFLAME_CONFORMANCE_DIR      the data folder (default: REPO/../shared/conformance/onnx)
  PYFLAME_CONFORMANCE_ISOLATE  1 = run each test in a forked child; a crash becomes a failure
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES = ("node", "simple", "pytorch-converted", "pytorch-operator")
KNOWN_FAILURES_FILE = Path(__file__).resolve().with_name("known_failures.txt")
UPDATE_COMMAND = "python tests/conformance/update_known_failures.py"
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-7
REASON_MAX_CHARS = 150

# ml_dtypes floating-point types: compared with a tolerance after a cast to float32.
_ML_FLOAT_NAMES = ("bfloat16", "float8_", "float4_", "float6_")


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------

def local_origin() -> Path | None:
    """The repository this one was cloned from, when that is a folder on this machine."""
    import subprocess

    try:
        url = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


def conformance_dir() -> Path:
    """The data folder: $PYFLAME_CONFORMANCE_DIR, else shared/conformance/onnx beside the repo
    (REPO/../shared/...), beside a folder above it for clones made deeper down, or beside the
    local repository a clone came from (a scratch clone in /tmp)."""
    env = os.environ.get("PYFLAME_CONFORMANCE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    origin = local_origin()
    for root in [REPO_ROOT] + ([origin] if origin else []):
        for parent in root.parents:
            candidate = parent / "shared" / "conformance" / "onnx"
            if candidate.is_dir():
                return candidate
    return REPO_ROOT.parent / "shared" / "conformance" / "onnx"


def isolate_enabled() -> bool:
    return os.environ.get("PYFLAME_CONFORMANCE_ISOLATE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ConformanceTest:
    suite: str
    name: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


def discover(root: Optional[Path] = None) -> List[ConformanceTest]:
    """Every test folder (one holding model.onnx) of the four suites, suite by suite, by name.

    Raises FileNotFoundError when the data folder or one of its suites is missing.
    """
    root = Path(root) if root is not None else conformance_dir()
    if not root.is_dir():
        raise FileNotFoundError(
            f"ONNX conformance data not found at {root} (set PYFLAME_CONFORMANCE_DIR to its folder)")
    tests: List[ConformanceTest] = []
    for suite in SUITES:
        suite_dir = root / suite
        if not suite_dir.is_dir():
            raise FileNotFoundError(f"ONNX conformance suite folder missing: {suite_dir}")
        for entry in sorted(suite_dir.iterdir(), key=lambda p: p.name):
            if entry.is_dir() and (entry / "model.onnx").is_file():
                tests.append(ConformanceTest(suite, entry.name, entry))
    return tests


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    test_id: str
    passed: bool
    reason: str = ""   # one line (known_failures.txt); empty when passed
    detail: str = ""   # longer text for a failure message
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "Result":
        return Result(**json.loads(text))


class _Mismatch(Exception):
    """An output differs from the expected one; str() is the one-line reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class HarnessError(Exception):
    """The test data is something the harness cannot read (not a runtime failure)."""


def _one_line(text: str, limit: int = REASON_MAX_CHARS) -> str:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."
    return line


def _scrub_paths(text: str, test: ConformanceTest) -> str:
    """Machine-independent messages: the test's own paths become relative ones."""
    text = text.replace(str(test.path / "model.onnx"), "model.onnx")
    text = text.replace(str(test.path), test.id)
    return text.replace(str(test.path.parent.parent), "<conformance>")


def exception_reason(exc: BaseException, test: Optional[ConformanceTest] = None) -> str:
    """`Type: first line of the message`, trimmed to ~150 characters."""
    message = str(exc)
    if test is not None:
        message = _scrub_paths(message, test)
    name = type(exc).__name__
    first = _one_line(message, REASON_MAX_CHARS - len(name) - 2)
    return f"{name}: {first}" if first else name


# --------------------------------------------------------------------------------------------
# Reading the data
# --------------------------------------------------------------------------------------------

def _numbered(folder: Path, prefix: str) -> List[Path]:
    files = []
    for p in folder.glob(f"{prefix}_*.pb"):
        m = re.fullmatch(rf"{prefix}_(\d+)\.pb", p.name)
        if m:
            files.append((int(m.group(1)), p))
    files.sort()
    if [i for i, _ in files] != list(range(len(files))):
        raise HarnessError(f"{folder.name}: {prefix} files are not numbered 0..{len(files) - 1}")
    return [p for _, p in files]


def data_sets(test_dir: Path) -> List[Path]:
    sets = []
    for p in test_dir.glob("test_data_set_*"):
        m = re.fullmatch(r"test_data_set_(\d+)", p.name)
        if m and p.is_dir():
            sets.append((int(m.group(1)), p))
    return [p for _, p in sorted(sets)]


def load_value(path: Path, type_proto: Any) -> Any:
    """One .pb file as the model's declared type says: TensorProto -> ndarray,
    SequenceProto -> list, OptionalProto -> None / ndarray / list."""
    import onnx
    from onnx import numpy_helper

    data = path.read_bytes()
    kind = type_proto.WhichOneof("value") if type_proto is not None else None
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    if kind in (None, "tensor_type"):
        proto = onnx.TensorProto()
        proto.ParseFromString(data)
        return numpy_helper.to_array(proto)
    raise HarnessError(f"{path.name}: values of type {kind} are not supported by the harness")


def tolerances(test_dir: Path) -> tuple:
    rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
    json_path = test_dir / "data.json"
    if json_path.is_file():
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
        rtol = float(data.get("rtol", rtol))
        atol = float(data.get("atol", atol))
    return rtol, atol


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------

def _is_float_like(dtype: np.dtype) -> bool:
    if dtype.kind in "fc":
        return True
    return dtype.kind == "V" and dtype.name.startswith(_ML_FLOAT_NAMES)


def _describe(value: Any) -> str:
    if value is None:
        return "None (empty optional)"
    if isinstance(value, np.ndarray):
        return f"a tensor {value.dtype}{list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a sequence of {len(value)}"
    return type(value).__name__


def _normalize_strings(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "S" or a.dtype == object:
        return np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in a.reshape(-1)],
                        dtype=object).reshape(a.shape)
    if a.dtype.kind == "U":
        return a.astype(object)
    return a


def _compare_tensor(expected: np.ndarray, actual: Any, rtol: float, atol: float, where: str) -> None:
    if not isinstance(actual, np.ndarray):
        raise _Mismatch(f"wrong type: {where} is {_describe(actual)}, expected {_describe(expected)}")
    exp_strings = expected.dtype == object or expected.dtype.kind in "SU"
    act_strings = actual.dtype == object or actual.dtype.kind in "SU"
    if actual.dtype != expected.dtype and not (exp_strings and act_strings):
        raise _Mismatch(f"wrong dtype: {where} is {actual.dtype}, expected {expected.dtype}")
    if actual.shape != expected.shape:
        raise _Mismatch(f"wrong shape: {where} is {list(actual.shape)}, expected {list(expected.shape)}")
    if expected.size == 0:
        return

    if _is_float_like(expected.dtype):
        exp, act = expected, actual
        if exp.dtype.kind == "V":  # ml_dtypes: numpy cannot promote them with Python floats
            if exp.dtype.name == "bfloat16":
                rtol = max(rtol, 2.0 ** -6)  # two bfloat16 ULPs, as ONNX's own runner allows
            exp, act = exp.astype(np.float32), act.astype(np.float32)
        with np.errstate(all="ignore"):
            close = np.isclose(act, exp, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return
        bad = ~close
        with np.errstate(all="ignore"):
            diff = np.abs(act.astype(np.complex128 if exp.dtype.kind == "c" else np.float64)
                          - exp.astype(np.complex128 if exp.dtype.kind == "c" else np.float64))
        bad_diff = diff[bad]
        finite = bad_diff[np.isfinite(bad_diff)]
        n_bad, n = int(bad.sum()), int(bad.size)
        if finite.size:
            what = f"max abs diff {float(finite.max()):.3g}"
            if finite.size < n_bad:
                what += " and NaN/Inf mismatches"
        else:
            what = "NaN/Inf mismatch"
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        detail = (f"{where}: {n_bad} of {n} elements differ (rtol={rtol:g}, atol={atol:g}); first at "
                  f"index {first}: got {act[first]!r}, expected {exp[first]!r}")
        raise _Mismatch(f"wrong values: {what} ({where}, {n_bad} of {n} elements)", detail)

    if exp_strings:
        exp, act = _normalize_strings(expected), _normalize_strings(actual)
        equal = np.array([x == y for x, y in zip(act.reshape(-1), exp.reshape(-1))],
                         dtype=bool).reshape(exp.shape)
    else:
        exp, act = expected, actual
        equal = np.asarray(act == exp)
    if equal.all():
        return
    bad = ~equal
    n_bad, n = int(bad.sum()), int(bad.size)
    what = "values differ"
    if exp.dtype.kind in "iu" or (exp.dtype.kind == "V" and exp.dtype.name.startswith(("int", "uint"))):
        with np.errstate(all="ignore"):
            diff = np.abs(act.astype(np.float64) - exp.astype(np.float64))
        what = f"max abs diff {float(diff[bad].max()):.6g}"
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    detail = (f"{where}: {n_bad} of {n} elements differ (exact comparison); first at index {first}: "
              f"got {act[first]!r}, expected {exp[first]!r}")
    raise _Mismatch(f"wrong values: {what} ({where}, {n_bad} of {n} elements)", detail)


def compare_value(expected: Any, actual: Any, rtol: float, atol: float, where: str) -> None:
    """Raises _Mismatch when `actual` differs from `expected` (tensor, sequence or optional)."""
    if expected is None:
        if actual is not None:
            raise _Mismatch(f"wrong type: {where} is {_describe(actual)}, expected an empty optional")
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            raise _Mismatch(f"wrong type: {where} is {_describe(actual)}, expected {_describe(expected)}")
        if len(actual) != len(expected):
            raise _Mismatch(f"wrong length: {where} has {len(actual)} elements, expected {len(expected)}")
        for j, (e, a) in enumerate(zip(expected, actual)):
            compare_value(e, a, rtol, atol, f"{where}[{j}]")
        return
    if isinstance(expected, np.generic):
        expected = np.asarray(expected)
    if isinstance(actual, np.generic):
        actual = np.asarray(actual)
    if isinstance(expected, np.ndarray):
        _compare_tensor(expected, actual, rtol, atol, where)
        return
    raise HarnessError(f"{where}: cannot compare expected value of type {type(expected).__name__}")


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _run(test: ConformanceTest) -> None:
    """Raises on any failure: the runtime's exception, _Mismatch or HarnessError."""
    import onnx
    import pyflame_rt

    model_path = test.path / "model.onnx"
    model = onnx.load(str(model_path), load_external_data=False)  # only for the declared types
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    graph_outputs = list(model.graph.output)
    rtol, atol = tolerances(test.path)

    sets = data_sets(test.path)
    if not sets:
        raise HarnessError(f"{test.id} has no test_data_set_* folder")
    # Read all data first so a harness problem is not reported as a runtime failure.
    loaded = []
    for ds in sets:
        input_files, output_files = _numbered(ds, "input"), _numbered(ds, "output")
        if len(input_files) > len(graph_inputs):
            raise HarnessError(f"{ds.name}: {len(input_files)} inputs, the model has {len(graph_inputs)}")
        if len(output_files) > len(graph_outputs):
            raise HarnessError(f"{ds.name}: {len(output_files)} outputs, the model has {len(graph_outputs)}")
        feeds = {graph_inputs[i].name: load_value(f, graph_inputs[i].type) for i, f in enumerate(input_files)}
        expected = [load_value(f, graph_outputs[i].type) for i, f in enumerate(output_files)]
        loaded.append((ds.name, feeds, expected))

    session = pyflame_rt.InferenceSession(str(model_path))
    for ds_name, feeds, expected in loaded:
        names = [o.name for o in graph_outputs[: len(expected)]]
        actual = session.run(names, feeds)
        if len(actual) != len(expected):
            raise _Mismatch(f"wrong output count: {len(actual)}, expected {len(expected)} ({ds_name})")
        for i, (e, a) in enumerate(zip(expected, actual)):
            where = f"output {i}" if len(sets) == 1 else f"{ds_name} output {i}"
            compare_value(e, a, rtol, atol, where)


def run_test(test: ConformanceTest) -> Result:
    """Runs one test in this process; never raises (except KeyboardInterrupt/SystemExit)."""
    start = time.perf_counter()
    try:
        _run(test)
    except _Mismatch as m:
        return Result(test.id, False, _one_line(m.reason), m.detail, time.perf_counter() - start)
    except HarnessError as e:
        return Result(test.id, False, "harness error: " + _one_line(str(e)),
                      traceback.format_exc(), time.perf_counter() - start)
    except Exception as e:  # the runtime raised: a failure of this test, not of the harness
        reason = exception_reason(e, test)
        message = _scrub_paths(str(e), test).strip()
        # The whole message when the one-line reason does not hold all of it.
        detail = "" if reason.endswith(message) else f"{type(e).__module__}.{type(e).__qualname__}: {message}"
        return Result(test.id, False, reason, detail, time.perf_counter() - start)
    return Result(test.id, True, "", "", time.perf_counter() - start)


def run_test_isolated(test: ConformanceTest) -> Result:
    """Runs one test in a forked child; a crash (signal) or an abnormal exit becomes a failure."""
    start = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            payload = run_test(test).to_json().encode("utf-8")
            with os.fdopen(write_fd, "wb") as f:
                f.write(payload)
        except BaseException:  # noqa: BLE001 - nothing may escape into the forked pytest
            code = 70
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        payload = f.read()
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            sig_name = signal.Signals(signum).name
        except ValueError:
            sig_name = f"signal {signum}"
        return Result(test.id, False, f"crashed: {sig_name}",
                      f"the child process running {test.id} was killed by {sig_name}", elapsed)
    if payload:
        try:
            result = Result.from_json(payload.decode("utf-8"))
            result.seconds = elapsed
            return result
        except (ValueError, TypeError):
            pass
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return Result(test.id, False, f"crashed: child exited with code {code} without a result",
                  "", elapsed)


def run(test: ConformanceTest, isolate: Optional[bool] = None) -> Result:
    if isolate is None:
        isolate = isolate_enabled()
    return run_test_isolated(test) if isolate else run_test(test)


# --------------------------------------------------------------------------------------------
# known_failures.txt
# --------------------------------------------------------------------------------------------

HEADER = f"""\
# ONNX backend conformance tests PyFlameRT knowingly fails, one per line:
#   suite/test_name  # reason (exception type and first line of its message, or the mismatch)
# A failing test not listed here fails the pytest run (a regression); a listed test that passes
# fails it too (the list is stale). After adding operators or fixing bugs, regenerate it with
#   {UPDATE_COMMAND}
# and review the diff. Data: ../shared/conformance/onnx (see tests/conformance/README.md).
"""


# Tests whose expected outputs were drawn from an unseeded random generator (numpy's global
# one): whether a correct runtime matches them is chance, so they are neither passes nor
# failures and are kept out of known_failures.txt (which would otherwise flip between runs).
NONDETERMINISTIC = {
    name: "expected values come from an unseeded random generator: matching them is chance"
    for name in ("node/test_bernoulli", "node/test_bernoulli_double", "node/test_bernoulli_expanded",
                 "node/test_bernoulli_double_expanded")
}


def load_known_failures(path: Path = KNOWN_FAILURES_FILE) -> Dict[str, str]:
    """test id -> reason. A missing file means no known failures."""
    known: Dict[str, str] = {}
    if not Path(path).is_file():
        return known
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition("#")
            name = name.strip()
            if name:
                known[name] = reason.strip()
    return known


def write_known_failures(results: Iterable[Result], path: Path = KNOWN_FAILURES_FILE) -> int:
    """Writes every failed result, in suite order then by name; returns how many."""
    def order(r: Result):
        suite, _, name = r.test_id.partition("/")
        return (SUITES.index(suite) if suite in SUITES else len(SUITES), suite, name)

    failed = sorted((r for r in results if not r.passed and r.test_id not in NONDETERMINISTIC), key=order)
    lines = [HEADER]
    lines += [f"{r.test_id}  # {r.reason or 'failed'}\n" for r in failed]
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)
    return len(failed)


def suite_of(test_id: str) -> str:
    return test_id.partition("/")[0]


def format_suite_counts(passed_by_suite: Dict[str, int], total_by_suite: Dict[str, int]) -> str:
    parts = []
    for suite in list(SUITES) + sorted(set(total_by_suite) - set(SUITES)):
        if total_by_suite.get(suite):
            parts.append(f"{suite} {passed_by_suite.get(suite, 0)}/{total_by_suite[suite]}")
    return ", ".join(parts)
