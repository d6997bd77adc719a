"""multiprocessing.Queue throughput: one producer process -> the parent."""
import os
import sys

# this file is named queue.py: keep it from shadowing the stdlib's queue
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, ".."))
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402
from pybench import report  # noqa: E402


def producer(q, kind, n):
    v = 42 if kind == "int" else [1, "two", {"x": 3}] if kind == "table" else "m" * 1048576
    if kind == "batch":
        b = list(range(1, 101))
        for _ in range(n // 100):
            q.put(b)
    else:
        for _ in range(n):
            q.put(v)


def run(kind, n):
    q = mp.Queue(8 if kind == "mib" else 100000)
    p = mp.Process(target=producer, args=(q, kind, n))
    p.start()
    t0 = time.perf_counter()
    got = 0
    if kind == "batch":   # Python has no put_many: a list per put
        while got < n:
            got += len(q.get(timeout=30))
    else:
        for _ in range(n):
            q.get(timeout=30)
        got = n
    dt = time.perf_counter() - t0
    p.join()
    return got / dt


if __name__ == "__main__":
    report("small_int", run("int", 200000), "msgs/s")
    report("small_table", run("table", 200000), "msgs/s")
    report("batch100", run("batch", 1000000), "msgs/s")
    report("str_1MiB", run("mib", 400) * 1.048576, "MB/s")
