"""
L{SpoolLocks}: the L{hlfs.core.locks.ISpoolLocks} that makes, removes
and looks at users' lock files as the users themselves, in the probe
pool and within the probe deadline, never in the reactor thread.

Each operation opens the spool directory (without following a link in
its last component, as the home check does, unless it is the alternate
spool) and works on the lock's name relative to it: C{O_CREAT|O_EXCL|
O_NOFOLLOW} to make it, C{unlink} to remove it, C{lstat} to look.  With
the user's filesystem identity, root's call can do nothing the user
could not.

A lock made after its caller was answered (the deadline passed, the
caller was told to come back) is removed again at once: nobody holds
it.  In the alternate spool, another user's file in the place of NAME's
lock is removed by the daemon itself (L{_evict_squatter}).
"""

import errno as errnos
import itertools
import os
import stat

from twisted.logger import Logger
from zope.interface import implementer

from hlfs.core.locks import TRYLATER, ISpoolLocks, LockFailed, LockStat
from hlfs.homes import creds

log = Logger(namespace="hlfs.locks")

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _lock_stat(st):
    return LockStat(st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def lock_operation(op, path, mode, alt_dir, ids):
    """
    Do C{op} (C{"stat"}, C{"create"} or C{"remove"}) on the lock file
    C{path} with the filesystem identity C{ids} (C{(uid, gid, groups)});
    blocking, for a pool thread.

    @return: C{(True, LockStat or None)}, or C{(False, errno)}; after
        another user's file was removed from the place of the lock
        (L{_evict_squatter}), C{(True, LockStat or None, its owner)}.
    """
    spool, _, base = path.rpartition(b"/")
    spool = spool or b"/"
    try:
        with creds.as_user(*ids):
            dfd = os.open(spool, _DIR if spool == alt_dir else _DIR | os.O_NOFOLLOW)
        try:
            try:
                with creds.as_user(*ids):
                    found = _on_lock_file(op, dfd, base, mode)
                if op == "stat" and spool == alt_dir and found is not None and found.uid not in (ids[0], 0):
                    # Another user's file is no lock of NAME's: root's
                    # client then asks to make the lock, and it is made.
                    found = None
                return True, found
            except (FileExistsError, PermissionError):
                squatter = None
                if spool == alt_dir and op != "stat":
                    squatter = _evict_squatter(dfd, base, ids[0])
                if squatter is None:
                    raise
            if op == "remove":
                return True, None, squatter
            with creds.as_user(*ids):
                return True, _on_lock_file(op, dfd, base, mode), squatter
        finally:
            os.close(dfd)
    except OSError as e:
        return False, e.errno or errnos.EIO


def _on_lock_file(op, dfd, base, mode):
    if op == "stat":
        try:
            return _lock_stat(os.stat(base, dir_fd=dfd, follow_symlinks=False))
        except FileNotFoundError:
            return None
    if op == "create":
        fd = os.open(base, _CREATE, mode, dir_fd=dfd)
        try:
            os.fchmod(fd, mode)  # whatever the daemon's umask
            return _lock_stat(os.fstat(fd))
        finally:
            os.close(fd)
    os.unlink(base, dir_fd=dfd)
    return None


def _evict_squatter(dfd, base, uid):
    """
    Remove, as the daemon (root), the lock file C{base} of the alternate
    spool (C{dfd}) if it belongs to neither its user (C{uid}) nor root.
    The alternate spool is root's, mode 1777: any user can make
    C{NAME.lock} there, and NAME can neither remove it (the sticky bit)
    nor ever take the lock, so NAME's mail would wait for as long as the
    squatter likes.  A delivery agent running as root could remove it
    from a sticky spool; root's lock through hlfs can too.  Root's LOOKUP
    does not see such a file (the kernel client would answer EEXIST to
    an exclusive create without asking), its CREATE replaces it and its
    REMOVE removes it.  The name is never followed; a directory goes only
    when empty.

    @return: the owner of the file removed, or L{None}.
    """
    try:
        st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
        if st.st_uid in (uid, 0):
            return None
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(base, dir_fd=dfd)
        else:
            os.unlink(base, dir_fd=dfd)
    except OSError:
        return None
    return st.st_uid


@implementer(ISpoolLocks)
class SpoolLocks:
    """
    Lock files in users' spools, for root's view (L{hlfs.core.locks}).

    @ivar resolver: the L{hlfs.homes.cache.ProbingResolver} whose users,
        probe credentials, pool and deadline are used.
    """

    def __init__(self, resolver, operation=lock_operation):
        self.resolver = resolver
        self.operation = operation
        self._keys = itertools.count()
        self.made = self.removed = self.late = 0

    def stat(self, name, path):
        return self._run(name, "stat", path)

    def create(self, name, path, mode):
        return self._run(name, "create", path, mode)

    def remove(self, name, path):
        return self._run(name, "remove", path)

    def _run(self, name, op, path, mode=0):
        resolver = self.resolver
        user = resolver.user_named(name)
        if user is None:
            raise LockFailed(errnos.ENOENT)
        pool = resolver.pool
        if pool is None:
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        credentials = resolver.probe.credentials
        home = user.home.rstrip(b"/") or b"/"
        alt_dir = resolver.rules.alt_dir

        def work():
            return self.operation(op, path, mode, alt_dir, credentials(user, home))

        def finished(flight, result):
            return self._finished(flight, result, op, name, path)

        flight = pool.submit(("lock", name, next(self._keys)), path, work, (), finished)
        if flight is None:
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        d = pool.wait(flight, resolver.deadline, self._too_late)
        d.addCallback(self._answer)
        return d

    def _too_late(self, flight):
        flight.late = True
        self.late += 1
        log.warn(
            "lock file {path} not done within {deadline} s; the caller is told to try again",
            path=os.fsdecode(flight.path), deadline=self.resolver.deadline,
        )
        return False, None

    def _finished(self, flight, result, op, name, path):
        if result is None:
            result = (False, errnos.EIO)
        ok = result[0]
        if ok and len(result) > 2:
            log.warn(
                "removed {path}, owned by uid {owner}: another user's file in the place "
                "of {name}'s lock in the alternate spool",
                path=os.fsdecode(path), owner=result[2], name=os.fsdecode(name),
            )
            result = result[:2]
        if ok and op == "create":
            self.made += 1
            if flight.late:
                # Its caller was told to try again: nobody holds this lock.
                log.warn("lock {path} made after its deadline; removing it", path=os.fsdecode(path))
                try:
                    self._run(name, "remove", path).addErrback(lambda f: None)
                except LockFailed:
                    log.error("cannot remove the late lock {path}", path=os.fsdecode(path))
        elif ok and op == "remove":
            self.removed += 1
        return result

    @staticmethod
    def _answer(result):
        ok, value = result
        if ok:
            return value
        if value is None:
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        raise LockFailed(value)
