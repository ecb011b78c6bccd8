#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the
# demo (generate a small Llama-style checkpoint, mount it converted to
# Megatron layout, show it, verify every byte, unmount).
set -euo pipefail
. "$(dirname "$0")/setup.sh"
d9_install_deps
d9_build -DD9DFS_TESTS=OFF
"$D9_BUILD/d9dfs" demo
