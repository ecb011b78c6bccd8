#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): install what is
# missing, build, and run the whole test suite - cmocka unit tests per
# module and the real FUSE mount tests with the `safetensors` package as an
# unmodified loader.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
d9_install_deps
d9_venv
d9_build -DD9DFS_TESTS=ON
cd "$D9_BUILD"
PYTHON="$D9_VENV/bin/python" ctest --output-on-failure --timeout 900
