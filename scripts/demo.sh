#!/usr/bin/env bash
# The main job on a small real model: import ONNX -> save .pfm -> load -> run -> check against
# ONNX Runtime, with latencies side by side. Sets everything up on a fresh machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYFLAME_REQUIREMENTS="${PYFLAME_REQUIREMENTS:-requirements/demo.txt}"
source "$ROOT/scripts/setup-env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" examples/demo.py "$@"
