"""
hlfs's private status program (the paper's future work, "an RPC interface
for querying hlfsd's status"): one procedure returning name/value pairs.

    program HLFS_STATUS 0x20004846, version 1:
        0  NULL
        1  STATUS  -> pair<>  where pair = { string name<>; string value<>; }
"""

import time

from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.xdr import pack_opaque

PROGRAM = 0x20004846
VERSION = 1

NFS2_PROCEDURES = (
    "NULL GETATTR SETATTR ROOT LOOKUP READLINK READ WRITECACHE WRITE CREATE "
    "REMOVE RENAME LINK SYMLINK MKDIR RMDIR READDIR STATFS"
).split()
NFS3_PROCEDURES = (
    "NULL GETATTR SETATTR LOOKUP ACCESS READLINK READ WRITE CREATE MKDIR SYMLINK "
    "MKNOD REMOVE RMDIR RENAME LINK READDIR READDIRPLUS FSSTAT FSINFO PATHCONF COMMIT"
).split()
MOUNT_PROCEDURES = "NULL MNT DUMP UMNT UMNTALL EXPORT".split()
STATUS_PROCEDURES = "NULL STATUS".split()

NAMES = {
    (100003, 2): ("nfs2", NFS2_PROCEDURES),
    (100003, 3): ("nfs3", NFS3_PROCEDURES),
    (100005, 1): ("mount1", MOUNT_PROCEDURES),
    (100005, 3): ("mount3", MOUNT_PROCEDURES),
    (PROGRAM, VERSION): ("status", STATUS_PROCEDURES),
}


def request_counts(stats):
    """
    Return C{(name, count)} pairs, e.g. C{("nfs3.READLINK", 12)}, from the
    dispatcher's counters.
    """
    pairs = []
    for key, count in sorted(stats.items(), key=lambda kv: str(kv[0])):
        if isinstance(key, tuple):
            prog_name, procs = NAMES.get(key[:2], (f"{key[0]}.{key[1]}", ()))
            proc = procs[key[2]] if key[2] < len(procs) else str(key[2])
            pairs.append((f"requests.{prog_name}.{proc}", count))
        else:
            pairs.append((f"requests.{key}", count))
    return pairs


def encode_pairs(pairs):
    parts = []
    for name, value in pairs:
        parts.append(TRUE + pack_opaque(str(name).encode()) + pack_opaque(str(value).encode()))
    parts.append(FALSE)
    return b"".join(parts)


def decode_pairs(body):
    pairs = []
    while body.bool():
        pairs.append((body.opaque(1024).decode(), body.opaque(4096).decode()))
    return pairs


class StatusProgram:
    """
    The procedure table; C{report} is a callable returning the pairs.

    Any local user may call STATUS, and a report costs far more than a
    call: one is made at most every C{max_age} seconds of C{clock} and its
    encoding answers every call meanwhile.
    """

    def __init__(self, report, clock=None, max_age=1.0):
        self.report = report
        self.seconds = clock.seconds if clock is not None else time.monotonic
        self.max_age = max_age
        self._encoded = None
        self._made = 0.0
        self.procedures = (self.null, self.status)

    def null(self, args, call):
        return b""

    def status(self, args, call):
        now = self.seconds()
        if self._encoded is None or not 0 <= now - self._made < self.max_age:
            self._encoded = encode_pairs(self.report())
            self._made = now
        return self._encoded


