"""Manager proxy round trips (see manager.lua)."""
import os
import sys

# this directory holds subprocess.py and queue.py: keep them from shadowing
# the standard modules
HERE = os.path.dirname(os.path.realpath(__file__))
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != HERE]
import multiprocessing as mp
import queue
from multiprocessing.managers import BaseManager

sys.path.insert(0, os.path.join(HERE, ".."))
import pybench  # noqa: E402

Q = queue.Queue()


def get_q():
    return Q


class QM(BaseManager):
    pass


QM.register("queue", callable=get_q)


class QC(BaseManager):
    pass


QC.register("queue")


def main():
    ctx = mp.get_context("fork")
    with ctx.Manager() as m:
        d = m.dict()
        d["k"] = 0

        def set_(n):
            for i in range(n):
                d["k"] = i

        def get_(n):
            for _ in range(n):
                d["k"]

        pybench.report("dict_set", pybench.per_op(set_), "s")
        pybench.report("dict_get", pybench.per_op(get_), "s")
    srv = QM(address=("127.0.0.1", 0), authkey=b"bench", ctx=ctx)
    srv.start()
    c = QC(address=srv.address, authkey=b"bench")
    c.connect()
    rq = c.queue()

    def qpg(n):
        for i in range(n):
            rq.put(i)
            rq.get()

    pybench.report("tcp_queue_put_get", pybench.per_op(qpg), "s")

    def conn(n):
        for _ in range(n):
            x = QC(address=srv.address, authkey=b"bench")
            x.connect()

    pybench.report("connect_auth", pybench.per_op(conn, 0.2), "s")
    srv.shutdown()


if __name__ == "__main__":
    main()
