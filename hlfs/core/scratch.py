"""
Root's scratch files: the unique files NFS-safe lockers make next to a
lock or a mailbox, and C{link(2)} to it.

procmail makes its dotlock, and a mailbox that is not there yet, as a
unique file in the spool (C{_NNNN.host}) linked to C{NAME.lock} or
C{NAME}; liblockfile (sendmail's C{mail.local}) makes C{.lkNNNN...},
links it to C{NAME.lock}, and has the lock when C{lstat} of the two
names gives one inode.  In root's view of real mailboxes
(L{hlfs.core.mailfiles}) such a file is a small file of hlfs's memory,
seen by root alone, that exists only to be linked:

  - CREATE of a name that is no user's, no lock and not C{home} makes
    one (GUARDED; EXCLUSIVE is NOTSUPP, as for locks, so that the client
    asks again GUARDED); it holds at most L{MAX_DATA} bytes (a pid);
  - LINK of one to C{NAME.lock} makes NAME's real lock, as NAME, with
    its mode (EXIST while there is one); from then on, LOOKUP of that
    name gives the scratch file's handle and attributes (one inode, two
    links: liblockfile's proof that it holds the lock), for as long as
    the real lock is there;
  - LINK of one to C{NAME} makes NAME's mailbox, as NAME (procmail's way
    of making a mailbox that is not there); C{NAME} stays the real
    mailbox, where what is written goes;
  - REMOVE of its name forgets the name; the file goes with its last
    name.

Nothing of it reaches a disk: the lock or mailbox that counts is made by
hlfs as NAME.  There are at most L{MAX_FILES}, and one older than
L{LIFETIME} seconds is forgotten when a new one is made (a client that
crashed between its create and its remove).
"""

import itertools

from hlfs.core import handles, locks
from hlfs.core.nodes import (
    EXCLUSIVE, EXIST, GUARDED, INVAL, NOENT, NOTSUPP, REG, ROFS, STALE, UNCHECKED, Attr, NFSError,
    after, unless,
)

#: The most scratch files at once.
MAX_FILES = 256
#: The most bytes one holds.
MAX_DATA = 512
#: Seconds after which a scratch file may be forgotten.
LIFETIME = 600.0


class ScratchFile:
    """
    One scratch file: its number (in its handle), names, data and
    attributes.
    """

    __slots__ = ("number", "names", "linked", "data", "mode", "uid", "gid", "made", "changed")

    def __init__(self, number, name, mode, now):
        self.number = number
        self.names = {name}
        self.linked = set()  # the names of real locks and mailboxes it was linked to
        self.data = b""
        self.mode = mode
        self.uid = self.gid = 0
        self.made = self.changed = now

    def attr(self, fileid):
        return Attr(REG, self.mode, len(self.names), self.uid, self.gid, len(self.data), fileid,
                    self.changed, self.changed)

    def write(self, offset, data):
        """
        Write C{data} at C{offset}; L{False} if that would pass
        L{MAX_DATA}.
        """
        end = offset + len(data)
        if end > MAX_DATA:
            return False
        current = self.data
        if offset > len(current):
            current += bytes(offset - len(current))
        self.data = current[:offset] + data + current[end:]
        return True


class ScratchFiles:
    """
    Root's scratch files, by name and by number.

    @ivar clock: anything with C{seconds()}, for L{LIFETIME}.
    """

    def __init__(self, clock, ticks):
        """
        @param ticks: a callable giving strictly increasing nanosecond
            times (the files' mtime and ctime).
        """
        self.clock = clock
        self.ticks = ticks
        self.by_name = {}
        self.by_number = {}
        self._numbers = itertools.count(1)

    def named(self, name):
        return self.by_name.get(name)

    def numbered(self, number):
        return self.by_number.get(number)

    def make(self, name, mode):
        """
        Return a new scratch file named C{name}, or L{None} when there are
        L{MAX_FILES} and none of them may be forgotten.
        """
        if len(self.by_number) >= MAX_FILES and not self._forget_old():
            return None
        scratch = ScratchFile(next(self._numbers), name, mode & 0o7777, self.ticks())
        self.by_name[name] = scratch
        self.by_number[scratch.number] = scratch
        return scratch

    def link(self, scratch, name):
        scratch.names.add(name)
        scratch.linked.add(name)
        self.by_name[name] = scratch
        self.touch(scratch)

    def unlink(self, name):
        """
        Forget C{name}; the file goes with its last name.  Return whether
        there was such a name.
        """
        scratch = self.by_name.pop(name, None)
        if scratch is None:
            return False
        scratch.names.discard(name)
        scratch.linked.discard(name)
        if not scratch.names:
            self.by_number.pop(scratch.number, None)
        else:
            self.touch(scratch)
        return True

    def touch(self, scratch):
        scratch.changed = self.ticks()

    def _forget_old(self):
        oldest = min(self.by_number.values(), key=lambda s: s.made)
        if self.clock.seconds() - oldest.made / 1e9 < LIFETIME:
            return False
        for name in list(oldest.names):
            self.unlink(name)
        return True


NOSPC = 28
FBIG = 27


def _no_such_user():
    raise NFSError(ROFS)


class ScratchNodes:
    """
    Scratch files as nodes of root's view; the class using this needs
    C{handles}, C{scratch} (L{ScratchFiles}), C{locks}, C{resolver}, C{decode} and the
    operations of L{hlfs.core.lockfs.LockFiles} and
    L{hlfs.core.mailfiles.MailboxFiles}.
    """

    def _scratch_fh(self, scratch):
        return self.handles.mailbox(b"%d" % scratch.number, handles.SCRATCH)

    @staticmethod
    def _scratch_attr(scratch):
        return scratch.attr((1 << 60) | scratch.number)

    def _scratch_of(self, handle):
        """
        The L{ScratchFile} of a SCRATCH handle, or STALE.
        """
        scratch = self.scratch.numbered(int(handle.name)) if handle.name.isdigit() else None
        if scratch is None:
            raise NFSError(STALE)
        return scratch

    def _scratch_found(self, scratch):
        return self._scratch_fh(scratch), self._scratch_attr(scratch)

    def _real_lookup(self, name):
        """
        LOOKUP of a lock or a mailbox in root's view of real mailboxes.
        """
        owner = locks.lock_owner(name)
        if owner is not None and self.locks is not None:
            return self._lock_lookup(owner)
        return self._file_lookup(name)

    def _root_lookup(self, name):
        """
        LOOKUP for root's view of real mailboxes: a scratch file's own
        name, a name it was linked to while the real lock or mailbox is
        there (the scratch file's inode), or the real one.
        """
        scratch = self.scratch.named(name)
        if scratch is None:
            return self._real_lookup(name)
        if name not in scratch.linked:
            return self._scratch_found(scratch)

        def gone(failure):
            failure.trap(NFSError)
            if failure.value.status == NOENT:
                self.scratch.unlink(name)
            return failure

        try:
            found = self._real_lookup(name)
        except NFSError as e:
            if e.status == NOENT:
                self.scratch.unlink(name)
            raise
        if isinstance(found, tuple):
            return self._scratch_found(scratch)
        return found.addCallbacks(lambda _: self._scratch_found(scratch), gone)

    def _root_create(self, name, caller, privileged, mode, how, size):
        """
        CREATE for root's view of real mailboxes: a lock, a mailbox, or
        else a scratch file.
        """
        scratch = self.scratch.named(name)
        if scratch is not None:
            if how != UNCHECKED:
                raise NFSError(EXIST)
            if size is not None:
                self._scratch_resize(scratch, size)
            return self._scratch_found(scratch)
        owner = locks.lock_owner(name)
        if owner is not None and self.locks is not None:
            return self._lock_create(owner, caller, privileged, mode, how, size)

        def scratch_file():
            if b"/" in name or b"\0" in name:
                raise NFSError(ROFS)  # no name a directory can hold
            if how == EXCLUSIVE:
                raise NFSError(NOTSUPP)
            made = self.scratch.make(name, 0o600 if mode is None else mode)
            if made is None:
                raise NFSError(NOSPC)
            return self._scratch_found(made)

        def real_or_scratch(resolution):
            if resolution is None:  # no user's name
                return scratch_file()
            return self._file_create(name, mode, how, size)

        return after(self.resolver.find_mailbox(name), real_or_scratch)

    def _scratch_resize(self, scratch, size):
        if size > MAX_DATA:
            raise NFSError(FBIG)
        scratch.data = scratch.data[:size] + bytes(max(0, size - len(scratch.data)))
        self.scratch.touch(scratch)

    def _root_remove(self, name):
        """
        REMOVE of a scratch file's own name: C{()}; L{None} for any other
        name (a name a scratch file was linked to is forgotten, and the
        real one is then removed as ever).
        """
        scratch = self.scratch.named(name)
        if scratch is None:
            return None
        linked = name in scratch.linked
        self.scratch.unlink(name)
        return None if linked else ()

    def _scratch_link(self, scratch, name, caller, privileged):
        """
        LINK of a scratch file to C{name}: NAME's real lock or mailbox,
        made as NAME; the scratch file's L{Attr}.
        """
        if self.scratch.named(name) is not None:
            raise NFSError(EXIST)
        mode = scratch.mode & 0o777
        owner = locks.lock_owner(name)
        if owner is None or self.locks is None:
            # A mailbox: made, and from then on the real one, never the
            # scratch file (whatever is written goes to the mailbox).
            made = unless(lambda: self._file_create(name, mode, GUARDED, None), NOENT, _no_such_user)
            return after(made, lambda _: self._scratch_attr(scratch))

        def linked(_):
            self.scratch.link(scratch, name)
            return self._scratch_attr(scratch)

        return after(self._lock_create(owner, caller, privileged, mode, GUARDED, None), linked)

    def _scratch_read(self, scratch, offset, count):
        data = scratch.data[offset:offset + count]
        return self._scratch_attr(scratch), data, offset + len(data) >= len(scratch.data)

    def _scratch_write(self, scratch, offset, count, data):
        if count != len(data):
            raise NFSError(INVAL)
        if not scratch.write(offset, data):
            raise NFSError(NOSPC)
        self.scratch.touch(scratch)
        return self._scratch_attr(scratch)

    def _scratch_setattr(self, scratch, changes):
        if changes.size is not None:
            self._scratch_resize(scratch, changes.size)
        if changes.mode is not None:
            scratch.mode = changes.mode & 0o7777
        if changes.uid is not None:
            scratch.uid = changes.uid
        if changes.gid is not None:
            scratch.gid = changes.gid
        self.scratch.touch(scratch)
        return self._scratch_attr(scratch)
