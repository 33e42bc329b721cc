"""
The deadline through the real server: NFS calls over a real loopback
socket, from the project's own RPC client and from the C{hlfs resolve}
command, while one home hangs on a frozen FUSE mount.
"""

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.internet import defer

from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.homes.pool import ProbePool
from hlfs.homes.cache import ProbingResolver
from hlfs.cli.query import HomeLinkClient, credential
from hlfs.core.resolver import SpoolRules
from hlfs.rpc.client import RPCClient
from hlfs.rpc.dispatch import Dispatcher
from hlfs.daemon.server import RPCServerService, build_programs
from hlfs.homes.tableload import load_in_subprocess
from tests.support.probes import ReactorThread
from tests.support.filesystems import frozen_mount

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(90),
]

DEADLINE = 0.5
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serving(rt, homes, alt):
    """
    Serve C{homes} through a probing resolver and the real RPC server on
    a loopback port; yield C{(server, pool, resolver, client)}, the client
    a L{HomeLinkClient} over UDP.
    """
    pool = ProbePool(threads=4, reactor=rt.reactor)
    resolver = ProbingResolver(
        homes.table(), SpoolRules(b".mailspool", alt), rt.reactor, pool, deadline=DEADLINE
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, time.time_ns())
    server = RPCServerService(
        Dispatcher(build_programs(fs), insecure=True), 0, "127.0.0.1", rt.reactor
    )
    pool.start()
    rt.call(server.startService)
    rpc = None
    try:
        rpc = rt.call(RPCClient.connect, rt.reactor, "127.0.0.1", server.port, "udp", timeout=5.0)
        yield server, pool, resolver, HomeLinkClient(rpc)
    finally:
        if rpc is not None:
            rt.call(rpc.close)
        rt.call(server.stopService)
        rt.call(pool.stop)


def test_readlink_of_a_hung_home_through_the_server(homes):
    rt = ReactorThread.get()
    src = os.path.join(homes.base, "fuse-src")
    mnt = os.path.join(homes.base, "fuse")
    os.makedirs(src)
    hung = homes.add("hung", home=os.path.join(src, "hung"))
    homes.users[-1] = (b"hung", hung, os.fsencode(os.path.join(mnt, "hung")))
    ok = homes.add("ok")
    alt = os.fsencode(homes.alt)

    with serving(rt, homes, alt) as (server, pool, resolver, client):
        with frozen_mount(src, mnt) as mount:
            target, _ = rt.timed(client.resolve, hung, hung)
            assert target == homes.spool("hung")
            mount.freeze()
            rt.call(resolver.flush)

            # MOUNT, LOOKUP (waits for the probe: the deadline), READLINK
            # (the probe is past its deadline: at once).
            target, took = rt.timed(client.resolve, hung, hung)
            assert target == alt
            assert took < DEADLINE + 0.5  # no client retransmission needed (1 s)

            # Another user meanwhile: a probe of its own, answered as usual.
            target, took = rt.timed(client.resolve, ok, ok)
            assert target == homes.spool("ok")
            assert took < DEADLINE

            # The operator's command, a separate process, over UDP and TCP.
            for extra in ([], ["--tcp"]):
                started = time.monotonic()
                out = subprocess.run(
                    [sys.executable, "-m", "hlfs.cli", "resolve", "--uid", str(hung),
                     "--server", f"127.0.0.1:{server.port}", *extra],
                    cwd=REPO, capture_output=True, timeout=20,
                )
                assert out.returncode == 0, out.stderr
                assert out.stdout == alt + b"\n"
                assert time.monotonic() - started < 5
            assert pool.started_count == 3  # hung (twice) and ok: no more

            mount.thaw()
            deadline = time.monotonic() + 10
            while rt.call(pool.count) and time.monotonic() < deadline:
                time.sleep(0.02)
            target, _ = rt.timed(client.resolve, hung, hung)
            assert target == homes.spool("hung")


def test_reload_under_readlink_load_through_the_server(homes):
    """
    A client keeps reading the link over UDP while a 200,000-user password
    file is reloaded: every READLINK is answered, correctly, and none
    waits for the reload.
    """
    rt = ReactorThread.get()
    uids = [homes.add(f"user{n}") for n in range(10)]
    passwd = os.path.join(homes.base, "passwd")
    with open(passwd, "wb") as f:
        for name, uid, home in homes.users:
            f.write(b"%s:x:%d:%d::%s:/bin/sh\n" % (name, uid, uid, home))
        for n in range(200_000):
            f.write(b"gen%d:x:%d:100::/nonexistent/gen%d:/bin/sh\n" % (n, 100000 + n, n))
    alt = os.fsencode(homes.alt)
    with serving(rt, homes, alt) as (server, pool, resolver, client):

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
                start = time.monotonic()
                try:
                    target = yield client.readlink(fh, cred)
                except Exception as e:  # recorded, and the test fails below
                    target = e
                results.append((start, time.monotonic() - start, uid, target))

        done = []
        rt.call(lambda: keep_reading().addBoth(done.append) and None)
        time.sleep(0.2)
        begun = time.monotonic()
        table = rt.call(resolver.reload, lambda: load_in_subprocess(passwd), timeout=60)
        ended = time.monotonic()
        time.sleep(0.2)
        running[0] = False
        deadline = time.monotonic() + 10
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done, "the reading client did not stop"
        assert len(table) == 200_010 and resolver.table is table
        wrong = [r for r in results if r[3] != expected[r[2]]]
        assert not wrong, wrong[:3]
        during = [r for r in results if begun <= r[0] <= ended]
        assert len(during) > 10
        longest = max(r[1] for r in results)
        assert longest < (ended - begun) * 0.5, (longest, ended - begun)
