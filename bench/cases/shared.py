"""Value and RawArray with multiprocessing (see shared.lua)."""
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pybench  # noqa: E402

N = 200000


def worker(v, go):
    go.wait()
    lock = v.get_lock()
    for _ in range(N):
        with lock:
            v.value += 1


def main():
    ctx = mp.get_context("fork")
    v = ctx.Value("q", 0)
    go = ctx.Event()
    ps = [ctx.Process(target=worker, args=(v, go)) for _ in range(2)]
    for p in ps:
        p.start()
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    dt = time.perf_counter() - t0
    assert v.value == 2 * N
    pybench.report("2 processes Value += 1 under its lock", 2 * N / dt, "ops/s")

    a = ctx.RawArray("i", 10)

    def read(n):
        for _ in range(n):
            a[3]
    pybench.report("raw Array read a[i]", pybench.per_op(read), "s")

    def write(n):
        for _ in range(n):
            a[3] = 1
    pybench.report("raw Array write a[i] = x", pybench.per_op(write), "s")

    def rw(n):
        for _ in range(n):
            a[3] = a[3] + 1
    pybench.report("raw Array a[i] = a[i] + 1", pybench.per_op(rw), "s")


if __name__ == "__main__":
    main()
