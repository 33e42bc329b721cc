"""
What the operator sees of a L{hlfs.homes.cache.ProbingResolver}: probes
in flight and hung, one user's cached state, and the counters of the
status report.
"""

from hlfs.core.lookups import user_source_pairs
from hlfs.homes.state import CHECKED, FAILED, SERVED_ALT, UNCONFIRMED, CacheEntry


class ResolverViews:
    """
    The operator's views of L{hlfs.homes.cache.ProbingResolver}, built on
    its C{pool}, C{stats}, C{lookups}, C{_locate} and per-user state.
    """

    def in_flight(self):
        """
        Return the probes in flight (L{FlightInfo}s, with their ages).
        """
        return self.pool.in_flight() if self.pool is not None else []

    def hung(self):
        """
        Return the probes running longer than the deadline.
        """
        return self.pool.hung() if self.pool is not None else []

    def cache_entry(self, uid):
        """
        Return the L{CacheEntry} of C{uid}, or L{None} for a uid neither
        the table nor the learned users know.
        """
        state, i = self._locate(uid)
        if i < 0:
            return None
        st = state.status[i]
        now = self.clock.seconds()
        if st & CHECKED:
            verdict = "failed" if st & FAILED else "ok"
            expires_in = state.expires[i] - now
            if expires_in <= 0:
                verdict += " (expired)"
            age = now - (state.expires[i] - self.cache_interval)
        else:
            verdict, expires_in, age = "unverified", None, None
        flight = self.pool.find(uid) if self.pool is not None else None
        target = self.rules.alt_dir if st & SERVED_ALT else self.rules.spool_of(state.table.at(i))
        return CacheEntry(
            verdict, age, expires_in, flight is not None,
            target if target is not None else self.rules.alt_dir, self._stamp(state, i),
        )

    def describe(self, uid):
        """
        Return C{(state, age)} of C{uid}'s cached probe result for a dump:
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
        located, i = self._locate(uid)
        if located.status[i] & UNCONFIRMED:
            state += "+to-confirm"
        return state, "-" if entry.age is None else str(int(entry.age))

    def status(self):
        """
        Name/value pairs for the status report: the cache's and the
        pool's counters.
        """
        counts = self.stats_dict()
        pairs = [("verify", self.verify), ("cache_interval", self.cache_interval),
                 ("probe_deadline", self.deadline)]
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
            ("pool_threads", self.pool.threads if self.pool is not None else 0),
            ("pool_busy", self.pool.busy() if self.pool is not None else 0),
            *self._checker_pairs(),
        ]
        return pairs + self.user_source()

    def _checker_pairs(self):
        checkers = getattr(self.pool, "checkers", None)
        if checkers is None:
            return []
        return [
            ("check_processes", checkers.processes()),
            ("check_processes_started", checkers.started),
            ("checks_moved", checkers.moved),
        ]

    def user_source(self):
        """
        Name/value pairs about where the users come from: the table's
        size and source, and the per-user lookups' counters.
        """
        if self.lookups is not None:
            return self.lookups.status(self.table, self._learned.unconfirmed())
        # A password file: the table is every user; the same names, so
        # that reports read alike whatever the source.
        return user_source_pairs(self.table, self.user_stats)

    def stats_dict(self):
        """
        Return every counter by name: cache hits and misses, probes
        started, fallbacks to the alternate spool, probes refused because
        the pool was exhausted, failed probes, probes that finished after
        their deadline.
        """
        counts = self.stats.as_dict()
        counts["started"] = self.pool.started_count if self.pool is not None else 0
        counts["exhausted"] = self.pool.exhausted_count if self.pool is not None else 0
        counts["in_flight"] = self.pool.count() if self.pool is not None else 0
        return counts
