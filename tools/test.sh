#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): install what is
# missing, build, and run the whole test suite - cmocka unit tests per
# module, the fuzz corpus replays and the real FUSE mount tests with the
# `safetensors` package as an unmodified loader; then the same unit tests
# under ASan+UBSan and the concurrency test under TSan.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
d9_install_deps
d9_venv
# the peer libraries install (mostly download) while the release build runs
d9_peer_venv > "$D9_ROOT/.venv-peer.log" 2>&1 &
peer_pid=$!
d9_build -DD9DFS_TESTS=ON
wait "$peer_pid" || true
cat "$D9_ROOT/.venv-peer.log"
export D9DFS_PEER_PYTHON="$D9_PEER_VENV/bin/python"
(cd "$D9_BUILD" && PYTHON="$D9_VENV/bin/python" ctest --output-on-failure --timeout 900)

# Sanitizer builds (tests/fuzz/README.md). ASan+UBSan: the whole suite
# again, the fuzz corpus replays and the mount scripts included (the
# daemons then run instrumented; faults.sh checks their logs for reports).
# TSan: the multi-threaded read tests and the source-cache sweeper. About 1 minute on 2 cores.
D9_BUILD=$D9_ROOT/build-asan d9_build -DD9DFS_TESTS=ON -DD9DFS_CUDA=OFF \
  -DD9DFS_SANITIZE=address,undefined
# (the peer comparisons ran on the release build's identical bytes: not again)
(cd "$D9_ROOT/build-asan" && PYTHON="$D9_VENV/bin/python" D9DFS_PEER_PYTHON=/nonexistent/peer-checks-ran-in-the-release-pass \
   ctest --output-on-failure --timeout 900)
echo "== building test_concurrency, test_split and test_src_cache in $D9_ROOT/build-tsan"
cmake -S "$D9_ROOT" -B "$D9_ROOT/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DD9DFS_TESTS=ON \
  -DD9DFS_CUDA=OFF -DD9DFS_SANITIZE=thread >/dev/null
cmake --build "$D9_ROOT/build-tsan" -j"$(nproc)" --target test_concurrency test_split test_src_cache >/dev/null
(cd "$D9_ROOT/build-tsan" && ctest --output-on-failure --timeout 900 -R '^test_(concurrency|split|src_cache)$')
