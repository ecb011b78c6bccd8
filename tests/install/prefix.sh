#!/usr/bin/env bash
# Installed into a prefix: `cmake --install BUILD --prefix P` puts the
# binaries, the shipped specs, both man pages and the completions in place;
# from outside the source tree (no source-tree spec lookup, no spec path)
# the installed d9dfs mounts SRC by spec name and serves the same bytes as
# `d9dfs cat` with the spec file; mount.fuse3's helper form with the
# installed binary on PATH works, findmnt shows SRC, umount ends it; man -l
# renders the installed pages.
# usage: prefix.sh BUILD_DIR D9DFS D9GEN
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -euo pipefail
BUILD=$1
shift
. "$(dirname "$0")/../mount/lib.sh" "$@" d9prefix

P=$WORK/prefix
check "cmake --install into a prefix" bash -c "cmake --install '$BUILD' --prefix '$P' >/dev/null"
for f in bin/d9dfs bin/d9gen share/man/man1/d9dfs.1 share/man/man5/d9dfs-spec.5 \
  share/bash-completion/completions/d9dfs share/zsh/vendor-completions/_d9dfs; do
  check "installed: $f" test -s "$P/$f"
done
nspecs=$(ls "$SPECS"/*.json | wc -l)
check "installed: the $nspecs shipped specs in share/d9dfs/mounts" \
  test "$(ls "$P"/share/d9dfs/mounts/*.json | wc -l)" = "$nspecs"
for f in "$SPECS"/*.json; do
  cmp -s "$f" "$P/share/d9dfs/mounts/$(basename "$f")" || bad "installed spec $(basename "$f") differs"
done
check "installed d9dfs and d9gen --version" bash -c '"$0/bin/d9dfs" --version && "$0/bin/d9gen" --version' "$P"

SRC=$WORK/src
"$D9GEN" --family llama --layers 3 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 \
  --vocab 500 --shards 2 "$SRC" >/dev/null
"$D9DFS" cat "$SRC" "$SPECS/llama-to-megatron.json" model.safetensors >"$WORK/ref.st"

# outside the source tree, with nothing but the installed prefix to find specs in
OUT=$WORK/elsewhere
mkdir -p "$OUT/home"
run_installed() { (cd "$OUT" && env -u D9DFS_SPEC_PATH HOME="$OUT/home" "$P/bin/d9dfs" "$@"); }
check "installed d9dfs specs lists the installed specs only" \
  bash -c "$(declare -f run_installed); OUT='$OUT' P='$P'; run_installed specs | head -1 |
  grep -qxF '# $(readlink -f "$P")/share/d9dfs/mounts'"
M=$WORK/mnt
mkdir -p "$M"
MOUNTS+=("$M")
check "installed d9dfs mount SRC llama-to-megatron MNT (by name)" \
  run_installed mount "$SRC" llama-to-megatron "$M"
check "the installed mount serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
check "findmnt: SOURCE is SRC" test "$(findmnt -n -o SOURCE "$M")" = "$(readlink -f "$SRC")"
check "umount ends it" umount "$M"
check "not mounted any more" bash -c "! mountpoint -q '$M'"

# mount(8) runs mount.fuse3, which runs `d9dfs SRC MNT -o OPTS` from PATH
check "mount.fuse3 -t d9dfs with the installed binary on PATH" \
  bash -c "cd '$OUT' && env -u D9DFS_SPEC_PATH HOME='$OUT/home' PATH='$P/bin:$PATH' \
  mount.fuse3 '$SRC' '$M' -t d9dfs -o spec=llama-to-megatron,nofail"
check "... serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
check "... findmnt SOURCE is SRC, FSTYPE fuse.d9dfs" \
  test "$(findmnt -n -o SOURCE,FSTYPE "$M" | xargs)" = "$(readlink -f "$SRC") fuse.d9dfs"
check "... umount ends it" umount "$M"

for p in man1/d9dfs.1 man5/d9dfs-spec.5; do
  check "man -l renders the installed $p" \
    bash -c "MANWIDTH=80 man -l '$P/share/man/$p' 2>/dev/null | grep -q '^NAME'"
done
finish
