"""Locks and friends with multiprocessing (see sync.lua)."""
import multiprocessing as mp
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pybench  # noqa: E402


def main():
    ctx = mp.get_context("fork")
    lock = ctx.Lock()

    def acq_rel(n):
        for _ in range(n):
            lock.acquire()
            lock.release()
    pybench.report("Lock acquire+release", pybench.per_op(acq_rel), "s")

    def with_lock(n):
        for _ in range(n):
            with lock:
                pass
    pybench.report("Lock guard (<close>) vs with", pybench.per_op(with_lock), "s")

    rlock = ctx.RLock()

    def racq(n):
        for _ in range(n):
            rlock.acquire()
            rlock.release()
    pybench.report("RLock acquire+release", pybench.per_op(racq), "s")

    sem = ctx.Semaphore(1)

    def sacq(n):
        for _ in range(n):
            sem.acquire()
            sem.release()
    pybench.report("Semaphore acquire+release", pybench.per_op(sacq), "s")

    ev = ctx.Event()
    ev.set()

    def is_set(n):
        for _ in range(n):
            ev.is_set()
    pybench.report("Event is_set", pybench.per_op(is_set), "s")

    def create(n):
        for _ in range(n):
            t = [ctx.Lock() for _ in range(10000)]
            del t
    pybench.report("create 10000 Locks", pybench.per_op(create, 0.3, 3), "s")


if __name__ == "__main__":
    main()
