#!/usr/bin/env bash
# Every test: sets up (system packages, venv, build), then ctest and pytest. Non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYFLAME_REQUIREMENTS=requirements/test.txt
source "$ROOT/scripts/setup-env.sh"
cd "$ROOT"

status=0
echo "[test] ctest"
ctest --test-dir build/py --output-on-failure -j2 > build/ctest.log 2>&1 || status=1
grep -E "tests passed|tests failed|The following tests FAILED|^\s+[0-9]+ - " build/ctest.log || tail -20 build/ctest.log
[ $status -eq 0 ] || tail -60 build/ctest.log

echo "[test] pytest"
# Run from a scratch folder so `import pyflame_rt` is the installed package, not python/.
(cd build && "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider -c "$ROOT/pyproject.toml" \
   --rootdir "$ROOT" "$ROOT/tests/python" "$ROOT/tests/conformance") || status=1

if [ $status -eq 0 ]; then echo "[test] all passed"; else echo "[test] FAILED"; fi
exit $status
