#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: system packages, the Python venv, and the built package.
#   PYFLAME_REQUIREMENTS  requirements file for the venv (default requirements/test.txt)
#   PYFLAME_BUILD_TESTS   OFF to skip the GoogleTest suite (default ON: demo and tests share one build)
# The venv lives in a cache folder keyed by the hash of the build/demo/test requirement files
# (bench/ adds its extras to the same venv on demand), and .venv
# links to it, so a fresh clone on the same machine reuses gigabytes of installed wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh"

PYTHON="${PYFLAME_PYTHON:-$(command -v python3)}"
reqs="${PYFLAME_REQUIREMENTS:-requirements/test.txt}"
key=$(cat requirements/build.txt requirements/demo.txt requirements/test.txt | sha256sum | cut -c1-16)-$("$PYTHON" -c 'import sys;print("py%d%d"%sys.version_info[:2])')
cache="${PYFLAME_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyflame_rt}"
venv="$cache/venv-$key"
stamp="$venv/.installed-$(basename "$reqs" .txt)"

# test.txt includes demo.txt, which includes build.txt: a bigger set satisfies a smaller one.
if [ -f "$venv/.installed-test" ] || { [ "$reqs" != requirements/test.txt ] && [ -f "$venv/.installed-demo" ]; }; then
  echo "[setup] venv ready: $venv"
elif [ ! -f "$stamp" ]; then
  echo "[setup] creating venv $venv from $reqs"
  mkdir -p "$cache"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$reqs"
  touch "$stamp"
else
  echo "[setup] venv ready: $venv"
fi
ln -sfn "$venv" "$ROOT/.venv"

export PATH="$ROOT/.venv/bin:$PATH"
export CCACHE_DIR="${CCACHE_DIR:-$cache/ccache}"
# Paths relative to the clone, so every clone and build directory shares cache hits.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

# One incremental build directory, shared by pip (scikit-build-core) and ctest: the build
# requirements are in the venv, so no isolated build env (and no rebuild from zero).
echo "[setup] building and installing pyflame_rt"
"$ROOT/.venv/bin/pip" install -q --no-build-isolation --no-deps \
  -Ccmake.define.PYFLAME_BUILD_TESTS="${PYFLAME_BUILD_TESTS:-ON}" \
  -Cbuild-dir=build/py "$ROOT"
