#!/usr/bin/env python3
"""Runs every ONNX conformance test and rewrites tests/conformance/known_failures.txt.

    PYTHONPATH=build/<dir>/python .venv/bin/python tests/conformance/update_known_failures.py
        [--isolate] [--dry-run] [--output FILE]

Run it after adding operators (or whenever pytest says the list is stale), review the diff of
known_failures.txt, commit it. Prints the counts per suite and what changed against the old list.
--isolate (or PYFLAME_CONFORMANCE_ISOLATE=1) runs each test in a forked child so a crash is
recorded as a failure ("crashed: SIGSEGV") instead of ending the run.
"""

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conformance_harness as harness  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--isolate", action="store_true", default=harness.isolate_enabled(),
                        help="run each test in a forked child (a crash becomes a failure)")
    parser.add_argument("--dry-run", action="store_true", help="report only; do not write the file")
    parser.add_argument("--output", type=Path, default=harness.KNOWN_FAILURES_FILE,
                        help="the file to write (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        import onnx  # noqa: F401
        import pyflame_rt
    except ImportError as e:
        print(f"error: {e} (run with the project venv and PYTHONPATH=build/<dir>/python)", file=sys.stderr)
        return 2
    try:
        tests = harness.discover()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"pyflame_rt {pyflame_rt.__version__} from {os.path.dirname(pyflame_rt.__file__)}")
    print(f"conformance data: {harness.conformance_dir()} ({len(tests)} tests)"
          + (", isolated" if args.isolate else ""))

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    started = time.perf_counter()
    results = []
    bar = None if (tqdm is None or args.no_progress) else tqdm(tests, unit="test", dynamic_ncols=True)
    iterator = bar if bar is not None else tests
    failed_so_far = 0
    for test in iterator:
        if bar is not None:
            bar.set_postfix_str(test.id, refresh=False)
        result = harness.run(test, isolate=args.isolate)
        results.append(result)
        if not result.passed:
            failed_so_far += 1
            if bar is not None:
                bar.set_description(f"{failed_so_far} failing", refresh=False)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started

    total, passed = Counter(), Counter()
    for r in results:
        suite = harness.suite_of(r.test_id)
        total[suite] += 1
        passed[suite] += r.passed
    n_passed = sum(passed.values())
    print()
    for suite in harness.SUITES:
        print(f"  {suite:<18} {passed[suite]:>5} passed  {total[suite] - passed[suite]:>5} failing  "
              f"{total[suite]:>5} total")
    print(f"  {'all':<18} {n_passed:>5} passed  {len(results) - n_passed:>5} failing  "
          f"{len(results):>5} total   ({elapsed:.1f} s)")

    old = harness.load_known_failures(args.output)
    new = {r.test_id: r.reason for r in results if not r.passed}
    now_passing = sorted(set(old) - set(new) & {r.test_id for r in results})
    newly_failing = sorted(set(new) - set(old))
    gone = sorted(set(old) - {r.test_id for r in results})
    if now_passing:
        print(f"\nnow passing ({len(now_passing)}): " + ", ".join(now_passing[:40])
              + (" ..." if len(now_passing) > 40 else ""))
    if newly_failing:
        print(f"\nnewly failing ({len(newly_failing)}):")
        for test_id in newly_failing[:40]:
            print(f"  {test_id}  # {new[test_id]}")
        if len(newly_failing) > 40:
            print("  ...")
    if gone:
        print(f"\nlisted tests that no longer exist ({len(gone)}): " + ", ".join(gone[:20]))
    slow = sorted(results, key=lambda r: r.seconds, reverse=True)[:5]
    print("\nslowest: " + ", ".join(f"{r.test_id} {r.seconds:.2f}s" for r in slow))

    if args.dry_run:
        print(f"\n--dry-run: {args.output} not written")
        return 0
    count = harness.write_known_failures(results, args.output)
    print(f"\nwrote {args.output} ({count} known failures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
