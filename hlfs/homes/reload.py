"""
L{TableReloads}: the user table's reloads, while serving goes on.

The new table is loaded (by the loader given, in a child process: see
L{hlfs.homes.tableload}) and checked (the reload guard: a list cut short
by a directory that is down is refused) in a thread of the reactor's
pool, which also remaps the per-user state onto it
(L{hlfs.homes.state.remap}); the reactor thread then swaps both in at
once.  Users whose entry did not change keep their check result and link
time; whatever happened to the old state while the thread copied it is
copied over at the swap.  The learned users stay, to be confirmed
(L{hlfs.homes.directory}).
"""

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from hlfs.homes.interfaces import IReloads
from hlfs.homes.state import CLEAR_CHECKED, remap

log = Logger(namespace="hlfs.probe")


class ReloadRefused(Exception):
    """
    A reload's table lost users by accident; the previous one stays.
    """


@implementer(IReloads)
class TableReloads:
    """
    Reloads of C{known}'s table.

    @ivar stats: the L{hlfs.core.lookups.LookupStats} where each reload's
        verdict is recorded.
    """

    def __init__(self, known, reactor, stats, directory=None, guard=None, forget=()):
        """
        @param known: the L{hlfs.homes.interfaces.IKnownUsers}.
        @param reactor: the reactor whose thread pool runs reloads.
        @param directory: the L{hlfs.homes.interfaces.IDirectoryUsers}
            whose learned users are carried across, or L{None}.
        @param guard: C{guard(old_table, new_table)} returning C{(table,
            verdict)} in the reload's thread (see
            L{hlfs.core.lookups.guard_reload}), or L{None}.
        @param forget: functions called when a reload brings a new table
            (what was found about users is asked for again).
        """
        self.known = known
        self.reactor = reactor
        self.stats = stats
        self.directory = directory
        self.guard = guard
        self.forget = forget
        self._reloading = None  # the callers' Deferreds while a reload runs
        self._flush_after = False

    def flushed(self):
        """
        Every check result was just flushed: a reload running now flushes
        the state it installs too.
        """
        if self._reloading is not None:
            self._flush_after = True

    def set_table(self, table):
        """
        Swap in C{table} now (in the calling thread): users whose entry
        did not change keep their state.
        """
        if self._reloading is not None:
            raise RuntimeError("a reload is running")
        state, changed = remap(self.known.state, table, len(self.known.epochs))
        self._install(state, changed, self._listed(table))

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
        self._flush_after = False
        known = self.known
        known.dirty = set()
        old = known.state
        epoch = len(known.epochs)
        guard = self.guard

        def work():
            table = loader()
            verdict = None
            if guard is not None:
                table, verdict = guard(old.table, table)
                if table is old.table and verdict.startswith("refused"):
                    raise ReloadRefused(verdict)
            return remap(old, table, epoch) + (verdict, self._listed(table))

        reactor = self.reactor
        d = deferToThreadPool(reactor, reactor.getThreadPool(), work)
        d.addCallbacks(self._reloaded, self._failed, callbackArgs=(old,))
        return d

    def _listed(self, table):
        return [] if self.directory is None else self.directory.listed_learned(table)

    def _reloaded(self, result, old):
        state, changed, verdict, listed = result
        self._record(verdict or "accepted")
        if verdict is not None and verdict != "accepted":
            log.info("reload: {verdict}", verdict=verdict)
        dirty, self.known.dirty = self.known.dirty, None
        # Whatever happened to the old state while the thread copied it.
        for i in dirty:
            uid = old.table.at(i).uid
            j = state.table.index_of(uid)
            if j >= 0 and state.table.at(j) == old.table.at(i):
                state.status[j] = old.status[i]
                state.expires[j] = old.expires[i]
                state.changed[j] = old.changed[i]
        if self._flush_after:
            state.status[:] = state.status.translate(CLEAR_CHECKED)
        self._install(state, changed, listed)
        return self._done(state.table)

    def _failed(self, failure):
        self.known.dirty = None
        if failure.check(ReloadRefused):
            verdict = failure.getErrorMessage()
            self._record(verdict)
            log.warn("reload {verdict}", verdict=verdict)
            return self._done(None)
        self._record(f"refused: the load failed: {failure.getErrorMessage()}")
        log.error(
            "reloading the user table failed, keeping the {count} users loaded: {error}",
            count=len(self.known.table),
            error=failure.getErrorMessage() or failure.type.__name__,
        )
        return self._done(None)

    def _done(self, table):
        waiting, self._reloading = self._reloading, None
        for d in waiting or ():
            d.callback(table)
        return table

    def _install(self, state, changed, listed):
        known = self.known
        old_table = known.table
        known.install(state, changed)
        # Learned users stay, served as they were until the name service
        # confirms them: a directory down right now diverts none of them.
        if self.directory is not None:
            self.directory.carry_across(state, listed)
            self.directory.reloaded()
        if state.table is not old_table:
            for forget in self.forget:
                forget()

    def _record(self, verdict):
        stats = self.stats
        stats.last_reload = verdict
        if verdict.startswith("refused"):
            stats.reloads_kept += 1
