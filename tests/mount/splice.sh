#!/usr/bin/env bash
# Zero-copy (spliced) replies through real mounts: the same bytes as
# `d9dfs convert` and as -o no_splice, and a source shard truncated or
# rewritten under the mount gives the reader an error (EIO/ESTALE), never a
# short read, while the mount stays up.
# usage: splice.sh D9DFS D9GEN
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9splice

same_tree() { # REF MNT: every file of REF equals the one in MNT
  local f
  for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}

stat_errors() { sed -n 's/.*"errors": \([0-9]*\).*/\1/p' "$1/.d9dfs/stats.json"; }

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
done

# A shard changed under the mount: the reader gets an error, not short data.
for how in truncate touch; do
  S2=$WORK/src-$how M=$WORK/m-$how
  cp -r "$SRC" "$S2"
  do_mount "$S2" "$SPECS/identity.json" "$M" -o splice
  F=$M/model.safetensors
  size=$(stat -c %s "$F")
  check "$how: the first MiB reads before the change" \
    bash -c "dd if='$F' bs=1M count=1 status=none | cmp -s - <(head -c 1048576 '$WORK/ref-identity/model.safetensors')"
  if [ "$how" = truncate ]; then
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
  check "$how: the daemon logged the shard" grep -q "model-00002-of-00002.safetensors" "$M.log"
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
