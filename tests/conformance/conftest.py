"""pytest wiring of the ONNX conformance tests: the report header and the summary line.

`python -m pytest tests/conformance` from the repository root runs them (an explicit path
overrides pyproject's testpaths). tests/conformance is a package (conformance.*) so this
conftest does not take the module name `conftest` that tests/python's modules import from.
"""

from collections import Counter

from . import conformance_harness as harness


def pytest_report_header(config):
    lines = [f"conformance data: {harness.conformance_dir()}"
             + ("  (isolated: each test in a forked child)" if harness.isolate_enabled() else "")]
    try:
        import pyflame_rt
        lines.append(f"pyflame_rt {pyflame_rt.__version__}: {pyflame_rt.__file__}")
    except Exception as e:  # noqa: BLE001 - the header must not break collection
        lines.append(f"pyflame_rt: not importable ({type(e).__name__}: {e})")
    return lines


def _conformance_reports(terminalreporter):
    seen = set()
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            props = dict(getattr(report, "user_properties", ()) or ())
            status = props.get("conformance")
            if status is None or report.nodeid in seen:
                continue
            seen.add(report.nodeid)
            yield props.get("conformance_suite", "?"), status


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    statuses = Counter()
    total_by_suite, passed_by_suite = Counter(), Counter()
    for suite, status in _conformance_reports(terminalreporter):
        statuses[status] += 1
        total_by_suite[suite] += 1
        if status in ("passed", "stale"):
            passed_by_suite[suite] += 1
    total = sum(statuses.values())
    if total == 0:
        return
    passed = statuses["passed"] + statuses["stale"]
    terminalreporter.write_line(
        f"conformance: {passed} passed, {statuses['known_failure']} known failures, {total} total")
    extra = f"conformance by suite (passed/run): {harness.format_suite_counts(passed_by_suite, total_by_suite)}"
    problems = []
    if statuses["regression"]:
        problems.append(f"{statuses['regression']} new failures")
    if statuses["stale"]:
        problems.append(f"{statuses['stale']} passing tests still listed in known_failures.txt "
                        f"(run {harness.UPDATE_COMMAND})")
    if problems:
        extra += "; " + ", ".join(problems)
    terminalreporter.write_line(extra)
