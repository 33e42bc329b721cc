"""
The daemon's file descriptor limit at start-up: the soft limit raised to
the hard one, and TCP connections capped to what it leaves past
--fd-reserve, as `hlfs status` reports.

The daemon runs under prlimit(1) with the limits each test gives.
"""

import os
import socket
import subprocess

import pytest

from tests.support.probes import wait_for
from tests.support.server import BIN, RunningServer, make_base

pytestmark = [pytest.mark.root(reason="the servers check homes as their users")]


def nofile(soft, hard):
    return ["prlimit", f"--nofile={soft}:{hard}", "--"]


def status_of(server):
    out = subprocess.run(
        [str(BIN / "hlfs"), "status", "--server", f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


@pytest.fixture
def start(tmp_path_factory):
    started = []

    def start(soft, hard, *args):
        server = RunningServer(make_base(tmp_path_factory), list(args), prefix=nofile(soft, hard))
        started.append(server)
        server.start()
        return server, status_of(server)

    yield start
    for server in started:
        server.stop()
        assert "Traceback" not in server.logtext(), server.logtext()


def test_soft_limit_raised_to_the_hard_one(start):
    """
    If the daemon starts with a soft limit of 256 under a hard one of
    8192, then it runs with 8192 and the default connection limits.
    """
    server, status = start(256, 8192)
    assert int(status["limit.nofile"]) == 8192, status
    assert int(status["limit.max_connections"]) == 1024, status
    assert int(status["limit.fd_reserve"]) == 64, status
    assert "raise LimitNOFILE" not in server.logtext()


def test_connections_capped_to_what_the_reserve_leaves(start):
    """
    If the hard limit is 300, then fewer than 300 - --fd-reserve
    connections are allowed, and the log says to raise the limit.
    """
    server, status = start(300, 300, "--fd-reserve", "100")
    assert int(status["limit.nofile"]) == 300, status
    assert 100 < int(status["limit.max_connections"]) <= 200, status
    assert "allows" in server.logtext() and "raise LimitNOFILE" in server.logtext()


def test_a_reserve_leaving_nothing_is_refused(tmp_path_factory):
    """
    If --fd-reserve leaves no descriptor for connections, then the daemon
    says so and exits instead of running without room for clients.
    """
    server = RunningServer(
        make_base(tmp_path_factory), ["--fd-reserve", "1000"], prefix=nofile(300, 300)
    )
    with pytest.raises(AssertionError, match="leaves no file descriptor"):
        server.start()
    server.stop()


def test_accept_failures_are_counted_and_logged_once(start):
    """
    If the daemon is at its descriptor limit (lowered with prlimit to just
    past its highest descriptor, and the numbers below it that its check
    processes' closed pipe ends left free taken by idle connections) and
    200 connections arrive, then each is refused, counted in
    refused.accept_failed, and the log gets one line for them all, not
    Twisted's three per connection.
    """
    server, _ = start(4096, 4096)
    pid = server.proc.pid
    open_fds = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    limit = max(open_fds) + 1
    before = server.log.stat().st_size
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:4096"], check=True)
    held = []
    try:
        # The kernel gives the lowest free number: fill those first.
        for _ in range(limit - len(open_fds)):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) == limit, timeout=10)
        for _ in range(200):
            with socket.socket() as s:
                s.settimeout(2)
                s.connect(("127.0.0.1", server.port))
                try:
                    s.recv(1)
                except OSError:
                    pass
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", "--nofile=4096:4096"], check=True)
        for connection in held:
            connection.close()
    status = status_of(server)
    assert int(status["refused.accept_failed"]) >= 100, status
    log = server.logtext()[before:]
    assert log.count("accept failed") == 1, log[-3000:]
    assert "EMFILE" not in log.replace("accept failed (EMFILE)", ""), log[-3000:]
    assert server.log.stat().st_size - before < 2000, log[-3000:]
