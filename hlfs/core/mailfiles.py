"""
Root sees real mailboxes: for uid 0 calling from a privileged port (and
whose gid is not HLFS_GID), C{NAME} in hlfs's directory is not Table 2's
link to NAME's mailbox but the mailbox itself, a regular file.

Delivery agents that run as root on the mailbox (procmail setuid or
C{-d}, sendmail's and OpenSMTPD's C{mail.local}) refuse a symbolic link
where they expect it.  Through this view they find a regular file owned
by the recipient, and everything they do to it is done by hlfs, as NAME,
on NAME's real mailbox: C{~NAME/<subdir>/NAME}, or the alternate
spool's C{NAME} while NAME's home is unusable (the link's target, found
as for the link).  So root gets nothing there NAME could not do, and a
root-squashed home takes root's delivery: hlfs never writes as root.

  - LOOKUP and GETATTR stat the mailbox (NOENT, or STALE for a handle,
    while there is none; ACCES for one that is not a regular file);
  - CREATE makes it as NAME (EXIST when it is there, but for UNCHECKED,
    which opens it; EXCLUSIVE of a missing one is NOTSUPP, so that the
    client asks again GUARDED and owes no SETATTR of a verifier);
  - READ, WRITE and COMMIT read, write and sync it; every write is on
    disk (FILE_SYNC) before it is answered, so nothing waits for COMMIT;
  - SETATTR changes its size, never past its end by more than a write
    could (L{MAX_GAP}); an owner, group or mode may only be the one the
    file already has (a delivery agent's C{fchown} to the recipient),
    anything else is PERM; times are left to the writes.

Bounds: a READ takes at most L{MAX_COUNT} bytes; a WRITE of more, or of
another length than its data, is INVAL; nothing reaches past
L{MAX_FILE_SIZE} (FBIG).  Each call is a job for the home-check
processes (L{IMailboxFiles}, made by L{hlfs.homes.mailboxes}), within
the check deadline: past it the answer is NFSv3's JUKEBOX (L{TRYLATER}),
which the client retries.

Root's directory listing and its C{home} stay Table 2's: C{home} is
C{.}, so that C{/var/mail -> /mail/home} leads to these files, and the
listing names no user (it would be a walk of the whole user table, for
no agent lists the spool).  An HLFS_GID caller keeps Table 2's links;
anyone else presenting a mailbox file's handle gets STALE
(L{hlfs.core.handles.may_use}).
"""

from typing import NamedTuple

from zope.interface import Interface

from hlfs.core import handles
from hlfs.core.nodes import (
    EXCLUSIVE, EXIST, INVAL, NOENT, NOTSUPP, PERM, REG, STALE, UNCHECKED, Attr, NFSError,
    after, locking, then_found,
)

#: The most bytes a READ or WRITE moves: NFSv3's FSINFO rtmax and wtmax,
#: NFSv2's own limit.
MAX_COUNT = 8192
#: The largest a mailbox root writes may grow (FSINFO's maxfilesize).
MAX_FILE_SIZE = 1 << 40
#: How far past a mailbox's end a WRITE may start, or SETATTR extend it:
#: the client's writes of one flush may arrive out of order, but none
#: leaves a hole larger than this.
MAX_GAP = 1 << 24
#: NFS status of a file too large.
FBIG = 27


class FileStat(NamedTuple):
    """
    What a mailbox file is, as L{IMailboxFiles} reports it.  Times are in
    nanoseconds.
    """

    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    mtime: int
    ctime: int


class FileChanges(NamedTuple):
    """
    What a SETATTR asks of a file: each field L{None} when not asked.
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None


class IMailboxFiles(Interface):
    """
    Users' real mailboxes.  Each method takes the user's name and the
    mailbox's path, runs as that user, and returns its answer or a
    Deferred firing with it; a failure raises (or fails with)
    L{hlfs.core.locks.LockFailed}, whose status is the NFS answer.
    """

    def stat(name, path):
        """
        Return the L{FileStat} of the mailbox, or L{None} if there is none.
        """

    def create(name, path, mode):
        """
        Make the mailbox exclusively with C{mode}; return its L{FileStat}.
        """

    def read(name, path, offset, count):
        """
        Return C{(FileStat, data)}: at most C{count} bytes from C{offset}.
        """

    def write(name, path, offset, data):
        """
        Write C{data} at C{offset}, on disk when this answers; return the
        L{FileStat} after it.
        """

    def truncate(name, path, size):
        """
        Make the mailbox C{size} bytes long; return its L{FileStat}.
        """

    def sync(name, path):
        """
        Put what was written on disk; return the L{FileStat}.
        """


class MailboxFiles:
    """
    The mailbox files of root's view; the class using this needs
    C{resolver}, C{handles}, C{files} (an L{IMailboxFiles}), C{decode} and
    a C{_files_seen} dict.
    """

    #: Mailbox files last seen, for attributes that cannot wait.
    MAX_FILES_SEEN = 4096

    def _file_fileid(self, name):
        return (1 << 61) | (handles.fingerprint(name, b"\0file") & 0xFFFFFFFF)

    def _file_seen(self, name, st):
        """
        Return the L{Attr} of C{name}'s mailbox file from its L{FileStat}
        (L{None}: there is none), remembering it.
        """
        seen = self._files_seen
        if st is None:
            seen.pop(name, None)
            return None
        attr = Attr(REG, st.mode, st.nlink, st.uid, st.gid, st.size, self._file_fileid(name),
                    st.mtime, st.ctime)
        if name not in seen and len(seen) >= self.MAX_FILES_SEEN:
            seen.clear()
        seen[name] = attr
        return attr

    def _on_file(self, name, operation, *args):
        """
        Find C{name}'s mailbox (checking NAME's home as for its link), then
        call C{operation(name, mailbox path, *args)}; NOENT for a user
        nobody knows.
        """
        return then_found(
            self.resolver.find_mailbox(name),
            lambda r: locking(operation, name, r.target, *args),
        )

    def _file_attr(self, name, missing):
        """
        The L{Attr} of C{name}'s mailbox, now or later; the NFS status
        C{missing} while there is none.
        """

        def found(st):
            attr = self._file_seen(name, st)
            if attr is None:
                raise NFSError(missing)
            return attr

        return after(self._on_file(name, self.files.stat), found)

    def _file_lookup(self, name):
        fh = self.handles.file(name)
        if fh is None:
            raise NFSError(NOENT)
        return after(self._file_attr(name, NOENT), lambda attr: (fh, attr))

    def _file_create(self, name, mode, how, size):
        """
        CREATE of NAME for root: C{(fh, Attr)}.
        """
        fh = self.handles.file(name)
        if fh is None:
            raise NFSError(NOENT)

        def there(st):
            attr = self._file_seen(name, st)
            if attr is not None:
                if how != UNCHECKED:
                    raise NFSError(EXIST)
                if size is not None and size != attr.size:
                    return after(self._file_truncate(name, attr, size), lambda a: (fh, a))
                return fh, attr
            if how == EXCLUSIVE:
                raise NFSError(NOTSUPP)
            made = self._on_file(name, self.files.create, 0o600 if mode is None else mode & 0o7777)
            return after(made, lambda st: (fh, self._file_seen(name, st)))

        return after(self._on_file(name, self.files.stat), there)

    def _file_handle(self, fh, caller):
        """
        The user whose mailbox file C{fh} is, for C{caller}, or L{None}
        for any other handle (STALE for one C{caller} may not hold).
        """
        handle = self.decode(fh, caller)
        return handle.name if handle.kind == handles.FILE else None

    def _file_read(self, name, offset, count):
        """
        READ: C{(Attr, data, eof)}.
        """
        if offset > MAX_FILE_SIZE:
            raise NFSError(INVAL)
        count = min(count, MAX_COUNT)

        def done(result):
            st, data = result
            attr = self._file_seen(name, st)
            return attr, data, offset + len(data) >= attr.size

        return after(self._on_file(name, self.files.read, offset, count), done)

    def _file_write(self, name, offset, count, data):
        """
        WRITE: the L{Attr} after it; all of C{data} is written, on disk.
        """
        if count != len(data) or count > MAX_COUNT:
            raise NFSError(INVAL)
        if offset + count > MAX_FILE_SIZE:
            raise NFSError(FBIG)
        if not data:
            return self._file_attr(name, STALE)
        return after(
            self._on_file(name, self.files.write, offset, data),
            lambda st: self._file_seen(name, st),
        )

    def _file_truncate(self, name, attr, size):
        if size > MAX_FILE_SIZE:
            raise NFSError(FBIG)
        return after(
            self._on_file(name, self.files.truncate, size), lambda st: self._file_seen(name, st)
        )

    def _file_sync(self, name):
        return after(
            self._on_file(name, self.files.sync), lambda st: self._file_seen(name, st)
        )

    def _file_setattr(self, name, changes):
        """
        SETATTR: the size may change; an owner, group or mode only to what
        it is (PERM otherwise).
        """

        def check(attr):
            if any(
                value is not None and value != current
                for value, current in ((changes.uid, attr.uid), (changes.gid, attr.gid),
                                       (changes.mode, None if changes.mode is None else attr.mode))
            ):
                raise NFSError(PERM)
            if changes.size is None or changes.size == attr.size:
                return attr
            return self._file_truncate(name, attr, changes.size)

        return after(self._file_attr(name, STALE), check)

