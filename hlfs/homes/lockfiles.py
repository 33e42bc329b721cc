"""
Root's dotlock C{NAME.lock}, made, looked at or removed as NAME: the
check process's side of a L{hlfs.homes.records.LockFile} job (the
daemon's is L{hlfs.homes.locks.SpoolLocks}).

The spool directory is opened without following a link in its last
component, as the home check does (unless it is the alternate spool,
whose path is the daemon's own), and the lock's name is worked on
relative to it: C{O_CREAT|O_EXCL|O_NOFOLLOW|O_NONBLOCK} to make it,
C{unlink} to remove it, C{lstat} to look.  With NAME's filesystem
identity, root's call can do nothing NAME could not.

Nothing of Twisted here: the check processes import this module.
"""

import errno as errnos
import os

from hlfs.homes import creds
from hlfs.homes.credentials import settle
from hlfs.homes.records import LockDone

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _stat_fields(st):
    # The fields of hlfs.core.locks.LockStat.
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def lock_operation(op, path, mode, alt_dir):
    """
    Do C{op} (C{"stat"}, C{"create"} or C{"remove"}) on the lock file
    C{path}, with the calling thread's filesystem identity.

    @return: the lock's stat fields, or L{None} (no lock, or removed).
    @raise OSError: as the operation failed.
    """
    spool, _, base = path.rpartition(b"/")
    spool = spool or b"/"
    dfd = os.open(spool, _DIR if spool == alt_dir else _DIR | os.O_NOFOLLOW)
    try:
        if op == "stat":
            try:
                return _stat_fields(os.stat(base, dir_fd=dfd, follow_symlinks=False))
            except FileNotFoundError:
                return None
        if op == "create":
            fd = os.open(base, _CREATE, mode, dir_fd=dfd)
            try:
                os.fchmod(fd, mode)  # whatever the process's umask
                return _stat_fields(os.fstat(fd))
            finally:
                os.close(fd)
        if op == "remove":
            os.unlink(base, dir_fd=dfd)
            return None
        raise OSError(errnos.EINVAL, f"no lock operation {op!r}")
    finally:
        os.close(dfd)


def run_lock(job):
    """
    Run a L{hlfs.homes.records.LockFile} job as its user (blocking) and
    return its L{LockDone}.  This never raises.
    """
    kept = None
    try:
        (uid, gid, groups), kept = settle(job)
        stat = creds.run_as(uid, gid, groups, lock_operation, job.op, job.path, job.mode,
                            job.alt_dir)
        return LockDone(True, 0, stat, kept)
    except OSError as e:
        return LockDone(False, e.errno or errnos.EIO, None, kept)
    except Exception:  # a job must answer, whatever went wrong
        return LockDone(False, errnos.EIO, None, kept)
