"""
L{hlfs.rpc.client.RPCClient}'s waiting, over a real UDP socket on
loopback: the server is a plain socket the test reads (and answers, or
not), the client's timers run on a L{task.Clock} the test advances, in
the reactor thread (L{ReactorThread}) that serves the client's socket.
"""

import socket

import pytest
from twisted.internet import defer, task

from hlfs.rpc.client import RPCClient, RPCError
from hlfs.rpc.message import accepted
from tests.support.probes import ReactorThread

pytestmark = pytest.mark.timeout(60)

PROGRAM, VERSION, PROCEDURE = 100003, 3, 0


class ClockedReactor:
    """
    The real reactor's sockets with a test clock's time.
    """

    def __init__(self, reactor, clock):
        self.listenUDP = reactor.listenUDP
        self.callLater = clock.callLater
        self.seconds = clock.seconds


class Server:
    """
    A UDP socket that receives calls and answers only when told.
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)  # a hang guard
        self.port = self.sock.getsockname()[1]

    def receive(self):
        return self.sock.recvfrom(65536)

    def answer(self, call, source, body=b""):
        xid = int.from_bytes(call[:4], "big")
        self.sock.sendto(accepted(xid, 0, body), source)

    def queued(self):
        """
        Return how many datagrams wait unread.
        """
        count = 0
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(65536)
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.settimeout(10)

    def close(self):
        self.sock.close()


@pytest.fixture
def calling():
    rt = ReactorThread.get()
    clock = task.Clock()
    server = Server()
    client = rt.call(
        RPCClient.connect, ClockedReactor(rt.reactor, clock), "127.0.0.1", server.port, "udp",
        timeout=5.0, retransmit=1.0,
    )
    yield rt, clock, server, client
    rt.call(client.close)
    server.close()


def test_a_call_is_resent_each_interval_and_fails_at_the_timeout(calling):
    """
    Unanswered, a UDP call is sent again every second of the clock, the
    same bytes each time, and fails with one RPCError at 5 s; then nothing
    is pending, no timer is left, and nothing more is sent.
    """
    rt, clock, server, client = calling
    d = rt.begin(client.call, PROGRAM, VERSION, PROCEDURE)
    first, _ = server.receive()
    for second in range(1, 5):
        rt.call(clock.advance, 1)
        assert server.receive()[0] == first, f"no retransmission at {second} s"
    rt.call(clock.advance, 0.5)
    assert rt.pending(d)
    rt.call(clock.advance, 0.5)
    with pytest.raises(RPCError, match=rf"no reply from 127.0.0.1:{server.port} in 5 s"):
        rt.result(d)
    assert client.pending.calls == {}
    assert clock.getDelayedCalls() == []
    rt.call(clock.advance, 10)
    # A datagram sent in the reactor thread is queued here before the
    # call that sent it returns.
    assert server.queued() == 0


def test_an_answered_call_leaves_no_timer(calling):
    rt, clock, server, client = calling
    d = rt.begin(client.call, PROGRAM, VERSION, PROCEDURE)
    data, source = server.receive()
    server.answer(data, source, b"\0\0\0\x07")
    reply = rt.result(d)
    assert reply.stat == 0 and reply.body.uint() == 7
    assert client.pending.calls == {}
    assert clock.getDelayedCalls() == []


def test_a_cancelled_call_is_forgotten(calling):
    """
    A caller that gives up (cancels the Deferred) leaves nothing behind:
    the call is no longer pending, its timers are gone, nothing more is
    sent.
    """
    rt, clock, server, client = calling
    d = rt.begin(client.call, PROGRAM, VERSION, PROCEDURE)
    server.receive()
    rt.call(d.cancel)
    with pytest.raises(defer.CancelledError):
        rt.result(d)
    assert client.pending.calls == {}
    assert clock.getDelayedCalls() == []
    rt.call(clock.advance, 10)
    assert server.queued() == 0
