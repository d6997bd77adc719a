"""Codec speed: pickle.dumps + pickle.loads round trips (see codec.lua)."""
import os
import pickle
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pybench  # noqa: E402

small = {"id": 1, "name": "x", "tags": ["a", "b"], "score": 1.5}
big = [{"id": i, "name": "x", "tags": ["a", "b"], "score": 1.5} for i in range(1, 10001)]


def run_small(n):
    for _ in range(n):
        pickle.loads(pickle.dumps(small))


def run_big(n):
    for _ in range(n):
        pickle.loads(pickle.dumps(big))


pybench.report("dumps+loads small table", pybench.per_op(run_small), "s")
pybench.report("dumps+loads 10k list", pybench.per_op(run_big), "s")
