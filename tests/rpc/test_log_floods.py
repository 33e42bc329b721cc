"""
No caller can flood the daemon's log through the dispatcher.

A procedure that fails (raises, or its Deferred fails) is answered
SYSTEM_ERR, and its traceback is logged once: further failures of the
same procedure, the same way, are counted in one line per interval
(L{hlfs.rpc.limits.LogThrottle}, the transports' throttle).  With
C{--verbose}, each refused or malformed call is logged, up to a bound
per kind, then counted likewise.

The calls come over real UDP and TCP sockets to the daemon's own server
(L{RPCServerService} on the real reactor).  No procedure of the daemon is
known to fail (10.5M fuzzed calls found none that escaped), so a program
of the test's stands in for one with such a bug: it raises for one
procedure and fails its Deferred for another.
"""

import socket
import struct

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher

from hlfs.daemon.server import RPCServerService
from hlfs.rpc import message
from hlfs.rpc.dispatch import Dispatcher, Program
from hlfs.rpc.limits import LogThrottle
from hlfs.rpc.message import NO_CREDENTIAL, decode_reply, encode_call
from tests.support.probes import ReactorThread, wait_for
from tests.support.rpcsock import cred, recv_record

PROGRAM = 0x20004999
FAILURES = 400
#: Lines of each kind --verbose logs before it counts (its help says so).
VERBOSE_LINES = 100


class Bug(Exception):
    pass


def null(args, call):
    return b""


def raises(args, call):
    raise Bug("a procedure with a bug")


def fails_later(args, call):
    return defer.fail(Bug("a Deferred with a bug"))


def reads_a_number(args, call):
    return struct.pack(">I", args.uint())


FLAKY = Program(PROGRAM, "flaky", {1: [null, raises, fails_later, reads_a_number]}, secure=False)


@pytest.fixture
def rt():
    return ReactorThread.get()


@pytest.fixture
def logged():
    """
    The events the dispatcher logs while the test runs.
    """
    events = []

    def observe(event):
        if event.get("log_namespace", "").startswith("hlfs.rpc.dispatch"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def serve(rt):
    services = []

    def serve(dispatcher):
        service = RPCServerService(dispatcher, 0, "127.0.0.1", rt.reactor)
        rt.call(service.startService)
        services.append(service)
        return service.port

    yield serve
    for service in services:
        rt.call(service.stopService)


def udp_calls(port, datagrams):
    """
    Send each datagram from one socket; return the replies, in order.
    """
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for data in datagrams:
            s.sendto(data, ("127.0.0.1", port))
            replies.append(s.recv(65536))
    return replies


def tcp_calls(port, calls):
    """
    Send every call on one connection at once; return the replies.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(struct.pack(">I", 0x80000000 | len(c)) + c for c in calls))
        return [recv_record(s) for _ in calls]


def calls(proc, count, first_xid=1):
    return [encode_call(first_xid + i, PROGRAM, 1, proc, cred(1000), b"") for i in range(count)]


def tracebacks(events):
    return [e for e in events if e.get("log_failure") is not None]


def test_failing_procedures_log_one_traceback_each(serve, logged):
    """
    Hundreds of calls to a procedure that raises (over UDP) and to one
    whose Deferred fails (over TCP): every call is answered SYSTEM_ERR,
    and the log gets one line with the traceback for each, nothing more.
    """
    port = serve(Dispatcher([FLAKY]))
    replies = udp_calls(port, calls(1, FAILURES))
    replies += tcp_calls(port, calls(2, FAILURES, first_xid=10_000))
    stats = [decode_reply(r).stat for r in replies]
    assert stats == [message.SYSTEM_ERR] * (2 * FAILURES)
    wait_for(lambda: len(logged) >= 2)
    assert len(logged) == 2, [e.get("log_format") for e in logged]
    assert sorted(e["log_failure"].value.args[0] for e in tracebacks(logged)) == [
        "a Deferred with a bug", "a procedure with a bug"]


def test_verbose_logging_is_bounded_per_kind(serve, logged):
    """
    With C{--verbose}, a flood of messages too short for a call, of calls
    with a bad credential and of calls with garbage arguments logs at
    most L{VERBOSE_LINES} lines of each kind; each call that
    gets an answer is still answered.
    """
    dispatcher = Dispatcher([FLAKY], verbose=True)
    port = serve(dispatcher)
    flood = 3 * VERBOSE_LINES
    # Over TCP, where none is lost: they get no answer to wait for.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((struct.pack(">I", 0x80000008) + b"\0" * 8) * flood)
        wait_for(lambda: dispatcher.stats["dropped"] == flood)
    bad_credential = encode_call(7, PROGRAM, 1, 0, NO_CREDENTIAL, b"")
    bad_credential = bad_credential[:28] + struct.pack(">I", 400) + bad_credential[32:]
    replies = udp_calls(port, [bad_credential] * flood + calls(3, flood))
    assert [decode_reply(r).reject for r in replies[:flood]] == \
        [(message.AUTH_ERROR, message.AUTH_BADCRED)] * flood
    assert [decode_reply(r).stat for r in replies[flood:]] == [message.GARBAGE_ARGS] * flood
    wait_for(lambda: len(logged) >= 3 * VERBOSE_LINES)
    kinds = [e["log_format"].split(" ")[0] for e in logged]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "dropped": VERBOSE_LINES, "rejected": VERBOSE_LINES,
        "garbage": VERBOSE_LINES}
    assert tracebacks(logged) == []


def test_a_failure_is_counted_per_interval_then_logged_afresh():
    """
    The throttle's failures: the first with its traceback, the rest of an
    interval in one line that names the last one without a traceback; an
    interval without any, and the next is logged in full again.  A
    failure of another kind is logged at once.
    """
    events = []
    clock = Clock()
    throttle = LogThrottle(clock, 60, Logger(observer=events.append))

    def fail(kind, n):
        try:
            raise Bug(f"bug {n}")
        except Bug:
            throttle.failure(kind, "call {n} failed", n=n)

    for n in range(500):
        fail("proc 1", n)
    fail("proc 2", 0)
    assert [(e["n"], e["log_failure"].value.args[0]) for e in events] == [(0, "bug 0"),
                                                                         (0, "bug 0")]
    clock.advance(60)
    assert len(events) == 3 and events[2]["count"] == 499 and events[2]["n"] == 499
    assert "log_failure" not in events[2]
    clock.advance(60)
    clock.advance(60)
    fail("proc 1", 1000)
    assert len(events) == 4 and events[3]["log_failure"].value.args[0] == "bug 1000"

