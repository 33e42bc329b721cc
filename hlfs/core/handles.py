"""
Filehandles: opaque to clients, meaningful only to this server.

Every handle is 32 bytes (NFSv2's fixed size; NFSv3 takes it as it is):

    0     magic 0x68 ('h')
    1     kind: root, link, mailbox link, lock file or mailbox file
    2-5   configuration fingerprint (export path, link name)
    6-    kind-specific, zero padded

A link handle names the caller it was made for (uid and whether the
caller's gid was HLFS_GID): the Linux client caches a symlink's body per
inode, so each caller must see an inode of its own.  A mailbox link names
the user whose mailbox it points at, a lock file the user whose mailbox
it locks (L{hlfs.core.locks}), a mailbox file the user whose real
mailbox root sees (L{hlfs.core.mailfiles}), a scratch file its number
(L{hlfs.core.scratch}).  Handles hold no time or
counter, so a restarted server with the same configuration accepts the
old ones.

A user's name of up to 25 bytes is in the handle itself.  A longer one
(the name service allows up to 32 bytes, directory users such as
C{firstname.lastname} often more) does not fit in NFSv2's 32 bytes: its
handle holds a 16-byte digest of the name instead, with the C{LONG} bit
of the kind set, and the codec keeps the names it made such handles for
in a bounded table (L{LongNames}).  A handle whose name has left the
table (a restart, or more long names looked up than the table holds) is
STALE: the client looks the name up again, and gets a new one.  The same
scheme serves NFSv3, so that a handle means the same over both versions.

Nothing in a handle is secret: anyone can make one.  What makes a handle
good is who presents it (L{may_use}): a link handle only by the caller it
was made for, a mailbox-link or lock-file handle only by a caller who sees
Table 2, the callers whose LOOKUP makes them, and a mailbox file's only by
root calling from a privileged port (L{ROOT_FILES}).
"""

import collections
import hashlib
import struct
import zlib
from typing import NamedTuple

SIZE = 32
MAGIC = 0x68

ROOT = 1
LINK = 2
MAILBOX = 3
LOCK = 4
FILE = 5
SCRATCH = 6
#: The kind bit of a handle whose user's name is a digest (L{LongNames}).
LONG = 0x80

# Link caller flags.
HLFS_CALLER = 1
ANONYMOUS = 2
#: Root from a privileged port, whose gid is not HLFS_GID: it sees each
#: user's real mailbox as a regular file (L{hlfs.core.mailfiles}).
ROOT_FILES = 4
_CALLER_FLAGS = (0, HLFS_CALLER, ANONYMOUS, HLFS_CALLER | ANONYMOUS, HLFS_CALLER | ROOT_FILES)

_HEAD = struct.Struct(">BBI")
_LINK = struct.Struct(">BBIIB")
MAX_NAME = SIZE - _HEAD.size - 1
#: The bytes of a long name's digest in its handle.
DIGEST = 16
#: The longest user name a handle can stand for: the name service's own
#: lines are bounded well below this; a name beyond it is nobody's.
MAX_USER_NAME = 255


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
    if kind in (FILE, SCRATCH):
        return sees_root_files(caller)
    return sees_table2(caller)


def sees_root_files(caller):
    """
    Whether C{caller} sees each user's real mailbox as a regular file:
    uid 0 from a privileged port, unless its gid is HLFS_GID
    (L{hlfs.core.linkfs.HomeLinkFS.caller}).
    """
    return bool(caller.flags & ROOT_FILES)


def nameable(name):
    """
    Whether a handle can stand for user C{name}.
    """
    return 0 < len(name) <= MAX_USER_NAME


class LongNames:
    """
    The names of the long-name handles made (digest -> name), at most
    C{size}, the least recently made or used first to go.
    """

    def __init__(self, size=16384):
        self.size = size
        self.names = collections.OrderedDict()

    @staticmethod
    def digest(name):
        return hashlib.blake2b(name, digest_size=DIGEST, person=b"hlfs-names").digest()

    def add(self, name):
        """
        Return the digest of C{name}, remembering it.
        """
        key = self.digest(name)
        names = self.names
        if key in names:
            names.move_to_end(key)
        else:
            names[key] = name
            if len(names) > self.size:
                names.popitem(last=False)
        return key

    def find(self, key):
        """
        Return the name whose digest is C{key}, or L{None}.
        """
        name = self.names.get(key)
        if name is not None:
            self.names.move_to_end(key)
        return name


class HandleCodec:
    """
    Make and check handles for one configuration.
    """

    def __init__(self, export_path, linkname):
        self.fingerprint = fingerprint(export_path, linkname)
        self.root = self._pad(_HEAD.pack(MAGIC, ROOT, self.fingerprint))
        self._cache = {}
        self.long_names = LongNames()

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
        lock file, for C{kind} L{LOCK}, or of the mailbox file root sees,
        L{FILE}), or L{None} for a name no user can have.
        """
        if len(name) > MAX_NAME:
            if not nameable(name):
                return None
            return self._pad(
                _HEAD.pack(MAGIC, kind | LONG, self.fingerprint) + self.long_names.add(name)
            )
        return self._pad(
            _HEAD.pack(MAGIC, kind, self.fingerprint) + bytes((len(name),)) + name
        )

    def lock(self, name):
        """
        Return the handle of the lock file of user C{name}'s mailbox, or
        L{None} for a name no user can have.
        """
        return self.mailbox(name, LOCK)

    def file(self, name):
        """
        Return the handle of user C{name}'s mailbox as root sees it (a
        regular file), or L{None} for a name no user can have.
        """
        return self.mailbox(name, FILE)

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
            if flags not in _CALLER_FLAGS or fh[_LINK.size :].strip(b"\0"):
                return None
            return Handle(LINK, uid, flags)
        if kind == ROOT:
            return Handle(ROOT) if fh == self.root else None
        if kind & LONG and kind & ~LONG in (MAILBOX, LOCK, FILE, SCRATCH):
            key = fh[_HEAD.size : _HEAD.size + DIGEST]
            name = self.long_names.find(key)
            if name is None or fh[_HEAD.size + DIGEST :].strip(b"\0"):
                return None
            return Handle(kind & ~LONG, name=name)
        if kind in (MAILBOX, LOCK, FILE, SCRATCH):
            n = fh[_HEAD.size]
            name = fh[_HEAD.size + 1 : _HEAD.size + 1 + n]
            if not 0 < n <= MAX_NAME or fh[_HEAD.size + 1 + n :].strip(b"\0"):
                return None
            if b"/" in name or b"\0" in name:
                return None
            return Handle(kind, name=name)
        return None
