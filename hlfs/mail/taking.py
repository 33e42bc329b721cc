"""
Taking mailboxes from the alternate spool, for L{hlfs.mail.lostmail}: the
mailbox's locks as a delivery agent takes them (L{hlfs.mail.dotlock}:
the dotlock, then C{fcntl} on the one descriptor opened), and under them
the work area's copy-then-empty (L{hlfs.mail.workarea}).

Which locks may stand in the way, and for how long, is decided here:
a lock of the mailbox may belong to its user or root only, and one that
runs have found held for longer than the stale period is broken
(L{hlfs.mail.records.HeldLocks}).  Every wait ends after the lock
timeout.
"""

import os
import time

from hlfs.homes.nss import NameServiceUnavailable
from hlfs.mail.dotlock import DotLock, LockError, LockTimeout, lock_fd
from hlfs.mail.maillog import show
from hlfs.mail.spoolfile import Skip, is_regular, open_entry
from hlfs.mail.workarea import WorkKey


class Taking:
    """
    The takes of one run.

    @ivar locked: mailboxes whose locks were taken, the checkpoints'
        count.
    """

    def __init__(self, alt_dir, alt_fd, area, users, locks, options, now, log, checkpoint):
        self.alt_dir = alt_dir
        self.alt_fd = alt_fd
        self.area = area
        self.users = users
        self.locks = locks
        self.options = options
        self.now = now
        self.log = log
        self.checkpoint = checkpoint
        self.locked = 0

    def _dotlock(self, name, uid):
        try:
            user = self.users.by_name(name)
        except NameServiceUnavailable:
            user = None
        return DotLock(
            os.path.join(self.alt_dir, name) + b".lock",
            timeout=self.options.lock_timeout,
            stale_after=self.options.stale_after,
            log=lambda line: self.log(f"{show(name)}: {line}"),
            # Should we die holding it, the owner's delivery agent can
            # break it in the sticky spool.
            owner=user.uid if user is not None else None,
            owners=(uid, 0),
            held_since=self.locks.since(name),
            wall=self.now,
        )

    def locked_mailbox(self, name, uid, work, unopenable_is_gone=False):
        """
        Lock mailbox C{name} (whose owner must be C{uid}), open it, and
        return C{work(fd, st)}, or C{work(None, None)} when it is gone
        (or, with C{unopenable_is_gone}, cannot be opened: a link or a
        socket in its place).  The C{fcntl} lock is taken only on a
        regular file of C{uid}'s.

        @raise Skip: it could not be locked or opened.
        """
        lock = self._dotlock(name, uid)
        try:
            lock.acquire()
        except LockTimeout as e:
            self.locks.held(name, lock.found_held or self.now())
            raise Skip(f"{e}; left for the next run") from None
        except LockError as e:
            raise Skip(f"{e}; left for the next run") from None
        self.locks.free(name)
        self.locked += 1
        try:
            self.checkpoint("locked", self.locked)
            try:
                fd, st = open_entry(self.alt_fd, name, writable=True)
            except FileNotFoundError:
                return work(None, None)
            except Skip:
                if unopenable_is_gone:
                    return work(None, None)
                raise
            try:
                if is_regular(st) and st.st_uid == uid:
                    try:
                        lock_fd(fd, timeout=self.options.lock_timeout)
                    except LockError as e:
                        raise Skip(f"{e}; left for the next run") from None
                    st = os.fstat(fd)
                return work(fd, st)
            finally:
                os.close(fd)
        finally:
            lock.release()
            self.checkpoint("released", self.locked)

    def take(self, name, uid):
        """
        Take mailbox C{name} (whose owner must be C{uid}) into the work
        area.

        @return: whether a working copy was made (not for a mailbox
            found empty or gone).
        @raise Skip: it was left in the spool.
        """

        def copy(fd, st):
            if fd is None:
                return False
            if not is_regular(st) or st.st_uid != uid or st.st_size > self.options.max_size:
                raise Skip("changed while it was being locked; skipped")
            if st.st_size == 0:
                return False
            key = WorkKey(time.time_ns(), os.getpid(), uid, name)
            self.area.take(name, fd, st, self.alt_fd, key, self.locked)
            return True

        return self.locked_mailbox(name, uid, copy)

    def settle(self, pending):
        """
        Settle a take a crash cut short (L{hlfs.mail.workarea.WorkArea.settle}),
        under the mailbox's locks.

        Whatever is now at the mailbox's name, if it is not the file
        copied, that file is not in the spool any more: the copy is kept.

        @raise Skip: its mailbox could not be locked.
        """
        self.locked_mailbox(pending.key.user, pending.key.uid,
                            lambda fd, st: self.area.settle(pending, fd, st),
                            unopenable_is_gone=True)
