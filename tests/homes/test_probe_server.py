"""
The deadline through the real server: NFS calls over a real loopback
socket, from the project's own RPC client and from the C{hlfs resolve}
command, while one home hangs on a frozen FUSE mount.

The resolver and its engine run on a L{task.Clock} the test advances: an
answer waits for the deadline (pending just before it) or comes with the
clock standing still; no test measures how long an answer took.
"""

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.internet import defer, task

from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.homes.resolver import HomeResolver
from hlfs.cli.query import HomeLinkClient, credential
from hlfs.core.resolver import SpoolRules
from hlfs.rpc.client import RPCClient
from hlfs.rpc.dispatch import Dispatcher
from hlfs.daemon.server import RPCServerService, build_programs
from tests.support.checks import started_engine, stop_engine
from tests.support.probes import ReactorThread, reload_while_serving, wait_for
from tests.support.filesystems import frozen_mount

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(90),
]

DEADLINE = 0.5
JUST_BEFORE = DEADLINE - 0.125  # exact in binary: no rounding at the deadline
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serving(rt, homes, alt):
    """
    Serve C{homes} through a resolver and the real RPC server on a
    loopback port; yield C{(server, engine, resolver, client, clock)}, the
    client a L{HomeLinkClient} over UDP, the clock the resolver's and the
    engine's.
    """
    clock = task.Clock()
    engine = started_engine(rt, 4, clock=clock, stuck_after=DEADLINE)
    resolver = HomeResolver(
        homes.table(), SpoolRules(b".mailspool", alt), clock, engine, deadline=DEADLINE,
        reactor=rt.reactor,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, time.time_ns())
    server = RPCServerService(
        Dispatcher(build_programs(fs), insecure=True), 0, "127.0.0.1", rt.reactor
    )
    rt.call(server.startService)
    rpc = None
    try:
        rpc = rt.call(RPCClient.connect, rt.reactor, "127.0.0.1", server.port, "udp", timeout=5.0)
        yield server, engine, resolver, HomeLinkClient(rpc), clock
    finally:
        if rpc is not None:
            rt.call(rpc.close)
        rt.call(server.stopService)
        stop_engine(rt, engine)


def test_readlink_of_a_hung_home_through_the_server(homes):
    rt = ReactorThread.get()
    src = os.path.join(homes.base, "fuse-src")
    mnt = os.path.join(homes.base, "fuse")
    os.makedirs(src)
    hung = homes.add("hung", home=os.path.join(src, "hung"))
    homes.users[-1] = (b"hung", hung, os.fsencode(os.path.join(mnt, "hung")))
    ok = homes.add("ok")
    alt = os.fsencode(homes.alt)

    with serving(rt, homes, alt) as (server, engine, resolver, client, clock):
        with frozen_mount(src, mnt) as mount:
            target = rt.result(rt.begin(client.resolve, hung, hung))
            assert target == homes.spool("hung")
            mount.freeze()
            rt.call(resolver.flush)

            # MOUNT, LOOKUP (waits for the probe: the deadline), READLINK
            # (the probe is past its deadline: at once).
            d = rt.begin(client.resolve, hung, hung)
            wait_for(lambda: rt.call(engine.busy) == 1, timeout=10)
            rt.call(clock.advance, JUST_BEFORE)
            # The LOOKUP still waits for the probe (its answer would go out
            # at once: the server's side is what shows it).
            assert rt.call(lambda: len(engine.find(hung).waiters)) == 1
            assert rt.pending(d)
            rt.call(clock.advance, DEADLINE - JUST_BEFORE)
            assert rt.result(d) == alt

            # Another user meanwhile: a probe of its own, answered as
            # usual, with the clock standing still.
            assert rt.result(rt.begin(client.resolve, ok, ok)) == homes.spool("ok")

            # The operator's command, a separate process, over UDP and
            # TCP: answered with the clock standing still (the timeout is a
            # hang guard).
            for extra in ([], ["--tcp"]):
                out = subprocess.run(
                    [sys.executable, "-m", "hlfs.cli", "resolve", "--uid", str(hung),
                     "--server", f"127.0.0.1:{server.port}", *extra],
                    cwd=REPO, capture_output=True, timeout=20,
                )
                assert out.returncode == 0, out.stderr
                assert out.stdout == alt + b"\n"
            assert engine.started_count == 3  # hung (twice) and ok: no more

            mount.thaw()
            wait_for(lambda: rt.call(engine.count) == 0, timeout=10)
            assert rt.result(rt.begin(client.resolve, hung, hung)) == homes.spool("hung")


def test_reload_under_readlink_load_through_the_server(homes, monkeypatch):
    """
    A client keeps reading the link over UDP while a 200,000-user password
    file is reloaded: every READLINK is answered, correctly, and none
    waits for the reload.  The reload is held, in its thread, after
    loading and again in the remapping: READLINKs go on being answered at
    both points.
    """
    rt = ReactorThread.get()
    uids = [homes.add(f"user{n}") for n in range(10)]
    passwd = os.path.join(homes.base, "passwd")
    homes.write_passwd(passwd, 200_000)
    alt = os.fsencode(homes.alt)
    with serving(rt, homes, alt) as (server, engine, resolver, client, clock):

        @defer.inlineCallbacks
        def handles():
            found = []
            for uid in uids:
                cred = credential(uid, uid)
                root = yield client.mnt(b"/mail", cred)
                found.append((uid, cred, (yield client.lookup(root, b"home", cred))))
            return found

        links = rt.call(handles)
        expected = {uid: homes.spool(f"user{n}") for n, uid in enumerate(uids)}
        results = []
        running = [True]

        @defer.inlineCallbacks
        def keep_reading():
            n = 0
            while running[0]:
                uid, cred, fh = links[n % len(links)]
                n += 1
                try:
                    target = yield client.readlink(fh, cred)
                except Exception as e:  # recorded, and the test fails below
                    target = e
                results.append((uid, target))

        done = []
        rt.call(lambda: keep_reading().addBoth(done.append) and None)
        wait_for(lambda: len(results) > 0, timeout=10)
        table, held_in = reload_while_serving(rt, resolver, passwd, results, monkeypatch)
        running[0] = False
        wait_for(lambda: done, timeout=10)
        assert len(table) == 200_010 and resolver.table is table
        assert rt.tid not in held_in
        wrong = [r for r in results if r[1] != expected[r[0]]]
        assert not wrong, wrong[:3]
