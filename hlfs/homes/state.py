"""
The resolver's per-user state: three flat arrays indexed by the user
table's positions (17 bytes a user), remapped in a thread when the table
is reloaded (L{remap}); the learned users' own arrays (L{LearnedState}).
L{hlfs.homes.known.KnownUsers} holds both.
"""

import re
from array import array

# Bits of a user's status byte.
CHECKED = 1  # a check result is kept (until the user's expiry time)
FAILED = 2  # ... and it was a failure
SERVED_ALT = 4  # the last answer for this user was the alternate spool
# A learned user kept across a reload: served from its entry as it was,
# until the name service confirms, changes or drops it.
UNCONFIRMED = 8
# The last check that said something about the home found it unusable
# (kept across expiry and flushes: the log says so once, and once again
# when it is usable).
UNUSABLE = 16
CLEAR_CHECKED = bytes(b & ~(CHECKED | FAILED) for b in range(256))
MARK_UNCONFIRMED = bytes(b | UNCONFIRMED for b in range(256))
ONLY_UNCONFIRMED = bytes(b & UNCONFIRMED for b in range(256))
ONLY_UNUSABLE = bytes(b & UNUSABLE for b in range(256))


class UserState:
    """
    Per-user state, three arrays in the table's uid order.

      - C{status}: bytes of C{CHECKED}, C{FAILED}, C{SERVED_ALT}.
      - C{expires}: when a cached probe result expires (clock seconds).
      - C{changed}: when the user's link value last changed, in ns; a
        value C{<= 0} stands for C{epochs[-value]}, the stamp of the
        table load that brought the entry, so a fresh table needs no
        per-user stamps.
    """

    __slots__ = ("table", "status", "expires", "changed", "epoch")

    def __init__(self, table, epoch):
        n = len(table)
        self.table = table
        self.epoch = epoch
        self.status = bytearray(n)
        self.expires = array("d", bytes(8 * n))
        self.changed = array("q", [-epoch]) * n

    def footprint(self):
        return len(self.status) + 8 * len(self.expires) + 8 * len(self.changed)


class LearnedState:
    """
    Per-user state of the users learned one at a time from the name
    service (not in the table), with the table's lookup methods: a
    mutable L{UserState}.  It outlives reloads: each reload marks its
    users L{UNCONFIRMED} (see L{hlfs.homes.directory}).  The users' link
    times start at the time they were learned.
    """

    __slots__ = ("table", "users", "_index", "_names", "status", "expires", "changed", "epoch")

    def __init__(self, epoch):
        self.table = self
        self.epoch = epoch
        self.users = []
        self._index = {}
        self._names = {}
        self.status = bytearray()
        self.expires = array("d")
        self.changed = array("q")

    def add(self, user, stamp):
        i = self._index.get(user.uid)
        if i is not None:
            return i
        i = len(self.users)
        self.users.append(user)
        self._index[user.uid] = i
        self._names.setdefault(user.name, i)
        self.status.append(0)
        self.expires.append(0.0)
        self.changed.append(stamp)
        return i

    def drop(self, uid):
        """
        Forget the user C{uid}: the last user takes its place, so the
        arrays stay dense (positions are never held across calls).
        """
        i = self._index.pop(uid, None)
        if i is None:
            return
        gone = self.users[i]
        if self._names.get(gone.name) == i:
            del self._names[gone.name]
        last = len(self.users) - 1
        if i != last:
            moved = self.users[last]
            self.users[i] = moved
            self._index[moved.uid] = i
            if self._names.get(moved.name) == last:
                self._names[moved.name] = i
            self.status[i] = self.status[last]
            self.expires[i] = self.expires[last]
            self.changed[i] = self.changed[last]
        self.users.pop()
        self.status.pop()
        self.expires.pop()
        self.changed.pop()

    def mark_unconfirmed(self):
        self.status[:] = self.status.translate(MARK_UNCONFIRMED)

    def unconfirmed(self):
        """
        Return how many users wait for the name service to confirm them.
        """
        return len(self.status) - self.status.translate(ONLY_UNCONFIRMED).count(0)

    def __len__(self):
        return len(self.users)

    def __iter__(self):
        return iter(list(self.users))

    def index_of(self, uid):
        return self._index.get(uid, -1)

    def at(self, i):
        return self.users[i]

    def by_uid(self, uid):
        i = self._index.get(uid)
        return None if i is None else self.users[i]

    def by_name(self, name):
        i = self._names.get(name)
        return None if i is None else self.users[i]

    def footprint(self):
        return len(self.status) + 8 * len(self.expires) + 8 * len(self.changed)


FOREVER = float("inf")
TOUCHED = re.compile(rb"[^\x00]")


def remap(old, new_table, epoch):
    """
    Build the L{UserState} of C{new_table} from C{old}.  Runs in a thread.

    An identical table keeps every user's state.  Otherwise, users whose
    entry (uid, name, home) did not change keep their cached probe result
    and link time; every other user starts afresh, its link time the
    reload's (later than any time given before, so a changed value always
    shows a new time).  Only users with some state are looked at: the
    cost follows the users seen since the last reload, not the table's
    size.

    @return: C{(state, changed)}, C{changed} telling whether the table
        changed at all.
    """
    old_table = old.table
    state = UserState.__new__(UserState)
    state.table = new_table
    state.epoch = epoch
    if old_table == new_table:
        state.status = bytearray(old.status)
        state.expires = old.expires[:]
        state.changed = old.changed[:]
        return state, False
    n = len(new_table)
    status = bytearray(n)
    expires = array("d", bytes(8 * n))
    changed = array("q", [-epoch]) * n
    old_status, old_expires, old_changed = old.status, old.expires, old.changed
    old_at, new_at, index_of = old_table.at, new_table.at, new_table.index_of
    for match in TOUCHED.finditer(old_status):
        i = match.start()
        user = old_at(i)
        j = index_of(user.uid)
        if j >= 0 and new_at(j) == user:
            status[j] = old_status[i]
            expires[j] = old_expires[i]
            changed[j] = old_changed[i]
    state.status, state.expires, state.changed = status, expires, changed
    return state, True
