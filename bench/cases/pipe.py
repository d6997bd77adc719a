"""Pipe round trips between the parent and a fork child (see pipe.lua)."""
import os
import sys

# bench/cases holds modules named like the standard library's (subprocess):
# keep it off the path, put bench/ (pybench) on it.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, ".."))
import multiprocessing as mp  # noqa: E402
import pybench  # noqa: E402


def echo(c):
    while True:
        v = c.recv()
        if v is None:
            return
        if v == "bytes":
            while True:
                s = c.recv_bytes()
                if s == b"":
                    break
                c.send_bytes(s)
        else:
            c.send(v)


def main():
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=echo, args=(b,))
    p.start()
    b.close()

    small = [1, 2, "x"]

    def pingpong(n):
        for _ in range(n):
            a.send(small)
            a.recv()
    pybench.report("ping-pong small table", pybench.per_op(pingpong), "s")

    a.send("bytes")
    blob = b"x" * (1024 * 1024)

    def big(n):
        for _ in range(n):
            a.send_bytes(blob)
            a.recv_bytes()
    pybench.report("ping-pong 1 MiB bytes", pybench.per_op(big), "s")
    a.send_bytes(b"")

    a.send(None)
    p.join(10)
    a.close()


if __name__ == "__main__":
    main()
