"""mp.cluster.Pool's bench against Python RQ (python3-rq), mirroring cluster.lua.

A private redis-server (Unix socket in a temporary directory, no
persistence) and 2 RQ workers, started and stopped here.

Workers: rq.SimpleWorker, 2 processes.  RQ 1.13 has no worker pool (that is
RQ 1.14's WorkerPool); its default Worker forks a work horse per job, which
costs a fork per task, while SimpleWorker runs each job in the worker
process itself: the fastest class RQ offers, and the same number of
task-running processes as `mproc worker --processes 2`.  Worker logging is
set to WARNING (no line per job).

RQ has no map and no blocking wait for a result in 1.13:
* a task's result is awaited with a blocking XREAD on the job's result
  stream (rq:results:<id>, where the worker XADDs the result), as RQ 1.16's
  Job.latest_result(timeout=) does; no polling;
* 2 000 tasks are enqueued at once with Queue.enqueue_many (one pipeline);
* the map enqueues one job per chunk (32 chunks of 3 125 items, the chunking
  of the Lua side) with enqueue_many and joins the results.

Without redis-server, the rq or redis modules it prints a skip note on
stderr and no metric.  When the running python3 lacks rq (say a pyenv one)
but /usr/bin/python3 has it (Debian's python3-rq), it runs itself with that.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# bench/cases holds queue.py and subprocess.py, which would shadow the
# stdlib modules: drop the script's own directory from the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, ".."))
import pybench  # noqa: E402

NTASKS = 2000
NMAP, CHUNK = 100000, 3125
SYSTEM_PY = "/usr/bin/python3"


def skip(why):
    sys.stderr.write("cluster: skipped the RQ side: %s\n" % why)
    sys.exit(0)


try:
    import redis
    import rq
    from rq.results import Result
except ImportError as e:
    if (os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PY)
            and os.access(SYSTEM_PY, os.X_OK)
            and not os.environ.get("MPROC_BENCH_REEXEC")
            and subprocess.call([SYSTEM_PY, "-c", "import rq, redis"],
                                stderr=subprocess.DEVNULL) == 0):
        sys.stderr.write("cluster: %s has no rq; using %s (Debian's python3-rq)\n"
                         % (sys.executable, SYSTEM_PY))
        sys.stdout.flush()
        os.environ["MPROC_BENCH_REEXEC"] = "1"
        os.execv(SYSTEM_PY, [SYSTEM_PY, "-P", os.path.abspath(__file__)] + sys.argv[1:])
    skip("%s (Debian: python3-rq)" % e)


def inc(x):
    return x + 1


def inc_chunk(xs):
    return [x + 1 for x in xs]


# The workers run this file as their __main__ (see main), so they find the
# tasks by these names; RQ refuses a function object from __main__.
INC, INC_CHUNK = "__main__.inc", "__main__.inc_chunk"


def worker_main(sock):
    """One RQ SimpleWorker on the queue "bench" until SIGTERM."""
    conn = redis.Redis(unix_socket_path=sock)
    q = rq.Queue("bench", connection=conn)
    w = rq.SimpleWorker([q], connection=conn)
    w.work(logging_level="WARNING", with_scheduler=False)


def wait_result(conn, job, timeout=60):
    """Blocks until the job's result is stored; returns its value."""
    key = Result.get_key(job.id)
    got = conn.xread({key: 0}, count=1, block=int(timeout * 1000))
    if not got:
        raise RuntimeError("no result for job %s within %g s" % (job.id, timeout))
    _, entries = got[0]
    rid, payload = entries[-1]
    res = Result.restore(job.id, rid.decode(), payload, connection=conn)
    if res.type != Result.Type.SUCCESSFUL:
        raise RuntimeError("job %s failed: %s" % (job.id, res.exc_string))
    return res.return_value


def start_watchdog(pids, tmp):
    """Should this process die before its cleanup (SIGKILL), the watchdog
    stops the server and the workers and removes tmp: it waits for EOF on
    its stdin, a pipe from this process, and is told "done" otherwise."""
    ps = " ".join(str(p) for p in pids)
    alive = " || ".join("kill -0 %d" % p for p in pids)
    script = ('read x; [ "$x" = done ] && exit 0\n'
              'kill -TERM %s\n'
              'n=0; while [ $n -lt 40 ] && { %s; } 2>/dev/null; do sleep 0.2; n=$((n + 1)); done\n'
              "kill -KILL %s; rm -rf '%s'; exit 0" % (ps, alive, ps, tmp))
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def best_rate(n, reps, fn):
    b = 0
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); dt = time.perf_counter() - t0
        b = max(b, n / dt)
    return b


def bench(conn, q):
    items = list(range(1, NMAP + 1))
    chunks = [items[i:i + CHUNK] for i in range(0, NMAP, CHUNK)]

    def submit_many(fn, argss):
        return q.enqueue_many([rq.Queue.prepare_data(fn, args=a) for a in argss])

    def run_map():
        jobs = submit_many(INC_CHUNK, [(c,) for c in chunks])
        out = []
        for j in jobs:
            out.extend(wait_result(conn, j))
        return out

    # workers up and warm, as in cluster.lua
    assert wait_result(conn, q.enqueue(INC, 1)) == 2
    run_map()

    def tasks():
        jobs = submit_many(INC, [(i,) for i in range(1, NTASKS + 1)])
        for i, j in enumerate(jobs, 1):
            assert wait_result(conn, j) == i + 1
    pybench.report("tasks_2000", best_rate(NTASKS, 3, tasks), "tasks/s")

    def lat(n):
        for i in range(n):
            wait_result(conn, q.enqueue(INC, i))
    pybench.report("apply_async_get", pybench.per_op(lat), "s")

    out = []

    def mapped():
        out[:] = run_map()
    pybench.report("map_100k_chunked", best_rate(NMAP, 3, mapped), "items/s")
    assert out[-1] == NMAP + 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2])
        return
    if not shutil.which("redis-server"):
        skip("redis-server is not installed (Debian: redis-server)")
    # SIGTERM/SIGINT: through the finally below, so nothing is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = tempfile.mkdtemp(prefix="mproc-bench-rq.")
    sock = os.path.join(tmp, "redis.sock")
    procs = []
    watchdog = None
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conn = redis.Redis(unix_socket_path=sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                conn.ping()
                break
            except redis.exceptions.ConnectionError:
                if procs[0].poll() is not None:
                    raise RuntimeError("redis-server exited")
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
        with open(os.path.join(tmp, "worker.log"), "a") as log:
            for _ in range(2):
                procs.append(subprocess.Popen(
                    [sys.executable, "-P", os.path.abspath(__file__), "--worker", sock],
                    stdout=subprocess.DEVNULL, stderr=log))
        watchdog = start_watchdog([p.pid for p in procs], tmp)
        bench(conn, rq.Queue("bench", connection=conn))
    finally:
        # workers first (SIGTERM: RQ's warm shutdown), then redis-server
        for p in procs[1:] + procs[:1]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
        if watchdog:
            try:
                watchdog.communicate(b"done\n", timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                watchdog.kill()
                watchdog.wait()


if __name__ == "__main__":
    main()
