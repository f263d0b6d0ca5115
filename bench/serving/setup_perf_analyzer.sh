#!/usr/bin/env bash
# Fetches Triton's perf_analyzer and the two shared libraries it needs into a cache folder,
# without touching the project's venv. Idempotent: a second run only prints the paths.
#
# Why not PyPI's `perf-analyzer`: its 0.1.0 release is an empty placeholder. The real binary
# ships inside the tritonclient 2.45.0 wheel (tritonclient-2.45.0.data/data/bin/perf_analyzer).
# It links libb64.so.0d (Debian package libb64-0d) and libcudart.so.12 (PyPI
# nvidia-cuda-runtime-cu12; loaded even for CPU-only HTTP/gRPC runs).
#
# Prints two lines on success:
#   PERF_ANALYZER=<path to the binary>
#   LD_LIBRARY_PATH=<directories to prepend>
# bench/serving/run_serving_bench.py runs this script and reads them.
set -euo pipefail

cache="${PYFLAME_PERF_ANALYZER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyflame_rt/perf_analyzer}"
python="${PYFLAME_PYTHON:-python3}"
tritonclient_version=2.45.0
cudart_version=12.4.127

bin_dir="$cache/tritonclient-$tritonclient_version"
binary="$bin_dir/perf_analyzer"
cudart_dir="$cache/cudart-$cudart_version"
b64_dir="$cache/libb64"
mkdir -p "$cache"

log() { echo "[setup_perf_analyzer] $*" >&2; }

extract_wheel_member() {  # wheel, member glob, destination dir
  "$python" - "$1" "$2" "$3" <<'EOF'
import fnmatch, os, sys, zipfile
wheel, pattern, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if fnmatch.fnmatch(name, pattern)]
    if not members:
        sys.exit(f"{wheel} holds nothing matching {pattern}")
    os.makedirs(dest, exist_ok=True)
    for name in members:
        target = os.path.join(dest, os.path.basename(name))
        with archive.open(name) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
EOF
}

download_wheel() {  # requirement, into dir
  local tmp
  tmp=$(mktemp -d)
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux1_x86_64 --platform manylinux2014_x86_64 -d "$tmp" "$1" >&2
  ls "$tmp"/*.whl
}

if [ ! -x "$binary" ]; then
  log "fetching tritonclient==$tritonclient_version for its perf_analyzer binary"
  wheel=$(download_wheel "tritonclient==$tritonclient_version")
  extract_wheel_member "$wheel" "tritonclient-$tritonclient_version.data/data/bin/perf_analyzer" "$bin_dir"
  rm -rf "$(dirname "$wheel")"
fi

if [ ! -e "$cudart_dir/libcudart.so.12" ]; then
  log "fetching nvidia-cuda-runtime-cu12==$cudart_version for libcudart.so.12"
  wheel=$(download_wheel "nvidia-cuda-runtime-cu12==$cudart_version")
  extract_wheel_member "$wheel" "nvidia/cuda_runtime/lib/libcudart.so.12" "$cudart_dir"
  rm -rf "$(dirname "$wheel")"
fi

if ! ldconfig -p | grep -q 'libb64\.so\.0d' && [ ! -e "$b64_dir/libb64.so.0d" ]; then
  # Unpack the Debian package into the cache instead of installing it: no root needed.
  log "fetching Debian package libb64-0d for libb64.so.0d"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's download user must be able to enter it
  (cd "$tmp" && apt-get download libb64-0d >&2)
  dpkg-deb -x "$tmp"/libb64-0d_*.deb "$tmp/root"
  mkdir -p "$b64_dir"
  cp -L "$tmp"/root/usr/lib/*/libb64.so.0d "$b64_dir/"
  rm -rf "$tmp"
fi

library_path="$cudart_dir"
[ -d "$b64_dir" ] && library_path="$library_path:$b64_dir"

# Fail here, with the loader's words, rather than in the middle of a benchmark.
if ! LD_LIBRARY_PATH="$library_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$binary" --help >/dev/null 2>"$cache/help.err"; then
  if grep -q "error while loading shared libraries" "$cache/help.err"; then
    log "perf_analyzer cannot start:"; cat "$cache/help.err" >&2; exit 1
  fi
fi

echo "PERF_ANALYZER=$binary"
echo "LD_LIBRARY_PATH=$library_path"
