"""
L{HomeChecks}: a user's home check, from the resolver's miss to the
result kept.  The job (L{hlfs.homes.records.CheckHome}) is planned in the
reactor thread (whose identity it runs with:
L{hlfs.homes.credentials.Credentials.plan}), run by the engine in a check
process (L{hlfs.homes.engine}), and its result kept for the cache
interval, or for the retry interval when the check failed for hlfs's own
want of resources.  A caller waits at most until its deadline; a result
that comes later is still kept.

The log stays quiet: a home logs one line when a check finds it
unusable, and one when a check finds it usable again, not one per check;
while some homes stay unusable, one line every C{report_interval}
seconds counts them.
"""

import errno as errnos
import os
from collections import Counter

from twisted.logger import Logger
from zope.interface import implementer

from hlfs.homes.interfaces import IHomeChecks
from hlfs.homes.probe import ProbeResult, errno_name, split_spool
from hlfs.homes.records import CheckHome
from hlfs.rpc.limits import LogThrottle

log = Logger(namespace="hlfs.probe")

#: A check failing with one of these says nothing about the home: the
#: daemon itself is short of file descriptors, memory or processes.  Its
#: result is kept only for the retry interval, not the cache interval.
DAEMON_ERRNOS = frozenset((errnos.EMFILE, errnos.ENFILE, errnos.ENOMEM, errnos.EAGAIN,
                           errnos.EINTR))


class CheckStats:
    """
    The counters of home checks, for the console, the status program and
    the metrics.

    @ivar failures_by_errno: failed checks by errno name (C{ENOSPC}): a
        fixed set of names, however many users fail.
    """

    __slots__ = (
        "hits", "misses", "fallbacks", "failures", "late", "daemon_errors", "failures_by_errno",
    )

    def __init__(self):
        self.hits = self.misses = self.fallbacks = self.failures = self.late = 0
        # Checks that failed for the daemon's own want of resources.
        self.daemon_errors = 0
        self.failures_by_errno = Counter()

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__ if name != "failures_by_errno"}


@implementer(IHomeChecks)
class HomeChecks:
    """
    Home checks for the resolver: on the L{hlfs.homes.known.KnownUsers}
    C{known}, run by the L{hlfs.homes.engine.CheckEngine} C{engine}, with
    identities from the L{hlfs.homes.credentials.Credentials}
    C{credentials}.
    """

    def __init__(self, known, engine, credentials, clock, deadline=1.0, cache_interval=300.0,
                 retry_interval=5.0, fsync=False, report_interval=600.0):
        """
        @param deadline: the longest a caller waits for a check.
        @param cache_interval: seconds a check's result is kept.
        @param retry_interval: seconds a check failing with
            L{DAEMON_ERRNOS} (or whose process ended) is kept.
        @param fsync: also fsync the check's test file (a home whose
            server reports errors only at write-back).
        @param report_interval: seconds between two lines counting the
            homes that stay unusable.
        """
        self.known = known
        self.engine = engine
        self.credentials = credentials
        self.clock = clock
        self.deadline = deadline
        self.cache_interval = cache_interval
        self.retry_interval = retry_interval
        self.fsync = fsync
        self.report_interval = report_interval
        self.stats = CheckStats()
        self._daemon_trouble = LogThrottle(clock, log=log)
        self._reported = None  # when the unusable homes were last counted
        self._failed_since = 0  # checks that found a home unusable since

    def check(self, state, i, user, spool, now, budget):
        uid = user.uid
        engine = self.engine
        flight = engine.find(uid)
        if flight is None:
            identity = self.credentials.plan(user, split_spool(spool)[0])
            # A job record's first fields are the Identity's, in order.
            job = CheckHome(*identity, spool, self.fsync)
            flight = engine.submit(uid, spool, job, self._checked, home=uid)
            if flight is None:
                self.stats.fallbacks += 1
                return self.known.serve(state, i, spool, True)
            flight.origin = (state, i, user)
        remaining = min(budget, self.deadline - (now - flight.submitted))
        if remaining <= 0:
            self._overdue(flight)
            return self.known.serve(state, i, spool, True)
        return engine.wait(flight, remaining, self._fallback)

    def _fallback(self, flight):
        self._overdue(flight)
        return self.known.serve_uid(flight.key, True)

    def _overdue(self, flight):
        self.stats.fallbacks += 1
        if flight.late:
            return
        flight.late = True
        fields = dict(path=os.fsdecode(flight.path), user=self._name_of(flight.key),
                      uid=flight.key, deadline=self.deadline,
                      alt=os.fsdecode(self.known.rules.alt_dir))
        if flight.started is None:
            log.warn("home check of {path} for {user} (uid {uid}) not started after {deadline} s: "
                     "every home-check process is busy; answering {alt} meanwhile", **fields)
        else:
            log.warn("home check of {path} for {user} (uid {uid}) still running after "
                     "{deadline} s; answering {alt} meanwhile", **fields)

    def _name_of(self, uid):
        state, i = self.known.locate(uid)
        return "?" if i < 0 else os.fsdecode(state.table.at(i).name)

    def _checked(self, flight, answer):
        """
        Keep a finished check's result (in the reactor thread) and return
        the answer for the callers waiting on it.
        """
        uid, spool, job = flight.key, flight.path, flight.job
        if answer is None:
            result = ProbeResult(False, errnos.EINTR, spool, "its home-check process ended")
        else:
            result = ProbeResult(answer.ok, answer.errno, answer.path, answer.reason)
            self.credentials.finished(job, job.home, answer.kept)
        known = self.known
        state, i, user = flight.origin
        # The same table's state: the same user at the same place.  After
        # a reload, or for a learned user (whose place moves as others
        # come and go), the user is found again and compared below.
        moved = state is not known.state
        if moved:
            state, i = known.locate(uid)
            user = state.table.at(i) if i >= 0 else None
        if flight.late:
            self.stats.late += 1
            log.info(
                "home check of {path} for {user} (uid {uid}) finished after {age:.1f} s: {outcome}",
                path=os.fsdecode(spool), user="?" if user is None else os.fsdecode(user.name),
                uid=uid,
                age=self.clock.seconds() - flight.submitted,
                outcome="ok" if result.ok else errno_name(result.errno),
            )
        if user is None or (moved and known.rules.spool_of(user) != spool):
            # The table changed under the check: its result is not about
            # this user's home any more.
            return known.peek(uid)
        keep, unusable = self.cache_interval, not result.ok
        if not result.ok and result.errno in DAEMON_ERRNOS:
            self.stats.daemon_errors += 1
            keep, unusable = min(keep, self.retry_interval), None
            self._daemon_trouble.warn(
                result.errno,
                "cannot check the home of {user} (uid {uid}): hlfs itself is short of "
                "resources ({failure}), not the home's fault; mail goes to {alt} until "
                "a new check in {retry:g} s",
                user=os.fsdecode(user.name), uid=uid, alt=os.fsdecode(known.rules.alt_dir),
                failure=result.describe(), retry=keep,
            )
        elif not result.ok:
            self.stats.failures += 1
            self.stats.failures_by_errno[errno_name(result.errno)] += 1
        changed = known.record_check(state, i, result.ok, self.clock.seconds() + keep, unusable)
        if changed:
            self._log_change(user, result)
        elif unusable:
            self._count_unusable()
        return known.serve(state, i, spool, not result.ok)

    def _log_change(self, user, result):
        fields = dict(user=os.fsdecode(user.name), uid=user.uid,
                      alt=os.fsdecode(self.known.rules.alt_dir))
        if result.ok:
            log.info("home of {user} (uid {uid}) usable again: mail goes to {spool}",
                     spool=os.fsdecode(result.path), **fields)
            return
        log.warn("home of {user} (uid {uid}) unusable, mail goes to {alt}: {failure}",
                 failure=result.describe(), **fields)
        if self._reported is None:
            self._reported = self.clock.seconds()

    def _count_unusable(self):
        # A home still unusable: counted, and all of them in one line now
        # and then, not one line per check.
        self._failed_since += 1
        now = self.clock.seconds()
        if self._reported is not None and now - self._reported < self.report_interval:
            return
        count, users = self.known.unusable()
        if count:
            names = ", ".join(os.fsdecode(u.name) for u in users)
            log.warn(
                "{count} home(s) still unusable, their mail goes to {alt}: {names}{more} "
                "({checks} checks found them so in the last {seconds:.0f} s)",
                count=count, alt=os.fsdecode(self.known.rules.alt_dir), names=names,
                more=", ..." if count > len(users) else "", checks=self._failed_since,
                seconds=now - (self._reported if self._reported is not None else now),
            )
        self._reported = now
        self._failed_since = 0
