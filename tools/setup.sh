#!/usr/bin/env bash
# Shared set-up for the README's two commands: install what is missing
# (Debian 12 packages, a Python venv for the test tooling), configure and
# build. Source it, then call the functions.
set -euo pipefail
D9_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D9_BUILD=${D9_BUILD:-$D9_ROOT/build}
D9_VENV=${D9_VENV:-$D9_ROOT/.venv}

d9_install_deps() {
  local pkgs=(build-essential cmake pkg-config libfuse3-dev fuse3 libcjson-dev
              libcmocka-dev python3 python3-venv bsdextrautils procps util-linux man-db groff-base)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

d9_build() {
  echo "== building in $D9_BUILD"
  cmake -S "$D9_ROOT" -B "$D9_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$D9_BUILD" -j"$(nproc)" >/dev/null
}

d9_venv() {
  if [ ! -x "$D9_VENV/bin/python" ] || ! "$D9_VENV/bin/python" -c "import safetensors, numpy" 2>/dev/null; then
    echo "== creating the test venv in $D9_VENV (safetensors, numpy)"
    python3 -m venv "$D9_VENV"
    "$D9_VENV/bin/pip" install -q --disable-pip-version-check safetensors numpy
  fi
}

# The peer libraries, as test tooling only (tests/py/*_peer.py compare the
# mount's tensors with theirs): transformers v5 (MXFP4 dequant, Phi-3),
# megatron-core + Megatron-Bridge's mappings (QKV/gated/TP splits, Qwen3,
# Qwen3-MoE, DeepSeek-V3 bridges) and NeMo AutoModel 0.3.0's combined-
# projection adapter. torch comes from PyPI (about 5.5 GB with its CUDA
# libraries; it runs on the CPU). Bridge and AutoModel go in without their
# dependencies: the checks load their mapping modules by path. A machine
# that cannot reach PyPI gets no peer venv, and the peer checks say
# "skip" with that reason; everything else still runs.
D9_PEER_VENV=${D9_PEER_VENV:-$D9_ROOT/.venv-peer}
d9_peer_venv() {
  if [ -x "$D9_PEER_VENV/bin/python" ] &&
     "$D9_PEER_VENV/bin/python" -c "import torch, transformers, megatron.core, numpy, safetensors" 2>/dev/null &&
     [ -f "$D9_PEER_VENV/.complete" ]; then
    return 0
  fi
  echo "== creating the peer venv in $D9_PEER_VENV (torch, transformers>=5, megatron-core, megatron-bridge, nemo-automodel)"
  rm -rf "$D9_PEER_VENV"
  python3 -m venv "$D9_PEER_VENV" &&
    "$D9_PEER_VENV/bin/pip" install -q --disable-pip-version-check torch numpy safetensors \
      packaging rich "transformers>=5" megatron-core==0.16.1 &&
    "$D9_PEER_VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
      megatron-bridge==0.3.1 nemo-automodel==0.3.0 &&
    touch "$D9_PEER_VENV/.complete" ||
    { echo "== the peer venv could not be installed (is PyPI reachable?): the peer checks will skip"; return 0; }
}
