"""
L{KnownUsers}: the users the resolver knows, those of the user table and
those learned one at a time from the name service, and for each one its
home check's result and the last answer it was given, with that answer's
time.  Every part of the resolver works on this one store
(L{hlfs.homes.interfaces.IKnownUsers}).

A user's link time (C{Resolution.changed}) moves, strictly forward,
exactly when the answer for that user changes, and on reloads that
change the table: the Linux client caches a symlink's body until its
ctime moves.
"""

from zope.interface import implementer

from hlfs.core.resolver import ChangeClock, Resolution
from hlfs.homes.interfaces import IKnownUsers
from hlfs.homes.state import (
    CHECKED, CLEAR_CHECKED, FAILED, ONLY_UNUSABLE, SERVED_ALT, UNCONFIRMED, UNUSABLE,
    LearnedState, UserState,
)


@implementer(IKnownUsers)
class KnownUsers:
    """
    The table's users and the learned ones, with their per-user state.

    @ivar state: the L{UserState} of the current table.
    @ivar learned: the L{LearnedState} of the users learned one at a time.
    @ivar generation: a number that moves whenever an answer may change
        other than by expiry (the reply cache drops everything then).
    """

    def __init__(self, table, rules, clock, max_learned=0):
        self.rules = rules
        self.clock = clock
        self.changes = ChangeClock(clock)
        self.epochs = [self.changes.now()]
        self.unknown_stamp = self.epochs[0]
        self.state = UserState(table, 0)
        self.learned = LearnedState(0)
        self.max_learned = max_learned
        self.generation = 0
        self.dirty = None  # positions changed while a reload copies the state

    @property
    def table(self):
        return self.state.table

    def locate(self, uid):
        """
        Return C{(state, i)}: the table's state or the learned users',
        and the user's position in it (-1 if neither knows C{uid}).
        """
        state = self.state
        i = state.table.index_of(uid)
        if i < 0 and self.learned.users:
            learned = self.learned
            j = learned.index_of(uid)
            if j >= 0:
                return learned, j
        return state, i

    def user_named(self, name):
        """
        Return the L{hlfs.core.users.User} named C{name} that the table or
        the learned users know, or L{None}.
        """
        user = self.state.table.by_name(name)
        return user if user is not None else self.learned.by_name(name)

    # -- answers and their times

    def stamp(self, state, i):
        """
        Return the time of the last answer given to position C{i}.
        """
        value = state.changed[i]
        return value if value > 0 else self.epochs[-value]

    def touch(self, state, i):
        """
        Note that position C{i} changed, for a reload copying the state.
        """
        if self.dirty is not None and state is self.state:
            self.dirty.add(i)

    def serve(self, state, i, spool, alt):
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
            self.touch(state, i)
        else:
            stamp = self.stamp(state, i)
        return Resolution(self.rules.alt_dir if alt else spool, stamp)

    def serve_uid(self, uid, alt):
        """
        L{serve} by uid: the alternate spool for a uid nobody knows.
        """
        state, i = self.locate(uid)
        if i < 0:
            return self.unknown()
        spool = self.rules.spool_of(state.table.at(i))
        return self.serve(state, i, spool, alt or spool is None)

    def unknown(self):
        """
        Return the answer of a uid nobody knows: the alternate spool, at
        the time the unknown users' answer last changed.
        """
        return Resolution(self.rules.alt_dir, self.unknown_stamp)

    def peek(self, uid, verify=True):
        """
        Return the last answer given to C{uid}, without any check.
        """
        state, i = self.locate(uid)
        if i < 0:
            return self.unknown()
        spool = self.rules.spool_of(state.table.at(i))
        if spool is None or not verify:
            return self.serve(state, i, spool, spool is None)
        alt = bool(state.status[i] & SERVED_ALT)
        return Resolution(self.rules.alt_dir if alt else spool, self.stamp(state, i))

    # -- check results

    def record_check(self, state, i, ok, expires, unusable=None):
        """
        Keep a check's result for position C{i} until C{expires}.

        @param unusable: whether the check found the home itself
            unusable (L{True}), usable (L{False}), or says nothing about
            the home (L{None}: the daemon's own trouble).
        @return: whether the home's usability changed: it became unusable,
            or usable again.
        """
        st = state.status[i]
        new = (st & (SERVED_ALT | UNCONFIRMED | UNUSABLE)) | CHECKED | (0 if ok else FAILED)
        if unusable is not None:
            new = (new | UNUSABLE) if unusable else (new & ~UNUSABLE)
        state.status[i] = new
        state.expires[i] = expires
        self.touch(state, i)
        return bool((st ^ new) & UNUSABLE)

    def unusable(self, named=10):
        """
        Return C{(count, users)}: how many users' homes the last check
        found unusable, and the first C{named} of them.
        """
        count, users = 0, []
        for state in (self.state, self.learned):
            marks = state.status.translate(ONLY_UNUSABLE)
            count += len(marks) - marks.count(0)
            at = marks.find(UNUSABLE)
            while at >= 0 and len(users) < named:
                users.append(state.table.at(at))
                at = marks.find(UNUSABLE, at + 1)
        return count, users

    def flush(self, uid=None):
        """
        Forget check results, of C{uid} or of everybody: the next request
        checks again.  Answers stay as they are until then.
        """
        self.generation += 1
        if uid is None:
            for state in (self.state, self.learned):
                state.status[:] = state.status.translate(CLEAR_CHECKED)
            return True
        state, i = self.locate(uid)
        if i >= 0:
            state.status[i] &= ~(CHECKED | FAILED)
            self.touch(state, i)
        return False

    # -- learned users

    def learn(self, user):
        """
        Add a user the name service found; return its C{(state, i)}.
        When the learned users are full, they are dropped, all at once.
        """
        learned = self.learned
        if learned.index_of(user.uid) < 0 and len(learned) >= self.max_learned:
            learned = self.learned = LearnedState(learned.epoch)
            self.generation += 1
        return learned, learned.add(user, self.changes.now())

    def drop_learned(self, uid, gone=False):
        """
        Forget learned user C{uid}; with C{gone}, the name service says
        there is no such user: its answer is the unknown users' from now
        on, at a new time.
        """
        self.generation += 1
        self.learned.drop(uid)
        if gone:
            self.unknown_stamp = self.changes.now()

    # -- reloads

    def install(self, state, changed):
        """
        Swap in a reload's L{UserState}, C{changed} telling whether the
        table changed at all.
        """
        # The stamp is taken now, in the reactor thread: later than any
        # answer given before the swap.
        stamp = self.changes.now()
        self.epochs.append(stamp)
        if state.epoch != len(self.epochs) - 1:
            raise AssertionError("reload epochs out of order")
        if changed:
            self.unknown_stamp = stamp
        self.state = state
        self.generation += 1

    def footprint(self):
        """
        Return the bytes held by the table and the per-user state.
        """
        return self.state.table.footprint() + self.state.footprint() + self.learned.footprint()
