"""
RPC over TCP with record marking (RFC 5531 section 11), feeding one
L{hlfs.rpc.dispatch.Dispatcher}; L{hlfs.rpc.datagram} is the UDP side.

A TCP connection holds at most one record (L{StreamLimits.max_record},
headers included), is not read while its client leaves replies unread or
while it owes C{max_pending} answers, answers a bounded number of calls
(and bytes of replies) before other connections get their turn, and is
closed when it holds part of a record, stays unread or sends nothing for
too long, or, once the calls before it are answered, when a record is too
large; L{ConnectionTable} bounds how many are open.
"""

import socket
import struct

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.policies import TimeoutMixin

from hlfs.rpc.limits import (
    ConnectionTable, LogThrottle, SharedBudget, StreamLimits, TransportStats,
)

_MARK = struct.Struct(">I")
LAST_FRAGMENT = 0x80000000

# No call to this server needs more; a bigger record is an attack or a bug.
MAX_RECORD = StreamLimits.max_record
UNPRIVILEGED_SNDBUF = 64 * 1024


def frame(reply):
    """
    Return C{reply} as one last fragment of a record.
    """
    return _MARK.pack(LAST_FRAGMENT | len(reply)) + reply


class RPCStreamProtocol(Protocol, TimeoutMixin):
    """
    Records made of one or more fragments, each a call.  The replies of the
    calls answered in one turn leave in one write.

    As a streaming producer registered with its own transport, it stops
    reading when the transport's buffer of unsent replies is full (Twisted
    pauses a producer past the transport's C{bufferSize}, 64 KiB) and reads
    again once the client has taken them.

    @ivar privileged: whether the peer's source port is privileged.
    """

    def __init__(self, dispatcher, factory, privileged):
        self.dispatcher = dispatcher
        self.factory = factory
        self.privileged = privileged
        self.limits = factory.limits
        self.clock = factory.clock
        self.callLater = self.clock.callLater
        # Bytes read and not yet parsed, and how many must be there before
        # parsing can make progress: a fragment arriving a byte at a time
        # is joined once, not once per byte.
        self._chunks = []
        self._have = 0
        self._need = 4
        self._fragments = []
        self._record_size = 0
        self._paused = set()
        self._next_turn = None
        self._record_timer = None
        self._stall_timer = None
        # Calls dispatched whose answers are still to come (Deferreds).
        self._pending = 0
        # Once a record too large is read: the call that aborts the close
        # if its answers are not taken in time.
        self._closing = None
        self._open = True

    def connectionMade(self):
        peer = self.transport.getPeer()
        self._addr = (peer.host, peer.port)
        self.factory.table.add(self)
        sock = getattr(self.transport, "socket", None)
        if not self.privileged and sock is not None:
            # Replies to NULL and STATUS need no more; left to autotuning,
            # a client that never reads would park megabytes in the kernel
            # before the stall timeout could notice.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNPRIVILEGED_SNDBUF)
        self.transport.registerProducer(self, True)
        self.setTimeout(self.limits.idle_timeout)

    def connectionLost(self, reason):
        self.factory.table.remove(self)
        self._open = False
        self.setTimeout(None)
        for call in (self._next_turn, self._record_timer, self._stall_timer, self._closing):
            if call is not None and call.active():
                call.cancel()
        if self._stall_timer is not None:
            self.factory.stats.paused -= 1
        self._next_turn = self._record_timer = self._stall_timer = None
        self._chunks = []
        self._fragments = []

    def dataReceived(self, data):
        self.resetTimeout()
        self.factory.table.touch(self)
        self._chunks.append(data)
        self._have += len(data)
        if self._have >= self._need and not self._paused:
            self._turn()
        elif self._record_timer is None:
            self._record_timer = self.callLater(self.limits.record_timeout, self._record_expired)

    def _turn(self):
        """
        Answer the complete records buffered, at most C{calls_per_turn}
        fragments of them, and no more once the replies written in this
        turn fill the transport's buffer or the connection owes
        C{max_pending} answers; leave the rest for a later turn.
        """
        self._next_turn = None
        chunks = self._chunks
        buffer = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        limits = self.limits
        dispatch = self.dispatcher.dispatch
        replies = []
        written = 0
        # A turn's replies stop at a buffer's worth: the transport then
        # stops reading this connection if its client does not take them,
        # before a turn of large replies is held in memory.
        room = getattr(self.transport, "bufferSize", UNPRIVILEGED_SNDBUF)
        max_pending = limits.max_pending
        pos = 0
        end = len(buffer)
        if self.privileged:
            budget = limits.calls_per_turn
        else:
            budget = self.factory.unprivileged_budget.take(limits.calls_per_turn)
        completed = False
        oversized = None
        need = 4
        while end - pos >= 4:
            (mark,) = _MARK.unpack_from(buffer, pos)
            length = mark & ~LAST_FRAGMENT
            need = 4 + length
            size = self._record_size + need
            if size > limits.max_record:
                oversized = size
                break
            if end - pos < need or not budget or written >= room or self._pending >= max_pending:
                break
            budget -= 1
            fragment = buffer[pos + 4 : pos + need]
            pos += need
            need = 4
            if not mark & LAST_FRAGMENT:
                self._fragments.append(fragment)
                self._record_size = size
                continue
            if self._fragments:
                self._fragments.append(fragment)
                fragment = b"".join(self._fragments)
                self._fragments = []
            self._record_size = 0
            completed = True
            reply = dispatch(fragment, self._addr)
            if reply is None:
                continue
            if type(reply) is bytes:
                reply = frame(reply)
                replies.append(reply)
                written += len(reply)
            else:
                self._pending += 1
                reply.addCallback(self._send)
        if not self.privileged:
            self.factory.unprivileged_budget.give_back(budget)
        if replies:
            self.transport.writeSequence(replies)
        if oversized is not None:
            # The calls before it are answered all the same: their replies
            # are written (and those still being computed when they come),
            # and only then is the connection closed.
            self._close(
                "record_size",
                "closed a connection from {peer}: a {size}-byte record exceeds "
                "the {limit}-byte limit",
                size=oversized, limit=limits.max_record,
            )
            return
        rest = buffer[pos:] if pos else buffer
        self._chunks = [rest] if rest else []
        self._have = len(rest)
        self._need = need
        if completed and self._record_timer is not None:
            self._record_timer.cancel()
            self._record_timer = None
        if (rest or self._fragments) and self._record_timer is None:
            self._record_timer = self.callLater(limits.record_timeout, self._record_expired)
        if self._pending >= max_pending:
            # Read again once some of its calls are answered (L{_send}).
            self._pause("pending")
            self._paused.discard("turn")
        elif self._have >= need and "unsent" not in self._paused:
            # More is buffered than this turn could answer: let the other
            # connections have theirs first.
            self._pause("turn")
            self._next_turn = self.callLater(0, self._turn)
        else:
            self._unpause("turn")
        if replies:
            self._flush()

    def _flush(self):
        """
        Send what the transport holds now, in this turn.  Twisted writes at
        the reactor's next turn, after every other ready descriptor: a
        call answered at once (a cached one) then waited for two turns,
        the one that read it and the one that wrote its reply.  An error
        is left for that next turn, where the reactor meets it again and
        closes the connection as it does for any write.
        """
        transport = self.transport
        if self._open and not transport.disconnecting:
            do_write = getattr(transport, "doWrite", None)
            if do_write is not None:
                do_write()

    def _send(self, reply):
        """
        Write the reply of a call answered later (a Deferred's), then read
        again if the connection was waiting for its answers.
        """
        self._pending -= 1
        if not self._open:
            return
        if reply is not None:
            self.transport.write(frame(reply))
        if self._closing is not None:
            if not self._pending:
                self._closed_after_answers()
        elif self._pending < self.limits.max_pending:
            self._unpause("pending")

    def _pause(self, reason):
        if not self._paused:
            self.transport.pauseProducing()
        self._paused.add(reason)

    def _unpause(self, reason):
        """
        Lift one reason not to read; once none is left, answer what is
        buffered already (in a turn of its own) or read again.
        """
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if self._paused:
            return
        if self._have >= self._need and self._next_turn is None:
            self._paused.add("turn")
            self._next_turn = self.callLater(0, self._turn)
        else:
            self.transport.resumeProducing()

    # IPushProducer, for the transport: its buffer of unsent replies.

    def pauseProducing(self):
        if "unsent" in self._paused:
            return
        self._pause("unsent")
        self.factory.stats.paused += 1
        self._stall_timer = self.callLater(self.limits.stall_timeout, self._stall_expired)

    def resumeProducing(self):
        if "unsent" not in self._paused:
            return
        self._stall_timer.cancel()
        self._stall_timer = None
        self.factory.stats.paused -= 1
        self._unpause("unsent")

    def stopProducing(self):
        pass

    # Timeouts

    def timeoutConnection(self):
        self._close("idle_timeout")

    def _record_expired(self):
        self._record_timer = None
        self._close(
            "record_timeout",
            "closed a connection from {peer}: part of a record held for {seconds:g} s",
            seconds=self.limits.record_timeout,
        )

    def _stall_expired(self):
        self._close(
            "stall_timeout",
            "closed a connection from {peer}: its replies were left unread for {seconds:g} s",
            seconds=self.limits.stall_timeout,
        )

    def _close(self, bound, message=None, **kwargs):
        self.factory.stats.refused[bound] += 1
        if message is not None:
            self.factory.throttle.warn(bound, message, peer=self._addr, **kwargs)
        self._chunks = []
        self._have = 0
        if bound != "record_size":
            self.transport.abortConnection()
            return
        # An orderly close, so the client sees why, once every call read
        # before the record is answered: a lock made for one of them must
        # not have its reply thrown away.  Nothing more is read meanwhile.
        # Those answers come within the home-check deadline; a client that
        # leaves them unread meets the stall timeout all the same.
        self._pause("closing")
        if self._record_timer is not None:
            self._record_timer.cancel()
            self._record_timer = None
        self._closing = self.callLater(self.limits.stall_timeout, self.transport.abortConnection)
        if not self._pending:
            self._closed_after_answers()

    def _closed_after_answers(self):
        # Unregistered, the transport closes once its buffer is written,
        # rather than asking its producer for more.
        self.transport.unregisterProducer()
        self.transport.loseConnection()


class RPCStreamFactory(Factory):
    """
    Connections to one dispatcher, within L{StreamLimits}.

    @ivar stats: the L{TransportStats} of all its connections.
    @ivar table: the L{ConnectionTable} of the open ones.
    """

    noisy = False

    def __init__(self, dispatcher, clock=None, limits=None, stats=None, throttle=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.dispatcher = dispatcher
        self.clock = clock
        self.limits = limits or StreamLimits()
        self.stats = stats or TransportStats()
        self.throttle = throttle or LogThrottle(clock)
        self.table = ConnectionTable(self.limits, self.stats, self.throttle)
        self.unprivileged_budget = SharedBudget(clock, self.limits.calls_per_turn)

    def buildProtocol(self, addr):
        if not self.table.admit(addr):
            return None
        return RPCStreamProtocol(self.dispatcher, self, self.table.privileged(addr))


class _AcceptFailures:
    """
    A log observer for a listening port's own logger.  When accept(2)
    fails for want of file descriptors or memory, Twisted's accept loop
    logs up to three lines per connection it drops; these become one
    counted line per interval, and everything else passes on unchanged.
    """

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, event):
        text = event.get("log_format") or ""
        if "Closed socket from" in text or "Could not accept" in text:
            self.factory.stats.refused["accept_failed"] += 1
            self.factory.throttle.warn(
                "accept_failed",
                "refused a connection: accept failed ({error}); the daemon is out of "
                "file descriptors or memory",
                error=event.get("acceptError", "EMFILE"),
            )
        elif "EMFILE" not in text:
            globalLogPublisher(event)


def listen_stream(reactor, port, factory, interface, backlog=128):
    """
    C{reactor.listenTCP} for an L{RPCStreamFactory}, with accept failures
    counted in its stats and logged once per interval.
    """
    listener = reactor.listenTCP(port, factory, backlog=backlog, interface=interface)
    # tcp.Port logs accept errors through its own Logger (a class
    # attribute); an instance one reaches only this port's.
    logger = getattr(listener, "_logger", None)
    if logger is not None:
        listener._logger = Logger(namespace=logger.namespace, observer=_AcceptFailures(factory))
    return listener
