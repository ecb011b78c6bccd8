"""Many readers at once: PROCS processes x THREADS threads each read random
unaligned ranges of the files in TREE (a d9dfs mount) - across the end of
the header, across tensor boundaries, and past EOF - with os.pread, and
every byte must equal the same slice of the files in REF (d9dfs convert
output). The page cache is dropped for the file now and then
(POSIX_FADV_DONTNEED) so that reads keep reaching the daemon.

usage: stress.py TREE REF [PROCS] [THREADS] [READS] [SEED]
Prints one line and exits 0, or prints the first mismatches and exits 1.
Standard library only."""
import json
import multiprocessing
import os
import random
import struct
import sys
import threading


def boundaries(path):
    """Interesting offsets of a safetensors file: header end and every tensor
    start/end (absolute); [] for other files."""
    if not path.endswith(".safetensors"):
        return []
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n))
    out = [8, 8 + n]
    for k, v in hdr.items():
        if k != "__metadata__":
            out += [8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]]
    return sorted(set(out))


def worker(args):
    tree, ref, nthreads, nreads, seed = args
    names = sorted(os.listdir(ref))
    data = {n: open(os.path.join(ref, n), "rb").read() for n in names}
    marks = {n: boundaries(os.path.join(ref, n)) for n in names}
    errors = []
    lock = threading.Lock()

    def run(tseed):
        rnd = random.Random(tseed)
        fds = {n: os.open(os.path.join(tree, n), os.O_RDONLY) for n in names}
        try:
            for i in range(nreads):
                n = rnd.choice(names)
                size = len(data[n])
                kind = rnd.randrange(4)
                if kind == 0 and marks[n]:      # straddle a header/tensor boundary
                    off = max(0, rnd.choice(marks[n]) - rnd.randrange(1, 4097))
                elif kind == 1:                 # near or past EOF
                    off = max(0, size - rnd.randrange(0, 8192)) + rnd.randrange(0, 64)
                else:
                    off = rnd.randrange(size + 1)
                ln = rnd.choice([1, 3, 7, 4095, 4097, 65537, 300001, rnd.randrange(1, 1 << 20)])
                if i % 97 == 0:
                    os.posix_fadvise(fds[n], 0, 0, os.POSIX_FADV_DONTNEED)
                try:
                    got = os.pread(fds[n], ln, off)
                except OSError as e:
                    with lock:
                        errors.append(f"{n} [{off}, +{ln}): {e}")
                    continue
                want = data[n][off:off + ln]
                if got != want:
                    with lock:
                        errors.append(f"{n} [{off}, +{ln}): {len(got)} bytes, want {len(want)}"
                                      f"{'' if len(got) != len(want) else ' (different bytes)'}")
        finally:
            for fd in fds.values():
                os.close(fd)

    ts = [threading.Thread(target=run, args=(seed * 1000 + t,)) for t in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def main(tree, ref, procs=4, threads=4, reads=300, seed=1):
    names = sorted(os.listdir(ref))
    listed = sorted(f for f in os.listdir(tree) if not f.startswith("."))
    if listed != names:
        print(f"FAIL: listings differ: {listed} vs {names}")
        return 1
    jobs = [(tree, ref, threads, reads, seed * 100 + p) for p in range(procs)]
    with multiprocessing.Pool(procs) as pool:
        results = pool.map(worker, jobs)
    errors = [e for r in results for e in r]
    if errors:
        print(f"FAIL: {len(errors)} bad reads of {procs * threads * reads}; first:")
        for e in errors[:10]:
            print("  " + e)
        return 1
    print(f"ok: {procs} processes x {threads} threads x {reads} random reads equal the convert output")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:])))
