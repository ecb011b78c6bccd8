#!/usr/bin/env bash
# Bad input at mount time and faults while mounted, through real mounts.
# usage: faults.sh D9DFS D9GEN   (PYTHON=a python3; only the standard library is used)
#
# Every case is generated here, at test time, from d9gen checkpoints:
#   mount-time table   a broken source or spec: non-zero exit, one line that
#                      names the file / tensor / spec location and the reason
#   while mounted      truncated / replaced / modified shards, injected EIO
#                      and ENOMEM, descriptor exhaustion, many parallel
#                      readers, a slow read beside stat/readdir
#   lifecycle          kill -9 (ENOTCONN, auto_unmount), lazy unmount with a
#                      file open, remounting the same point after each
#   access             other users without / with allow_other, modes, EROFS
# SIGTERM/SIGINT, foreground mode, missing and busy mount points are in
# run.sh. Exits 77 (skip) only when /dev/fuse is truly absent and CI is not
# set; in CI a mount that cannot be made fails.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9faults
chmod 755 "$WORK" # the access cases read as another user

daemon_pid() { pgrep -f "d9dfs mount $1 $2 $3( |\$)" | head -1; }
wait_gone() { # PID [tenths]: wait until the process is gone
  for _ in $(seq "${2:-100}"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}
wait_unmounted() { for _ in $(seq 100); do mountpoint -q "$1" 2>/dev/null || return 0; sleep 0.1; done; return 1; }

# readall FILE REF [direct]: read FILE to the end in 1 MiB reads and print one
# word: OK (equals REF), SHORT (EOF before REF's size), WRONG (bytes differ),
# or the errno name of the first failed read (EIO, ESTALE, ...). The bytes
# read before an error must be a prefix of REF.
cat >"$WORK/readall.py" <<'EOF'
import errno, mmap, os, sys
path, ref = sys.argv[1], open(sys.argv[2], "rb").read()
direct = len(sys.argv) > 3
fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
got, err = bytearray(), None
while True:
    try:
        n = os.preadv(fd, [buf], len(got))
    except OSError as e:
        err = e.errno
        break
    if n == 0:
        break
    got += buf[:n]
print("WRONG" if not ref.startswith(bytes(got)) else errno.errorcode[err] if err
      else "SHORT" if len(got) != len(ref) else "OK")
EOF
readall() { "$PY" "$WORK/readall.py" "$@"; }

# ---- fixtures ----
SRC=$WORK/src                     # small llama, F32, 3 shards
"$D9GEN" --family llama --layers 2 --hidden 256 --heads 8 --kv-heads 2 --intermediate 512 \
  --vocab 2000 --dtype F32 --shards 3 --seed 5 "$SRC" >/dev/null
SH1=model-00001-of-00003.safetensors SH2=model-00002-of-00003.safetensors
SH3=model-00003-of-00003.safetensors
IDX=model.safetensors.index.json
ID=$SPECS/identity.json
MEG=$SPECS/llama-to-megatron.json
cat >"$WORK/cast.json" <<'EOF'
{"d9dfs_spec": 1, "rules": [{"name": "bf16", "inputs": "{name*}",
  "steps": [{"op": "cast", "to": "BF16"}], "output": "{name}"}]}
EOF
"$D9DFS" convert "$SRC" "$ID" "$WORK/ref.id" >/dev/null
"$D9DFS" convert "$SRC" "$WORK/cast.json" "$WORK/ref.cast" >/dev/null
"$D9DFS" convert "$SRC" "$MEG" "$WORK/ref.meg" -o shard_size=1000000 >/dev/null

# ==== bad input at mount time ====
# case NAME 'mutation run in the case dir' PATTERN... [-- SPEC]: copy SRC,
# mutate it, mount: the mount must fail (non-zero exit, no signal), print
# exactly one line, and the line must match every PATTERN (grep -E).
bad_case() {
  local name=$1 mutate=$2; shift 2
  local spec=$ID pats=()
  while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then spec=$2; shift 2; else pats+=("$1"); shift; fi
  done
  local d=$WORK/bad/$name mnt=$WORK/bad/$name.mnt
  mkdir -p "$WORK/bad"
  cp -r "$SRC" "$d"
  (cd "$d" && eval "$mutate") || { bad "$name: mutation failed"; return; }
  mkdir -p "$mnt"
  local out st
  out=$(timeout 20 "$D9DFS" mount "$d" "$spec" "$mnt" 2>&1) && st=0 || st=$?
  if mountpoint -q "$mnt"; then fusermount3 -u "$mnt"; bad "$name: mounted"; return; fi
  local okk=1 why=""
  [ "$st" -ne 0 ] || { okk=0; why="exit 0"; }
  [ "$st" -lt 124 ] || { okk=0; why="exit $st (signal or timeout)"; }
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { okk=0; why="not one line"; }
  for p in "${pats[@]}"; do grep -qE -- "$p" <<<"$out" || { okk=0; why="no /$p/"; }; done
  if [ $okk = 1 ]; then ok "mount refuses $name: $out"; else bad "mount refuses $name ($why): $out"; fi
}
# edit the index with python: EXPR over the dict `d` (weight_map `w`)
idx_edit() { "$PY" - "$1" <<EOF
import json, sys
d = json.load(open("$IDX")); w = d["weight_map"]
$1
json.dump(d, open("$IDX", "w"))
EOF
}
first_in() { "$PY" -c "import json,sys; w=json.load(open('$SRC/$IDX'))['weight_map']; print(sorted(k for k in w if w[k]=='$1')[0])"; }
T2=$(first_in $SH2) # a tensor of shard 2
mkdir -p "$WORK/outside"
cp "$SRC/$SH2" "$WORK/outside/$SH2"

bad_case truncated-shard "truncate -s -100 $SH2" "$SH2" "past the end|too short"
bad_case shard-under-8-bytes "truncate -s 5 $SH2" "$SH2" "shorter than the 8-byte"
bad_case garbage-shard "head -c 4096 /dev/zero | tr '\\0' 'g' > $SH2" "$SH2" "header length"
bad_case header-not-json "printf '\\x10\\0\\0\\0\\0\\0\\0\\0not json at all!' > $SH2" "$SH2" "json"
bad_case header-len-past-eof "printf '\\xff\\xff\\0\\0\\0\\0\\0\\0{}      ' > $SH2" "$SH2" "past the end of the file"
bad_case index-absolute "idx_edit 'w[\"$T2\"] = \"$WORK/outside/$SH2\"'" "$IDX" "$T2" "relative"
bad_case index-dotdot "idx_edit 'w[\"$T2\"] = \"../outside/$SH2\"'" "$IDX" "$T2" "\\.\\."
# an index entry linked outside: refused with allow_other only (sources.sh)
bad_case index-missing-shard "idx_edit 'w[\"$T2\"] = \"nope.safetensors\"'" "nope.safetensors" "no such file"
bad_case index-fifo "mkfifo fifo.safetensors && idx_edit 'w[\"$T2\"] = \"fifo.safetensors\"'" \
  "fifo.safetensors" "not a regular file"
bad_case index-directory "mkdir dir.safetensors && idx_edit 'w[\"$T2\"] = \"dir.safetensors\"'" \
  "dir.safetensors" "not a regular file"
if mknod "$WORK/devtest" c 1 3 2>/dev/null; then
  rm -f "$WORK/devtest"
  bad_case index-device "mknod dev.safetensors c 1 5 && idx_edit 'w[\"$T2\"] = \"dev.safetensors\"'" \
    "dev.safetensors" "not a regular file"
else
  bad_case index-device "ln -s /dev/zero dev.safetensors && idx_edit 'w[\"$T2\"] = \"dev.safetensors\"'" \
    "dev.safetensors" "outside|not a regular file"
fi
bad_case index-listed-absent "idx_edit 'w[\"ghost.weight\"] = \"$SH2\"'" "ghost.weight" "$SH2" "absent"
bad_case index-present-unlisted "idx_edit 'del w[\"$T2\"]'" "$T2" "not listed"
bad_case index-in-two-shards "cp $SH2 copy.safetensors && idx_edit 'w[\"$T2\"] = \"copy.safetensors\"'" \
  "two shards" "$SH2"
bad_case index-not-json "echo '{weight_map' > $IDX" "$IDX"
bad_case config-not-json "echo '{\"hidden_size\": 64,' > config.json" "config.json"
bad_case no-checkpoint "rm -f $IDX *.safetensors" "no model.safetensors"
# specs (the source is fine)
spec_case() { # NAME JSON PATTERN...
  local name=$1 json=$2; shift 2
  printf '%s\n' "$json" >"$WORK/spec-$name.json"
  bad_case "spec-$name" ":" "spec-$name.json" "$@" -- "$WORK/spec-$name.json"
}
R='"name": "r", "inputs": "model.norm.weight"'
spec_case unknown-key '{"d9dfs_spec": 1, "passthrough": true, "colour": 1}' "unknown key 'colour'"
spec_case unknown-op "{\"d9dfs_spec\": 1, \"rules\": [{$R, \"steps\": [{\"op\": \"explode\"}], \"output\": \"o\"}]}" \
  "rules\\[0\\] \\(r\\)\\.steps\\[0\\]" "unknown op 'explode'"
spec_case missing-tensor '{"d9dfs_spec": 1, "passthrough": true, "rules": [{"name": "r", "inputs": {"a": "model.norm.weight", "b": "model.nope"}, "steps": [{"op": "concat"}], "output": "o"}]}' \
  "rules\\[0\\] \\(r\\)" "missing input 'model.nope'"
spec_case reshape-count "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [{$R, \"steps\": [{\"op\": \"reshape\", \"shape\": [3, 7]}], \"output\": \"o\"}]}" \
  "rules\\[0\\] \\(r\\)\\.steps\\[0\\]" "model.norm.weight" "element count"
spec_case slice-range "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [{$R, \"steps\": [{\"op\": \"slice\", \"dim\": 0, \"start\": 10, \"end\": 5000}], \"output\": \"o\"}]}" \
  "rules\\[0\\] \\(r\\)\\.steps\\[0\\]" "slice"
spec_case target-collides "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [{$R, \"output\": \"model.embed_tokens.weight\"}]}" \
  "duplicate target 'model.embed_tokens.weight'"
spec_case target-metadata "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [{$R, \"output\": \"__metadata__\"}]}" \
  "rules\\[0\\] \\(r\\)" "__metadata__"
spec_case overflow '{"d9dfs_spec": 1, "passthrough": true, "params": {"a": "hidden_size * 9223372036854775807"}}' \
  "params\\.a" "overflow"
spec_case copy-escapes '{"d9dfs_spec": 1, "passthrough": true, "output": {"copy": ["../*"]}}' \
  "output\\.copy\\[0\\]" "\\.\\."

# ==== faults while mounted ====
# A truncated, replaced or modified shard: every read that needs it fails
# with ESTALE (or EIO), the same way each time, never short or wrong; the
# log names the virtual file, the tensor and the source shard; the mount
# stays up.
shard_fault() { # NAME 'mutation' WANT(regex of readall words)
  local name=$1 mutate=$2 want=$3
  local d=$WORK/live-$name mnt=$WORK/live-$name.mnt
  cp -r "$SRC" "$d"
  do_mount "$d" "$ID" "$mnt" || { bad "$name: mount failed"; return; }
  stat "$mnt/model.safetensors" >/dev/null # looked up, not read: nothing cached
  (cd "$d" && eval "$mutate")
  local r1 r2
  r1=$(readall "$mnt/model.safetensors" "$WORK/ref.id/model.safetensors")
  r2=$(readall "$mnt/model.safetensors" "$WORK/ref.id/model.safetensors")
  check "$name: reading the affected file fails with $want, never short ($r1)" \
    bash -c "grep -qxE '$want' <<<'$r1'"
  check "$name: a second read fails the same way ($r2)" test "$r1" = "$r2"
  check "$name: the mount stays up: stat, readdir and config.json still work" bash -c \
    "stat '$mnt/model.safetensors' >/dev/null && ls '$mnt' | grep -qx config.json && cmp -s '$mnt/config.json' '$WORK/ref.id/config.json'"
  check "$name: the log names the virtual file, the tensor and the source shard" \
    eventually grep -qE "read model\\.safetensors .*tensor '[^']+' \\(source shard $SH2\\)" "$mnt.log"
  check "$name: stats.json counts the errors" grep -qE '"errors": [1-9]' "$mnt/.d9dfs/stats.json"
  fusermount3 -u "$mnt"
}
shard_fault truncated "truncate -s \$((\$(stat -c %s $SH2) / 2)) $SH2" "ESTALE|EIO"
shard_fault replaced "cp $SH2 new.tmp && mv new.tmp $SH2" "ESTALE"
shard_fault modified "sleep 0.02; printf x | dd of=$SH2 bs=1 seek=100000 conv=notrunc status=none" "ESTALE"

# Injected source read errors: EIO to the reader, logged with file, tensor
# and shard; the mount stays up and files that need no source read work.
mnt=$WORK/eio.mnt
if do_mount "$SRC" "$ID" "$mnt" -o inject_eio=3; then
  r=$(readall "$mnt/model.safetensors" "$WORK/ref.id/model.safetensors" direct)
  check "inject_eio=3: a read gets EIO ($r)" test "$r" = EIO
  check "inject_eio=3: the log names the virtual file, the tensor and the source shard" \
    eventually grep -qE "read model\\.safetensors .*tensor '[^']+' \\(source shard model-0000[123]-of-00003\\.safetensors\\): Input/output error" "$mnt.log"
  check "inject_eio=3: the mount stays up (config.json, readdir)" bash -c \
    "cmp -s '$mnt/config.json' '$WORK/ref.id/config.json' && ls '$mnt' | grep -qx model.safetensors"
  fusermount3 -u "$mnt"
else bad "inject_eio: mount failed"; fi

# Injected allocation failures: ENOMEM for that read only; retried, every
# range comes back right (O_DIRECT, so each read reaches the daemon). Also
# with direct_io and 1 MiB reads split across two threads, where the failed
# allocation can be a helper's.
for variant in "plain 65536 inject_enomem=16" "split 1048576 inject_enomem=16,direct_io,threads=2"; do
set -- $variant
mnt=$WORK/enomem-$1.mnt
if do_mount "$SRC" "$WORK/cast.json" "$mnt" -o "$3"; then
  out=$("$PY" - "$mnt/model.safetensors" "$WORK/ref.cast/model.safetensors" "$2" <<'EOF'
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
ref = open(sys.argv[2], "rb").read()
step = int(sys.argv[3])
buf = mmap.mmap(-1, step)
enomem = other = 0
bad = []
for off in range(0, len(ref), step):
    for attempt in range(8):
        try:
            n = os.preadv(fd, [buf], off)
        except OSError as e:
            if e.errno == errno.ENOMEM: enomem += 1
            else: other += 1
            continue
        if buf[:n] != ref[off:off + step]:
            bad.append(f"[{off}, +{n}) after {attempt} failures")
        break
    else:
        bad.append(f"[{off}, +{step}) failed 8 times")
print(f"enomem={enomem} other={other} bad={len(bad)} {' '.join(bad[:4])}")
EOF
)
  check "$3: some reads get ENOMEM, none another error, every range right on retry ($out)" \
    bash -c "grep -qE 'enomem=[1-9][0-9]* other=0 bad=0' <<<'$out'"
  check "$3: the log names the file and 'cannot allocate memory'" \
    eventually grep -qiE "read model\\.safetensors .*cannot allocate memory" "$mnt.log"
  if [ "$1" = split ]; then
    check "$3: reads were split" \
      test "$(sed -n 's/.*"split_reads": \([0-9]*\).*/\1/p' "$mnt/.d9dfs/stats.json")" -gt 0
  fi
  fusermount3 -u "$mnt"
else bad "$3: mount failed"; fi
done

# Descriptor exhaustion: a clear one-line error naming a shard, no crash.
MANY=$WORK/many
"$D9GEN" --family llama --layers 8 --hidden 64 --heads 4 --kv-heads 2 --intermediate 64 \
  --vocab 128 --shards 60 "$MANY" >/dev/null
mkdir -p "$WORK/many.mnt"
out=$(bash -c "ulimit -n 24; exec '$D9DFS' mount '$MANY' '$ID' '$WORK/many.mnt'" 2>&1) && st=0 || st=$?
mountpoint -q "$WORK/many.mnt" && fusermount3 -u "$WORK/many.mnt"
check "ulimit -n 24 with 60 shards: mount fails cleanly, one line naming a shard ($st: $out)" bash -c \
  "[ $st -ne 0 ] && [ $st -lt 124 ] && [ \$(wc -l <<<'$out') -eq 1 ] && grep -qiE 'model-000[0-9]+-of-00060.safetensors.*too many open files' <<<'$out'"
out=$(bash -c "ulimit -n 24; exec '$D9DFS' plan '$MANY' '$ID'" 2>&1 >/dev/null) && st=0 || st=$?
check "ulimit -n 24: d9dfs plan fails the same way ($st)" bash -c "[ $st -ne 0 ] && [ $st -lt 124 ] && grep -qi 'too many open files' <<<'$out'"

# Many readers: 4 processes x 4 threads of random unaligned reads across
# header/tensor boundaries and past EOF equal the convert output.
mnt=$WORK/stress.mnt
if do_mount "$SRC" "$MEG" "$mnt" -o shard_size=1000000; then
  check "stress: 4 processes x 4 threads, random ranges equal d9dfs convert" \
    "$PY" "$HERE/tests/py/stress.py" "$mnt" "$WORK/ref.meg" 4 4 250 3
  check "stress: no errors counted" grep -q '"errors": 0' "$mnt/.d9dfs/stats.json"
  fusermount3 -u "$mnt"
else bad "stress: mount failed"; fi

# A slow read does not stall stat, readdir or reads of other files: with
# every source read held 10 s (-o inject_delay), four readers of a big cast
# file block in their first read; the first lookup of a file, a readdir,
# the first read of another file and stats.json must all be answered while
# no reader has got a byte (an answer that waited for a read would come
# after it). Ordering, not a time limit: a busy machine cannot fail it.
BIG=$WORK/big
"$D9GEN" --family llama --layers 2 --hidden 1024 --heads 8 --kv-heads 2 --intermediate 2816 \
  --vocab 16000 --dtype F32 --shards 2 "$BIG" >/dev/null
mnt=$WORK/slow.mnt
if do_mount "$BIG" "$WORK/cast.json" "$mnt" -o shard_size=100000000000,inject_delay=10000; then
  rpids=() starts=()
  for k in 0 25 50 75; do
    dd if="$mnt/model.safetensors" of=/dev/null bs=1M skip=$k 2>/dev/null &
    rpids+=($!) starts+=($((k << 20)))
  done
  BGPIDS+=("${rpids[@]}")
  blocked() { local p; for p in "${rpids[@]}"; do grep -q '^State:.D' "/proc/$p/status" || return 1; done; }
  # dd reads its if= as fd 0: a reader that got bytes has moved past its start
  unmoved() {
    local i
    for i in 0 1 2 3; do
      [ "$(awk '/^pos:/ {print $2}' "/proc/${rpids[$i]}/fdinfo/0" 2>/dev/null)" = "${starts[$i]}" ] || return 1
    done
  }
  check "slow reads: 4 readers wait in their first read (each source read held 10 s)" eventually blocked
  others() {
    stat "$mnt/generation_config.json" >/dev/null && ls -l "$mnt" >/dev/null &&
      cmp -s "$mnt/tokenizer_config.json" "$BIG/tokenizer_config.json" &&
      grep -q '"bytes_served"' "$mnt/.d9dfs/stats.json"
  }
  check "slow reads: lookup, readdir, another file and stats.json answered while the 4 reads wait" \
    bash -c "$(declare -f others unmoved); $(declare -p mnt BIG rpids starts); others && unmoved"
  kill -9 "${rpids[@]}" 2>/dev/null
  wait "${rpids[@]}" 2>/dev/null || true
  check "slow reads: unmounted once the readers are gone" eventually fusermount3 -u "$mnt"
  # its threads still sleep through the held reads of the killed readers
  # (and their readahead): 10 s each, nothing to wait for
  kill -9 $(daemon_pids "$mnt") 2>/dev/null || true
else bad "slow: mount failed"; fi

# ==== lifecycle ====
# holder FILE CTL [REF]: open FILE, touch CTL.ready, wait for CTL.go, read
# it all and write OK / WRONG / the errno name to CTL.result
cat >"$WORK/holder.py" <<'EOF'
import errno, os, sys, time
path, ctl = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
open(ctl + ".ready", "w").close()
while not os.path.exists(ctl + ".go"):
    time.sleep(0.02)
try:
    data = bytearray()
    while True:
        b = os.pread(fd, 1 << 20, len(data))
        if not b: break
        data += b
    res = "OK" if len(sys.argv) < 4 or data == open(sys.argv[3], "rb").read() else "WRONG"
except OSError as e:
    res = errno.errorcode[e.errno]
open(ctl + ".result", "w").write(res)
os.close(fd)
EOF
hold() { # FILE CTL [REF]: start a holder, wait until the file is open
  "$PY" "$WORK/holder.py" "$@" & BGPIDS+=($!)
  for _ in $(seq 100); do [ -e "$2.ready" ] && return 0; sleep 0.05; done
  return 1
}
release() { touch "$1.go"; for _ in $(seq 100); do [ -e "$1.result" ] && break; sleep 0.05; done; cat "$1.result" 2>/dev/null; }
remount_works() { # MNT: a fresh mount on the same point serves the right bytes
  do_mount "$SRC" "$ID" "$1" && cmp -s "$1/model.safetensors" "$WORK/ref.id/model.safetensors" &&
    fusermount3 -u "$1"
}

# kill -9 without auto_unmount: readers get ENOTCONN, the dead mount is
# reported clearly, and after fusermount3 -u the point can be mounted again
mnt=$WORK/kill.mnt
do_mount "$SRC" "$ID" "$mnt"
pid=$(daemon_pid "$SRC" "$ID" "$mnt")
hold "$mnt/model.safetensors" "$WORK/kill" || bad "kill -9: holder did not start"
kill -9 "$pid"; wait_gone "$pid"
check "kill -9: a reader with the file open gets ENOTCONN" test "$(release "$WORK/kill")" = ENOTCONN
out=$("$D9DFS" mount "$SRC" "$ID" "$mnt" 2>&1) && st=0 || st=$?
check "kill -9: mounting the dead mount point again is a clear error ($out)" bash -c \
  "[ $st -ne 0 ] && grep -q 'kill.mnt: stale mount (try fusermount3 -u' <<<'$out'"
fusermount3 -u "$mnt"
check "kill -9: after fusermount3 -u a second mount on the same point works" remount_works "$mnt"

# kill -9 with auto_unmount: the mount goes away by itself
mnt=$WORK/auto.mnt
do_mount "$SRC" "$ID" "$mnt" -o auto_unmount
pid=$(daemon_pid "$SRC" "$ID" "$mnt")
check "auto_unmount: mounted" mountpoint -q "$mnt"
kill -9 "$pid"; wait_gone "$pid"
check "auto_unmount: kill -9 removes the mount" wait_unmounted "$mnt"
check "auto_unmount: a second mount on the same point works" remount_works "$mnt"

# fusermount3 -u -z with a file open: the name goes, the open file keeps
# being served until it is closed, then the daemon exits
mnt=$WORK/lazy.mnt
do_mount "$SRC" "$ID" "$mnt"
pid=$(daemon_pid "$SRC" "$ID" "$mnt")
hold "$mnt/model.safetensors" "$WORK/lazy" "$WORK/ref.id/model.safetensors" || bad "lazy: holder did not start"
fusermount3 -u -z "$mnt"
check "lazy unmount: the mount point is detached at once" bash -c "! mountpoint -q '$mnt'"
check "lazy unmount: the open file is still served, bytes equal convert output" \
  test "$(release "$WORK/lazy")" = OK
check "lazy unmount: the daemon exits once the file is closed" wait_gone "$pid" 100
check "lazy unmount: a second mount on the same point works" remount_works "$mnt"

# ==== access ====
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
mnt=$WORK/acc.mnt
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: the other-user cases need setpriv as root; checking modes and EROFS only"
fi
do_mount "$SRC" "$ID" "$mnt"
if [ "$(id -u)" -eq 0 ]; then
  check "access: without allow_other another user cannot read" bash -c \
    "! ${NOBODY[*]} cat '$mnt/config.json' >/dev/null 2>&1"
fi
check "access: files are 0444, directories 0555" bash -c \
  "[ \$(stat -c %a '$mnt/config.json') = 444 ] && [ \$(stat -c %a '$mnt/model.safetensors') = 444 ] && [ \$(stat -c %a '$mnt') = 555 ] && [ \$(stat -c %a '$mnt/.d9dfs') = 555 ]"
out=$("$PY" - "$mnt" <<'EOF'
import errno, os, sys
m = sys.argv[1]
f = os.path.join(m, "config.json")
tries = {
    "write": lambda: os.open(f, os.O_WRONLY),
    "append": lambda: os.open(f, os.O_RDONLY | os.O_APPEND | os.O_WRONLY),
    "create": lambda: os.open(os.path.join(m, "new"), os.O_WRONLY | os.O_CREAT, 0o644),
    "truncate": lambda: os.truncate(f, 0),
    "rename": lambda: os.rename(f, os.path.join(m, "x.json")),
    "unlink": lambda: os.unlink(f),
    "mkdir": lambda: os.mkdir(os.path.join(m, "d")),
    "symlink": lambda: os.symlink("config.json", os.path.join(m, "l")),
    "chmod": lambda: os.chmod(f, 0o644),
    "utime": lambda: os.utime(f, (1, 1)),
    "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    "removexattr": lambda: os.removexattr(f, "user.x"),
}
bad = []
for name, fn in tries.items():
    try:
        fn()
        bad.append(name + ":succeeded")
    except OSError as e:
        if e.errno != errno.EROFS:
            bad.append(f"{name}:{errno.errorcode.get(e.errno, e.errno)}")
print("all EROFS" if not bad else " ".join(bad))
EOF
)
check "access: write, append, create, truncate, rename, unlink, mkdir, symlink, chmod, utime, setxattr, removexattr all fail with EROFS ($out)" \
  test "$out" = "all EROFS"
fusermount3 -u "$mnt"
if [ "$(id -u)" -eq 0 ]; then
  mnt=$WORK/acc2.mnt
  do_mount "$SRC" "$ID" "$mnt" -o allow_other
  check "access: with allow_other another user reads the same bytes" bash -c \
    "${NOBODY[*]} cat '$mnt/config.json' | cmp -s - '$WORK/ref.id/config.json'"
  fusermount3 -u "$mnt"
fi

# every daemon above logged to its MNT.log: none may report a sanitizer
# error (meaningful when D9DFS is a sanitizer build)
check "every daemon exited after its unmount" eventually daemons_exited
check "no daemon log reports a sanitizer error" bash -c \
  "! grep -l 'Sanitizer' '$WORK'/*.log '$WORK'/*/*.log 2>/dev/null"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
