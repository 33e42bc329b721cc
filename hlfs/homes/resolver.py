"""
L{HomeResolver}: the L{hlfs.core.resolver.ILinkResolver} the daemon
serves with.  A user's kept check result answers at once for the cache
interval; on a miss its home is checked in a check process, and the
caller waits at most until its deadline, then gets the alternate spool
(a result that comes later is still kept).

It is composed of parts of its own, each behind an interface of
L{hlfs.homes.interfaces}: the users known and their state
(L{hlfs.homes.known}), the home checks (L{hlfs.homes.checks}) run by the
engine (L{hlfs.homes.engine}), the users the table lacks
(L{hlfs.homes.directory}), the reloads (L{hlfs.homes.reload}) and the
operator's views (L{hlfs.homes.views}).  L{resolver_for} builds it for
the daemon.
"""

import functools

from twisted.internet.defer import Deferred
from zope.interface import implementer

from hlfs.core.lookups import LookupStats, UserLookups, guard_reload
from hlfs.core.resolver import ILinkResolver, Resolution
from hlfs.homes import nss
from hlfs.homes.checks import HomeChecks
from hlfs.homes.credentials import Credentials
from hlfs.homes.directory import DirectoryUsers
from hlfs.homes.engine import CheckEngine
from hlfs.homes.known import KnownUsers
from hlfs.homes.reload import TableReloads
from hlfs.homes.state import CHECKED, FAILED, SERVED_ALT, UNCONFIRMED
from hlfs.homes.threads import LookupThreads
from hlfs.homes.views import OperatorViews

FOREVER = float("inf")


@implementer(ILinkResolver)
class HomeResolver:
    """
    Resolve the home link, checking the home in a check process.

    @ivar known: the L{hlfs.homes.interfaces.IKnownUsers}.
    @ivar checks: the L{hlfs.homes.interfaces.IHomeChecks}.
    @ivar engine: the L{hlfs.homes.interfaces.ICheckEngine}.
    @ivar directory: the L{hlfs.homes.interfaces.IDirectoryUsers}, or
        L{None} when the table is every user.
    @ivar reloads: the L{hlfs.homes.interfaces.IReloads}.
    @ivar views: the L{hlfs.homes.interfaces.IOperatorViews}.
    """

    def __init__(self, table, rules, clock, engine, cache_interval=300.0, deadline=1.0,
                 verify=True, credentials=None, lookups=None, reload_guard=None, reactor=None,
                 retry_interval=5.0, fsync=False):
        """
        @param rules: the L{hlfs.core.resolver.SpoolRules}.
        @param clock: the clock of cache expiry, deadlines and link times.
        @param engine: the L{hlfs.homes.engine.CheckEngine} checks run in.
        @param cache_interval: seconds a check result (good or bad) is
            used (hlfsd's C{-c}).
        @param deadline: the longest a caller waits for a check before it
            gets the alternate spool.
        @param verify: L{False} for hlfsd's C{-n}: no checks, the link
            points into the home whenever the table has a usable one.
        @param credentials: the L{hlfs.homes.credentials.Credentials}
            checks run with; by default, from the name service.
        @param lookups: the L{hlfs.core.lookups.UserLookups} asked for a
            uid or name the table lacks, or L{None} (the table is all).
        @param reload_guard: see L{hlfs.homes.reload.TableReloads}.
        @param reactor: the reactor whose thread pool runs reloads;
            C{clock} by default.
        @param retry_interval: seconds a check failing for hlfs's own want
            of resources is kept.
        """
        self.rules = rules
        self.clock = clock
        self.engine = engine
        self.cache_interval = cache_interval
        self.deadline = deadline
        self.verify = verify
        self.credentials = credentials if credentials is not None else Credentials()
        self.lookups = lookups
        # One set of user-source counters, shared with the lookups.
        self.user_stats = lookups.stats if lookups is not None else LookupStats()
        self.known = KnownUsers(table, rules, clock,
                                lookups.max_cached if lookups is not None else 0)
        self.checks = HomeChecks(self.known, engine, self.credentials, clock, deadline,
                                 cache_interval, retry_interval, fsync)
        self.stats = self.checks.stats
        self.directory = None
        if lookups is not None:
            self.directory = DirectoryUsers(self.known, lookups, self.credentials, clock, deadline)
        self.reloads = TableReloads(self.known, clock if reactor is None else reactor,
                                    self.user_stats, self.directory, reload_guard,
                                    (self.credentials.forget,))
        self.views = OperatorViews(self.known, engine, self.stats, clock, self, lookups,
                                   self.user_stats)

    @property
    def table(self):
        return self.known.table

    @property
    def generation(self):
        return self.known.generation

    # -- ILinkResolver

    def resolve(self, uid):
        known = self.known
        state, i = known.locate(uid)
        if i < 0:
            if self.directory is None:
                return known.unknown()
            asked = self.clock.seconds()
            found = self.directory.find_uid(uid)
            if isinstance(found, Deferred):
                return found.addCallback(self._resolve_found, asked)
            return self._resolve_found(found, asked)
        if state.status[i] & UNCONFIRMED:
            self.directory.confirm(state, i)
        return self._resolve_at(state, i, self.clock.seconds(), self.deadline)

    def _resolve_found(self, found, asked):
        if found is None:
            return self.known.unknown()
        now = self.clock.seconds()
        return self._resolve_at(*found, now, self.deadline - (now - asked))

    def _resolve_at(self, state, i, now, budget):
        user = state.table.at(i)
        spool = self.rules.spool_of(user)
        if spool is None or not self.verify:
            return self.known.serve(state, i, spool, spool is None)
        st = state.status[i]
        if st & CHECKED and now < state.expires[i]:
            self.stats.hits += 1
            failed = bool(st & FAILED)
            if failed == bool(st & SERVED_ALT):
                # The usual case, inline: the same answer as last time.
                value = state.changed[i]
                return Resolution(
                    self.rules.alt_dir if failed else spool,
                    value if value > 0 else self.known.epochs[-value],
                )
            return self.known.serve(state, i, spool, failed)
        self.stats.misses += 1
        directory = self.directory
        if directory is not None and self.engine.find(user.uid) is None \
                and directory.needs_groups(user, spool):
            d = directory.look_up_groups(user, spool, now, budget)
            if d is False:
                self.stats.fallbacks += 1
                return self.known.serve(state, i, spool, True)
            return d.addCallback(self._groups_known, user.uid, now, budget)
        return self.checks.check(state, i, user, spool, now, budget)

    def _groups_known(self, known_groups, uid, asked, budget):
        if not known_groups:
            self.stats.fallbacks += 1
            return self.known.serve_uid(uid, True)
        state, i = self.known.locate(uid)
        if i < 0:
            return self.known.unknown()
        now = self.clock.seconds()
        return self._resolve_at(state, i, now, budget - (now - asked))

    def valid_until(self, uid):
        state, i = self.known.locate(uid)
        if i < 0:
            # With a name service, the next call may find the user there.
            return FOREVER if self.directory is None else 0.0
        st = state.status[i]
        if st & UNCONFIRMED:
            # The next call asks the name service to confirm the user.
            return 0.0
        if not self.verify:
            return FOREVER
        if st & CHECKED:
            # Only a user with a spool is checked, and a reload keeps a
            # result only for an unchanged entry: no spool to look up.
            return state.expires[i]
        return FOREVER if self.rules.spool_of(state.table.at(i)) is None else 0.0

    def peek(self, uid):
        return self.known.peek(uid, self.verify)

    def mailbox(self, name, wait=True):
        """
        Return C{~NAME/<subdir>/NAME}, or the alternate spool's C{NAME}
        while NAME's home is unusable.  NAME's home is checked as for
        L{resolve} (the same check, deadline, sharing and cache), unless
        C{wait} is false: then the last known answer, at once.
        """
        known = self.known
        state = known.state
        user = state.table.by_name(name)
        if user is None:
            state = known.learned
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
            self.directory.confirm(state, i)
        target = self.rules.mailbox_of(user)
        if self.verify and state.status[i] & SERVED_ALT:
            target = self.rules.alt_dir + b"/" + user.name
        return Resolution(target, self.known.stamp(state, i))

    def _mailbox_of(self, user, home):
        """
        The mailbox link of C{user} given the answer for its home link.
        """
        if home.target == self.rules.alt_dir:
            return Resolution(self.rules.alt_dir + b"/" + user.name, home.changed)
        return Resolution(self.rules.mailbox_of(user), home.changed)

    def find_mailbox(self, name):
        """
        Like L{mailbox}, and for a name neither the table nor the learned
        users know, ask the name service (within the deadline): a
        Resolution, L{None}, or a Deferred firing with one of them.
        """
        found = self.mailbox(name)
        if found is not None or self.directory is None:
            return found
        found = self.directory.find_name(name)
        if isinstance(found, Deferred):
            return found.addCallback(self._found_mailbox)
        return self._found_mailbox(found)

    def _found_mailbox(self, found):
        if found is None:
            return None
        state, i = found
        return self._mailbox_at(state, state.table.at(i))

    # -- operations

    def flush(self, uid=None):
        """
        Forget kept check results, of C{uid} or of everybody: the next
        request checks again.  Link values stay as they are until then.
        """
        if self.known.flush(uid):
            self.reloads.flushed()

    def reload(self, loader):
        """
        Reload the table with C{loader()}: see L{hlfs.homes.reload}.
        """
        return self.reloads.reload(loader)

    def set_table(self, table):
        self.reloads.set_table(table)

    def user_named(self, name):
        return self.known.user_named(name)

    def learned_users(self):
        return list(self.known.learned)

    def footprint(self):
        return self.known.footprint()

    # -- the operator's views (L{hlfs.homes.views})

    def status(self):
        return self.views.status()

    def stats_dict(self):
        return self.views.stats_dict()

    def cache_entry(self, uid):
        return self.views.cache_entry(uid)

    def describe(self, uid):
        return self.views.describe(uid)

    def in_flight(self):
        return self.views.in_flight()

    def hung(self):
        return self.views.hung()

    def user_source(self):
        return self.views.user_source()


def resolver_for(config, table, rules, reactor):
    """
    Return C{(resolver, engine)} for the daemon, from its
    L{hlfs.daemon.config.Config} (C{cache_interval}, C{probe_deadline},
    C{home_checks}, C{lookup_threads}, C{user_cache}, C{verify},
    C{password_file}): a L{HomeResolver} on C{reactor}'s clock and its
    L{CheckEngine}.  When the users come from the name service, the
    resolver's C{lookups} ask it for users one at a time, in
    L{LookupThreads} of their own (C{lookups.pool}).  The service starts
    the engine and the lookup threads before it serves, and stops them
    when it stops.
    """
    # Started with -n too: root's lock files are jobs of the same engine.
    engine = CheckEngine(config.home_checks, reactor, stuck_after=config.probe_deadline)
    lookups = guard = None
    if config.password_file is None:
        threads = LookupThreads(config.lookup_threads, reactor, stuck_after=config.probe_deadline,
                                max_flights=config.lookup_threads * 16)
        lookups = UserLookups(
            threads, nss.account_by_uid, nss.account_by_name, reactor,
            deadline=config.probe_deadline, max_cached=config.user_cache,
        )
        credentials = Credentials(files=nss.FilesAccounts())
        guard = functools.partial(guard_reload, confirm=nss.account_by_uid)
    else:
        credentials = Credentials(nss=False)
    resolver = HomeResolver(
        table, rules, reactor, engine, cache_interval=config.cache_interval,
        deadline=config.probe_deadline, verify=config.verify, credentials=credentials,
        lookups=lookups, reload_guard=guard, retry_interval=config.retry_interval,
        reactor=reactor,
    )
    return resolver, engine
