"""
L{OperatorViews}: what the operator sees of the resolver and its engine:
the jobs in flight and hung, one user's state, and the counters of the
status report (C{hlfs status}), which the console and the Prometheus
metrics read too.
"""

from typing import NamedTuple

from zope.interface import implementer

from hlfs.core.lookups import user_source_pairs
from hlfs.homes.interfaces import IOperatorViews
from hlfs.homes.state import CHECKED, FAILED, SERVED_ALT, UNCONFIRMED


class CacheEntry(NamedTuple):
    """
    One user's state, for the operator.

    @ivar state: C{ok}, C{failed} (either may be C{(expired)}) or
        C{unverified}.
    @ivar age: seconds since the kept check finished, or L{None}.
    @ivar expires_in: seconds the result is still used, or L{None}.
    @ivar probing: whether a check is in flight.
    @ivar target: the link's last answer.
    @ivar changed: the link's time (ns).
    """

    state: str
    age: float | None
    expires_in: float | None
    probing: bool
    target: bytes
    changed: int


@implementer(IOperatorViews)
class OperatorViews:
    """
    The operator's views over C{known} (L{hlfs.homes.interfaces.IKnownUsers}),
    C{engine} (L{hlfs.homes.interfaces.ICheckEngine}, or L{None} with no
    checks), the check counters C{stats}, and the user lookups.
    """

    def __init__(self, known, engine, stats, clock, settings, lookups=None, user_stats=None):
        """
        @param settings: the resolver: its C{verify}, C{cache_interval} and
            C{deadline}.
        @param lookups: the L{hlfs.core.lookups.UserLookups}, or L{None}.
        @param user_stats: the L{hlfs.core.lookups.LookupStats} of the
            user source.
        """
        self.known = known
        self.engine = engine
        self.stats = stats
        self.clock = clock
        self.settings = settings
        self.lookups = lookups
        self.user_stats = user_stats

    def in_flight(self):
        return self.engine.in_flight() if self.engine is not None else []

    def hung(self):
        return self.engine.hung() if self.engine is not None else []

    def cache_entry(self, uid):
        """
        Return the L{CacheEntry} of C{uid}, or L{None} for a uid neither
        the table nor the learned users know.
        """
        known = self.known
        state, i = known.locate(uid)
        if i < 0:
            return None
        st = state.status[i]
        now = self.clock.seconds()
        if st & CHECKED:
            verdict = "failed" if st & FAILED else "ok"
            expires_in = state.expires[i] - now
            if expires_in <= 0:
                verdict += " (expired)"
            age = now - (state.expires[i] - self.settings.cache_interval)
        else:
            verdict, expires_in, age = "unverified", None, None
        flight = self.engine.find(uid) if self.engine is not None else None
        rules = known.rules
        target = rules.alt_dir if st & SERVED_ALT else rules.spool_of(state.table.at(i))
        return CacheEntry(
            verdict, age, expires_in, flight is not None,
            target if target is not None else rules.alt_dir, known.stamp(state, i),
        )

    def describe(self, uid):
        """
        Return C{(state, age)} of C{uid}'s kept check result for a dump:
        C{ok}, C{failed}, C{unverified} (possibly C{+probing}, and
        C{+to-confirm} for a user learned before the last reload), and
        the result's age in whole seconds or C{-}.
        """
        entry = self.cache_entry(uid)
        if entry is None:
            return "unknown", "-"
        state = entry.state.replace(" (expired)", "-expired")
        if entry.probing:
            state += "+probing"
        located, i = self.known.locate(uid)
        if located.status[i] & UNCONFIRMED:
            state += "+to-confirm"
        return state, "-" if entry.age is None else str(int(entry.age))

    def status(self):
        """
        Name/value pairs for the status report: the checks' counters and
        the engine's state, then the user source's.
        """
        counts = self.stats_dict()
        settings = self.settings
        pairs = [("verify", settings.verify), ("cache_interval", settings.cache_interval),
                 ("probe_deadline", settings.deadline)]
        pairs += [(f"cache_{name}", counts[name]) for name in ("hits", "misses")]
        pairs += [
            ("probes_started", counts["started"]),
            ("probes_in_flight", counts["in_flight"]),
            ("probes_hung", len(self.hung())),
            ("probes_failed", counts["failures"]),
            ("probes_failed_daemon", counts["daemon_errors"]),
            *((f"probes_failed.{name}", n) for name, n in sorted(self.stats.failures_by_errno.items())),
            ("probes_late", counts["late"]),
            ("fallbacks", counts["fallbacks"]),
            ("pool_exhausted", counts["exhausted"]),
            *self._engine_pairs(),
        ]
        return pairs + self.user_source()

    def _engine_pairs(self):
        engine = self.engine
        if engine is None:
            return []
        return [
            ("check_processes_max", engine.size),
            ("check_processes", len(engine.processes.alive)),
            ("check_processes_busy", engine.busy()),
            ("check_processes_stuck", engine.stuck()),
            ("check_processes_started", engine.processes.started),
            ("checks_queued", engine.queued()),
            ("checks_expired_queued", engine.expired_count),
            ("checks_refused_queue_full", engine.queue_full_count),
            ("checks_lost", engine.lost_count),
        ]

    def user_source(self):
        """
        Name/value pairs about where the users come from: the table's
        size and source, and the per-user lookups' counters.
        """
        if self.lookups is not None:
            return self.lookups.status(self.known.table, self.known.learned.unconfirmed())
        # A password file: the table is every user; the same names, so
        # that reports read alike whatever the source.
        return user_source_pairs(self.known.table, self.user_stats)

    def stats_dict(self):
        """
        Return every counter by name: cache hits and misses, checks
        started, fallbacks to the alternate spool, checks refused because
        every process was stuck, failed checks, checks that finished
        after their deadline.
        """
        counts = self.stats.as_dict()
        engine = self.engine
        counts["started"] = engine.started_count if engine is not None else 0
        counts["exhausted"] = engine.exhausted_count if engine is not None else 0
        counts["in_flight"] = engine.count() if engine is not None else 0
        return counts
