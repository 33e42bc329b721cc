"""
When a TCP reply leaves: over a real loopback connection, served by a
reactor of the test's own (not the session's), turned one iteration at a
time, so that what each turn sends is seen on the client's socket.
"""

import socket

import pytest
from twisted.internet.epollreactor import EPollReactor

from hlfs.rpc.transport import RPCStreamFactory
from tests.rpc.test_transport_answers import BIG, BIG_REPLY, Program2, calls, replies


class Served:
    """
    A private reactor serving L{Program2} over TCP on loopback, and a
    blocking client connected to it.
    """

    def __init__(self):
        self.reactor = EPollReactor()
        self.dispatcher = Program2()
        self.factory = RPCStreamFactory(self.dispatcher, self.reactor)
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.client = socket.create_connection(("127.0.0.1", self.port.getHost().port))

    def turn(self):
        self.reactor.iterate(0.02)

    def turn_until(self, done, turns=500):
        for _ in range(turns):
            if done():
                return
            self.turn()
        raise AssertionError("the server never got there")

    def received(self):
        """
        What the client can read now, without waiting.
        """
        data = b""
        while True:
            try:
                data += self.client.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return data

    def close(self):
        self.client.close()
        self.port.stopListening()
        for _ in range(5):
            self.reactor.iterate(0)
        self.reactor.disconnectAll()
        self.reactor._handleSignals = lambda: None
        self.reactor.removeAll()
        self.reactor.waker.connectionLost(None)


class _Value:
    def __init__(self, data):
        self.data = data

    def value(self):
        return self.data


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def test_reply_leaves_in_the_turn_its_call_is_read(served):
    """
    If a call is answered at once (a cached one), then its reply is on the
    client's socket at the end of the reactor turn that read the call,
    not one turn later.
    """
    served.client.sendall(calls(BIG, 2))
    served.turn_until(lambda: served.dispatcher.records == 2)
    assert replies(_Value(served.received())) == [1, 2]


def test_reply_larger_than_the_socket_takes_still_leaves(served):
    """
    If a turn's replies are more than the socket takes at once, then what
    it takes leaves at once and the rest in the next turns, all of it, in
    order.
    """
    served.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    served.client.sendall(calls(BIG, 20))
    data = b""
    for _ in range(3000):
        served.turn()
        data += served.received()
        if len(data) >= 20 * (BIG_REPLY + 28):
            break
    assert replies(_Value(data)) == list(range(1, 21))
