"""Process start latency: a trivial target started and joined (fork)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import multiprocessing as mp  # noqa: E402
from pybench import per_op, report  # noqa: E402


def noop():
    pass


def start_join(n):
    ctx = mp.get_context("fork")
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        p.close()


def fork_waitpid(n):
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    report("start+join", per_op(start_join), "s")
    report("fork+waitpid", per_op(fork_waitpid), "s")
