"""Starting programs (see subprocess.lua)."""
import os
import sys

# this directory holds subprocess.py and queue.py: keep them from shadowing
# the standard modules
HERE = os.path.dirname(os.path.realpath(__file__))
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != HERE]
import subprocess

sys.path.insert(0, os.path.join(HERE, ".."))
import pybench  # noqa: E402


def main():
    def run_true(n):
        for _ in range(n):
            subprocess.run(["/bin/true"])

    def echo(n):
        for _ in range(n):
            subprocess.check_output(["/bin/echo", "hello"])

    def cap(n):
        for _ in range(n):
            subprocess.run(["head", "-c", "16777216", "/dev/zero"], capture_output=True)

    pybench.report("run_true", pybench.per_op(run_true), "s")
    pybench.report("check_output_echo", pybench.per_op(echo), "s")
    pybench.report("capture_16MiB", pybench.per_op(cap, 0.5), "s")


if __name__ == "__main__":
    main()
