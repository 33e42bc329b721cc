"""
Where a home-check storm's time goes, in figures that do not depend on
how loaded the machine is: system calls and futex calls per probe
(C{strace -c -f} on the server), context switches per call (the
server's threads' counters in C{/proc}), server CPU per call (loadgen),
and py-spy samples of the reactor thread and of the probe threads.

    .venv/bin/python benchmarks/profile_storm.py [--proto udp] [--seconds 3]

It starts C{twistd -n hlfs -c 0} (every READLINK probes a home) over
10,000 users, as C{benchmarks/run.py --scenario storm} does, and drives
the storm at window 32 once per measurement, so that each tool sees the
same load alone.  C{--cached} drives one cached uid instead.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import profile_server  # noqa: E402
import run as bench  # noqa: E402


def context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def storm_args(proto, uids):
    return ["--proto", proto, "--window", 32, "--call", "readlink", "--export", bench.EXPORT,
            "--uids", uids]


def run_load(server, args, seconds):
    return bench.loadgen(server.port, *args, seconds=seconds, server_pid=server.pid)


_STRACE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+\s+)?(\w+)\s*$")


def strace_counts(server, args, seconds):
    out = os.path.join(server.workdir, "strace.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    res = run_load(server, args, seconds)
    tracer.send_signal(2)
    tracer.wait(30)
    counts = Counter()
    with open(out) as f:
        for line in f:
            m = _STRACE.match(line)
            if m:
                counts[m.group(3)] += int(m.group(1))
    return counts, res


def pyspy_samples(server, args, seconds, pyspy, gil=False):
    raw = os.path.join(server.workdir, "spy.txt")
    load = subprocess.Popen(
        [bench.LOADGEN, "--port", str(server.port), "--quiet", "--server-pid", str(server.pid),
         "--duration", str(seconds + 2), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    cmd = [pyspy, "record", "--pid", str(server.pid), "--duration", str(int(seconds)),
           "--rate", "250", "--format", "raw", "--output", raw, *(["--gil"] if gil else [])]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    spy.communicate(timeout=seconds + 60)
    out, _ = load.communicate(timeout=seconds + 60)
    threads = {"reactor": [], "probe": []}
    with open(raw) as f:
        for line in f:
            # A probe thread's stack starts in threading's bootstrap.
            kind = "probe" if line.startswith("Thread._bootstrap") else "reactor"
            threads[kind].append(line)
    return threads, json.loads(out)


def probe_alone(workdir, users, rounds=5):
    """
    The home check without the server: L{HomeProbe} called in a loop in
    this thread, as each user in turn (root takes their identity), over
    the homes of C{users}.  Prints CPU and wall time per probe.
    """
    from hlfs.homes.credentials import Credentials
    from hlfs.homes.probe import HomeProbe
    from hlfs.homes.records import CheckHome

    class User:
        def __init__(self, uid):
            self.uid, self.name = uid, b"u%d" % uid

    probe, credentials = HomeProbe(), Credentials(nss=False)

    def job(user, spool):
        identity = credentials.plan(user, spool.rpartition(b"/")[0])
        return CheckHome(**identity._asdict(), spool=spool, fsync=False)

    pairs = [(User(uid), os.fsencode(f"{workdir}/home/u{uid}/.mailspool"))
             for uid in range(bench.FIRST_UID, bench.FIRST_UID + users)]
    for user, spool in pairs:  # warm: credentials kept, directories cached
        done = probe.run(job(user, spool))
        credentials.finished(user, spool.rpartition(b"/")[0], done.kept)
    jobs = [job(user, spool) for user, spool in pairs]
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(rounds):
        for checked in jobs:
            if not probe.run(checked).ok:
                raise SystemExit(f"probe failed for {checked.uid}")
    n = rounds * len(pairs)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(f"probe alone: {cpu / n * 1e6:.1f} us CPU a probe, {n / wall:,.0f} probes/s"
          f" ({len(pairs)} homes, one thread)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proto", default="udp", choices=("udp", "tcp"))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--cached", action="store_true", help="one cached uid, not a storm")
    p.add_argument("--no-strace", action="store_true")
    p.add_argument("--no-pyspy", action="store_true")
    p.add_argument("--gil", action="store_true", help="py-spy samples only the GIL's holder")
    p.add_argument("--probe-alone", action="store_true",
                   help="only the home check in a loop, without a server")
    opts = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="hlfs-profile-storm-")
    users = bench.write_users(workdir, opts.users)
    if opts.probe_alone:
        try:
            probe_alone(workdir, min(opts.users, 2000))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    bench.build_loadgen()
    twistd = bench.twistd_path()
    uids = f"{bench.FIRST_UID}-{bench.FIRST_UID + opts.users - 1}"
    extra = [] if opts.cached else ["-c", "0"]
    if opts.cached:
        uids = f"{bench.FIRST_UID}-{bench.FIRST_UID}"
    launcher = os.environ.get("HLFS_PROFILE_LAUNCHER")
    server = bench.Server(twistd, workdir, users, extra=extra,
                          launcher=[sys.executable, launcher] if launcher else None)
    args = storm_args(opts.proto, uids)
    try:
        run_load(server, args, 1.0)  # warm up: threads started, caches filled
        before = context_switches(server.pid)
        res = run_load(server, args, opts.seconds)
        switches = context_switches(server.pid) - before
        calls = res["ok"]
        print(f"{'cached' if opts.cached else 'storm'} {opts.proto} w32: {res['ops_per_s']:,.0f}/s,"
              f" p99 {res['latency_us']['p99']:.0f} us, server CPU"
              f" {res['server_cpu_us_per_op']:.1f} us/call,"
              f" {switches / calls:.2f} context switches/call")
        if not opts.no_strace and shutil.which("strace"):
            counts, sres = strace_counts(server, args, opts.seconds)
            probes = counts.get("unlinkat", 0) or counts.get("unlink", 0)
            replies = counts.get("sendto", 0) or counts.get("sendmsg", 0)
            if opts.proto == "tcp":
                replies = sres["ok"]
            print(f"strace: {sum(counts.values())} calls, {probes} probes (unlinkat),"
                  f" {replies} replies, under strace {sres['ops_per_s']:,.0f}/s")
            per = probes or replies or 1
            for name, n in counts.most_common(20):
                print(f"  {name:<16} {n:>9}  {n / per:6.2f}/probe  {n / max(replies, 1):6.2f}/reply")
        pyspy = profile_server.find_pyspy()
        if not opts.no_pyspy and pyspy:
            threads, sres = pyspy_samples(server, args, opts.seconds, pyspy, opts.gil)
            print(f"py-spy: {sres['ops_per_s']:,.0f}/s, server CPU"
                  f" {sres['server_cpu_us_per_op']:.1f} us/call")
            for kind, lines in threads.items():
                own, inclusive, total = profile_server.parse_collapsed(lines)
                print(f"\n### {kind} thread{'s' if kind == 'probe' else ''}: {total} busy samples\n")
                print(profile_server.summarise(own, inclusive, total, top=18))
    finally:
        server.stop()
        if not os.environ.get("HLFS_PROFILE_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
