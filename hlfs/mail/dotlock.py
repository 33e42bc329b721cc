"""
Mailbox locking that is safe over NFS and compatible with mail readers.

Two locks protect a mailbox, as traditional delivery agents and readers
expect:

  - a dotlock C{NAME.lock} next to the mailbox, made the NFS-safe way:
    create a uniquely named file, C{link()} it to the lock name, and trust
    the unique file's link count rather than C{link()}'s return value
    (over NFS a retransmitted LINK may report failure for a link that was
    made, or the reverse);
  - an C{fcntl} record lock on the open mailbox, for readers that only
    use kernel locks.

Stale dotlocks (unchanged for longer than a configured age by the file
server's clock, or held by a process of this host that no longer exists)
are broken with a log line.  A lock's age is measured from the older of
its modification and change times: its owner can set the first to any
time, but not the second, which the kernel sets at every change, so a
modification time in 2099 does not keep a lock young.  A caller that
knows more may say so: which uids a lock may belong to (any other is
forged, and broken at once), and since when it has itself seen the lock
held (the remailer's record: a live holder that keeps touching its lock
still loses it after the stale age).  A lock is released only if it is
still the inode we linked: when another process took the lock over
(broke it as stale, say), we leave its lock alone instead of stomping on
its work.
"""

import errno
import fcntl
import os
import socket
import stat
import time

from hlfs.mail.maillog import show


class LockError(Exception):
    """
    A lock could not be made for a reason waiting will not fix
    (permissions, full disk, missing directory).
    """


class LockTimeout(LockError):
    """
    The lock stayed held by someone else until the timeout.
    """


def _ignore(message):
    pass


def _pid_is_gone(pid):
    """
    Return C{True} only when no process C{pid} exists on this host.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class DotLock:
    """
    An NFS-safe, owner-checked dotlock.

    @ivar path: the lock file's path (C{str} or C{bytes}).
    @ivar held: whether we believe we hold the lock.
    """

    def __init__(
        self,
        path,
        timeout=60.0,
        stale_after=300.0,
        log=_ignore,
        clock=time.monotonic,
        sleep=time.sleep,
        hostname=None,
        pid=None,
        owner=None,
        owners=None,
        held_since=None,
        wall=time.time,
    ):
        """
        @param path: lock file path, usually the mailbox path plus C{.lock}.
        @param timeout: seconds to keep trying before L{LockTimeout}.
        @param stale_after: a lock whose mtime is older than this many
            seconds (by the file server's clock) is broken.
        @param log: callable taking one C{str} line.
        @param clock: returns the current time in seconds, for the timeout.
        @param sleep: waits the given number of seconds.
        @param owner: uid to give the lock file when running as root on
            behalf of a user (the remailer), so that in a sticky spool the
            user's own delivery agent can break it if we die holding it.
        @param owners: the uids a lock of this mailbox may belong to, or
            L{None} for any; a lock of any other uid is forged and is
            broken at once (where we may remove it).
        @param held_since: when the caller's own record first found this
            lock held, in seconds on the C{wall} clock, or L{None}; a lock
            held since longer ago than C{stale_after} is broken, whatever
            its times say.
        @ivar found_held: when (on the C{wall} clock) the last
            L{acquire} first found the lock held by someone else, or
            L{None}.
        """
        self.path = os.fsdecode(path)
        self.timeout = timeout
        self.stale_after = stale_after
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.hostname = hostname or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.owner = owner
        self.owners = None if owners is None else frozenset(owners)
        self.held_since = held_since
        self.wall = wall
        self.found_held = None
        self.held = False
        self._identity = None
        self._unique = None
        directory, base = os.path.split(self.path)
        self._directory = directory or "."
        self._base = base

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def _unique_name(self):
        token = os.urandom(6).hex()
        host = self.hostname.replace("/", "_")
        return os.path.join(
            self._directory, f".{self._base}.{host}.{self.pid}.{token}"
        )

    def _try_once(self):
        """
        Make one attempt.

        On success the unique file stays linked to the lock's inode until
        release: as long as it exists the inode cannot be freed and reused,
        so "same inode as ours" really means "our lock".

        @return: C{(owned, now)} where C{now} is the file server's current
            time (the mtime of the file we just created), so lock ages
            are measured on one clock even across NFS.
        @raise LockError: when the lock directory refuses new files.
        """
        unique = self._unique_name()
        try:
            fd = os.open(
                unique, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
            )
        except OSError as e:
            raise LockError(
                f"cannot create a lock file in {self._directory}: {e.strerror}"
            ) from None
        owned = False
        try:
            if self.owner is not None:
                os.fchown(fd, self.owner, -1)
            try:
                os.write(
                    fd,
                    f"{self.pid} {self.hostname} {os.path.basename(unique)}\n".encode(),
                )
            except OSError as e:
                # A full disk still lets an empty lock work; the content only
                # helps to recognise a dead holder.
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
            try:
                os.link(unique, self.path)
            except OSError:
                # Not trusted either way: the link count below decides.
                pass
            st = os.fstat(fd)
            if st.st_nlink == 2:
                self._identity = (st.st_dev, st.st_ino)
                self._unique = unique
                owned = True
            return owned, st.st_mtime
        finally:
            os.close(fd)
            if not owned:
                _unlink_quietly(unique)

    def _holder(self, st):
        """
        Return C{(pid, hostname, twin)} written in the current lock (whose
        C{lstat} is C{st}), or L{None}.
        """
        if not _is_regular(st):
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError:
            return None
        try:
            if not _is_regular(os.fstat(fd)):
                return None
            data = os.read(fd, 256)
        except OSError:
            return None
        finally:
            os.close(fd)
        fields = data.split()
        if len(fields) not in (2, 3) or not fields[0].isdigit():
            return None
        twin = fields[2] if len(fields) == 3 else b""
        return int(fields[0]), fields[1].decode("ascii", "replace"), twin

    def _stale(self, st, holder, now):
        # Why the lock whose lstat is st is to be broken, or None.
        if self.owners is not None and st.st_uid not in self.owners:
            return f"owned by uid {st.st_uid}, who may not lock this mailbox"
        age = now - min(st.st_mtime, st.st_ctime)
        if age > self.stale_after:
            return f"{age:.0f}s old, older than {self.stale_after:g}s"
        if self.held_since is not None:
            held = self.wall() - self.held_since
            if held > self.stale_after:
                return f"found held for {held:.0f}s, longer than {self.stale_after:g}s"
        if holder and holder[1] == self.hostname and _pid_is_gone(holder[0]):
            return f"its holder, process {holder[0]} on this host, is gone"
        return None

    def _break_if_stale(self, now):
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if self.found_held is None:
            self.found_held = self.wall()
        holder = self._holder(st)
        reason = self._stale(st, holder, now)
        if reason is None:
            return
        try:
            current = os.lstat(self.path)
        except FileNotFoundError:
            return
        # Only break the very lock we judged, not one made meanwhile.  The
        # inode number alone does not tell: a lock broken and made anew at
        # once often gets the freed inode back.  Its content (the maker's
        # unique file name) and times differ.
        if _version(current) != _version(st) or self._holder(current) != holder:
            return
        try:
            if stat.S_ISDIR(st.st_mode):
                # A directory planted as the lock: moved aside, since only
                # an empty one could be removed.
                os.rename(self.path, os.path.join(
                    self._directory, f".{self._base}.broken.{os.urandom(6).hex()}"))
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            if not self._unbreakable_logged:
                self._unbreakable_logged = True
                self.log(f"stale lock {show(self.path)} ({reason}) cannot be removed: "
                         f"{e.strerror}")
            return
        self.log(f"broke stale lock {show(self.path)}: {reason}")
        # The dead holder's unique file, named in the lock, goes too.
        twin = holder[2].decode("ascii", "replace") if holder else ""
        if twin.startswith(f".{self._base}.") and "/" not in twin:
            _unlink_quietly(os.path.join(self._directory, twin))

    def acquire(self):
        """
        Take the lock, waiting up to C{timeout} seconds.

        @raise LockTimeout: another holder kept it.
        @raise LockError: the lock cannot be made at all.
        """
        deadline = self.clock() + self.timeout
        delay = 0.02
        self._unbreakable_logged = False
        self.found_held = None
        while True:
            owned, now = self._try_once()
            if owned:
                self.held = True
                return
            self._break_if_stale(now)
            owned, now = self._try_once()
            if owned:
                self.held = True
                return
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise LockTimeout(
                    f"lock {show(self.path)} still held after {self.timeout:g}s"
                )
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    def still_ours(self):
        """
        Return whether the lock file is still the inode we linked.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def refresh(self):
        """
        Touch the lock so a long job is not judged stale.
        """
        if self.still_ours():
            os.utime(self.path, follow_symlinks=False)

    def release(self):
        """
        Remove the lock if it is still ours; otherwise leave it and log.

        @return: whether the lock file was removed.
        """
        if not self.held:
            return False
        self.held = False
        try:
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                self.log(f"lock {show(self.path)} vanished while held; someone broke it")
                return False
            if (st.st_dev, st.st_ino) != self._identity:
                self.log(
                    f"lock {show(self.path)} was taken over by another process; left in place"
                )
                return False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return False
            return True
        finally:
            _unlink_quietly(self._unique)
            self._unique = None


def _version(st):
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _is_regular(st):
    return stat.S_ISREG(st.st_mode)


def lock_fd(fd, timeout=60.0, clock=time.monotonic, sleep=time.sleep):
    """
    Take an exclusive C{fcntl} lock on an open file, waiting up to
    C{timeout} seconds.

    @raise LockTimeout: the lock stayed held.
    @raise LockError: the file system refuses locks.
    """
    deadline = clock() + timeout
    delay = 0.02
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise LockError(f"fcntl lock refused: {e.strerror}") from None
        remaining = deadline - clock()
        if remaining <= 0:
            raise LockTimeout(f"mailbox fcntl lock still held after {timeout:g}s")
        sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)


def unlock_fd(fd):
    """
    Drop the C{fcntl} lock taken by L{lock_fd}.
    """
    try:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    except OSError:
        pass
