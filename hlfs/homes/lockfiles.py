"""
Root's dotlock C{NAME.lock}, made, looked at or removed as NAME: the
check process's side of a L{hlfs.homes.records.LockFile} job (the
daemon's is L{hlfs.homes.locks.SpoolLocks}).

The spool directory is opened without following a link in its last
component, as the home check does (unless it is the alternate spool,
whose path is the daemon's own), and the lock's name is worked on
relative to it: C{O_CREAT|O_EXCL|O_NOFOLLOW|O_NONBLOCK} to make it,
C{unlink} to remove it, C{lstat} to look.  With NAME's filesystem
identity, root's call can do nothing NAME could not, but for one thing:
in the alternate spool, another user's file in the place of NAME's lock
is removed as root (L{_evict_squatter}).

Nothing of Twisted here: the check processes import this module.
"""

import errno as errnos
import os
import stat

from hlfs.homes import creds
from hlfs.homes.credentials import settle
from hlfs.homes.records import LockDone

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _stat_fields(st):
    # The fields of hlfs.core.locks.LockStat.
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _on_lock_file(op, dfd, base, mode):
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


def open_spool(path, alt_dir, ids):
    """
    Open the spool directory of C{path} (a lock file or a mailbox) with
    the filesystem identity C{ids}, without following a link in its last
    component unless it is the alternate spool C{alt_dir} (whose path is
    the daemon's own).

    @return: C{(descriptor, the name in it, whether it is the alternate
        spool)}.
    """
    spool, _, base = path.rpartition(b"/")
    spool = spool or b"/"
    in_alt = spool == alt_dir
    uid, gid, groups = ids
    dfd = creds.run_as(uid, gid, groups, os.open, spool, _DIR if in_alt else _DIR | os.O_NOFOLLOW)
    return dfd, base, in_alt


def lock_operation(op, path, mode, alt_dir, ids):
    """
    Do C{op} (C{"stat"}, C{"create"} or C{"remove"}) on the lock file
    C{path} with the filesystem identity C{ids} (C{(uid, gid, groups)});
    only the removal of a squatter (L{_evict_squatter}) runs as the
    process itself, root.

    @return: C{(stat, squatter)}: the lock's stat fields or L{None} (no
        lock, or removed), and the owner of another user's file removed
        from the place of the lock, or L{None}.
    @raise OSError: as the operation failed.
    """
    dfd, base, in_alt = open_spool(path, alt_dir, ids)
    uid, gid, groups = ids
    try:
        try:
            found = creds.run_as(uid, gid, groups, _on_lock_file, op, dfd, base, mode)
        except (FileExistsError, PermissionError):
            squatter = _evict_squatter(dfd, base, uid) if in_alt and op != "stat" else None
            if squatter is None:
                raise
            if op == "remove":
                return None, squatter
            return creds.run_as(uid, gid, groups, _on_lock_file, op, dfd, base, mode), squatter
        if op == "stat" and in_alt and found is not None and found[1] not in (uid, 0):
            # Another user's file is no lock of NAME's: root's client
            # then asks to make the lock, and it is made.
            return None, None
        return found, None
    finally:
        os.close(dfd)


def _evict_squatter(dfd, base, uid):
    """
    Remove, as root, the lock file C{base} of the alternate spool
    (C{dfd}) if it belongs to neither its user (C{uid}) nor root.  The
    alternate spool is root's, mode 1777: any user can make C{NAME.lock}
    there, and NAME can neither remove it (the sticky bit) nor ever take
    the lock, so NAME's mail would wait for as long as the squatter
    likes.  A delivery agent running as root could remove it from a
    sticky spool; root's lock through hlfs can too.  Root's LOOKUP does
    not see such a file (the kernel client would answer EEXIST to an
    exclusive create without asking), its CREATE replaces it and its
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


def run_lock(job):
    """
    Run a L{hlfs.homes.records.LockFile} job as its user (blocking) and
    return its L{LockDone}.  This never raises.
    """
    kept = None
    try:
        ids, kept = settle(job)
        found, squatter = lock_operation(job.op, job.path, job.mode, job.alt_dir, ids)
        return LockDone(True, 0, found, kept, squatter)
    except OSError as e:
        return LockDone(False, e.errno or errnos.EIO, None, kept, None)
    except Exception:  # a job must answer, whatever went wrong
        return LockDone(False, errnos.EIO, None, kept, None)
