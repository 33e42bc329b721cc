"""
What the policy core's operations take and give, whatever the node:
NFS status codes, L{NFSError}, L{Caller}, L{Attr}, and the helpers that
apply a function to an answer that may still be on its way (a
Deferred).  L{hlfs.core.linkfs} and L{hlfs.core.lockfs} share them.
"""

from typing import NamedTuple

from hlfs.core import locks

# NFS status codes; NFSv2 and v3 share these numbers.
PERM = 1
NOENT = 2
IO = 5
ACCES = 13
EXIST = locks.EXIST
NOTDIR = 20
ISDIR = 21
INVAL = 22
ROFS = 30
NAMETOOLONG = 63
NOTEMPTY = 66
STALE = 70
NOTSUPP = 10004

# File types (v3 numbering; v2 shares REG=1, DIR=2, LNK=5).
REG = 1
DIR = 2
LNK = 5

# How a CREATE asks for its file (NFSv3's createmode3; NFSv2 asks GUARDED).
UNCHECKED = 0
GUARDED = 1
EXCLUSIVE = 2

ROOT_FILEID = 1
MAX_NAME = 255

AUTH_NONE = 0
AUTH_UNIX = 1



class NFSError(Exception):
    """
    An NFS operation failed with C{status}.
    """

    def __init__(self, status):
        Exception.__init__(self, status)
        self.status = status


class Caller(NamedTuple):
    """
    Who is asking, as far as the link's value is concerned.
    """

    uid: int
    flags: int


class Attr(NamedTuple):
    """
    Attributes of a node, independent of the NFS version that encodes them.
    Times are in nanoseconds.
    """

    type: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    fileid: int
    mtime: int
    ctime: int


class Entry(NamedTuple):
    """
    A directory entry as READDIR and READDIRPLUS list it.
    """

    fileid: int
    name: bytes
    fh: bytes
    attr: Attr


class LinkConfig(NamedTuple):
    export_path: bytes
    linkname: bytes
    hlfs_gid: int | None


def then(result, f):
    """
    Apply C{f} to C{result} now, or when it fires if it is a Deferred.
    """
    if isinstance(result, tuple):
        return f(result)
    return result.addCallback(f)


def after(result, f):
    """
    Apply C{f} to C{result}, whatever it is, now or when it fires if it is
    a Deferred.
    """
    if hasattr(result, "addCallback"):
        return result.addCallback(f)
    return f(result)


def then_found(result, f):
    """
    Like L{_then}, for a result that may be L{None}: NOENT.
    """

    def found(resolution):
        if resolution is None:
            raise NFSError(NOENT)
        return f(resolution)

    if result is None or isinstance(result, tuple):
        return found(result)
    return result.addCallback(found)


def unless(compute, status, instead):
    """
    Return C{compute()}'s answer, now or later; if it fails with the NFS
    C{status}, C{instead()}'s.
    """

    def failed(failure):
        failure.trap(NFSError)
        if failure.value.status != status:
            return failure
        return instead()

    try:
        result = compute()
    except NFSError as e:
        if e.status != status:
            raise
        return instead()
    if hasattr(result, "addErrback"):
        return result.addErrback(failed)
    return result


def locking(operation, *args):
    """
    Call an L{locks.ISpoolLocks} method; its L{locks.LockFailed}, now or
    later, becomes an L{NFSError}.
    """

    def failed(failure):
        failure.trap(locks.LockFailed)
        raise NFSError(failure.value.status)

    try:
        result = operation(*args)
    except locks.LockFailed as e:
        raise NFSError(e.status) from None
    if result is None or isinstance(result, tuple):
        return result
    return result.addErrback(failed)
