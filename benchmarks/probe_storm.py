"""
Uncached probe storm: N distinct users whose homes are real directories
on the local disk, none cached; every resolve needs a check (create,
write, remove a file as the user) in the engine's check processes.
Reports completed resolves per second and the latency of each
(p50/p99/max), measured in the reactor thread, with a window of
outstanding resolves.

    sudo .venv/bin/python benchmarks/probe_storm.py [--users N] [--checks N] [--window W]

Runs as root (the probes take each user's identity).  Homes go under a
temporary directory, removed at the end.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, reactor

from hlfs.homes.engine import CheckEngine
from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

FIRST_UID = 200000


def make_homes(base, n):
    entries = []
    for k in range(n):
        home = os.path.join(base, "home", f"u{k}")
        os.makedirs(home)
        os.chown(home, FIRST_UID + k, FIRST_UID + k)
        entries.append((b"u%d" % k, FIRST_UID + k, os.fsencode(home)))
    return UserTable(entries)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


@defer.inlineCallbacks
def storm(resolver, uids, window):
    latencies = []
    queue = list(uids)
    done = defer.Deferred()
    state = {"outstanding": 0, "alt": 0}

    def issue():
        while queue and state["outstanding"] < window:
            uid = queue.pop()
            state["outstanding"] += 1
            start = time.perf_counter()
            d = defer.maybeDeferred(resolver.resolve, uid)
            d.addCallback(finished, start)

    def finished(resolution, start):
        latencies.append(time.perf_counter() - start)
        if not resolution.target.endswith(b"/.mailspool"):
            state["alt"] += 1
        state["outstanding"] -= 1
        if queue:
            issue()
        elif state["outstanding"] == 0 and not done.called:
            done.callback(None)

    began = time.perf_counter()
    issue()
    yield done
    return time.perf_counter() - began, sorted(latencies), state["alt"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--checks", type=int, default=8, help="check processes")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="where the homes go (default: /var/tmp)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("probe_storm: run as root (probes take each user's identity)")
    base = tempfile.mkdtemp(prefix="hlfs-storm-", dir=args.dir)
    os.chmod(base, 0o755)
    try:
        table = make_homes(base, args.users)
        engine = CheckEngine(args.checks, reactor, stuck_after=1.0)
        resolver = HomeResolver(
            table, SpoolRules(b".mailspool", b"/var/alt_mail"), reactor, engine, deadline=1.0
        )
        uids = [u.uid for u in table]

        @defer.inlineCallbacks
        def run():
            try:
                yield engine.start()
                # First round creates every spool directory; later rounds
                # are the steady state (cache expired, directories there).
                for r in range(args.rounds):
                    resolver.flush()
                    cpu = os.times()
                    took, lat, alt = yield storm(resolver, uids, args.window)
                    cpu_after = os.times()
                    used = (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system)
                    print(
                        f"round {r}: {len(uids)} uncached resolves in {took:.2f} s: "
                        f"{len(uids) / took:.0f}/s, p50 {percentile(lat, 0.5) * 1e3:.2f} ms, "
                        f"p99 {percentile(lat, 0.99) * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms, "
                        f"alternate spool {alt} (check processes {args.checks}, window {args.window}); "
                        f"CPU of this process {used / len(uids) * 1e6:.0f} us a check "
                        f"({used / took * 100:.0f}% of one core), load {os.getloadavg()[0]:.1f}"
                    )
            finally:
                engine.stop()
                reactor.stop()

        reactor.callWhenRunning(run)
        reactor.run()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
