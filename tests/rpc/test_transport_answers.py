"""
What a TCP connection holds while its calls are answered, in the
reactor's absence (as in L{tests.rpc.test_transport_limits}): a turn's
replies stop at a buffer's worth, calls answered later are bounded per
connection, and a connection closed for a record too large first gets
every answer it is owed.  The same over real sockets against a real
daemon: tests/nfs/test_mount_wire.py and tests/nfs/test_lock_wire.py.
"""

import struct

from twisted.internet.defer import Deferred

from hlfs.rpc.dispatch import Dispatcher, Program
from hlfs.rpc.limits import StreamLimits
from hlfs.rpc.message import NO_CREDENTIAL, encode_call
from hlfs.rpc.transport import LAST_FRAGMENT, RPCStreamFactory
from tests.rpc.test_transport_limits import ReactorClock, connect, record

PROGRAM = 0x20000098
BIG, LATER = 1, 2
BIG_REPLY = 10_000


class Program2(Dispatcher):
    """
    A real dispatcher over a program with a procedure answering 10 kB at
    once (C{BIG}) and one answering when the test says (C{LATER}).
    """

    def __init__(self):
        self.later = []
        self.records = 0
        procedures = (lambda args, call: b"", lambda args, call: bytes(BIG_REPLY), self._later)
        Dispatcher.__init__(self, [Program(PROGRAM, "test", {1: procedures}, secure=False)])

    def _later(self, args, call):
        d = Deferred()
        self.later.append(d)
        return d

    def dispatch(self, data, peer):
        self.records += 1
        return Dispatcher.dispatch(self, data, peer)


def calls(proc, n, first_xid=1):
    return b"".join(record(encode_call(first_xid + i, PROGRAM, 1, proc, NO_CREDENTIAL, b"")) for i in range(n))


def make(**limits):
    clock = ReactorClock()
    dispatcher = Program2()
    factory = RPCStreamFactory(dispatcher, clock, StreamLimits(**limits))
    protocol, transport = connect(factory)
    transport.bufferSize = 65536  # as a real TCP transport's
    return factory, clock, dispatcher, protocol, transport


def replies(transport):
    data = transport.value()
    xids = []
    while data:
        (mark,) = struct.unpack_from(">I", data)
        length = mark & ~LAST_FRAGMENT
        xids.append(struct.unpack_from(">I", data, 4)[0])
        data = data[4 + length :]
    return xids


def test_a_turn_stops_at_a_buffer_of_replies():
    """
    If a client pipelines 64 calls with 10 kB replies, then one turn
    answers only as many as fill the transport's 64 KiB buffer (7), not
    all 64 (640 kB held at once); the rest wait for later turns.
    """
    factory, clock, dispatcher, protocol, transport = make(calls_per_turn=64)
    protocol.dataReceived(calls(BIG, 64))
    assert dispatcher.records == 7
    assert len(transport.value()) < 65536 + BIG_REPLY + 100
    clock.advance(0)
    assert dispatcher.records == 14
    while dispatcher.records < 64:
        clock.advance(0)
    assert replies(transport) == list(range(1, 65))


def test_calls_answered_later_bounded_per_connection():
    """
    If a connection has C{max_pending} calls waiting for their answers,
    then it is not read, and nothing more is dispatched, until one is
    answered; then reading goes on.
    """
    factory, clock, dispatcher, protocol, transport = make(max_pending=5, calls_per_turn=64)
    protocol.dataReceived(calls(LATER, 20))
    assert dispatcher.records == 5 and transport.producerState == "paused"
    for _ in range(3):
        clock.advance(0)
    assert dispatcher.records == 5
    dispatcher.later.pop(0).callback(b"")
    assert replies(transport) == [1]
    clock.advance(0)
    assert dispatcher.records == 6 and transport.producerState == "paused"
    while dispatcher.later:
        dispatcher.later.pop(0).callback(b"")
        clock.advance(0)
    assert dispatcher.records == 20 and transport.producerState == "producing"
    assert replies(transport) == list(range(1, 21))


def test_oversized_record_closes_after_the_answers_owed():
    """
    If calls come before a record over C{max_record} in one read, then the
    calls answered at once are written, the connection is not read any
    more, and it is closed (not aborted) once the calls answered later
    have their replies written too.
    """
    factory, clock, dispatcher, protocol, transport = make(max_record=1024)
    data = calls(LATER, 1, 1) + calls(BIG, 1, 2) + struct.pack(">I", LAST_FRAGMENT | 5000) + bytes(100)
    protocol.dataReceived(data)
    assert factory.stats.refused["record_size"] == 1
    assert replies(transport) == [2]
    assert transport.connected and transport.producerState == "paused"
    dispatcher.later[0].callback(b"")
    assert replies(transport) == [2, 1]
    assert not transport.connected
    assert dispatcher.records == 2


def test_oversized_record_close_bounded_in_time():
    """
    If an answer owed at an oversized record never comes, then the
    connection is aborted at the stall timeout all the same.
    """
    factory, clock, dispatcher, protocol, transport = make(max_record=1024, stall_timeout=30)
    protocol.dataReceived(calls(LATER, 1) + struct.pack(">I", LAST_FRAGMENT | 5000))
    clock.advance(29)
    assert transport.connected
    clock.advance(1)
    assert not transport.connected
