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
from pathlib import Path

import pytest

from hlfs.linkfs import HomeLinkFS, LinkConfig
from hlfs.probe import ProbePool, ProbingResolver
from hlfs.query import HomeLinkClient
from hlfs.resolver import SpoolRules
from hlfs.rpc.client import RPCClient
from hlfs.rpc.dispatch import Dispatcher
from hlfs.server import RPCServerService, build_programs
from tests.probe_support import Homes, ReactorThread, frozen_mount

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(90),
]

DEADLINE = 0.5
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def homes():
    h = Homes()
    yield h
    h.cleanup()


def test_readlink_of_a_hung_home_through_the_server(homes):
    rt = ReactorThread.get()
    src = os.path.join(homes.base, "fuse-src")
    mnt = os.path.join(homes.base, "fuse")
    os.makedirs(src)
    hung = homes.add("hung", home=os.path.join(src, "hung"))
    homes.users[-1] = (b"hung", hung, os.fsencode(os.path.join(mnt, "hung")))
    ok = homes.add("ok")
    alt = os.fsencode(homes.alt)

    pool = ProbePool(threads=4, reactor=rt.reactor)
    resolver = ProbingResolver(
        homes.table(), SpoolRules(b".mailspool", alt), rt.reactor, pool, deadline=DEADLINE
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, time.time_ns())
    server = RPCServerService(
        Dispatcher(build_programs(fs), insecure=True), 0, "127.0.0.1", rt.reactor
    )
    rpc = None
    pool.start()
    rt.call(server.startService)
    try:
        rpc = rt.call(RPCClient.connect, rt.reactor, "127.0.0.1", server.port, "udp", timeout=5.0)
        client = HomeLinkClient(rpc)
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
    finally:
        if rpc is not None:
            rt.call(rpc.close)
        rt.call(server.stopService)
        rt.call(pool.stop)
