"""The pool while the parent does something else, mirroring pool_background.lua."""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, ".."))
import multiprocessing as mp  # noqa: E402
import pybench  # noqa: E402


def busy(seconds):
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < seconds:
        x += 1
    return x


def nap(_):
    time.sleep(0.01)


def burn(_=None):
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < 0.0002:
        x += 1
    return x


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def main():
    pool = mp.Pool(2)
    pool.map(burn, [1, 2, 3, 4], 1)
    rs = [pool.apply_async(nap, (i,)) for i in range(100)]
    busy(1.2)
    pybench.report("background_done_after_1.2s", sum(r.ready() for r in rs), "tasks")
    for r in rs:
        r.get()

    n = 2000
    cap = 0
    for _ in range(2):
        t0 = time.perf_counter()
        pool.map(burn, range(n), 1)
        cap = max(cap, n / (time.perf_counter() - t0))
    state = {"completed": 0, "pending": 0}

    def cb(_):
        state["completed"] += 1
        state["pending"] -= 1
    tick = 1 / 60
    t0 = time.perf_counter()
    next_tick = t0
    want = int(cap * tick * 2) + 1
    while time.perf_counter() - t0 < 2:
        while state["pending"] < want:
            state["pending"] += 1
            pool.apply_async(burn, (1,), callback=cb)
        next_tick += tick
        left = next_tick - time.perf_counter()
        if left > 0:
            time.sleep(left)
    share = state["completed"] / (time.perf_counter() - t0) / cap * 100
    pybench.report("game_tick_share_of_capacity", share, "%")
    pool.terminate()

    idle = mp.Pool(2)
    idle.map(burn, [1, 2], 1)
    pids = [p.pid for p in mp.active_children()]
    c0 = cpu_ticks(pids)
    time.sleep(2)
    pybench.report("idle_pool_cpu", (cpu_ticks(pids) - c0) * 10 / 2, "ms/s")
    idle.close()
    idle.join()


if __name__ == "__main__":
    main()
