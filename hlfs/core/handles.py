"""
Filehandles: opaque to clients, meaningful only to this server.

Every handle is 32 bytes (NFSv2's fixed size; NFSv3 takes it as it is):

    0     magic 0x68 ('h')
    1     kind: root, link, mailbox link or lock file
    2-5   configuration fingerprint (export path, link name)
    6-    kind-specific, zero padded

A link handle names the caller it was made for (uid and whether the
caller's gid was HLFS_GID): the Linux client caches a symlink's body per
inode, so each caller must see an inode of its own.  A mailbox link names
the user whose mailbox it points at, a lock file the user whose mailbox
it locks (L{hlfs.core.locks}).  Handles hold no time or counter, so
a restarted server with the same configuration accepts the old ones.

Nothing in a handle is secret: anyone can make one.  What makes a handle
good is who presents it (L{may_use}): a link handle only by the caller it
was made for, a mailbox-link or lock-file handle only by a caller who sees
Table 2, the callers whose LOOKUP makes them.
"""

import struct
import zlib
from typing import NamedTuple

SIZE = 32
MAGIC = 0x68

ROOT = 1
LINK = 2
MAILBOX = 3
LOCK = 4

# Link caller flags.
HLFS_CALLER = 1
ANONYMOUS = 2

_HEAD = struct.Struct(">BBI")
_LINK = struct.Struct(">BBIIB")
MAX_NAME = SIZE - _HEAD.size - 1


class Handle(NamedTuple):
    """
    A decoded handle.  C{uid} and C{flags} describe a link's caller;
    C{name} is a mailbox link's user.
    """

    kind: int
    uid: int = 0
    flags: int = 0
    name: bytes = b""


def fingerprint(export_path, linkname):
    """
    Return the 32-bit fingerprint that ties handles to a configuration.
    """
    return zlib.crc32(export_path + b"\0" + linkname)


def sees_table2(caller):
    """
    Whether C{caller} (a L{hlfs.core.nodes.Caller}) gets Table 2: C{home}
    is C{.}, and each user's name and lock file are in the directory.
    L{hlfs.core.linkfs.HomeLinkFS.caller} says who does: root, and
    callers whose gid is HLFS_GID.
    """
    return bool(caller.flags & HLFS_CALLER)


def may_use(handle, caller):
    """
    Whether C{caller} may present C{handle}: the root to anyone; a link
    to the caller it was made for alone (the Linux client must never be
    handed one caller's link as another's); a mailbox link or a lock
    file to the callers who may look its name up, those of Table 2.
    """
    kind = handle.kind
    if kind == LINK:
        return handle.uid == caller.uid and handle.flags == caller.flags
    if kind == ROOT:
        return True
    return sees_table2(caller)


class HandleCodec:
    """
    Make and check handles for one configuration.
    """

    def __init__(self, export_path, linkname):
        self.fingerprint = fingerprint(export_path, linkname)
        self.root = self._pad(_HEAD.pack(MAGIC, ROOT, self.fingerprint))
        self._cache = {}

    @staticmethod
    def _pad(data):
        return data + bytes(SIZE - len(data))

    def link(self, uid, flags):
        """
        Return the handle of the link as seen by caller C{uid}.
        """
        key = (uid, flags)
        fh = self._cache.get(key)
        if fh is None:
            fh = self._pad(_LINK.pack(MAGIC, LINK, self.fingerprint, uid, flags))
            if len(self._cache) < 65536:
                self._cache[key] = fh
        return fh

    def mailbox(self, name, kind=MAILBOX):
        """
        Return the handle of the mailbox link of user C{name} (or of its
        lock file, for C{kind} L{LOCK}), or L{None} if the name is too long
        to fit.
        """
        if len(name) > MAX_NAME:
            return None
        return self._pad(
            _HEAD.pack(MAGIC, kind, self.fingerprint) + bytes((len(name),)) + name
        )

    def lock(self, name):
        """
        Return the handle of the lock file of user C{name}'s mailbox, or
        L{None} if the name is too long to fit.
        """
        return self.mailbox(name, LOCK)

    def decode(self, fh):
        """
        Return the L{Handle} encoded in C{fh}, or L{None} for any handle
        this configuration did not make.
        """
        if len(fh) != SIZE:
            return None
        magic, kind, fp = _HEAD.unpack_from(fh)
        if magic != MAGIC or fp != self.fingerprint:
            return None
        if kind == LINK:
            _, _, _, uid, flags = _LINK.unpack_from(fh)
            if flags > (HLFS_CALLER | ANONYMOUS) or fh[_LINK.size :].strip(b"\0"):
                return None
            return Handle(LINK, uid, flags)
        if kind == ROOT:
            return Handle(ROOT) if fh == self.root else None
        if kind in (MAILBOX, LOCK):
            n = fh[_HEAD.size]
            name = fh[_HEAD.size + 1 : _HEAD.size + 1 + n]
            if not 0 < n <= MAX_NAME or fh[_HEAD.size + 1 + n :].strip(b"\0"):
                return None
            if b"/" in name or b"\0" in name:
                return None
            return Handle(kind, name=name)
        return None
