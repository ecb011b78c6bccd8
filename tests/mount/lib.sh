# lib.sh - what every mount test script shares; source it as
#   . "$(dirname "$0")/lib.sh" "$@" NAME
# with the script's arguments (D9DFS D9GEN) and a name for its work dir.
# Sets D9DFS D9GEN HERE PY SPECS WORK MOUNTS BGPIDS pass fail; gives
# ok/bad/check, do_mount (daemon stderr appended to $MNT.log) and a cleanup
# that unmounts everything the script mounted. Exits 77 (skip) only when
# /dev/fuse is truly absent and CI is not set; in CI that is a failure.
D9DFS=$(readlink -f "$1")
D9GEN=$(readlink -f "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
[ -x "$PY" ] || PY=python3
SPECS=$HERE/mounts
pass=0 fail=0
WORK=$(mktemp -d "/tmp/$3.XXXXXX")
MOUNTS=()
BGPIDS=()

cleanup() {
  local p m
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for m in "${MOUNTS[@]}"; do
    if mountpoint -q "$m" 2>/dev/null; then fusermount3 -u "$m" 2>/dev/null || true; fi
    fusermount3 -u -z "$m" 2>/dev/null || true # a dead daemon's mount
  done
  rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# eventually CMD...: CMD succeeds within 20 s (polled every 0.1 s), for
# what a daemon does after the reader returns, such as its log line (the
# log relay writes it from its own thread)
eventually() {
  local i
  for i in $(seq 200); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  "$@"
}

if [ ! -c /dev/fuse ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL - /dev/fuse is missing in CI"; exit 1; fi
  echo "skip: /dev/fuse is absent on this machine"; exit 77
fi

# do_mount SRC SPEC MNT [opts...]: returns once the mount is ready (the CLI
# daemonizes); the daemon's stderr goes to MNT.log, kept by fuse_ll.c since
# it is a regular file
do_mount() {
  local src=$1 spec=$2 mnt=$3; shift 3
  mkdir -p "$mnt"
  MOUNTS+=("$mnt")
  "$D9DFS" mount "$src" "$spec" "$mnt" "$@" 2>>"$mnt.log"
}

# summary line and exit status
# daemon_pids TEXT: the PIDs of the d9dfs processes with an argument that
# starts with TEXT (a mount point, or $WORK/ for all of this script's)
daemon_pids() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- " $1" &&
      tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q "[d]9dfs" && echo "${p#/proc/}"
  done
  return 0
}
# daemons_exited: no d9dfs daemon serves a mount point under $WORK any
# more (their sanitizer reports are written as they exit)
daemons_exited() { [ -z "$(daemon_pids "$WORK/")" ]; }

finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
