"""
What one job's pipe write costs the daemon's reactor when the check
process it goes to sleeps in C{read()} (one job per process at a time:
the usual case in a storm), against the same write with nobody waiting
on the pipe.  The difference is the kernel waking the process, which on
a virtual machine may mean an inter-processor interrupt.

    .venv/bin/python benchmarks/pipe_wake.py [--writes 2000]

Nothing of hlfs runs: a forked reader answers each 60-byte write with a
byte, as a check process answers its job.
"""

import argparse
import os
import statistics
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=2000)
    opts = p.parse_args(argv)
    jobs_r, jobs_w = os.pipe()
    answers_r, answers_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(jobs_w)
        while os.read(jobs_r, 64):
            os.write(answers_w, b"!")
        os._exit(0)
    job = b"j" * 60
    asleep = []
    for _ in range(opts.writes):
        time.sleep(0.0002)  # the reader is back in read() by now
        start = time.perf_counter_ns()
        os.write(jobs_w, job)
        asleep.append(time.perf_counter_ns() - start)
        os.read(answers_r, 1)
    os.close(jobs_w)
    os.waitpid(pid, 0)
    idle_r, idle_w = os.pipe()
    nobody = []
    for _ in range(opts.writes):
        start = time.perf_counter_ns()
        os.write(idle_w, job)
        nobody.append(time.perf_counter_ns() - start)
        os.read(idle_r, 64)
    for label, times in (("to a sleeping reader", asleep), ("with nobody waiting", nobody)):
        times.sort()
        print(f"write {label}: median {statistics.median(times) / 1e3:.1f} us,"
              f" p90 {times[len(times) * 9 // 10] / 1e3:.1f} us")


if __name__ == "__main__":
    main()
