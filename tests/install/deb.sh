#!/usr/bin/env bash
# The Debian package: build the .deb with CPack (a CUDA-less build, as the
# package ships), install it into this system with dpkg -i, and use it as
# a user would, from outside the source tree: the installed d9dfs by spec
# name, `mount -t fuse.d9dfs SRC MNT -o spec=NAME,allow_other` through
# mount(8) and mount.fuse3, an fstab line (mount -T FILE, an alternative
# fstab), findmnt's SOURCE, umount; then remove the package.
# Needs root (dpkg, mount(8)); exits 77 elsewhere unless CI is set.
# usage: deb.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/../mount/lib.sh" "$@" d9deb

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL - CI does not run as root"; exit 1; fi
  echo "skip: installing a package needs root"; exit 77
fi
if dpkg-query -W -f='${Status}' d9dfs 2>/dev/null | grep -q "install ok installed"; then
  echo "FAIL - a d9dfs package is already installed; this test installs and removes its own"
  exit 1
fi
for d in /usr/local/sbin /usr/local/bin /usr/sbin /sbin; do # before /usr/bin in mount's PATH
  if [ -e "$d/d9dfs" ]; then echo "FAIL - $d/d9dfs would shadow the package's /usr/bin/d9dfs"; exit 1; fi
done

INSTALLED=0
remove_pkg() {
  if [ "$INSTALLED" = 1 ]; then
    local m
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
    dpkg -r d9dfs >/dev/null 2>&1 || echo "FAIL - dpkg -r d9dfs"
  fi
  cleanup
}
trap remove_pkg EXIT

B=$WORK/build-deb
echo "== building the package in $B"
if ! { cmake -S "$HERE" -B "$B" -DCMAKE_BUILD_TYPE=Release -DD9DFS_CUDA=OFF -DD9DFS_TESTS=OFF &&
       cmake --build "$B" -j"$(nproc)" && (cd "$B" && cpack -G DEB); } >"$WORK/build.log" 2>&1; then
  cat "$WORK/build.log"
  echo "FAIL - building the package"
  exit 1
fi
DEB=$(ls "$B"/d9dfs_*.deb 2>/dev/null | head -1)
check "cpack made a .deb" test -s "$DEB"
check "the .deb depends on fuse3, libfuse3-3, libcjson1" \
  bash -c "dpkg-deb -f '$DEB' Depends | grep -q 'fuse3' && dpkg-deb -f '$DEB' Depends | grep -q libcjson1"
check "dpkg -i installs it" bash -c "dpkg -i '$DEB' >'$WORK/dpkg.log' 2>&1 || { cat '$WORK/dpkg.log'; exit 1; }"
INSTALLED=1
for f in /usr/bin/d9dfs /usr/bin/d9gen /usr/share/d9dfs/mounts/llama-to-megatron.json \
  /usr/share/man/man1/d9dfs.1 /usr/share/man/man5/d9dfs-spec.5 \
  /usr/share/bash-completion/completions/d9dfs; do
  check "the package installed $f" bash -c "dpkg -L d9dfs | grep -qx '$f' && test -s '$f'"
done
check "man finds the installed page" bash -c "man -w d9dfs | grep -qx /usr/share/man/man1/d9dfs.1"

SRC=$WORK/src
"$D9GEN" --family llama --layers 3 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 \
  --vocab 500 --shards 2 "$SRC" >/dev/null
"$D9DFS" cat "$SRC" "$SPECS/llama-to-megatron.json" model.safetensors >"$WORK/ref.st"
M=$WORK/mnt
mkdir -p "$M"
MOUNTS+=("$M")
cd /
check "installed d9dfs mount SRC llama-to-megatron MNT, from /" \
  env -u D9DFS_SPEC_PATH HOME="$WORK" d9dfs mount "$SRC" llama-to-megatron "$M"
check "... serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
check "... umount ends it" umount "$M"

check "mount -t fuse.d9dfs SRC MNT -o spec=llama-to-megatron,allow_other" \
  env -u D9DFS_SPEC_PATH HOME="$WORK" mount -t fuse.d9dfs "$SRC" "$M" -o spec=llama-to-megatron,allow_other
check "... serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
check "... findmnt: SOURCE is SRC, FSTYPE fuse.d9dfs, ro and allow_other" \
  bash -c "findmnt -n -o SOURCE,FSTYPE,OPTIONS '$M' | grep -qE '^$(readlink -f "$SRC") +fuse.d9dfs +ro,.*allow_other'"
check "... umount ends it" umount "$M"
check "... not mounted any more" bash -c "! mountpoint -q '$M'"

printf '%s %s fuse.d9dfs spec=llama-to-megatron,nofail 0 0\n' "$SRC" "$M" >"$WORK/fstab"
check "an fstab line (mount -T FILE MNT)" env -u D9DFS_SPEC_PATH HOME="$WORK" mount -T "$WORK/fstab" "$M"
check "... serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
check "... findmnt: SOURCE is SRC" test "$(findmnt -n -o SOURCE "$M")" = "$(readlink -f "$SRC")"
check "... umount ends it" umount "$M"

check "dpkg -r removes it" bash -c "dpkg -r d9dfs >/dev/null"
INSTALLED=0
check "... /usr/bin/d9dfs is gone" test ! -e /usr/bin/d9dfs
finish
