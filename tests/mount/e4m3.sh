#!/usr/bin/env bash
# The cast to F8_E4M3 against torch's float8_e4m3fn, byte for byte, on 4M
# F32 values covering every exponent and sign, ties, subnormals, the range
# edge (448, 464, beyond) and +-Inf / NaN (+-Inf and values beyond the
# range saturate to +-448, NaN stays NaN, as torch does). The independent
# reference of the same rule is test_kernels' (tests/test_kernels.c); this
# is the peer. usage: e4m3.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9e4m3
CHECK=$HERE/tests/py/check_e4m3_peer.py
src=$WORK/src out=$WORK/out
"$PY" "$CHECK" make "$src"
cat >"$WORK/spec.json" <<'JSON'
{"d9dfs_spec": 1, "description": "test: every tensor cast to F8_E4M3",
 "rules": [{"name": "e4m3", "inputs": "{n*}", "steps": [{"op": "cast", "to": "F8_E4M3"}],
            "output": "{n}"}]}
JSON
check "convert casts it" "$D9DFS" convert "$src" "$WORK/spec.json" "$out"
PEER=${D9DFS_PEER_PYTHON:-$HERE/.venv-peer/bin/python}
if [ -x "$PEER" ]; then
  res=$("$PEER" "$CHECK" torch "$src" "$out" 2>&1) && st=0 || st=$?
  echo "$res"
  if [ $st = 77 ]; then echo "skip - torch peer: $PEER cannot import torch"
  else check "every value equals torch's float8_e4m3fn cast byte for byte" [ $st = 0 ]; fi
else
  echo "skip - torch peer: no Python at $PEER (set D9DFS_PEER_PYTHON)"
fi
finish
