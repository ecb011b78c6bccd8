#!/usr/bin/env bash
# Sources as users keep them, and sources that change, through real mounts.
# usage: sources.sh D9DFS D9GEN   (PYTHON=venv python with safetensors + numpy)
#
#   links        a directory of absolute symlinks into shared storage: a
#                private mount follows them; -o allow_other refuses them
#                (naming the file) unless -o follow_links; one shard linked
#                outside an otherwise plain directory likewise
#   hub escape   SRC = X/snapshots/r, X/blobs -> another directory,
#                tokenizer.json -> ../../blobs/shadow: -o allow_other refuses
#                it; a hub snapshot with a real blobs mounts
#   adapter      adapter_model.safetensors + adapter_config.json mount
#   in place     a shard or a copied file rewritten in place with the same
#                size and its mtime restored (touch -r): reads through the
#                mount fail (EIO or ESTALE), never the new bytes; also with
#                -o splice
# Bytes are compared with d9dfs convert of the real directory and, tensor
# by tensor, with the source read by safetensors (tests/py/same_tensors.py
# below). Exits 77 (skip) only when /dev/fuse is truly absent and CI is not
# set; in CI a mount that cannot be made fails.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9sources
"$PY" -c "import safetensors, numpy" || { echo "FAIL - $PY lacks safetensors/numpy"; exit 1; }
ID=$SPECS/identity.json
IDX=model.safetensors.index.json

# same_tensors SRC MNT: every tensor of every *.safetensors file under MNT
# equals (dtype, shape, bytes) the tensor of that name in SRC's files
cat >"$WORK/same_tensors.py" <<'EOF'
import glob, os, sys
from safetensors import safe_open
src, mnt = sys.argv[1], sys.argv[2]
want = {}
for f in glob.glob(os.path.join(src, "*.safetensors")):
    with safe_open(f, "np") as g:
        for k in g.keys():
            want[k] = g.get_tensor(k)
got = 0
for f in glob.glob(os.path.join(mnt, "*.safetensors")):
    with safe_open(f, "np") as g:
        for k in g.keys():
            t, w = g.get_tensor(k), want.pop(k)
            assert t.dtype == w.dtype and t.shape == w.shape and t.tobytes() == w.tobytes(), k
            got += 1
assert got and not want, (got, sorted(want)[:3])
EOF
# readall FILE REF: read FILE to the end; print OK, SHORT, WRONG (bytes
# differ from REF) or the errno name of the first failed read
cat >"$WORK/readall.py" <<'EOF'
import errno, os, sys
path, ref = sys.argv[1], open(sys.argv[2], "rb").read()
fd, got, err = os.open(path, os.O_RDONLY), bytearray(), None
while True:
    try:
        b = os.pread(fd, 1 << 20, len(got))
    except OSError as e:
        err = e.errno
        break
    if not b:
        break
    got += b
print("WRONG" if not ref.startswith(bytes(got)) else errno.errorcode[err] if err
      else "SHORT" if len(got) != len(ref) else "OK")
EOF
# inplace FILE OFF LEN: complement LEN bytes at OFF of FILE in place, once the
# clock is past the file's ctime (a change in the same clock tick would keep
# it), then give FILE back the mtime it had (touch -r from a preserved copy)
inplace() {
  cp -p "$1" "$WORK/mtime.ref"
  "$PY" - "$1" "$2" "$3" <<'EOF' || return 1
import os, sys, time
p, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(200):  # bounded: at most 2 s
    if time.time_ns() - os.stat(p).st_ctime_ns > 50_000_000:
        break
    time.sleep(0.01)
with open(p, "r+b") as f:
    f.seek(off)
    b = f.read(n)
    f.seek(off)
    f.write(bytes(x ^ 0xFF for x in b))
EOF
  touch -r "$WORK/mtime.ref" "$1"
  [ "$(stat -c %Y.%y "$1")" = "$(stat -c %Y.%y "$WORK/mtime.ref")" ]
}
# refused NAME OUT STATUS PATTERN...: a mount that must have failed with one
# line matching every PATTERN
refused() {
  local name=$1 out=$2 st=$3; shift 3
  local okk=1 p
  [ "$st" -ne 0 ] || okk=0
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || okk=0
  for p in "$@"; do grep -qE -- "$p" <<<"$out" || okk=0; done
  if [ $okk = 1 ]; then ok "$name: $out"; else bad "$name (exit $st): $out"; fi
}
try_mount() { # SRC SPEC MNT [opts]: prints the CLI's output, returns its status
  mkdir -p "$3"
  MOUNTS+=("$3")
  timeout 30 "$D9DFS" mount "$@" 2>&1
}

# ---- a directory of links into shared storage ----
STORE=$WORK/store LINKS=$WORK/links
"$D9GEN" --family llama --layers 2 --hidden 256 --heads 8 --kv-heads 2 --intermediate 512 \
  --vocab 2000 --dtype F32 --shards 3 --seed 7 "$STORE" >/dev/null
mkdir -p "$LINKS"
for f in "$STORE"/*; do ln -s "$f" "$LINKS/$(basename "$f")"; done
"$D9DFS" convert "$STORE" "$ID" "$WORK/ref.id" >/dev/null
check "links: a private mount follows them" do_mount "$LINKS" "$ID" "$WORK/links.mnt"
check "links: every file equals d9dfs convert of the real directory" \
  diff -r -x .d9dfs "$WORK/ref.id" "$WORK/links.mnt"
check "links: every tensor equals the source's (safetensors)" \
  "$PY" "$WORK/same_tensors.py" "$STORE" "$WORK/links.mnt"
fusermount3 -u "$WORK/links.mnt"
out=$(try_mount "$LINKS" "$ID" "$WORK/links.ao" -o allow_other) && st=0 || st=$?
mountpoint -q "$WORK/links.ao" && fusermount3 -u "$WORK/links.ao"
refused "links: -o allow_other refuses them, naming the file" "$out" $st \
  "'[^']+' resolves outside the source directory"
check "links: -o allow_other,follow_links follows them" \
  do_mount "$LINKS" "$ID" "$WORK/links.fl" -o allow_other,follow_links
check "links: allow_other,follow_links: every file equals convert" \
  diff -r -x .d9dfs "$WORK/ref.id" "$WORK/links.fl"
fusermount3 -u "$WORK/links.fl"

# one shard linked outside an otherwise plain directory
ONE=$WORK/one
cp -r "$STORE" "$ONE"
mkdir -p "$WORK/outside"
SH2=model-00002-of-00003.safetensors
mv "$ONE/$SH2" "$WORK/outside/$SH2"
ln -s "$WORK/outside/$SH2" "$ONE/$SH2"
out=$(try_mount "$ONE" "$ID" "$WORK/one.ao" -o allow_other) && st=0 || st=$?
mountpoint -q "$WORK/one.ao" && fusermount3 -u "$WORK/one.ao"
refused "index entry linked outside: -o allow_other refuses it" "$out" $st \
  "$IDX: tensor '[^']+'" "'$SH2' resolves outside the source directory"
check "index entry linked outside: a private mount follows it" \
  do_mount "$ONE" "$ID" "$WORK/one.mnt"
check "index entry linked outside: every file equals convert" \
  diff -r -x .d9dfs "$WORK/ref.id" "$WORK/one.mnt"
fusermount3 -u "$WORK/one.mnt"

# ---- the hub cache's blobs ----
REPO=$WORK/hub/models--org--tiny SNAP=$WORK/hub/models--org--tiny/snapshots/r
mkdir -p "$REPO/snapshots" "$WORK/etc"
echo "root:secret-hash:19000:0:99999:7:::" >"$WORK/etc/shadow"
cp -r "$STORE" "$SNAP"
ln -s "$WORK/etc" "$REPO/blobs"
ln -s ../../blobs/shadow "$SNAP/tokenizer.json"
out=$(try_mount "$SNAP" "$ID" "$WORK/hub.ao" -o allow_other) && st=0 || st=$?
served=no
if mountpoint -q "$WORK/hub.ao"; then
  grep -q secret-hash "$WORK/hub.ao/tokenizer.json" 2>/dev/null && served=yes
  fusermount3 -u "$WORK/hub.ao"
fi
refused "hub: a symlinked blobs: -o allow_other refuses the link through it" "$out" $st \
  "'tokenizer.json' resolves outside the source directory"
check "hub: the file behind it was not served" test $served = no
# a real hub snapshot: every file a link into a real blobs directory
rm -rf "$WORK/hub"
mkdir -p "$REPO/blobs" "$SNAP"
for f in "$STORE"/*; do
  h=$(sha256sum "$f" | cut -c1-40)
  cp "$f" "$REPO/blobs/$h"
  ln -s "../../blobs/$h" "$SNAP/$(basename "$f")"
done
check "hub: a snapshot with a real blobs mounts with -o allow_other" \
  do_mount "$SNAP" "$ID" "$WORK/hub.mnt" -o allow_other
check "hub: every file equals convert" diff -r -x .d9dfs "$WORK/ref.id" "$WORK/hub.mnt"
fusermount3 -u "$WORK/hub.mnt"

# ---- a PEFT adapter directory ----
AD=$WORK/adapter
"$D9GEN" --family llama --layers 1 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 \
  --vocab 500 --dtype F16 --shards 1 --seed 9 "$AD" >/dev/null
mv "$AD/model.safetensors" "$AD/adapter_model.safetensors"
mv "$AD/config.json" "$AD/adapter_config.json"
cat >"$WORK/adapter.json" <<'EOF'
{"d9dfs_spec": 1, "passthrough": true, "output": {"copy": ["adapter_config.json"]}}
EOF
check "adapter: adapter_model.safetensors + adapter_config.json mount" \
  do_mount "$AD" "$WORK/adapter.json" "$WORK/adapter.mnt"
check "adapter: the tree keeps the names" bash -c \
  "[ \"\$(ls '$WORK/adapter.mnt' | tr '\n' ' ')\" = 'adapter_config.json adapter_model.safetensors ' ]"
check "adapter: every tensor equals the source's (safetensors)" \
  "$PY" "$WORK/same_tensors.py" "$AD" "$WORK/adapter.mnt"
check "adapter: adapter_config.json is copied byte for byte" \
  cmp "$AD/adapter_config.json" "$WORK/adapter.mnt/adapter_config.json"
fusermount3 -u "$WORK/adapter.mnt"

# ---- rewritten in place, mtime restored ----
# The identity tree's one model.safetensors holds every tensor; shard 2's
# data is rewritten (same size), so a full read through a fresh mount must
# fail, never return the new bytes.
offset_of() { # FILE TENSOR: absolute offset of the tensor's data
  "$PY" - "$1" "$2" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read(8)
n = struct.unpack("<Q", b)[0]
h = json.loads(open(sys.argv[1], "rb").read(8 + n)[8:])
print(8 + n + h[sys.argv[2]]["data_offsets"][0])
EOF
}
T2=$("$PY" -c "import json; w=json.load(open('$STORE/$IDX'))['weight_map']; print(sorted(k for k in w if w[k]=='$SH2')[0])")
for opts in "" "splice"; do
  label="in place${opts:+ (-o $opts)}"
  S=$WORK/inplace$opts
  cp -r "$STORE" "$S"
  do_mount "$S" "$ID" "$S.mnt" ${opts:+-o $opts} || { bad "$label: mount"; continue; }
  check "$label: before the change the tree reads whole" bash -c \
    "[ \"\$('$PY' '$WORK/readall.py' '$S.mnt/config.json' '$S/config.json')\" = OK ]"
  if inplace "$S/$SH2" "$(offset_of "$S/$SH2" "$T2")" 4096; then
    r=$("$PY" "$WORK/readall.py" "$S.mnt/model.safetensors" "$WORK/ref.id/model.safetensors")
    check "$label: a shard rewritten with its mtime restored: the read fails ($r), never the new bytes" \
      bash -c "[ '$r' = EIO ] || [ '$r' = ESTALE ]"
    check "$label: the daemon names the shard and says remount" \
      eventually grep -q "$SH2: changed under the mount (ctime.*remount after a source changed" "$S.mnt.log"
  else
    bad "$label: rewriting $SH2 in place with its mtime restored failed"
  fi
  cp "$S/tokenizer_config.json" "$WORK/tok.ref"
  if inplace "$S/tokenizer_config.json" 0 4; then
    r=$("$PY" "$WORK/readall.py" "$S.mnt/tokenizer_config.json" "$WORK/tok.ref")
    check "$label: a copied file rewritten with its mtime restored: the read fails ($r)" \
      bash -c "[ '$r' = EIO ] || [ '$r' = ESTALE ]"
  else
    bad "$label: rewriting tokenizer_config.json in place failed"
  fi
  fusermount3 -u "$S.mnt"
done

finish
