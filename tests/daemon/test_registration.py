"""
Several daemons on one host and one portmapper, all real: Debian's
rpcbind in a network namespace of the test's own (L{PrivateRpcbind}),
C{twistd hlfs} daemons, C{rpcinfo} and C{hlfs status}/C{hlfs resolve}.

  - The first daemon registers; a second finds the programs registered
    to a daemon that answers, serves without registering, says so in one
    line, and answers C{hlfs status --server}.
  - Stopping the second leaves the first's mappings; stopping the first
    removes its own.
  - A mapping to a port nothing answers on (a daemon killed with SIGKILL)
    is replaced.
  - rpcbind killed and started again without its saved state: the first
    daemon registers again within seconds, the second does not take the
    programs; once the first stops, the second takes them.
"""

import re
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.prometheus import free_port
from tests.support.rpcbind import PrivateRpcbind, missing

BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.verify_optional]

#: hlfs's programs and versions, over both transports.
EXPECTED = {
    (prog, vers, proto)
    for prog, versions in [(100003, (2, 3)), (100005, (1, 3)), (0x20004846, (1,))]
    for vers in versions
    for proto in ("udp", "tcp")
}

#: The daemon's look at the portmapper comes every 5 s.
LOOK = 5


@pytest.fixture
def portmapper():
    why = missing()
    if why is not None:
        pytest.skip(why)
    ns = PrivateRpcbind()
    yield ns
    ns.close()


@pytest.fixture
def daemons(portmapper, make_server):
    """
    Start daemons registering with the private rpcbind.
    """
    return lambda: make_server("--insecure", "--portmap", prefix=portmapper.prefix)


def on(portmapper, srv):
    return {(prog, vers, proto) for prog, vers, proto, _ in portmapper.registrations(srv.port)}


def wait_for(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def status(portmapper, *args):
    result = portmapper.run([BIN / "hlfs", "status", *args], timeout=30)
    assert result.returncode == 0, result.stderr
    return dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())


def test_a_second_daemon_serves_without_taking_the_first_ones_registration(portmapper, daemons):
    first = daemons()
    wait_for(lambda: on(portmapper, first) == EXPECTED, first.logtext)
    second = daemons()
    wait_for(lambda: "without registering" in second.logtext(), second.logtext)
    assert on(portmapper, first) == EXPECTED
    assert on(portmapper, second) == set()
    lines = [l for l in second.logtext().splitlines() if "portmapper" in l or "registr" in l]
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        f"another live server holds the portmapper registration (port {first.port}): serving on "
        f"port {second.port} without registering; ask it with hlfs status --server "
        f"127.0.0.1:{second.port}"
    )
    # Plain `hlfs status` and `hlfs resolve` reach the first; --server the second.
    assert status(portmapper)["port"] == str(first.port)
    assert status(portmapper)["portmap"] == "registered"
    theirs = status(portmapper, "--server", f"127.0.0.1:{second.port}")
    assert (theirs["port"], theirs["portmap"], theirs["portmap_holder_port"]) == (
        str(second.port), "deferred", str(first.port))
    resolved = portmapper.run([BIN / "hlfs", "resolve", "--uid", "1002"])
    assert resolved.stdout.strip() == f"{first.base}/home/bob/.mailspool"
    resolved = portmapper.run([BIN / "hlfs", "resolve", "--uid", "1002",
                               "--server", f"127.0.0.1:{second.port}"])
    assert resolved.stdout.strip() == f"{second.base}/home/bob/.mailspool"

    # Stopping the second leaves the first's mappings alone.
    assert second.stop() == 0
    assert on(portmapper, first) == EXPECTED
    # The first removes its own.
    assert first.stop() == 0
    assert portmapper.registrations() == set()
    assert "unregistered from the portmapper" in first.logtext()


def test_a_dead_daemons_mappings_are_replaced(portmapper, daemons):
    dead = daemons()
    wait_for(lambda: on(portmapper, dead) == EXPECTED, dead.logtext)
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait(10)
    assert on(portmapper, dead) == EXPECTED  # left behind
    second = daemons()
    wait_for(lambda: on(portmapper, second) == EXPECTED, second.logtext)
    assert on(portmapper, dead) == set()
    assert "without registering" not in second.logtext()


def test_mappings_left_on_its_own_port_are_its_own(portmapper, make_server):
    """
    A daemon restarted on the port of one killed with SIGKILL (as after a
    crash, its mount kept) finds the mappings already its own, keeps them,
    and removes them when it stops.
    """
    port = free_port()
    killed = make_server("--insecure", "--portmap", "--port", str(port), prefix=portmapper.prefix)
    wait_for(lambda: on(portmapper, killed) == EXPECTED, killed.logtext)
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(10)
    again = make_server("--insecure", "--portmap", "--port", str(port), prefix=portmapper.prefix)
    wait_for(lambda: "has this server's mappings on port" in again.logtext(), again.logtext)
    assert on(portmapper, again) == EXPECTED
    assert "without registering" not in again.logtext()
    assert again.stop() == 0
    assert portmapper.registrations() == set()


def test_registered_again_after_rpcbind_restarts(portmapper, daemons):
    first = daemons()
    wait_for(lambda: on(portmapper, first) == EXPECTED, first.logtext)
    second = daemons()
    wait_for(lambda: "without registering" in second.logtext(), second.logtext)

    portmapper.kill_rpcbind()
    portmapper.start_rpcbind()
    restarted = time.monotonic()
    assert portmapper.registrations() == set()
    wait_for(lambda: on(portmapper, first) == EXPECTED, first.logtext, timeout=LOOK * 3)
    again = time.monotonic() - restarted
    assert again < LOOK + 2, again
    assert re.search(r"the portmapper had lost the registration \(restarted\?\): registered 10 "
                     rf"program/version/transport mappings on port {first.port} again",
                     first.logtext())
    # Two more looks of the second: it leaves them to the first.
    time.sleep(LOOK * 2 + 1)
    assert on(portmapper, first) == EXPECTED and on(portmapper, second) == set()

    # Once the first is gone, the second takes the programs.
    assert first.stop() == 0
    wait_for(lambda: on(portmapper, second) == EXPECTED, second.logtext, timeout=LOOK * 4)
    assert status(portmapper)["port"] == str(second.port)
