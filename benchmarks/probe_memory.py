"""
Bytes per user of the user table plus the probing resolver's per-user
state, at 10k, 100k and 1M users, and the time to load and to reload a
password file of each size (reload: in a thread, the reactor serving
meanwhile; the longest pause of the reactor during the reload is shown).

    .venv/bin/python benchmarks/probe_memory.py [--sizes 10000,100000,1000000]

Three figures per size:
  - arrays: what the table's and the state's arrays and blob hold
    (UserTable.footprint() + the state's 17 bytes a user);
  - traced: every allocation still alive after loading, by tracemalloc
    (includes the objects around the arrays);
  - RSS: growth of the process's resident set, in a fresh process.
"""

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import SpoolRules
from hlfs.homes.tableload import load_in_subprocess
from hlfs.core.users import UserTable


def write_passwd(path, n, extra=b""):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(b"user%07d:x:%d:100:User %d:/home/user%07d:/bin/bash\n" % (i, 100000 + i, i, i))
        f.write(extra)


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_one(path, n, how):
    """
    In a fresh process: load the table, build the resolver, print the
    figures.
    """
    gc.collect()
    base_rss = rss()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    if how == "child":
        table = load_in_subprocess(path)
    else:
        table = UserTable.from_passwd_file(path)
    resolver = HomeResolver(table, SpoolRules(b".mailspool", b"/var/alt_mail"), _Clock(), None)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    grown = rss() - base_rss
    arrays = resolver.footprint()
    print(
        f"{n:>9} users, loaded in {how:>6}: arrays {arrays / n:6.1f} B/user (table {table.footprint() / n:.1f} + state 17.0), "
        f"traced {traced / n:6.1f} B/user, RSS growth {grown / n:6.1f} B/user"
    )


class _Clock:
    def seconds(self):
        return time.time()


def reload_one(path, changed_path, n):
    """
    Load, then reload (same file; then a file with one user more) in the
    reactor's thread pool while the reactor ticks every millisecond.
    """
    from twisted.internet import defer, reactor, task

    t = time.perf_counter()
    table = UserTable.from_passwd_file(path)
    load = time.perf_counter() - t
    resolver = HomeResolver(table, SpoolRules(b".mailspool", b"/var/alt_mail"), reactor, None)
    # Users seen recently: their state is carried over.
    for uid in range(100000, 100000 + n, max(1, n // 10000)):
        resolver.known.serve_uid(uid, False)
    out = []

    @defer.inlineCallbacks
    def run():
        for label, p, loader in (
            ("in a thread, unchanged", path, UserTable.from_passwd_file),
            ("in a thread, one user more", changed_path, UserTable.from_passwd_file),
            ("in a child, unchanged", path, load_in_subprocess),
            ("in a child, one user more", changed_path, load_in_subprocess),
        ):
            gaps = []
            last = [time.perf_counter()]

            def tick():
                now = time.perf_counter()
                gaps.append(now - last[0])
                last[0] = now

            loop = task.LoopingCall(tick)
            loop.start(0.001)
            t = time.perf_counter()
            yield resolver.reload(lambda p=p, loader=loader: loader(p))
            took = time.perf_counter() - t
            loop.stop()
            gaps.sort()
            out.append(
                f"{n:>9} users: reload ({label}) {took:.2f} s; reactor ticks {len(gaps)}, "
                f"longest pause {gaps[-1] * 1e3:.1f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1e3:.1f} ms"
            )
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    print(f"{n:>9} users: first load {load:.2f} s")
    for line in out:
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--measure", nargs=3, metavar=("FILE", "N", "HOW"), help=argparse.SUPPRESS)
    parser.add_argument("--reload", nargs=3, metavar=("FILE", "CHANGED", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure_one(args.measure[0], int(args.measure[1]), args.measure[2])
    if args.reload:
        return reload_one(args.reload[0], args.reload[1], int(args.reload[2]))
    with tempfile.TemporaryDirectory(prefix="hlfs-mem-", dir="/var/tmp") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = os.path.join(tmp, f"passwd-{n}")
            changed = os.path.join(tmp, f"passwd-{n}-changed")
            write_passwd(path, n)
            write_passwd(changed, n, b"extra:x:99:100::/home/extra:/bin/sh\n")
            me = [sys.executable, __file__]
            for how in ("thread", "child"):
                subprocess.run(me + ["--measure", path, str(n), how], check=True)
            subprocess.run(me + ["--reload", path, changed, str(n)], check=True)


if __name__ == "__main__":
    main()
