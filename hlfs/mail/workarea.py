"""
The remailer's working files for one alternate spool, in its private
state directory (L{hlfs.mail.statedir}), and the take step that fills it.

A mailbox is taken by copying it, never by renaming it: the state
directory is on another file system as often as not.  Under the
mailbox's locks, with the mailbox open as one checked descriptor
(L{hlfs.mail.spoolfile}):

  1. copy its bytes from the descriptor to C{C.<key>} ("copying"),
     C{fsync};
  2. rename it to C{P.<key>.<dev>.<ino>.<size>} ("pending": the copy is
     whole, the mailbox not yet emptied), C{fsync} the directory;
  3. prove the mailbox's name is still that inode, of the size copied,
     then empty it: C{ftruncate} through the descriptor, C{fsync}; or,
     when the file has other hard links (someone else's name for it),
     remove only the spool's name for it, so that whatever the other
     names hold is left as it was;
  4. rename the copy to C{W.<key>} ("working"), C{fsync} the directory.

C{<key>} is C{<time in ns>.<pid>.<owner uid>.<user name>}.  A crash
leaves each message in the mailbox or in a working copy, and only once:

  - C{C.*}: the mailbox was not touched; the copy is removed.
  - C{P.*}: the next run locks the mailbox and looks (L{WorkArea.settle}):
    if its name is still the inode copied and its first bytes are the
    copy's, it was not emptied, and the copy is removed; otherwise it
    was, and the copy becomes a working file.
  - C{W.*}: resent from the offset recorded in C{S.<key>}.

Only a delivery agent that ignores both locks, or a user who rewrites
their own mailbox while a run lies killed between steps 2 and 3, can
make a message go out twice; see docs/lostmail.md.
"""

import os
from typing import NamedTuple

from hlfs.mail.maillog import show
from hlfs.mail.spoolfile import OPEN_FLAGS, Skip, copy_exactly, is_regular, room_for
from hlfs.mail.spoolfile import same_bytes, still_named
from hlfs.mail.statedir import fsync_dir, read_small, write_atomically


class WorkKey(NamedTuple):
    """
    What names one taken mailbox's files.
    """

    time_ns: int
    pid: int
    uid: int
    user: bytes

    def name(self, kind):
        return b"%s.%020d.%d.%d.%s" % (kind, self.time_ns, self.pid, self.uid, self.user)

    @property
    def work(self):
        return self.name(b"W")

    @property
    def state(self):
        return self.name(b"S")

    def pending(self, dev, ino, size):
        return b"P.%020d.%d.%d.%d.%d.%d.%s" % (
            self.time_ns, self.pid, self.uid, dev, ino, size, self.user)


class Pending(NamedTuple):
    """
    A take interrupted between copying and emptying the mailbox.
    """

    key: WorkKey
    dev: int
    ino: int
    size: int

    @property
    def name(self):
        return self.key.pending(self.dev, self.ino, self.size)


def parse(filename):
    """
    Return C{(kind, WorkKey, extra)} for a file name of the work area
    (C{extra}: the pending file's device, inode and size), or L{None}.
    """
    kind, dot, rest = filename.partition(b".")
    numbers = {b"W": 3, b"S": 3, b"T": 3, b"C": 3, b"P": 6}.get(kind)
    if not dot or numbers is None:
        return None
    fields = rest.split(b".", numbers)
    if len(fields) != numbers + 1 or not all(f.isdigit() for f in fields[:-1]) or not fields[-1]:
        return None
    values = [int(f) for f in fields[:-1]]
    key = WorkKey(values[0], values[1], values[2], fields[-1])
    return kind, key, tuple(values[3:])


class WorkArea:
    """
    The working files of one alternate spool: the directory open as
    C{fd}, private to root.
    """

    def __init__(self, fd, path, log, checkpoint):
        self.fd = fd
        self.path = path
        self.log = log
        self.checkpoint = checkpoint

    def _names(self):
        return [os.fsencode(n) for n in os.listdir(self.fd)]

    def _unlink(self, name):
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def clean(self):
        """
        Remove what a crash left that holds nothing needed: copies not yet
        whole, temporary state files, state files whose working file is
        gone.
        """
        names = set(self._names())
        for name in names:
            parsed = parse(name)
            if parsed is None:
                continue
            kind, key, _ = parsed
            if kind in (b"C", b"T") or (kind == b"S" and key.work not in names):
                self._unlink(name)
        fsync_dir(self.fd)

    def work_files(self):
        """
        The working files' keys, oldest first.
        """
        found = [parse(n) for n in self._names()]
        return sorted(p[1] for p in found if p is not None and p[0] == b"W")

    def pending(self):
        found = [parse(n) for n in self._names()]
        return sorted(Pending(p[1], *p[2]) for p in found if p is not None and p[0] == b"P")

    def read_offset(self, key):
        """
        How far C{key}'s working file has been resent: 0 without a record.
        """
        try:
            text = read_small(self.fd, key.state, 64)
        except FileNotFoundError:
            return 0
        text = (text or b"").strip()
        if not text.isdigit():
            self.log(f"{show(os.path.join(self.path, key.state))}: unreadable state; "
                     "starting the file over")
            return 0
        return int(text)

    def write_offset(self, key, offset):
        write_atomically(self.fd, key.name(b"T"), key.state, b"%d\n" % offset)

    def open_work(self, key):
        """
        @return: a binary file object reading C{key}'s working file.
        """
        fd = os.open(key.work, os.O_RDONLY | OPEN_FLAGS, dir_fd=self.fd)
        if not is_regular(os.fstat(fd)):
            os.close(fd)
            raise Skip("working file is not a regular file; left for an administrator")
        return os.fdopen(fd, "rb")

    def finish(self, key):
        """
        Every message of C{key}'s working file was resent: remove it, then
        its state.
        """
        self._unlink(key.work)
        self._unlink(key.state)
        fsync_dir(self.fd)

    def take(self, name, fd, st, alt_fd, key, count):
        """
        Take the mailbox C{name} of the spool C{alt_fd}, open and locked as
        C{fd} whose C{fstat} is C{st} (checked: regular, its user's), as
        described above; C{count} is the checkpoints' count.

        @raise Skip: it is left where it was, with nothing of it kept here.
        """
        size = st.st_size
        fits, free = room_for(self.fd, size)
        if not fits:
            raise Skip(f"{size} bytes, and {show(self.path)} has {free} bytes free; "
                       "left for the next run")
        copying = key.name(b"C")
        out = os.open(copying, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o600,
                      dir_fd=self.fd)
        try:
            try:
                copy_exactly(fd, size, out)
                os.fsync(out)
            finally:
                os.close(out)
        except BaseException as e:
            self._unlink(copying)
            if isinstance(e, OSError):
                raise Skip(f"cannot copy it to {show(self.path)}: {e.strerror}; "
                           "left for the next run") from None
            raise
        pending = key.pending(st.st_dev, st.st_ino, size)
        os.rename(copying, pending, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        fsync_dir(self.fd)
        self.checkpoint("copied", count)
        now = os.fstat(fd)
        if not still_named(alt_fd, name, st) or now.st_size != size or now.st_uid != st.st_uid:
            self._unlink(pending)
            fsync_dir(self.fd)
            raise Skip("changed while it was being taken (replaced, or written without "
                       "its locks); left for the next run")
        if now.st_nlink == 1:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        else:
            # Other names for this inode are not ours to empty.
            os.unlink(name, dir_fd=alt_fd)
            fsync_dir(alt_fd)
        self.checkpoint("truncated", count)
        os.rename(pending, key.work, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        fsync_dir(self.fd)

    def settle(self, pending, fd, st):
        """
        Settle a take interrupted between its copy and the emptying of the
        mailbox, now open and locked again as C{fd} (C{fstat} C{st}), or
        L{None} when it is gone: keep the copy if the mailbox was emptied,
        else drop it (the mailbox is taken again).

        @return: whether the copy was kept.
        """
        emptied = True
        if fd is not None and (st.st_dev, st.st_ino) == (pending.dev, pending.ino) \
                and st.st_size >= pending.size:
            copy = os.open(pending.name, os.O_RDONLY | OPEN_FLAGS, dir_fd=self.fd)
            try:
                emptied = not same_bytes(fd, copy, pending.size)
            finally:
                os.close(copy)
        if emptied:
            os.rename(pending.name, pending.key.work, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            self._unlink(pending.name)
        fsync_dir(self.fd)
        return emptied

    def count(self):
        """
        The mailboxes held here: working and pending copies.
        """
        return sum(1 for n in self._names() if n[:2] in (b"W.", b"P."))
