"""
What one client may make the server hold: the bounds on records,
connections, unsent replies and time, the counters of what each bound
refused, and a log that says so in one line per interval however often it
happens.

Every bound here exists because the port is open to any local user (NULL
and the status program must stay reachable from unprivileged ports), so
each must hold against a client that wants it to break.
"""

from collections import OrderedDict
from dataclasses import dataclass, replace

from twisted.logger import Logger, LogLevel, globalLogPublisher

#: Source ports under this are privileged (only root may bind them): NFS's
#: C{secure} rule trusts the credentials of calls from them.
PRIVILEGED_PORTS = 1024


@dataclass(frozen=True)
class StreamLimits:
    """
    The bounds on TCP connections.

    @ivar max_record: bytes a record may take, each fragment with its
        4-byte header (zero-length fragments cost their header).
    @ivar record_timeout: seconds a connection may hold part of a record.
    @ivar idle_timeout: seconds a connection may send nothing (knfsd: 6
        minutes; the Linux client reconnects).
    @ivar stall_timeout: seconds a connection may stay unread because its
        client does not read its replies.
    @ivar max_connections: open connections, all clients together.
    @ivar max_unprivileged: open connections from unprivileged source
        ports; the idlest is closed for a new one.  Callers there can only
        reach NULL and the status program, so a few are plenty.  A
        privileged client finding every slot taken closes the idlest
        unprivileged connection instead of being refused, so a flood from
        unprivileged ports never locks it out.
    @ivar calls_per_turn: fragments a connection has answered before the
        others get their turn; all unprivileged connections together get
        as many per turn.
    @ivar max_pending: calls of one connection still being answered (a
        home check or a lock file on its way); past it the connection is
        not read until some are answered.  Each holds its record, so a
        connection holds at most this many records besides its buffer.
    """

    max_record: int = 64 * 1024
    record_timeout: float = 30.0
    idle_timeout: float = 360.0
    stall_timeout: float = 30.0
    max_connections: int = 1024
    max_unprivileged: int = 64
    calls_per_turn: int = 64
    max_pending: int = 256

    def capped(self, max_connections):
        """
        These limits with at most C{max_connections} connections in all:
        what the file descriptor limit leaves.
        """
        total = max(1, min(self.max_connections, max_connections))
        return replace(self, max_connections=total)


# Names of the bounds as they appear in `hlfs status` and the counters.
REFUSALS = (
    "record_size",       # a record larger than max_record: connection closed
    "record_timeout",    # part of a record held past record_timeout
    "idle_timeout",      # nothing sent for idle_timeout
    "stall_timeout",     # replies left unread for stall_timeout
    "max_connections",   # a new connection refused: all slots taken
    "max_unprivileged",  # an unprivileged connection closed for a newer one
    "accept_failed",     # accept(2) failed: EMFILE, ENFILE, ENOBUFS, ENOMEM
)


class TransportStats:
    """
    Counters of the transports, read by `hlfs status` and anything else
    that reports on the daemon: plain attributes and one dict.

    @ivar connections: open TCP connections.
    @ivar unprivileged: those of them from unprivileged source ports.
    @ivar paused: those not being read because their replies wait unsent.
    @ivar refused: per bound in L{REFUSALS}, how many connections it
        closed or refused.
    """

    def __init__(self):
        self.connections = 0
        self.unprivileged = 0
        self.paused = 0
        self.refused = dict.fromkeys(REFUSALS, 0)


class LogThrottle:
    """
    At most a few log lines per interval for each kind of event: the first
    C{burst} at once, then, at the end of each interval in which more
    happened, one line with their count.  A flood of refused connections
    costs a few lines a minute, not one each.  Kinds are the caller's keys:
    they must come from a bounded set (never from a peer's address).
    """

    def __init__(self, clock, interval=60.0, log=None, burst=1):
        self.clock = clock
        self.interval = interval
        self.log = log or Logger()
        self.burst = burst
        self._pending = {}
        self._timers = {}

    def warn(self, kind, format, **kwargs):
        self._event(kind, self.log.warn, self.log.warn, format, kwargs)

    def info(self, kind, format, **kwargs):
        self._event(kind, self.log.info, self.log.info, format, kwargs)

    def failure(self, kind, format, failure=None, **kwargs):
        """
        Log C{failure} (the exception being handled when L{None}) with its
        traceback, as C{Logger.failure} does; the count line names the last
        one without a traceback.
        """

        def emit(format, **kwargs):
            self.log.failure(format, failure, **kwargs)

        self._event(kind, emit, self.log.error, format, kwargs)

    def event(self, kind, event):
        """
        Pass on an event another logger made (a log observer's argument)
        to the global log; the count line gives its fields.
        """
        fields = {k: v for k, v in event.items() if not k.startswith("log_")}
        summary = self.log.info if event.get("log_level") is LogLevel.info else self.log.warn

        def emit(format, **kwargs):
            globalLogPublisher(event)

        self._event(kind, emit, summary, event.get("log_format") or "", fields)

    def _event(self, kind, emit, summary, format, kwargs):
        pending = self._pending.get(kind)
        if pending is None:
            # [lines logged, events counted, last arguments, format, summary]
            pending = self._pending[kind] = [0, 0, kwargs, format, summary]
            self._timers[kind] = self.clock.callLater(self.interval, self._flush, kind)
        if pending[0] < self.burst:
            pending[0] += 1
            emit(format, **kwargs)
        else:
            pending[1] += 1
            pending[2] = kwargs

    def _flush(self, kind):
        pending = self._pending[kind]
        if not self._summarise(pending):
            del self._pending[kind], self._timers[kind]
            return
        # While they go on, only counts: the next line at once comes after
        # an interval without any.
        self._timers[kind] = self.clock.callLater(self.interval, self._flush, kind)

    def _summarise(self, pending):
        _, count, kwargs, format, summary = pending
        if count:
            summary(
                "{count} more in the last {interval:g} s, the last: " + format,
                count=count, interval=self.interval, **kwargs,
            )
            pending[1] = 0
        return count

    def stop(self):
        """
        Log the counts not yet logged and cancel the timers: the service
        whose events these are has stopped.
        """
        pending, self._pending = self._pending, {}
        timers, self._timers = self._timers, {}
        for kind, timer in timers.items():
            timer.cancel()
            self._summarise(pending[kind])


class SharedBudget:
    """
    Calls that all unprivileged connections together may have answered in
    one reactor turn: however many there are, they delay the others by at
    most this many calls per turn.
    """

    def __init__(self, clock, calls):
        self.clock = clock
        self.calls = calls
        self.left = calls
        self._refill = None

    def take(self, wanted):
        if self._refill is None:
            self._refill = self.clock.callLater(0, self._refilled)
        granted = min(wanted, self.left)
        self.left -= granted
        return granted

    def give_back(self, unused):
        self.left += unused

    def _refilled(self):
        self.left = self.calls
        self._refill = None


class ConnectionTable:
    """
    The open connections, privileged and unprivileged apart, each in order
    of activity (the idlest first), enforcing C{max_connections} and
    C{max_unprivileged}.
    """

    def __init__(self, limits, stats, throttle):
        self.limits = limits
        self.stats = stats
        self.throttle = throttle
        self._open = {True: OrderedDict(), False: OrderedDict()}

    @staticmethod
    def privileged(addr):
        return addr.port < PRIVILEGED_PORTS

    def admit(self, addr):
        """
        Make room for a new connection from C{addr}, closing the idlest
        unprivileged one if needed; return whether it may be accepted.
        """
        limits = self.limits
        unprivileged = self._open[False]
        if not self.privileged(addr) and len(unprivileged) >= limits.max_unprivileged:
            if not unprivileged:
                return self._refuse(addr, "max_unprivileged", limits.max_unprivileged)
            self._evict(addr, unprivileged, "max_unprivileged", limits.max_unprivileged)
        if self.stats.connections >= limits.max_connections:
            if not unprivileged:
                return self._refuse(addr, "max_connections", limits.max_connections)
            self._evict(addr, unprivileged, "max_connections", limits.max_connections)
        return True

    def _refuse(self, addr, bound, limit):
        self.stats.refused[bound] += 1
        self.throttle.warn(
            bound, "refused a connection from {peer}: {limit} connections are open ({bound})",
            peer=(addr.host, addr.port), limit=limit, bound=bound,
        )
        return False

    def _evict(self, addr, connections, bound, limit):
        protocol, _ = connections.popitem(last=False)
        self._counted(protocol, -1)
        self.stats.refused[bound] += 1
        self.throttle.warn(
            bound, "closed the idlest connection from an unprivileged port for one from "
            "{peer}: {limit} connections are open ({bound})",
            peer=(addr.host, addr.port), limit=limit, bound=bound,
        )
        protocol.transport.abortConnection()

    def add(self, protocol):
        self._open[protocol.privileged][protocol] = None
        self._counted(protocol, 1)

    def touch(self, protocol):
        connections = self._open[protocol.privileged]
        if protocol in connections:
            connections.move_to_end(protocol)

    def remove(self, protocol):
        connections = self._open[protocol.privileged]
        if protocol in connections:
            del connections[protocol]
            self._counted(protocol, -1)

    def _counted(self, protocol, change):
        self.stats.connections += change
        if not protocol.privileged:
            self.stats.unprivileged += change
