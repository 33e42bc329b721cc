"""
The dotlocks of Table 2: C{NAME.lock} in hlfs's directory is the lock
file next to NAME's mailbox, whichever spool that mailbox is in.

A delivery agent running as root (Postfix's local(8) over a spool its
mail owner cannot write, C{mail.local}) walks C{/var/mail/NAME} into
NAME's mailbox, and dotlocks it by making C{/var/mail/NAME.lock}: in
root's view, C{/mail/NAME.lock}.  A reader running as NAME makes the same
lock as C{~NAME/.mailspool/NAME.lock} through its own view.  For the two
to exclude each other, both must be one file, so for root:

  - LOOKUP and GETATTR of C{NAME.lock} stat the real lock file, the
    mailbox link's target plus C{.lock} (the alternate spool's while NAME's
    home is unusable), as a regular file, or NOENT (STALE for a handle)
    while there is none;
  - CREATE makes it, always exclusively (EXIST when it is there, whatever
    the create mode asked: a lock that can be "made" twice locks nothing),
    and REMOVE removes it;
  - both run as NAME, in a home-check process, within the probe deadline: root
    gets nothing there that NAME could not do.

Only uid 0 with AUTH_UNIX from a privileged port may make or remove a
lock; HLFS_GID callers may look.  Everything here is pure: the files are
made by an L{ISpoolLocks} (L{hlfs.homes.locks.SpoolLocks}).
"""

import errno as errnos
from typing import NamedTuple

from zope.interface import Interface

from hlfs.core.handles import ANONYMOUS, HLFS_CALLER, sees_table2

SUFFIX = b".lock"

# NFS status codes beyond those of hlfs.core.linkfs.
EXIST = 17
NOSPC = 28
DQUOT = 69
#: NFS3ERR_JUKEBOX: try again later.  NFSv2 has no such code and says IO.
TRYLATER = 10008

#: errno of a lock operation -> NFS status.
_STATUS = {
    errnos.EEXIST: EXIST,
    errnos.ENOENT: 2,
    errnos.EPERM: 1,
    errnos.EACCES: 13,
    errnos.EROFS: 30,
    errnos.ENOSPC: NOSPC,
    errnos.EDQUOT: DQUOT,
    errnos.EFBIG: 27,
    errnos.ENAMETOOLONG: 63,
    errnos.EISDIR: 21,
    # The home's own NFS server lost the file: STALE would be about
    # hlfs's directory, so the client is told to come back instead.
    errnos.ESTALE: TRYLATER,
    errnos.EAGAIN: TRYLATER,
    errnos.EINTR: TRYLATER,
}


class LockStat(NamedTuple):
    """
    What a lock file is, as L{ISpoolLocks} reports it.  Times are in
    nanoseconds.
    """

    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    ctime: int


class LockFailed(Exception):
    """
    A lock operation failed with C{errno} (or did not finish in time:
    L{TRYLATER} as C{status}).
    """

    def __init__(self, errno, status=None):
        Exception.__init__(self, errno)
        self.errno = errno
        self.status = status if status is not None else status_of(errno)


class ISpoolLocks(Interface):
    """
    The lock files themselves.  Each method takes the user's name and the
    lock file's path, runs as that user, and returns its answer or a
    Deferred firing with it; failures raise (or fail with)
    L{LockFailed}.
    """

    def stat(name, path):
        """
        Return the L{LockStat} of C{path}, or L{None} if there is none.
        """

    def create(name, path, mode):
        """
        Make C{path} exclusively with C{mode}; return its L{LockStat}.
        """

    def remove(name, path):
        """
        Remove C{path}; return L{None}.
        """


def status_of(errno):
    """
    Return the NFS status for the errno of a failed lock operation.
    """
    return _STATUS.get(errno, 5)


def lock_owner(name):
    """
    Return NAME if C{name} is C{NAME.lock} for a NAME that can be a user's
    name, else L{None}.
    """
    if not name.endswith(SUFFIX):
        return None
    user = name[: -len(SUFFIX)]
    if not user or user in (b".", b"..") or b"/" in user or b"\0" in user:
        return None
    return user


def lock_path(mailbox):
    """
    Return the lock file of the mailbox at C{mailbox}: in the same
    directory, always.
    """
    return mailbox + SUFFIX


def may_look(caller):
    """
    Whether C{caller} (a L{hlfs.core.linkfs.Caller}) sees lock files:
    the callers of Table 2 (L{sees_table2}), who alone may also present
    their handles (L{hlfs.core.handles.may_use}).
    """
    return sees_table2(caller)


def may_lock(caller, privileged):
    """
    Whether C{caller} may make and remove lock files: uid 0 with
    AUTH_UNIX (anonymous callers never get uid 0 with these flags), from
    a privileged port.
    """
    return caller.uid == 0 and caller.flags & (HLFS_CALLER | ANONYMOUS) == HLFS_CALLER and privileged
