"""Start+join of a trivial process under each start method, then fork and
forkserver from a parent with a 1 GiB heap (bench/cases/start_methods.lua)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import multiprocessing as mp  # noqa: E402
from pybench import per_op, report  # noqa: E402


def noop():
    pass


def start_join(method):
    ctx = mp.get_context(method)

    def run(n):
        for _ in range(n):
            p = ctx.Process(target=noop)
            p.start()
            p.join()
            p.close()
    return per_op(run)


if __name__ == "__main__":
    report("start+join fork", start_join("fork"), "s")
    report("start+join spawn", start_join("spawn"), "s")
    report("start+join forkserver", start_join("forkserver"), "s")
    heap = [bytes([i % 256]) * (1 << 20) for i in range(1024)]
    report("start+join fork, 1 GiB heap", start_join("fork"), "s")
    report("start+join forkserver, 1 GiB heap", start_join("forkserver"), "s")
    del heap
