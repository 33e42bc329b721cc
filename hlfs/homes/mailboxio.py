"""
Root's view of a user's real mailbox, done as that user: the check
process's side of a L{hlfs.homes.records.MailboxFile} job (the daemon's
is L{hlfs.homes.mailboxes}; what root sees, L{hlfs.core.mailfiles}).

The spool directory is opened as the lock files' is
(L{hlfs.homes.lockfiles.open_spool}: no link followed in its last
component, but for the alternate spool), and the mailbox relative to
it, C{O_NOFOLLOW|O_NONBLOCK}: a link, a FIFO or a device in the place of
the mailbox is never followed, opened for long or written; anything but
a regular file is refused (EACCES), and so is a file NAME does not own:
in the alternate spool (mode 1777) another user may have made the file
of NAME's name, readable by them, before NAME's first mail.  Every call
runs with NAME's
filesystem identity, so root's call can do nothing NAME could not: a
root-squashed home takes it, a full home or NAME's quota answers ENOSPC
or EDQUOT, a file NAME may not write answers EACCES.

Each job opens the file, does its one thing and closes it, as an NFS
server does with a handle: nothing is held between calls.  A write is
on disk (C{fdatasync}) before it is answered.

Nothing of Twisted here: the check processes import this module.
"""

import errno as errnos
import os
import stat

from hlfs.homes.credentials import settle
from hlfs.homes.lockfiles import open_spool
from hlfs.homes import creds
from hlfs.homes.records import MailboxDone

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def _fields(st):
    # The fields of hlfs.core.mailfiles.FileStat.
    return (st.st_mode & 0o7777, st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _not_a_mailbox():
    return OSError(errnos.EACCES, "not a regular file that the user owns")


def _is_mailbox(st, uid):
    return stat.S_ISREG(st.st_mode) and st.st_uid == uid


def _open(base, dfd, flags, uid, mode=0o600):
    """
    Open the mailbox C{base} in C{dfd}; return the descriptor and its
    stat, refusing anything but a regular file that C{uid} owns.
    """
    fd = os.open(base, flags | _FLAGS, mode, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not _is_mailbox(st, uid):
            raise _not_a_mailbox()
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _past_end(st, at, gap):
    if at > st.st_size + gap:
        raise OSError(errnos.EFBIG, "past the mailbox's end")


def _operate(job, dfd, base):
    """
    Do C{job.op} on the mailbox; return C{(stat fields, data)}.
    """
    op = job.op
    if op == "stat":
        try:
            st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None, b""
        if not _is_mailbox(st, job.uid):
            raise _not_a_mailbox()
        return _fields(st), b""
    if op == "create":
        mode = job.mode & 0o7777
        fd, _ = _open(base, dfd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, job.uid, mode)
        try:
            os.fchmod(fd, mode)  # whatever the process's umask
            return _fields(os.fstat(fd)), b""
        finally:
            os.close(fd)
    if op == "read":
        fd, st = _open(base, dfd, os.O_RDONLY, job.uid)
        try:
            return _fields(st), os.pread(fd, job.count, job.offset)
        finally:
            os.close(fd)
    if op in ("write", "truncate", "sync"):
        fd, st = _open(base, dfd, os.O_RDONLY if op == "sync" else os.O_WRONLY, job.uid)
        try:
            if op == "write":
                _past_end(st, job.offset, job.gap)
                data, at = memoryview(job.data), job.offset
                while data:
                    written = os.pwrite(fd, data, at)
                    data, at = data[written:], at + written
                os.fdatasync(fd)
            elif op == "truncate":
                _past_end(st, job.size, job.gap)
                os.ftruncate(fd, job.size)
                os.fsync(fd)
            else:
                os.fsync(fd)
            return _fields(os.fstat(fd)), b""
        finally:
            os.close(fd)
    raise OSError(errnos.EINVAL, f"no mailbox operation {op!r}")


def mailbox_operation(job, ids):
    """
    Do a L{hlfs.homes.records.MailboxFile} job with the filesystem
    identity C{ids} (C{(uid, gid, groups)}).

    @return: C{(stat fields or None, data)}.
    @raise OSError: as the operation failed.
    """
    dfd, base, _ = open_spool(job.path, job.alt_dir, ids)
    try:
        return creds.run_as(*ids, _operate, job, dfd, base)
    finally:
        os.close(dfd)


def run_mailbox(job):
    """
    Run a L{hlfs.homes.records.MailboxFile} job as its user (blocking)
    and return its L{MailboxDone}.  This never raises.
    """
    kept = None
    try:
        ids, kept = settle(job)
        found, data = mailbox_operation(job, ids)
        return MailboxDone(True, 0, found, data, kept)
    except OSError as e:
        return MailboxDone(False, e.errno or errnos.EIO, None, b"", kept)
    except Exception:  # a job must answer, whatever went wrong
        return MailboxDone(False, errnos.EIO, None, b"", kept)
