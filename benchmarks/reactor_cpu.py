"""
The daemon's reactor thread in the uncached storm: its CPU per call (the
thread's own run time, from C{/proc/PID/task/PID/schedstat}, over 3 s of
steady load, divided by the calls answered), how busy it was, and the
storm's rate and p99, for several hlfs trees in turn, round after round.
The reactor runs every call, the job's write and the answer's read; when
it is busy all the time, its CPU per call is what bounds the storm.

    .venv/bin/python benchmarks/reactor_cpu.py TREE [TREE ...] [--rounds 3]

Each TREE is a checkout of hlfs with its own C{.venv}; its server runs
C{TREE/.venv/bin/twistd} with C{PYTHONPATH=TREE}.  Homes are on a
temporary directory (put C{TMPDIR} on a tmpfs for the daemon's cost
without the disk's), 10,000 users, C{-c 0}, window 32, UDP and TCP.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import profile_storm  # noqa: E402
import run as bench  # noqa: E402

MEASURED = 3.0


def reactor_ns(pid):
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def measure(server, proto, users):
    args = profile_storm.storm_args(proto, f"{bench.FIRST_UID}-{bench.FIRST_UID + users - 1}")
    profile_storm.run_load(server, args, 0.5)  # warm: checks in flight, caches filled
    load = subprocess.Popen(
        [bench.LOADGEN, "--port", str(server.port), "--quiet", "--duration", str(MEASURED + 1.5),
         *map(str, args)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.75)
    run0, wall0 = reactor_ns(server.pid), time.monotonic()
    time.sleep(MEASURED)
    run1, wall1 = reactor_ns(server.pid), time.monotonic()
    out = json.loads(load.communicate(timeout=60)[0])
    busy = (run1 - run0) / 1e9 / (wall1 - wall0)
    rate = out["ops_per_s"]
    return {"us_per_call": busy * 1e6 / rate, "busy": busy, "rate": rate,
            "p99": out["latency_us"]["p99"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=10000)
    opts = p.parse_args(argv)
    trees = [os.path.abspath(t) for t in opts.trees]
    workdir = tempfile.mkdtemp(prefix="hlfs-reactor-cpu-")
    got = {}
    try:
        users = bench.write_users(workdir, opts.users)
        bench.build_loadgen()
        for r in range(opts.rounds):
            for tree in trees[r % len(trees):] + trees[:r % len(trees)]:
                server = bench.Server(os.path.join(tree, ".venv", "bin", "twistd"), workdir,
                                      users, extra=["-c", "0"],
                                      env=dict(os.environ, PYTHONPATH=tree))
                try:
                    for proto in ("udp", "tcp"):
                        got.setdefault((proto, tree), []).append(
                            measure(server, proto, opts.users))
                finally:
                    server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| transport | tree | reactor CPU us/call, median (rounds) | reactor busy | calls/s"
          " | p99 us |")
    print("|---|---|---|---|---|---|")
    for (proto, tree), rows in sorted(got.items()):
        us = [row["us_per_call"] for row in rows]
        print(f"| {proto} | {tree} | {statistics.median(us):.0f}"
              f" ({', '.join(f'{x:.0f}' for x in us)})"
              f" | {statistics.median(row['busy'] for row in rows):.0%}"
              f" | {statistics.median(row['rate'] for row in rows):,.0f}"
              f" | {statistics.median(row['p99'] for row in rows):.0f} |")


if __name__ == "__main__":
    main()
