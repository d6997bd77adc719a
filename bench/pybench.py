"""Timing helpers for bench/cases/*.py, mirroring bench/bench.lua."""
import sys
import time


def per_op(fn, min_time=0.3, reps=3):
    n = 1
    while True:
        t0 = time.perf_counter(); fn(n); dt = time.perf_counter() - t0
        if dt >= min_time / 4:
            break
        n *= 4
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter(); fn(n); dt = (time.perf_counter() - t0) / n
        best = min(best, dt)
    return best


def report(metric, value, unit):
    sys.stdout.write("%s\t%.9g\t%s\n" % (metric, value, unit))
    sys.stdout.flush()
