"""
L{ProbingResolver}: the L{hlfs.core.resolver.ILinkResolver} that answers
from a per-uid cache of home checks (L{hlfs.homes.state}) and runs a
L{hlfs.homes.probe.HomeProbe} in the L{hlfs.homes.pool.ProbePool} on a
miss, never keeping a caller past the deadline.
"""

import errno as errnos
import functools
import os

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from hlfs.core.lookups import LookupStats, UserLookups, guard_reload
from hlfs.core.resolver import ChangeClock, ILinkResolver, Resolution
from hlfs.homes import nss
from hlfs.homes.directory import DirectoryUsers
from hlfs.homes.views import ResolverViews
from hlfs.homes.checkers import CheckerProcesses
from hlfs.homes.pool import LookupPool, ProbePool
from hlfs.homes.probe import Credentials, HomeProbe, ProbeResult, errno_name
from hlfs.rpc.limits import LogThrottle
from hlfs.homes.state import (
    CHECKED, CLEAR_CHECKED, DAEMON_ERRNOS, FAILED, FOREVER, SERVED_ALT, UNCONFIRMED, LearnedState,
    ProbeStats, UserState, remap,
)

log = Logger(namespace="hlfs.probe")


class ReloadRefused(Exception):
    """
    A reload's table lost users by accident; the previous one stays.
    """


@implementer(ILinkResolver)
class ProbingResolver(DirectoryUsers, ResolverViews):
    """
    Resolve the home link, verifying the home with a L{HomeProbe}.

    A cached probe result (good or bad) answers at once for the cache
    interval.  Otherwise the caller waits for the user's probe (started
    now, or shared with the callers already waiting on it) until the
    probe is C{deadline} seconds old, then gets the alternate spool; a
    probe that finishes later still fills the cache.  A user's link time
    (C{Resolution.changed}) moves, strictly forward, exactly when the
    answer for that user changes, and on reloads that change the table.

    Reload with L{reload} (in threads; see L{hlfs.homes.tableload} for a loader
    that keeps the parsing out of the daemon), not L{set_table}, whose
    remapping runs in the calling thread.

    @ivar table: the current L{hlfs.core.users.UserTable}.
    @ivar stats: a L{ProbeStats}.
    """

    def __init__(self, table, rules, clock, pool, cache_interval=300.0, deadline=1.0,
                 verify=True, probe=None, lookups=None, reload_guard=None, reactor=None,
                 retry_interval=5.0):
        """
        @param rules: the L{hlfs.core.resolver.SpoolRules}.
        @param clock: the clock of cache expiry, deadlines and link times.
        @param pool: the L{ProbePool} probes run in.
        @param cache_interval: seconds a probe result (good or bad) is used
            (hlfsd's C{-c}).
        @param deadline: the longest a caller waits for a probe before it
            gets the alternate spool.
        @param verify: L{False} for hlfsd's C{-n}: no probes, the link
            points into the home whenever the table has a usable one.
        @param probe: the blocking check, a L{HomeProbe} by default.
        @param lookups: the L{hlfs.core.lookups.UserLookups} asked for a
            uid or name the table lacks, or L{None} (the table is all).
        @param reload_guard: C{guard(old_table, new_table)} returning
            C{(table, verdict)} in the reload's thread (see
            L{hlfs.core.lookups.guard_reload}), or L{None}.
        @param retry_interval: seconds a check failing with L{DAEMON_ERRNOS} is kept.
        @param reactor: the reactor whose thread pool runs reloads;
            C{clock} by default.
        """
        self.rules = rules
        self.clock = clock
        self.pool = pool
        self.cache_interval = cache_interval
        self.deadline = deadline
        self.verify = verify
        self.retry_interval = retry_interval
        self._daemon_trouble = LogThrottle(clock, log=log)
        self.probe = probe if probe is not None else HomeProbe()
        self.reactor = clock if reactor is None else reactor
        if pool is not None and pool.stuck_after is None:
            pool.stuck_after = deadline
        self.changes = ChangeClock(clock)
        self.stats = ProbeStats()
        self._epochs = [self.changes.now()]
        self._unknown = self._epochs[0]
        self._state = UserState(table, 0)
        self.lookups = lookups
        # One set of user-source counters, shared with the lookups.
        self.user_stats = lookups.stats if lookups is not None else LookupStats()
        self.reload_guard = reload_guard
        self._learned = LearnedState(0)
        self.max_learned = lookups.max_cached if lookups is not None else 0
        self._dirty = None  # positions changed while a reload runs
        self._flush_after_reload = False
        self._reloading = None
        # Moves whenever an answer may change other than by expiry: the
        # reply cache drops everything it holds then.
        self.generation = 0

    @property
    def table(self):
        return self._state.table

    # -- the state of one user

    def _stamp(self, state, i):
        value = state.changed[i]
        return value if value > 0 else self._epochs[-value]

    def _serve(self, state, i, spool, alt):
        """
        Return the answer for position C{i}, recording that it was given:
        the user's link time moves exactly when the answer changes.
        """
        st = state.status[i]
        if bool(st & SERVED_ALT) != alt:
            state.status[i] = st ^ SERVED_ALT
            stamp = self.changes.now()
            state.changed[i] = stamp
            self.generation += 1
            self._touch(state, i)
        else:
            stamp = self._stamp(state, i)
        return Resolution(self.rules.alt_dir if alt else spool, stamp)

    def _touch(self, state, i):
        if self._dirty is not None and state is self._state:
            self._dirty.add(i)

    def _serve_uid(self, uid, alt):
        state, i = self._locate(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        spool = self.rules.spool_of(state.table.at(i))
        return self._serve(state, i, spool, alt or spool is None)

    # -- ILinkResolver

    def resolve(self, uid):
        state, i = self._locate(uid)
        if i < 0:
            if self.lookups is None:
                return Resolution(self.rules.alt_dir, self._unknown)
            return self._resolve_unlisted(uid)
        if state.status[i] & UNCONFIRMED:
            self._confirm(state, i)
        return self._resolve_at(state, i, self.clock.seconds(), self.deadline)

    def _resolve_at(self, state, i, now, budget):
        user = state.table.at(i)
        uid = user.uid
        spool = self.rules.spool_of(user)
        if spool is None or not self.verify:
            return self._serve(state, i, spool, spool is None)
        st = state.status[i]
        if st & CHECKED and now < state.expires[i]:
            self.stats.hits += 1
            failed = bool(st & FAILED)
            if failed == bool(st & SERVED_ALT):
                # The usual case, inline: the same answer as last time.
                value = state.changed[i]
                return Resolution(
                    self.rules.alt_dir if failed else spool,
                    value if value > 0 else self._epochs[-value],
                )
            return self._serve(state, i, spool, failed)
        self.stats.misses += 1
        pool = self.pool
        flight = pool.find(uid)
        if flight is None and self._needs_lookup(user) \
                and not self._groups_known_before(user, spool):
            return self._look_up_groups(state, i, spool, now, budget)
        if flight is None:
            flight = pool.submit(uid, spool, self.probe, (user, spool), self._probed)
            if flight is None:
                self.stats.fallbacks += 1
                return self._serve(state, i, spool, True)
        remaining = min(budget, self.deadline - (now - flight.submitted))
        if remaining <= 0:
            self._fallback(flight)
            return self._serve(state, i, spool, True)
        return pool.wait(flight, remaining, self._fallback_answer)

    def _fallback(self, flight):
        self.stats.fallbacks += 1
        if not flight.late:
            flight.late = True
            log.warn(
                "home probe of {path} for {user} (uid {uid}) still running after "
                "{deadline} s; answering {alt} meanwhile",
                path=os.fsdecode(flight.path), user=self._name_of(flight.key), uid=flight.key,
                deadline=self.deadline, alt=os.fsdecode(self.rules.alt_dir),
            )

    def _name_of(self, uid):
        state, i = self._locate(uid)
        user = state.table.at(i) if i >= 0 else None
        return "?" if user is None else os.fsdecode(user.name)

    def _fallback_answer(self, flight):
        self._fallback(flight)
        return self._serve_uid(flight.key, True)

    def _probed(self, flight, result):
        """
        Record a finished probe (in the reactor thread) and return the
        answer for the callers waiting on it.
        """
        uid, spool = flight.key, flight.path
        if result is None:
            result = ProbeResult(False, errnos.EIO, spool, "the probe raised")
        state, i = self._locate(uid)
        user = state.table.at(i) if i >= 0 else None
        name = os.fsdecode(user.name) if user is not None else "?"
        if flight.late:
            self.stats.late += 1
            log.info(
                "home probe of {path} for {user} (uid {uid}) finished after {age:.1f} s: {outcome}",
                path=os.fsdecode(spool), user=name, uid=uid,
                age=self.clock.seconds() - flight.submitted,
                outcome="ok" if result.ok else errno_name(result.errno),
            )
        keep = self.cache_interval
        if not result.ok and result.errno in DAEMON_ERRNOS:
            self.stats.daemon_errors += 1
            keep = min(keep, self.retry_interval)
            self._daemon_trouble.warn(
                result.errno,
                "cannot check the home of {user} (uid {uid}): hlfs itself is short of "
                "resources ({failure}), not the home's fault; mail goes to {alt} until "
                "a new check in {retry:g} s",
                user=name, uid=uid, alt=os.fsdecode(self.rules.alt_dir), failure=result.describe(),
                retry=keep,
            )
        elif not result.ok:
            self.stats.failures += 1
            self.stats.failures_by_errno[errno_name(result.errno)] += 1
            log.warn(
                "home of {user} (uid {uid}) unusable, mail goes to {alt}: {failure}",
                user=name, uid=uid, alt=os.fsdecode(self.rules.alt_dir),
                failure=result.describe(),
            )
        if user is None or self.rules.spool_of(user) != spool:
            # The table changed under the probe: its result is not about
            # this user's home any more.
            return self.peek(uid)
        state.status[i] = ((state.status[i] & (SERVED_ALT | UNCONFIRMED)) | CHECKED
                           | (0 if result.ok else FAILED))
        state.expires[i] = self.clock.seconds() + keep
        self._touch(state, i)
        return self._serve(state, i, spool, not result.ok)

    def valid_until(self, uid):
        state, i = self._locate(uid)
        if i < 0 and self.lookups is not None:
            # The next call may find the user in the name service.
            return 0.0
        if i >= 0 and state.status[i] & UNCONFIRMED:
            # The next call asks the name service to confirm the user.
            return 0.0
        if i < 0 or not self.verify or self.rules.spool_of(state.table.at(i)) is None:
            return FOREVER
        if state.status[i] & CHECKED:
            return state.expires[i]
        return 0.0

    def peek(self, uid):
        state, i = self._locate(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        spool = self.rules.spool_of(state.table.at(i))
        if spool is None or not self.verify:
            return self._serve(state, i, spool, spool is None)
        alt = bool(state.status[i] & SERVED_ALT)
        return Resolution(self.rules.alt_dir if alt else spool, self._stamp(state, i))

    def mailbox(self, name, wait=True):
        """
        Return C{~NAME/<subdir>/NAME}, or the alternate spool's C{NAME}
        while NAME's home is unusable.  NAME's home is checked as for
        L{resolve} (the same probe, deadline, sharing and cache), unless
        C{wait} is false: then the last known answer, at once.
        """
        state = self._state
        user = state.table.by_name(name)
        if user is None:
            state = self._learned
            user = state.by_name(name)
            if user is None:
                return None
        return self._mailbox_at(state, user, wait)

    def _mailbox_at(self, state, user, wait=True):
        i = state.table.index_of(user.uid)
        if wait and self.verify and state.table.at(i) == user:
            answer = self.resolve(user.uid)
            if isinstance(answer, Resolution):
                return self._mailbox_of(user, answer)
            return answer.addCallback(lambda r: self._mailbox_of(user, r))
        if wait and state.status[i] & UNCONFIRMED:
            self._confirm(state, i)
        target = self.rules.mailbox_of(user)
        if self.verify and state.status[i] & SERVED_ALT:
            target = self.rules.alt_dir + b"/" + user.name
        return Resolution(target, self._stamp(state, i))

    def _mailbox_of(self, user, home):
        """
        The mailbox link of C{user} given the answer for its home link.
        """
        if home.target == self.rules.alt_dir:
            return Resolution(self.rules.alt_dir + b"/" + user.name, home.changed)
        return Resolution(self.rules.mailbox_of(user), home.changed)

    def flush(self, uid=None):
        """
        Forget cached probe results, of C{uid} or of everybody: the next
        request probes again.  Link values stay as they are until then.
        """
        state = self._state
        self.generation += 1
        if uid is None:
            state.status[:] = state.status.translate(CLEAR_CHECKED)
            learned = self._learned
            learned.status[:] = learned.status.translate(CLEAR_CHECKED)
            if self._dirty is not None:
                self._flush_after_reload = True
            return
        state, i = self._locate(uid)
        if i >= 0:
            state.status[i] &= ~(CHECKED | FAILED)
            self._touch(state, i)

    def footprint(self):
        """
        Return the bytes held by the table and the per-user state.
        """
        return (self._state.table.footprint() + self._state.footprint()
                + self._learned.footprint())

    # -- reloading the table

    def set_table(self, table):
        """
        Swap in C{table} now (in the calling thread): users whose entry
        did not change keep their cached state.
        """
        if self._reloading is not None:
            raise RuntimeError("a reload is running")
        state, changed = remap(self._state, table, len(self._epochs))
        self._install(state, changed, self._listed_learned(table))

    def reload(self, loader):
        """
        Load a new table with C{loader()} in a thread, remap the per-user
        state there too, and swap both in at once.  Serving goes on
        meanwhile; a reload asked for while one runs shares it.

        @return: a Deferred that fires with the new table, or with
            L{None} (and a log line) if C{loader} failed.
        """
        if self._reloading is not None:
            d = Deferred()
            self._reloading.append(d)
            return d
        self._reloading = []
        self._dirty = set()
        self._flush_after_reload = False
        old = self._state
        epoch = len(self._epochs)
        reactor = self.reactor

        guard = self.reload_guard

        def work():
            table = loader()
            verdict = None
            if guard is not None:
                table, verdict = guard(old.table, table)
                if table is old.table and verdict.startswith("refused"):
                    raise ReloadRefused(verdict)
            return remap(old, table, epoch) + (verdict, self._listed_learned(table))

        d = deferToThreadPool(reactor, reactor.getThreadPool(), work)
        d.addCallbacks(self._reloaded, self._reload_failed, callbackArgs=(old,))
        return d

    def _reloaded(self, result, old):
        state, changed, verdict, listed = result
        self._record_reload(verdict or "accepted")
        if verdict is not None and verdict != "accepted":
            log.info("reload: {verdict}", verdict=verdict)
        dirty, self._dirty = self._dirty, None
        # Whatever happened to the old state while the thread copied it.
        for i in dirty:
            uid = old.table.at(i).uid
            j = state.table.index_of(uid)
            if j >= 0 and state.table.at(j) == old.table.at(i):
                state.status[j] = old.status[i]
                state.expires[j] = old.expires[i]
                state.changed[j] = old.changed[i]
        if self._flush_after_reload:
            state.status[:] = state.status.translate(CLEAR_CHECKED)
        self._install(state, changed, listed)
        return self._reload_done(state.table)

    def _reload_failed(self, failure):
        self._dirty = None
        if failure.check(ReloadRefused):
            verdict = failure.getErrorMessage()
            self._record_reload(verdict)
            log.warn("reload {verdict}", verdict=verdict)
            return self._reload_done(None)
        self._record_reload(f"refused: the load failed: {failure.getErrorMessage()}")
        log.error(
            "reloading the user table failed, keeping the {count} users loaded: {error}",
            count=len(self._state.table), error=failure.getErrorMessage() or failure.type.__name__,
        )
        return self._reload_done(None)

    def _reload_done(self, table):
        waiting, self._reloading = self._reloading, None
        for d in waiting:
            d.callback(table)
        return table

    def _install(self, state, changed, listed):
        old_table = self._state.table
        # The stamp is taken now, in the reactor thread: later than any
        # answer given before the swap.
        stamp = self.changes.now()
        self._epochs.append(stamp)
        if state.epoch != len(self._epochs) - 1:
            raise AssertionError("reload epochs out of order")
        if changed:
            self._unknown = stamp
        self._state = state
        # Learned users stay, served as they were until the name service
        # confirms them: a directory down right now diverts none of them.
        self._carry_learned(state, listed)
        if self.lookups is not None:
            self.lookups.forget()
        self.generation += 1
        forget = getattr(self.probe, "forget", None)
        if forget is not None and state.table is not old_table:
            forget()


def resolver_for(config, table, rules, reactor):
    """
    Return C{(resolver, pool)} for the daemon, from its
    L{hlfs.daemon.config.Config} (C{cache_interval}, C{probe_deadline},
    C{probe_threads}, C{lookup_threads}, C{user_cache}, C{verify},
    C{password_file}): a L{ProbingResolver} on C{reactor}'s clock and its
    L{ProbePool}.  When the users come from the name service, the
    resolver's C{lookups} ask it for users one at a time, in a
    L{hlfs.homes.pool.LookupPool} of their own (C{lookups.pool}).  The
    service starts the pools in C{startService} and stops them in
    C{stopService}.
    """
    # With checks off (-n) no home-check process starts: none would work.
    checkers = CheckerProcesses(config.probe_threads, reactor) if config.verify else None
    pool = ProbePool(threads=config.probe_threads, reactor=reactor,
                     stuck_after=config.probe_deadline, checkers=checkers)
    lookups = guard = None
    if config.password_file is None:
        lookup_pool = LookupPool(threads=config.lookup_threads, reactor=reactor,
                                 stuck_after=config.probe_deadline,
                                 max_flights=config.lookup_threads * 16)
        lookups = UserLookups(
            lookup_pool, nss.account_by_uid, nss.account_by_name, reactor,
            deadline=config.probe_deadline, max_cached=config.user_cache,
        )
        credentials = Credentials(files=nss.FilesAccounts())
        guard = functools.partial(guard_reload, confirm=nss.account_by_uid)
    else:
        credentials = Credentials(nss=False)
    probe = HomeProbe(credentials=credentials)
    resolver = ProbingResolver(
        table, rules, reactor, pool, cache_interval=config.cache_interval,
        deadline=config.probe_deadline, verify=config.verify, probe=probe,
        lookups=lookups, reload_guard=guard, retry_interval=config.retry_interval,
        reactor=reactor,
    )
    return resolver, pool
