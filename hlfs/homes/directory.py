"""
The users a L{hlfs.homes.cache.ProbingResolver}'s table lacks, asked for
one at a time (L{hlfs.core.lookups.UserLookups}): a uid, an HLFS_GID
caller's name, a directory user's groups.

Users found are I{learned}: they get per-user state of their own
(L{hlfs.homes.state.LearnedState}), served like the table's users.  The
caller's deadline covers the lookup and the home check together; the
groups of a user who is not local are asked for in the lookup threads
before its probe, so a hung directory never holds a probe thread.

A reload keeps the learned users the new table lacks, with their home
state, marked L{UNCONFIRMED}: a directory that is down or hung right
after a reload must not divert a user whose answer was known a moment
before.  Such a user's next call is answered at once from its entry as it
was, and sends the name service a confirmation in the lookup threads
(L{hlfs.core.lookups.UserLookups.confirm}).  The answer settles it: the
same entry is confirmed; another entry (a new home) replaces it, its home
checked afresh; "no such user" drops it, as a reload drops a user deleted
for real.  "Could not ask" leaves it as it was, to be confirmed at its
next call.
"""

import os

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hlfs.core.resolver import Resolution
from hlfs.homes.state import UNCONFIRMED, LearnedState

log = Logger(namespace="hlfs.probe")


class DirectoryUsers:
    """
    The part of L{hlfs.homes.cache.ProbingResolver} that asks for users
    the table lacks; it needs the resolver's C{lookups}, C{_state},
    C{_learned}, C{max_learned}, C{_resolve_at}, C{_serve},
    C{_serve_uid}, C{mailbox} and C{_mailbox_at}.
    """

    def _locate(self, uid):
        """
        Return C{(state, i)}: the table's state or the learned users',
        and the user's position in it (-1 if neither knows C{uid}).
        """
        state = self._state
        i = state.table.index_of(uid)
        if i < 0 and self._learned.users:
            learned = self._learned
            j = learned.index_of(uid)
            if j >= 0:
                return learned, j
        return state, i

    def _learn(self, user):
        """
        Add a user the name service found to the learned users; return
        its C{(state, i)}.
        """
        learned = self._learned
        if learned.index_of(user.uid) < 0 and len(learned) >= self.max_learned:
            learned = self._learned = LearnedState(learned.epoch)
            self.generation += 1
        return learned, learned.add(user, self.changes.now())

    def _confirm(self, state, i):
        """
        Ask the name service again for learned user C{i}, kept across a
        reload (L{UNCONFIRMED}); it is served as it was meanwhile.
        """
        self.lookups.confirm(state.at(i), self._confirmed)

    def _confirmed(self, previous, found):
        """
        The name service answered for C{previous}, a learned user kept
        across a reload: C{found} is its entry now, or L{None}.
        """
        learned = self._learned
        i = learned.index_of(previous.uid)
        if i < 0 or learned.at(i) != previous:
            # Dropped or learned again meanwhile (the learned users were
            # full): nothing of this entry is served any more.
            return
        if found == previous:
            learned.status[i] &= ~UNCONFIRMED
            return
        self.generation += 1
        learned.drop(previous.uid)
        if found is None:
            log.info("{user} (uid {uid}) is no longer known to the name service: dropped",
                     user=os.fsdecode(previous.name), uid=previous.uid)
            # Its answer is the unknown users' from now on, at a new time.
            self._unknown = self.changes.now()
            return
        log.info("the name service changed uid {uid}: {old} -> {new}; its home is checked afresh",
                 uid=found.uid, old=self._entry(previous), new=self._entry(found))
        if self._state.table.index_of(found.uid) < 0:
            self._learn(found)

    @staticmethod
    def _entry(user):
        return f"{os.fsdecode(user.name)} (home {os.fsdecode(user.home)})"

    def _listed_learned(self, table):
        """
        Return the uids of the learned users C{table} lists (in a
        reload's thread: a copy of the list is read, never changed).
        """
        index_of = table.index_of
        return [u.uid for u in list(self._learned.users) if index_of(u.uid) >= 0]

    def _carry_learned(self, state, listed):
        """
        Keep the learned users across a reload that installs C{state}:
        those its table lists (the uids C{listed}) are dropped, the table
        answers for them; the others are marked L{UNCONFIRMED}.
        """
        learned = self._learned
        learned.epoch = state.epoch
        for uid in listed:
            learned.drop(uid)
        learned.mark_unconfirmed()

    def _resolve_unlisted(self, uid):
        """
        Ask the name service for a uid the table lacks; the caller's
        deadline covers the lookup and the home check together.
        """
        asked = self.clock.seconds()
        found = self.lookups.find_uid(uid)
        if found is None:
            return Resolution(self.rules.alt_dir, self._unknown)
        if isinstance(found, Deferred):
            return found.addCallback(self._found_unlisted, uid, asked)
        state, i = self._learn(found)
        return self._resolve_at(state, i, asked, self.deadline)

    def _found_unlisted(self, user, uid, asked):
        if user is None:
            return Resolution(self.rules.alt_dir, self._unknown)
        state, i = self._locate(user.uid)
        if i < 0:
            state, i = self._learn(user)
        now = self.clock.seconds()
        return self._resolve_at(state, i, now, self.deadline - (now - asked))

    def _needs_lookup(self, user):
        if self.lookups is None:
            return False
        needs = getattr(getattr(self.probe, "credentials", None), "needs_lookup", None)
        return needs is not None and needs(user)

    def _groups_flight(self, user, spool):
        """
        Return the lookup of C{user}'s groups in flight, started now if
        none is, or L{None} when the lookup threads refuse it.
        """
        lookup_pool = self.lookups.pool
        key = ("groups", user.uid)
        flight = lookup_pool.find(key)
        if flight is None:
            flight = lookup_pool.submit(key, spool, self.probe.credentials.lookup, (user,),
                                        lambda flight, result: True)
        return flight

    def _groups_known_before(self, user, spool):
        """
        Whether C{user}'s probe may run now with the groups found before
        the last reload; if so, they are asked for again meanwhile, in
        the background.
        """
        known_before = getattr(self.probe.credentials, "known_before", None)
        if known_before is None or not known_before(user):
            return False
        self._groups_flight(user, spool)
        return True

    def _look_up_groups(self, state, i, spool, now, budget):
        """
        Ask for a directory user's groups in the lookup threads before its
        probe, so that a hung directory never holds a probe thread.
        """
        user = state.table.at(i)
        flight = self._groups_flight(user, spool)
        if flight is None:
            self.stats.fallbacks += 1
            return self._serve(state, i, spool, True)
        remaining = min(budget, self.deadline - (now - flight.submitted))
        if remaining <= 0:
            self.stats.fallbacks += 1
            return self._serve(state, i, spool, True)
        d = self.lookups.pool.wait(flight, remaining, self._groups_overdue)
        return d.addCallback(self._groups_known, user.uid, now, budget)

    def _groups_overdue(self, flight):
        if not flight.late:
            flight.late = True
            log.warn("the name service has not answered for the groups of uid {uid} after "
                     "{deadline} s; answering the alternate spool meanwhile",
                     uid=flight.key[1], deadline=self.deadline)
        return False

    def _groups_known(self, known, uid, asked, budget):
        if not known:
            self.stats.fallbacks += 1
            return self._serve_uid(uid, True)
        state, i = self._locate(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        now = self.clock.seconds()
        return self._resolve_at(state, i, now, budget - (now - asked))

    def find_mailbox(self, name):
        """
        Like L{mailbox}, and for a name neither the table nor the learned
        users know, ask the name service (within the deadline): a
        Resolution, L{None}, or a Deferred firing with one of them.
        """
        known = self.mailbox(name)
        if known is not None or self.lookups is None:
            return known
        found = self.lookups.find_name(name)
        if isinstance(found, Deferred):
            return found.addCallback(self._found_mailbox)
        return self._found_mailbox(found)

    def _found_mailbox(self, user):
        if user is None:
            return None
        state, i = self._locate(user.uid)
        if i < 0:
            state, i = self._learn(user)
        return self._mailbox_at(state, state.table.at(i))

    def user_named(self, name):
        """
        Return the L{hlfs.core.users.User} named C{name} that the table or
        the learned users know, or L{None} (never asking anyone).
        """
        user = self._state.table.by_name(name)
        return user if user is not None else self._learned.by_name(name)

    def learned_users(self):
        """
        Return the users learned one at a time since the last reload.
        """
        return list(self._learned)

    def _record_reload(self, verdict):
        stats = self.user_stats
        stats.last_reload = verdict
        if verdict.startswith("refused"):
            stats.reloads_kept += 1
