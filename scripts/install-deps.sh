#!/usr/bin/env bash
# Installs the Debian packages the C++ build needs. Idempotent: apt runs only for what is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libprotobuf-dev protobuf-compiler libonnx-dev
  libeigen3-dev libcpp-httplib-dev nlohmann-json3-dev prometheus-cpp-dev
  googletest libgtest-dev libssl-dev
  libgrpc++-dev protobuf-compiler-grpc libyaml-cpp-dev openssl iproute2
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install-deps] system packages present"
  exit 0
fi

echo "[install-deps] installing: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
