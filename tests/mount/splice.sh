#!/usr/bin/env bash
# The reply paths through real mounts: zero-copy (spliced) replies and
# direct I/O (-o direct_io) give the same bytes as `d9dfs convert` and as
# -o no_splice; a direct_io file is uncached, has a 4 MiB st_blksize and
# still maps (shared mmap, as safetensors loads); and a source shard
# truncated or rewritten under the mount gives the reader an error
# (EIO/ESTALE), never a short read, while the mount stays up.
# usage: splice.sh D9DFS D9GEN
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9splice

same_tree() { # REF MNT: every file of REF equals the one in MNT
  local f
  for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}

stat_errors() { sed -n 's/.*"errors": \([0-9]*\).*/\1/p' "$1/.d9dfs/stats.json"; }
stat_served() { sed -n 's/.*"bytes_served": \([0-9]*\).*/\1/p' "$1/.d9dfs/stats.json"; }

# every file of REF equals MNT's through a shared, read-only mmap
same_mmap() {
  "$PY" - "$1" "$2" <<'PY'
import mmap, os, sys
ref, mnt = sys.argv[1:]
for name in sorted(os.listdir(ref)):
    want = open(os.path.join(ref, name), "rb").read()
    with open(os.path.join(mnt, name), "rb") as f:
        if not want:
            continue
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        if m[:] != want:
            sys.exit("%s: mapped bytes differ" % name)
PY
}

SRC=$WORK/src
"$D9GEN" --family llama --layers 8 --hidden 256 --heads 4 --kv-heads 2 \
  --intermediate 512 --vocab 300 --shards 2 "$SRC" >/dev/null

for spec in identity llama-to-megatron; do
  "$D9DFS" convert "$SRC" "$SPECS/$spec.json" "$WORK/ref-$spec"
  do_mount "$SRC" "$SPECS/$spec.json" "$WORK/m-$spec" -o splice
  check "$spec: spliced replies equal d9dfs convert" same_tree "$WORK/ref-$spec" "$WORK/m-$spec"
  do_mount "$SRC" "$SPECS/$spec.json" "$WORK/c-$spec" -o no_splice
  check "$spec: -o no_splice equals d9dfs convert" same_tree "$WORK/ref-$spec" "$WORK/c-$spec"
  do_mount "$SRC" "$SPECS/$spec.json" "$WORK/s-$spec" -o splice,max_read=1024
  check "$spec: -o max_read=1024 (too big to splice) equals d9dfs convert" \
    same_tree "$WORK/ref-$spec" "$WORK/s-$spec"
  check "$spec: no read error counted" test "$(stat_errors "$WORK/m-$spec")" = 0
  check "$spec: stats.json is json and says buffered, spliced" "$PY" -c \
    "import json,sys; f=json.load(open(sys.argv[1]))['frontend']; sys.exit(not (f['direct_io'] is False and f['splice'] is True))" \
    "$WORK/m-$spec/.d9dfs/stats.json"
  for o in direct_io direct_io,splice; do
    M=$WORK/d-$spec-${o//,/-}
    do_mount "$SRC" "$SPECS/$spec.json" "$M" -o "$o"
    check "$spec -o $o: read() equals d9dfs convert" same_tree "$WORK/ref-$spec" "$M"
    F=$(ls "$M"/*.safetensors | head -1)
    check "$spec -o $o: st_blksize is 4 MiB" test "$(stat -c %o "$F")" = 4194304
    before=$(stat_served "$M")
    cat "$F" >/dev/null
    cat "$F" >/dev/null
    check "$spec -o $o: a re-read comes back to the daemon (no page cache)" \
      test "$(( $(stat_served "$M") - before ))" -ge "$(( 2 * $(stat -c %s "$F") ))"
    check "$spec -o $o: shared mmap works and equals d9dfs convert" \
      same_mmap "$WORK/ref-$spec" "$M"
    check "$spec -o $o: no read error counted" test "$(stat_errors "$M")" = 0
    check "$spec -o $o: the kernel granted mmap (nothing logged)" test ! -s "$M.log"
    check "$spec -o $o: stats.json says direct_io" "$PY" -c \
      "import json,sys; sys.exit(json.load(open(sys.argv[1]))['frontend']['direct_io'] is not True)" \
      "$M/.d9dfs/stats.json"
  done
done

# Split reads in a daemonized mount (helpers start after the fork): a
# direct_io cast mount reads whole and equals convert, and counts splits.
SRC32=$WORK/src32
"$D9GEN" --family llama --layers 2 --hidden 512 --heads 8 --kv-heads 2 \
  --intermediate 1024 --vocab 1000 --dtype F32 --shards 2 "$SRC32" >/dev/null
"$D9DFS" convert "$SRC32" "$SPECS/cast-f32-to-bf16.json" "$WORK/ref-cast" -o threads=1
do_mount "$SRC32" "$SPECS/cast-f32-to-bf16.json" "$WORK/d-cast" -o direct_io,threads=2
check "cast -o direct_io,threads=2: equals d9dfs convert" same_tree "$WORK/ref-cast" "$WORK/d-cast"
check "cast -o direct_io,threads=2: reads were split across threads" \
  test "$(sed -n 's/.*"split_reads": \([0-9]*\).*/\1/p' "$WORK/d-cast/.d9dfs/stats.json")" -gt 0
check "cast -o direct_io,threads=2: no read error counted" test "$(stat_errors "$WORK/d-cast")" = 0

# A shard changed under the mount: the reader gets an error, not short data.
for how in truncate touch truncate-dio touch-dio; do
  S2=$WORK/src-$how M=$WORK/m-$how
  cp -r "$SRC" "$S2"
  case $how in
    *-dio) do_mount "$S2" "$SPECS/identity.json" "$M" -o direct_io,splice ;;
    *) do_mount "$S2" "$SPECS/identity.json" "$M" -o splice ;;
  esac
  F=$M/model.safetensors
  size=$(stat -c %s "$F")
  check "$how: the first MiB reads before the change" \
    bash -c "dd if='$F' bs=1M count=1 status=none | cmp -s - <(head -c 1048576 '$WORK/ref-identity/model.safetensors')"
  if [ "${how%-dio}" = truncate ]; then
    truncate -s 4096 "$S2/model-00002-of-00002.safetensors"
  else
    touch -d '2001-01-01' "$S2/model-00002-of-00002.safetensors"
  fi
  # the last MiB comes from shard 2 and was never cached
  skip=$(( size / 1048576 - 1 ))
  check "$how: reading from the changed shard fails (EIO/ESTALE), no short read" \
    bash -c "! dd if='$F' of=/dev/null bs=1M skip=$skip status=none 2>/dev/null"
  check "$how: the file size is unchanged" test "$(stat -c %s "$F")" = "$size"
  check "$how: the mount stays up" mountpoint -q "$M"
  check "$how: the error is counted" test "$(stat_errors "$M")" -ge 1
  check "$how: the daemon logged the shard" eventually grep -q "model-00002-of-00002.safetensors" "$M.log"
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
