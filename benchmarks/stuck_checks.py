"""
The bound on stuck home checks, measured on two hlfs trees in one run:
nine users whose homes are on a FUSE (bindfs) mount held stopped, and a
daemon sized for four checks (C{--probe-threads 4}, the old name of
C{--home-checks}, which both trees take).  Each user is checked once
while the mount works; the mount is then frozen and every user asks for
its link, three rounds.  Sampled every 50 ms: the tasks (threads of the
daemon and of every process under it) whose filesystem uid is one of
those users', that is the checks stuck in the frozen mount.  Also the
slowest answer: every caller must have the alternate spool within the
deadline.

    .venv/bin/python benchmarks/stuck_checks.py --against ../main

Needs root (checks as the users) and bindfs.  The servers are C{twistd
hlfs} from this venv with C{PYTHONPATH} set to each tree's root.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.homes.test_checks_daemon import (  # noqa: E402
    FROZEN_UID, checking, lookups, roots, spools, targets, users,
)
from tests.support.filesystems import frozen_mount  # noqa: E402
from tests.support.probes import ReactorThread  # noqa: E402
from tests.support.server import RunningServer, make_base, write_passwd  # noqa: E402

from hlfs.cli.query import HomeLinkClient  # noqa: E402
from hlfs.rpc.client import RPCClient  # noqa: E402

BOUND, HUNG, DEADLINE, ROUNDS = 4, 9, 1.0, 3


def measure(tree):
    """
    Return C{(most stuck at once, slowest answer in s, every answer the
    alternate spool)} for the hlfs in C{tree}.
    """
    base = make_base()  # a directory every user may pass through
    write_passwd(base / "passwd", base, users(0, HUNG))
    spools(str(base), 0, HUNG)
    env = dict(os.environ, PYTHONPATH=tree)
    srv = RunningServer(base, ["--insecure", "--probe-threads", str(BOUND), "--probe-deadline",
                               str(DEADLINE), "--cache-interval", "0"], env=env).start()
    rt = ReactorThread.get()
    rpc = rt.call(RPCClient.connect, rt.reactor, "127.0.0.1", srv.port, "udp", timeout=30.0)
    nfs = HomeLinkClient(rpc)
    frozen = [FROZEN_UID + n for n in range(HUNG)]
    seen, slowest, alt_only = [], 0.0, True
    try:
        with frozen_mount(str(base / "fuse-src"), str(base / "fuse")) as mount:
            handles = roots(rt, nfs, frozen)
            [rt.result(d) for d in lookups(rt, nfs, handles, frozen)]
            mount.freeze()
            for _ in range(ROUNDS):
                sent = lookups(rt, nfs, handles, frozen)
                while not all(d.called for d in sent):
                    seen.append(len(checking(srv.proc.pid, set(frozen))))
                    time.sleep(0.05)
                answers = [rt.result(d) for d in sent]
                slowest = max([slowest] + [seconds for _, seconds, _ in answers])
                alt_only &= set(targets(rt, nfs, answers).values()) == {os.fsencode(srv.alt)}
                seen.append(len(checking(srv.proc.pid, set(frozen))))
            mount.thaw()
    finally:
        rt.call(rpc.close)
        srv.stop()
        if os.environ.get("SHOW_LOG"):
            print(srv.logtext()[-3000:])
    return max(seen), slowest, alt_only


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the other tree (B), a checkout of hlfs")
    args = parser.parse_args(argv)
    print(f"| tree | most checks stuck at once (bound {BOUND}, {HUNG} homes frozen) "
          f"| slowest answer | every answer the alternate spool |")
    print("|---|---|---|---|")
    for label, tree in (("A (this tree)", ROOT), ("B", os.path.abspath(args.against))):
        most, slowest, alt_only = measure(tree)
        print(f"| {label} `{tree}` | {most} | {slowest * 1000:.0f} ms | {alt_only} |", flush=True)


if __name__ == "__main__":
    main()
