"""ONNX backend conformance: one pytest case per test folder of ../shared/conformance/onnx.

    python -m pytest tests/conformance                 # all 1,942 (ids like node/test_abs)
    python -m pytest tests/conformance -k test_conv    # a subset
    PYFLAME_CONFORMANCE_ISOLATE=1 python -m pytest tests/conformance   # each test in a forked child

A test listed in known_failures.txt that fails is reported as xfail; a failing test not listed is
a regression (fails); a listed test that passes fails too: the list is stale, regenerate it with
`python tests/conformance/update_known_failures.py`.
"""

import pytest

pytest.importorskip("onnx", reason="the conformance tests read the data with the onnx package")

from . import conformance_harness as harness  # noqa: E402

try:
    TESTS = harness.discover()
    DISCOVERY_ERROR = None
except FileNotFoundError as e:
    TESTS = []
    DISCOVERY_ERROR = str(e)

KNOWN_FAILURES = harness.load_known_failures()
ISOLATE = harness.isolate_enabled()


if DISCOVERY_ERROR is not None:
    def test_conformance_data_present():
        pytest.fail(DISCOVERY_ERROR, pytrace=False)


@pytest.mark.parametrize("test", TESTS, ids=[t.id for t in TESTS])
def test_conformance(test, request):
    result = harness.run(test, isolate=ISOLATE)
    known_reason = KNOWN_FAILURES.get(test.id)
    props = request.node.user_properties
    props.append(("conformance_suite", test.suite))

    if test.id in harness.NONDETERMINISTIC:  # run (it must not crash), but pass or fail is chance
        props.append(("conformance", "known_failure"))
        pytest.xfail(harness.NONDETERMINISTIC[test.id])

    if result.passed:
        if known_reason is not None:
            props.append(("conformance", "stale"))
            pytest.fail(
                f"{test.id} passes but tests/conformance/known_failures.txt lists it as failing "
                f"({known_reason}). The list is stale: run `{harness.UPDATE_COMMAND}` and commit "
                f"known_failures.txt.", pytrace=False)
        props.append(("conformance", "passed"))
        return

    if known_reason is not None:
        props.append(("conformance", "known_failure"))
        pytest.xfail(result.reason)

    props.append(("conformance", "regression"))
    message = f"{test.id} fails and is not in tests/conformance/known_failures.txt: {result.reason}"
    if result.detail and result.detail.strip() != result.reason:
        message += "\n" + result.detail.rstrip()
    message += (f"\nIf this failure is expected (e.g. an operator is not implemented yet), run "
                f"`{harness.UPDATE_COMMAND}`.")
    pytest.fail(message, pytrace=False)
