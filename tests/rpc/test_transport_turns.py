"""
When a reply leaves: over real loopback sockets (TCP and UDP), served by
a reactor of the test's own (not the session's), turned one iteration at
a time, so that what each turn sends is seen on the client's socket.
"""

import socket
import struct

import pytest
from twisted.internet.epollreactor import EPollReactor

from hlfs.rpc.message import NO_CREDENTIAL, encode_call
from hlfs.rpc.transport import RPCDatagramProtocol, RPCStreamFactory
from tests.rpc.test_transport_answers import (
    BIG, BIG_REPLY, LATER, PROGRAM, Program2, calls, replies,
)


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


class UDPServed:
    """
    A private reactor serving L{Program2} over UDP on loopback, and a
    client socket.
    """

    def __init__(self):
        self.reactor = EPollReactor()
        self.dispatcher = Program2()
        self.protocol = RPCDatagramProtocol(self.dispatcher, self.reactor)
        self.port = self.reactor.listenUDP(0, self.protocol, interface="127.0.0.1")
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.connect(("127.0.0.1", self.port.getHost().port))

    def received(self):
        xids = []
        while True:
            try:
                xids.append(struct.unpack_from(">I", self.client.recv(65536, socket.MSG_DONTWAIT))[0])
            except BlockingIOError:
                return xids

    def close(self):
        self.client.close()
        self.port.stopListening()
        self.reactor.iterate(0)
        self.reactor.removeAll()
        self.reactor.waker.connectionLost(None)


@pytest.fixture
def udp():
    s = UDPServed()
    yield s
    s.close()


def test_udp_replies_made_later_leave_together_at_the_turns_end(udp):
    """
    If several calls are answered later in the same reactor turn (home
    checks' answers), then none of their replies leaves before that turn
    ends, and all of them, in order, leave once it has: one wake-up of
    their client, not one each.
    """
    for xid in (1, 2, 3):
        udp.client.send(encode_call(xid, PROGRAM, 1, LATER, NO_CREDENTIAL, b""))
    for _ in range(100):
        if udp.dispatcher.records == 3:
            break
        udp.reactor.iterate(0.02)
    assert len(udp.dispatcher.later) == 3

    def answer_all():
        for d in udp.dispatcher.later:
            d.callback(b"")
        return udp.received()

    udp.reactor.callLater(0, lambda: sent_during.extend(answer_all()))
    sent_during = []
    udp.reactor.iterate(0)  # the turn in which all three are answered
    assert sent_during == []
    udp.reactor.iterate(0)
    assert udp.received() == [1, 2, 3]


def test_udp_reply_made_at_once_leaves_at_once(udp):
    """
    A call answered at once (a cached one) is not held for the turn's end.
    """
    udp.client.send(encode_call(7, PROGRAM, 1, BIG, NO_CREDENTIAL, b""))
    for _ in range(100):
        if udp.dispatcher.records == 1:
            break
        udp.reactor.iterate(0.02)
    assert udp.received() == [7]
