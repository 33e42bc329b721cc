"""
The bounds of the TCP transport and the reply cache, in the reactor's
absence: connections are L{StringTransportWithDisconnection}s, time is a
L{Clock}.  The same bounds against a real daemon and real sockets are in
the attack tests.
"""

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import Logger, globalLogPublisher

from hlfs.rpc.dispatch import Dispatcher, Program
from hlfs.rpc.limits import LogThrottle, StreamLimits, TransportStats
from hlfs.rpc.message import NO_CREDENTIAL, decode_call, encode_call
from hlfs.rpc.replycache import ReplyCache
from hlfs.rpc.transport import LAST_FRAGMENT, RPCStreamFactory

PROGRAM = 0x20000099


def null(args, call):
    return b""


def record(data, last=True):
    return struct.pack(">I", (LAST_FRAGMENT if last else 0) | len(data)) + data


def null_call(xid=1):
    return encode_call(xid, PROGRAM, 1, 0, NO_CREDENTIAL, b"")


class CountingDispatcher(Dispatcher):
    """
    A real dispatcher that also counts the records handed to it.
    """

    def __init__(self):
        Dispatcher.__init__(self, [Program(PROGRAM, "test", {1: (null,)}, secure=False)])
        self.records = 0

    def dispatch(self, data, peer):
        self.records += 1
        return Dispatcher.dispatch(self, data, peer)


class ReactorClock(Clock):
    """
    A L{Clock} that, like the reactor's C{runUntilCurrent}, runs in one
    advance only the calls due when it began: a call scheduled meanwhile
    for "now" waits for the next turn.
    """

    def advance(self, amount):
        self.rightNow += amount
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def make_factory(**limits):
    clock = ReactorClock()
    dispatcher = CountingDispatcher()
    factory = RPCStreamFactory(dispatcher, clock, StreamLimits(**limits))
    return factory, clock, dispatcher


def connect(factory, port=700, host="127.0.0.1"):
    """
    Return the protocol and transport of a new connection from
    C{host}:C{port}, or L{None} if the factory refused it.
    """
    addr = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(addr)
    if protocol is None:
        return None
    transport = StringTransportWithDisconnection(peerAddress=addr)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def test_zero_length_fragments_count_their_headers():
    """
    If a client sends zero-length non-last fragments, then each costs its
    4-byte header toward the record limit, and the connection is closed
    once they pass it: the record never grows past the limit.
    """
    factory, clock, dispatcher = make_factory(max_record=1024)
    protocol, transport = connect(factory)
    for _ in range(255):
        protocol.dataReceived(record(b"", last=False))
    assert transport.connected and len(protocol._fragments) == 255
    protocol.dataReceived(record(b"", last=False) * 10)
    assert not transport.connected
    assert factory.stats.refused["record_size"] == 1
    assert dispatcher.records == 0
    assert factory.stats.connections == 0


def test_fragments_of_one_call_within_the_limit():
    """
    If a call arrives in fragments whose data and headers fit the limit,
    then it is answered once, as one record.
    """
    factory, clock, dispatcher = make_factory()
    protocol, transport = connect(factory)
    data = null_call(7)
    protocol.dataReceived(record(data[:10], last=False) + record(data[10:20], last=False))
    protocol.dataReceived(record(data[20:]))
    assert dispatcher.records == 1
    assert transport.value()[:4] == struct.pack(">I", LAST_FRAGMENT | 24)
    assert transport.value()[4:8] == struct.pack(">I", 7)


def test_one_turn_answers_a_bounded_number_of_records():
    """
    If one read brings thousands of records, then one turn answers
    C{calls_per_turn} of them and stops reading the connection; each later
    reactor turn answers as many more, and reading resumes once the
    backlog is gone.
    """
    factory, clock, dispatcher = make_factory(calls_per_turn=64)
    protocol, transport = connect(factory)
    protocol.dataReceived(record(b"") * 1000 + record(null_call()) * 100)
    assert dispatcher.records == 64
    assert transport.producerState == "paused"
    turns = 1
    while transport.producerState == "paused":
        clock.advance(0)
        turns += 1
        assert dispatcher.records == min(64 * turns, 1100)
    assert dispatcher.records == 1100
    assert turns == 18
    assert transport.value().count(struct.pack(">I", LAST_FRAGMENT | 24)) == 100


def test_unprivileged_connections_share_one_turn():
    """
    If many unprivileged connections each bring many calls, then together
    they get C{calls_per_turn} calls per reactor turn, while a privileged
    connection gets its own.
    """
    factory, clock, dispatcher = make_factory(calls_per_turn=16)
    flood = [connect(factory, port=40000 + i) for i in range(10)]
    for protocol, _ in flood:
        protocol.dataReceived(record(null_call()) * 50)
    assert dispatcher.records == 16
    privileged, _ = connect(factory, port=900)
    privileged.dataReceived(record(null_call()) * 16)
    assert dispatcher.records == 32
    clock.advance(0)
    assert dispatcher.records == 48
    for _ in range(40):
        clock.advance(0)
    assert dispatcher.records == 16 + 500


def test_unread_replies_stop_reading_then_close():
    """
    If the transport's buffer of unsent replies is full (the transport
    pauses its producer), then the connection is not read and its buffered
    calls wait; when the client takes its replies they are answered; if it
    never does, the connection is closed after C{stall_timeout}.
    """
    factory, clock, dispatcher = make_factory(stall_timeout=30)
    protocol, transport = connect(factory)
    assert transport.producer is protocol and transport.streaming
    protocol.pauseProducing()
    assert transport.producerState == "paused" and factory.stats.paused == 1
    protocol.dataReceived(record(null_call()) * 3)
    assert dispatcher.records == 0
    protocol.resumeProducing()
    clock.advance(0)
    assert dispatcher.records == 3 and transport.producerState == "producing"
    assert factory.stats.paused == 0
    protocol.pauseProducing()
    clock.advance(29)
    assert transport.connected
    clock.advance(1)
    assert not transport.connected
    assert factory.stats.refused["stall_timeout"] == 1
    assert factory.stats.paused == 0


def test_partial_record_times_out_however_slowly_it_grows():
    """
    If a connection holds part of a record for C{record_timeout} seconds,
    then it is closed, even though a byte arrives every 3 seconds (which
    keeps the idle timeout away).
    """
    factory, clock, dispatcher = make_factory(record_timeout=30, idle_timeout=360)
    protocol, transport = connect(factory)
    protocol.dataReceived(struct.pack(">I", LAST_FRAGMENT | 60000))
    for _ in range(9):
        clock.advance(3)
        protocol.dataReceived(b"x")
    assert transport.connected
    clock.advance(3)
    assert not transport.connected
    assert factory.stats.refused["record_timeout"] == 1
    # Less than a fragment header, too.
    protocol, transport = connect(factory)
    protocol.dataReceived(b"\x80\x00")
    clock.advance(30)
    assert not transport.connected
    assert factory.stats.refused["record_timeout"] == 2


def test_complete_records_keep_a_connection():
    """
    If every record completes, then neither timeout closes a busy
    connection, but an idle one is closed after C{idle_timeout}.
    """
    factory, clock, dispatcher = make_factory(record_timeout=30, idle_timeout=360)
    protocol, transport = connect(factory)
    data = record(null_call())
    for _ in range(100):
        protocol.dataReceived(data[:10])
        clock.advance(10)
        protocol.dataReceived(data[10:])
        clock.advance(10)
    assert transport.connected and dispatcher.records == 100
    clock.advance(349)
    assert transport.connected
    clock.advance(1)
    assert not transport.connected
    assert factory.stats.refused["idle_timeout"] == 1
    assert factory.stats.refused["record_timeout"] == 0


def test_unprivileged_connections_capped_idlest_closed():
    """
    If more connections come from unprivileged ports than
    C{max_unprivileged}, then the idlest of them is closed for each new
    one, and privileged connections are not touched.
    """
    factory, clock, dispatcher = make_factory(max_unprivileged=4, max_connections=100)
    privileged = connect(factory, port=800)
    old = [connect(factory, port=40000 + i) for i in range(4)]
    # The first is the busiest now: the second is the idlest.
    old[0][0].dataReceived(record(null_call()))
    newer = connect(factory, port=50000)
    assert newer is not None
    assert [t.connected for _, t in old] == [True, False, True, True]
    assert privileged[1].connected
    assert factory.stats.refused["max_unprivileged"] == 1
    assert factory.stats.connections == 5 and factory.stats.unprivileged == 4


def test_privileged_clients_get_through_a_full_table():
    """
    If every connection slot is taken, then a privileged client closes the
    idlest unprivileged connection; when only privileged ones are left, a
    new connection is refused.
    """
    factory, clock, dispatcher = make_factory(max_unprivileged=2, max_connections=3)
    first = connect(factory, port=900)
    flood = [connect(factory, port=40000 + i) for i in range(2)]
    second = connect(factory, port=901)
    assert second is not None
    assert [t.connected for _, t in flood] == [False, True]
    third = connect(factory, port=902)
    assert third is not None and not flood[1][1].connected
    assert connect(factory, port=903) is None
    assert connect(factory, port=40005) is None
    assert factory.stats.refused["max_connections"] == 4
    assert first[1].connected and factory.stats.connections == 3


def test_connection_limits_capped_by_file_descriptors():
    """
    If the file descriptor limit leaves fewer connections than
    C{max_connections}, then the lower number is the limit.
    """
    limits = StreamLimits(max_connections=1024, max_unprivileged=64)
    assert limits.capped(100).max_connections == 100
    assert limits.capped(5000).max_connections == 1024
    assert limits.capped(-5).max_connections == 1


def test_log_throttle_one_line_per_interval():
    """
    If the same kind of event happens a thousand times, then the log gets
    its first line at once and one line with the count per interval.
    """
    events = []
    clock = Clock()
    throttle = LogThrottle(clock, 60, Logger(observer=events.append))
    for i in range(1000):
        throttle.warn("emfile", "refused {n}", n=i)
    assert len(events) == 1
    clock.advance(60)
    assert len(events) == 2 and events[1]["count"] == 999 and events[1]["n"] == 999
    clock.advance(60)
    assert len(events) == 2
    throttle.warn("emfile", "refused {n}", n=1)
    assert len(events) == 3


def test_reply_cache_bounded_in_bytes():
    """
    If stored replies and their keys pass C{max_bytes}, then the cache
    starts afresh; a key longer than any real call's is not stored.
    """

    class Validity:
        generation = 0

    clock = Clock()
    cache = ReplyCache(Validity(), clock, size=1000, max_bytes=10_000)
    for i in range(100):
        message = encode_call(i, 100003, 3, 5, NO_CREDENTIAL, struct.pack(">I", i) + bytes(500))
        cache.store(decode_call(message), bytes(100), until=10)
        assert cache.bytes <= 10_000
    assert cache.resets >= 5
    huge = encode_call(1, 100003, 3, 5, NO_CREDENTIAL, bytes(60000))
    before = cache.bytes
    cache.store(decode_call(huge), b"", until=10)
    assert cache.lookup(huge) is None and cache.bytes == before
