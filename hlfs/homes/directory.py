"""
L{DirectoryUsers}: the users the user table lacks, asked for one at a
time (L{hlfs.core.lookups.UserLookups}, in the name service's threads,
L{hlfs.homes.threads}): a uid, an HLFS_GID caller's name, a directory
user's groups.

Users found are I{learned}: L{hlfs.homes.known.KnownUsers} keeps them
with state of their own, served like the table's users.  The caller's
deadline covers the lookup and the home check together; the groups of a
user who is not local are asked for in the lookup threads before its
check, so a hung directory never holds a check process.

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
from zope.interface import implementer

from hlfs.homes.interfaces import IDirectoryUsers
from hlfs.homes.state import UNCONFIRMED

log = Logger(namespace="hlfs.probe")


@implementer(IDirectoryUsers)
class DirectoryUsers:
    """
    Users asked for one at a time, learned into C{known}.

    @ivar lookups: the L{hlfs.core.lookups.UserLookups}; C{lookups.pool}
        is the L{hlfs.homes.threads.LookupThreads}.
    """

    def __init__(self, known, lookups, credentials, clock, deadline=1.0):
        """
        @param known: the L{hlfs.homes.interfaces.IKnownUsers}.
        @param credentials: the L{hlfs.homes.credentials.Credentials}
            whose directory users' groups are asked for here.
        """
        self.known = known
        self.lookups = lookups
        self.credentials = credentials
        self.clock = clock
        self.deadline = deadline

    # -- users the table lacks

    def find_uid(self, uid):
        return self._found(self.lookups.find_uid(uid))

    def find_name(self, name):
        return self._found(self.lookups.find_name(name))

    def _found(self, found):
        if isinstance(found, Deferred):
            return found.addCallback(self._learned)
        return self._learned(found)

    def _learned(self, user):
        if user is None:
            return None
        state, i = self.known.locate(user.uid)
        if i < 0:
            state, i = self.known.learn(user)
        return state, i

    def learned_users(self):
        """
        Return the users learned one at a time.
        """
        return list(self.known.learned)

    # -- confirmations after a reload

    def confirm(self, state, i):
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
        known = self.known
        learned = known.learned
        i = learned.index_of(previous.uid)
        if i < 0 or learned.at(i) != previous:
            # Dropped or learned again meanwhile (the learned users were
            # full): nothing of this entry is served any more.
            return
        if found == previous:
            learned.status[i] &= ~UNCONFIRMED
            return
        known.drop_learned(previous.uid, gone=found is None)
        if found is None:
            log.info("{user} (uid {uid}) is no longer known to the name service: dropped",
                     user=os.fsdecode(previous.name), uid=previous.uid)
            return
        log.info("the name service changed uid {uid}: {old} -> {new}; its home is checked afresh",
                 uid=found.uid, old=_entry(previous), new=_entry(found))
        if known.state.table.index_of(found.uid) < 0:
            known.learn(found)

    # -- reloads

    def listed_learned(self, table):
        """
        Return the uids of the learned users C{table} lists (in a
        reload's thread: a copy of the list is read, never changed).
        """
        index_of = table.index_of
        return [u.uid for u in list(self.known.learned.users) if index_of(u.uid) >= 0]

    def carry_across(self, state, listed):
        """
        Keep the learned users across a reload that installs C{state}:
        those its table lists (the uids C{listed}) are dropped, the table
        answers for them; the others are marked L{UNCONFIRMED}.
        """
        learned = self.known.learned
        learned.epoch = state.epoch
        for uid in listed:
            learned.drop(uid)
        learned.mark_unconfirmed()

    def reloaded(self):
        self.lookups.forget()

    # -- a directory user's groups, before its check

    def needs_groups(self, user, spool):
        """
        Return whether C{user}'s groups must be asked for before its
        check of C{spool}.  Groups found before the last reload do not:
        they are asked for again meanwhile, in the background.
        """
        credentials = self.credentials
        if not credentials.needs_lookup(user):
            return False
        if credentials.known_before(user):
            self._groups_flight(user, spool)
            return False
        return True

    def _groups_flight(self, user, spool):
        threads = self.lookups.pool
        key = ("groups", user.uid)
        flight = threads.find(key)
        if flight is None:
            flight = threads.submit(key, spool, self.credentials.lookup, (user,),
                                    lambda flight, found: self._groups_found(user, found))
        return flight

    def _groups_found(self, user, found):
        self.credentials.looked_up(user, found)
        return True

    def look_up_groups(self, user, spool, now, budget):
        """
        Ask for a directory user's groups in the lookup threads before its
        check, so that a hung directory never holds a check process.

        @return: a Deferred firing with whether they are known within
            C{budget}, or L{False} at once if the lookup is refused or its
            time is up.
        """
        flight = self._groups_flight(user, spool)
        if flight is None:
            return False
        remaining = min(budget, self.deadline - (now - flight.submitted))
        if remaining <= 0:
            return False
        return self.lookups.pool.wait(flight, remaining, self._groups_overdue)

    def _groups_overdue(self, flight):
        if not flight.late:
            flight.late = True
            log.warn("the name service has not answered for the groups of uid {uid} after "
                     "{deadline} s; answering the alternate spool meanwhile",
                     uid=flight.key[1], deadline=self.deadline)
        return False


def _entry(user):
    return f"{os.fsdecode(user.name)} (home {os.fsdecode(user.home)})"
