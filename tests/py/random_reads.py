"""Random unaligned reads (os.pread), mmap reads and reads past EOF of every
file in TREE equal the same slices of the files in REF (d9dfs convert
output). usage: random_reads.py TREE REF [COUNT] [SEED]"""
import mmap
import os
import random
import sys


def main(tree, ref, count=2000, seed=1):
    rnd = random.Random(seed)
    names = sorted(f for f in os.listdir(ref))
    assert sorted(f for f in os.listdir(tree) if not f.startswith(".")) == names, "listings differ"
    fds = {n: os.open(os.path.join(tree, n), os.O_RDONLY) for n in names}
    data = {n: open(os.path.join(ref, n), "rb").read() for n in names}
    for n in names:
        assert os.fstat(fds[n]).st_size == len(data[n]), f"{n}: stat size differs"
    for _ in range(count):
        n = rnd.choice(names)
        size = len(data[n])
        off = rnd.randrange(size + 64)
        ln = rnd.choice([1, 3, 7, 4096, 65536 + 5, rnd.randrange(size + 1)])
        got = os.pread(fds[n], ln, off)
        assert got == data[n][off:off + ln], f"{n}: bytes differ at [{off}, +{ln})"
    for n in names:
        if not data[n]:
            continue
        with mmap.mmap(fds[n], 0, prot=mmap.PROT_READ) as m:
            a = rnd.randrange(len(data[n]))
            assert m[a:a + 10000] == data[n][a:a + 10000], f"{n}: mmap bytes differ"
        os.close(fds[n])
    print(f"ok: {count} random reads and {len(names)} mmaps equal the convert output")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:]))
