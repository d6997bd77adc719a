"""Pool throughput and latency (multiprocessing.Pool), mirroring pool.lua."""
import os
import sys
import time

# bench/cases holds queue.py, which would shadow the stdlib module that
# multiprocessing imports: drop the script's own directory from the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, ".."))
import multiprocessing as mp  # noqa: E402
import pybench  # noqa: E402

N = 100000


def inc(x):
    return x + 1


def work(n):
    s = 0
    for i in range(1, n + 1):
        s = (s + i * i) % 1000003
    return s


def rate(fn):
    best = 0
    for _ in range(3):
        t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
        best = max(best, N / dt)
    return best


def main():
    items = list(range(1, N + 1))
    pool = mp.Pool(2)
    pool.map(inc, items)  # warm, as in pool.lua
    pool.map(inc, items)
    pybench.report("map_default_chunksize", rate(lambda: pool.map(inc, items)), "tasks/s")
    pybench.report("map_chunksize_1", rate(lambda: pool.map(inc, items, 1)), "tasks/s")
    pybench.report("imap_unordered", rate(lambda: [None for _ in pool.imap_unordered(inc, items)]),
                   "tasks/s")

    def lat(n):
        for i in range(n):
            pool.apply_async(inc, (i,)).get()
    pybench.report("apply_async_get", pybench.per_op(lat), "s")
    pool.close(); pool.join()

    def create(n):
        for _ in range(n):
            p = mp.Pool(2)
            p.close(); p.join()
    pybench.report("create_close_join", pybench.per_op(create), "s")

    jobs = [600000] * 64
    serial = par = float("inf")
    for _ in range(2):  # best of two: the machine is shared
        t0 = time.perf_counter()
        for j in jobs:
            work(j)
        serial = min(serial, time.perf_counter() - t0)
    p2 = mp.Pool(2)
    p2.apply(work, (1,))
    for _ in range(2):
        t0 = time.perf_counter()
        p2.map(work, jobs, 1)
        par = min(par, time.perf_counter() - t0)
    p2.close(); p2.join()
    pybench.report("cpu_64_tasks serial", serial, "s")
    pybench.report("cpu_64_tasks on 2 workers", par, "s")
    pybench.report("cpu_speedup_2_workers", serial / par, "x")


if __name__ == "__main__":
    main()
