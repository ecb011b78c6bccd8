"""Read one tensor's bytes through the mount with readahead off and report
how many bytes d9dfs pulled from the source (.d9dfs/stats.json).
The tensor is the last one in FILE whose name contains SUBSTRING (so no
page of it was cached by reading the header).
usage: amplification.py MNT FILE SUBSTRING MAX_RATIO [MIN_RATIO]"""
import json
import os
import struct
import sys


def stats(mnt):
    with open(os.path.join(mnt, ".d9dfs", "stats.json")) as f:
        return json.load(f)


def main(mnt, fname, substring, max_ratio, min_ratio=1.0):
    path = os.path.join(mnt, fname)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
    hdr = json.loads(os.pread(fd, n, 8))
    names = [k for k in hdr if substring in k]
    assert names, f"no tensor matching {substring} in {fname}"
    tensor = max(names, key=lambda k: hdr[k]["data_offsets"][0])
    b, e = hdr[tensor]["data_offsets"]
    size = e - b
    s0 = stats(mnt)
    got = 0
    while got < size:
        chunk = os.pread(fd, min(1 << 17, size - got), 8 + n + b + got)
        assert chunk, "short read"
        got += len(chunk)
    s1 = stats(mnt)
    pulled = s1["bytes_read_source"] - s0["bytes_read_source"]
    ratio = pulled / size
    print(f"{tensor}: {size} bytes served, {pulled} bytes read from the source "
          f"(ratio {ratio:.3f}, limit {max_ratio})")
    assert ratio >= float(min_ratio), f"ratio under {min_ratio}: the read did not reach d9dfs"
    assert ratio <= float(max_ratio), "read amplification over the limit"


if __name__ == "__main__":
    main(*sys.argv[1:])
