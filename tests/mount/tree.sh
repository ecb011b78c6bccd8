#!/usr/bin/env bash
# The mount's tree, through real mounts: where it may be mounted, unique
# names, sizes that match the bytes read, and modes and owners taken from
# the sources as another user sees them.
# usage: tree.sh D9DFS D9GEN   (PYTHON=a python3; only the standard library is used)
#
#   mount point    inside the source directory (also one an index entry
#                  resolves through, with -o single_thread), or above it:
#                  refused at mount time with both paths named
#   names          a copied source file named like the rank views (ranks,
#                  copy ["*"], -o tp=2): refused, both origins named
#   sizes          .d9dfs/stats.json and report.json: st_size (stat and
#                  fstat) equals the bytes a read returns, while the
#                  counters change
#   permissions    as another user (nobody) behind -o allow_other: a tensor
#                  file made from a 0600 root-owned shard is unreadable, one
#                  from a 0644 shard readable (the same bytes as root's); a
#                  file from both takes the common read bits; config.json
#                  and directories follow their sources
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9tree
chmod 755 "$WORK" # another user walks to the mount points
ID=$SPECS/identity.json

# refused MNT OPTS PATTERN...: mounting $1 at MNT fails (non-zero exit),
# nothing is mounted there, and the error matches every PATTERN (grep -F)
refused() {
  local src=$1 mnt=$2 opts=$3; shift 3
  local out st=0
  out=$(timeout 60 "$D9DFS" mount "$src" "$ID" "$mnt" $opts 2>&1) || st=$?
  if mountpoint -q "$mnt" 2>/dev/null; then MOUNTS+=("$mnt"); echo "mounted: $out"; return 1; fi
  [ "$st" -ne 0 ] && [ "$st" -ne 124 ] || { echo "exit $st: $out"; return 1; }
  local p
  for p in "$@"; do grep -qF -- "$p" <<<"$out" || { echo "no '$p' in: $out"; return 1; }; done
}

# ==== mount point ====
# a source whose index names sub/s1.safetensors
MSRC=$WORK/msrc
"$D9GEN" --family llama --layers 1 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 300 --dtype F32 --seed 3 "$MSRC" >/dev/null
mkdir -p "$MSRC/sub" "$MSRC/empty"
mv "$MSRC/model.safetensors" "$MSRC/sub/s1.safetensors"
"$PY" - "$MSRC" <<'PYEOF'
import json, struct, sys
d = sys.argv[1]
with open(d + "/sub/s1.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
json.dump({"metadata": {}, "weight_map": {k: "sub/s1.safetensors" for k in names}},
          open(d + "/model.safetensors.index.json", "w"))
PYEOF
RM=$(readlink -f "$MSRC")
check "mount point: inside the source, an index entry resolving through it (-o single_thread): refused, both named" \
  refused "$MSRC" "$MSRC/sub" "-o single_thread" "mount point $RM/sub" "source directory $RM"
check "mount point: inside the source, no entry through it: refused, both named" \
  refused "$MSRC" "$MSRC/empty" "" "mount point $RM/empty" "source directory $RM"
check "mount point: the source directory itself: refused" \
  refused "$MSRC" "$MSRC" "" "mount point $RM is inside the source directory $RM"
mkdir -p "$WORK/outer"
cp -r "$MSRC" "$WORK/outer/src"
check "mount point: above the source directory: refused, both named" \
  refused "$WORK/outer/src" "$WORK/outer" "" "source directory $(readlink -f "$WORK/outer/src")" \
  "mount point $(readlink -f "$WORK/outer")"
mnt=$WORK/msrc.mnt
do_mount "$MSRC" "$ID" "$mnt" -o single_thread
check "mount point: beside the source: mounts, and reads equal the CLI's bytes" bash -c \
  "'$D9DFS' cat '$MSRC' '$ID' model.safetensors | cmp -s - '$mnt/model.safetensors'"
fusermount3 -u "$mnt"

# ==== names ====
NSRC=$WORK/nsrc
"$D9GEN" --family llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 300 --dtype F32 --seed 4 "$NSRC" >/dev/null
"$PY" - "$SPECS/llama-to-megatron.json" "$WORK/copyall.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
s["output"] = {"copy": ["*"]}
json.dump(s, open(sys.argv[2], "w"))
PYEOF
mnt=$WORK/names.mnt
do_mount "$NSRC" "$WORK/copyall.json" "$mnt" -o tp=2
check "names: without a clash, ranks/tp0 holds a rank's shard" test -f "$mnt/ranks/tp0/model.safetensors"
fusermount3 -u "$mnt"
echo "not a directory" >"$NSRC/ranks"
out=$("$D9DFS" mount "$NSRC" "$WORK/copyall.json" "$mnt" -o tp=2 2>&1) && st=0 || st=$?
mountpoint -q "$mnt" && fusermount3 -u "$mnt"
check "names: a copied file named ranks beside -o tp=2 is refused, both origins named ($out)" bash -c \
  "[ $st -ne 0 ] && grep -q \"two entries named 'ranks'\" <<<\"\$1\" && grep -q 'copy' <<<\"\$1\" && grep -q 'rank views' <<<\"\$1\"" _ "$out"
out=$("$D9DFS" plan "$NSRC" "$WORK/copyall.json" -o tp=2 2>&1) && st=0 || st=$?
check "names: d9dfs plan refuses it too" bash -c "[ $st -ne 0 ] && grep -q \"named 'ranks'\" <<<\"\$1\"" _ "$out"

# ==== sizes ====
mnt=$WORK/sizes.mnt
do_mount "$NSRC" "$ID" "$mnt"
cat >"$WORK/sizes.py" <<'PYEOF'
import os, sys
m = sys.argv[1]
def one(name):
    p = os.path.join(m, ".d9dfs", name)
    size = os.stat(p).st_size
    fd = os.open(p, os.O_RDONLY)
    fsize = os.fstat(fd).st_size
    data = b""
    while True:
        b = os.read(fd, 7)  # small reads: the size must hold across requests
        if not b:
            break
        data += b
    os.close(fd)
    return size, fsize, data
def sample():
    out = {}
    for name in ("stats.json", "report.json"):
        size, fsize, data = one(name)
        if not (size == fsize == len(data) > 0):
            print(f"{name}: stat {size}, fstat {fsize}, read {len(data)}")
            sys.exit(1)
        out[name] = data
    return out
a = sample()
with open(os.path.join(m, "model.safetensors"), "rb") as f:
    f.read()  # counters grow
b = sample()
if a["stats.json"] == b["stats.json"]:
    print("stats.json did not change after a read")
    sys.exit(1)
import json
json.loads(b["stats.json"]), json.loads(b["report.json"])
print("ok")
PYEOF
check "sizes: stats.json and report.json: stat and fstat size == bytes read, before and after the counters change" \
  "$PY" "$WORK/sizes.py" "$mnt"
check "sizes: ls -l size equals cat's byte count" bash -c \
  "[ \$(stat -c %s '$mnt/.d9dfs/stats.json') = \$(cat '$mnt/.d9dfs/stats.json' | wc -c) ]"
# many short-lived readers of the dynamic files at once: each open renders
# its own copy, freed at its release, which can come while the thread that
# answered the read is still returning from the reply's writev (the ASan
# daemon aborted on that: the reply now sends a copy)
dyn_stress() {
  local i pids=()
  for i in 1 2 3 4; do
    (for _ in $(seq 150); do # one read each, then the close: no read at EOF between
       head -c 64 "$mnt/.d9dfs/stats.json" >/dev/null && head -c 64 "$mnt/.d9dfs/report.json" >/dev/null ||
         exit 1
     done) &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || { echo "a reader failed"; return 1; }; done
  grep -q bytes_served "$mnt/.d9dfs/stats.json"
}
check "dynamic files: 4 x 150 concurrent open, read, close of stats.json and report.json; the daemon still answers" \
  dyn_stress
fusermount3 -u "$mnt"

# ==== permissions ====
if [ "$(id -u)" -ne 0 ]; then
  bad "permissions: acting as another user needs root (setpriv); not run"
  finish
  exit
fi
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
PSRC=$WORK/psrc
"$D9GEN" --family llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 300 --dtype F32 --shards 2 --seed 6 "$PSRC" >/dev/null
chown -R root:root "$PSRC"
chmod 755 "$PSRC"
SECRET=model-00001-of-00002.safetensors OPEN=model-00002-of-00002.safetensors
chmod 600 "$PSRC/$SECRET"
chmod 644 "$PSRC/$OPEN" "$PSRC/model.safetensors.index.json"
chmod 640 "$PSRC/config.json"
# as nobody (plain cat: nobody may not run this python): denied when the
# open fails with EACCES, readable when nobody's bytes equal root's
denied() {
  local err
  err=$(LC_ALL=C "${NOBODY[@]}" cat "$1" 2>&1 >/dev/null) && return 1
  grep -q 'Permission denied' <<<"$err"
}
readable() { "${NOBODY[@]}" cat "$1" | cmp -s - "$1"; }
mode_owner() { [ "$(stat -c '%a %U %G' "$1")" = "$2" ]; }

mnt=$WORK/perm1.mnt
do_mount "$PSRC" "$ID" "$mnt" -o allow_other
check "permissions: the mount root takes the source directory's 755 as 555, root-owned" \
  mode_owner "$mnt" "555 root root"
check "permissions: nobody lists the mount root" bash -c "${NOBODY[*]} ls '$mnt' | grep -q config.json"
check "permissions: a file made from a 0600 and a 0644 shard is 0400 root:root" \
  mode_owner "$mnt/model.safetensors" "400 root root"
check "permissions: nobody cannot read it (EACCES)" denied "$mnt/model.safetensors"
check "permissions: root still reads it, the CLI's bytes" bash -c \
  "'$D9DFS' cat '$PSRC' '$ID' model.safetensors | cmp -s - '$mnt/model.safetensors'"
check "permissions: config.json from a 0640 root:root source is 0440 root:root" \
  mode_owner "$mnt/config.json" "440 root root"
check "permissions: nobody cannot read config.json (EACCES)" denied "$mnt/config.json"
check "permissions: nobody reads .d9dfs/stats.json (the source directory is readable)" \
  bash -c "${NOBODY[*]} cat '$mnt/.d9dfs/stats.json' | grep -q bytes_served"
fusermount3 -u "$mnt"

# one tensor per file: each file comes from one source shard
mnt=$WORK/perm2.mnt
do_mount "$PSRC" "$ID" "$mnt" -o allow_other,shard_size=1
"$PY" - "$mnt" "$PSRC" >"$WORK/origin.txt" <<'PYEOF'
import json, sys
m, s = sys.argv[1:]
out = json.load(open(m + "/model.safetensors.index.json"))["weight_map"]
src = json.load(open(s + "/model.safetensors.index.json"))["weight_map"]
files = {}
for t, f in out.items():
    files.setdefault(f, set()).add(src[t])
for f, shards in sorted(files.items()):
    print(f, *sorted(shards))
PYEOF
nsecret=0 nopen=0 wrong=""
while read -r f sh rest; do
  [ -z "$rest" ] || { wrong+=" $f:several-sources"; continue; }
  if [ "$sh" = "$SECRET" ]; then
    nsecret=$((nsecret + 1))
    mode_owner "$mnt/$f" "400 root root" && denied "$mnt/$f" || wrong+=" $f:not-denied"
  else
    nopen=$((nopen + 1))
    mode_owner "$mnt/$f" "444 root root" && readable "$mnt/$f" || wrong+=" $f:not-readable"
  fi
done <"$WORK/origin.txt"
check "permissions: $nsecret files from the 0600 shard are 0400 and denied to nobody, $nopen from the 0644 shard are 0444 and read by nobody as root reads them${wrong:+ (wrong:$wrong)}" \
  bash -c "[ $nsecret -gt 0 ] && [ $nopen -gt 0 ] && [ -z '$wrong' ]"
check "permissions: the index (it names the 0600 shard's tensors) is 0400" \
  mode_owner "$mnt/model.safetensors.index.json" "400 root root"
fusermount3 -u "$mnt"

# a source directory others cannot read: neither can they list the mount
chmod 750 "$PSRC"
mnt=$WORK/perm3.mnt
do_mount "$PSRC" "$ID" "$mnt" -o allow_other
check "permissions: a 0750 source directory gives a 0550 mount root nobody cannot list" bash -c \
  "[ \$(stat -c %a '$mnt') = 550 ] && ! ${NOBODY[*]} ls '$mnt' >/dev/null 2>&1"
fusermount3 -u "$mnt"

check "every daemon exited after its unmount" eventually daemons_exited
check "no daemon log reports a sanitizer error" bash -c \
  "! grep -l 'Sanitizer' '$WORK'/*.log '$WORK'/*/*.log 2>/dev/null"
finish
