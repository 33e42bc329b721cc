"""
Attribute encodings: NFSv2's fattr (RFC 1094 2.3.5) and NFSv3's fattr3,
pre_op_attr, post_op_attr and wcc_data (RFC 1813 2.5, 2.6).
"""

import struct

from hlfs.core.linkfs import DIR, REG

_FATTR3 = struct.Struct(">5I2Q2I2Q6I")
_FATTR2 = struct.Struct(">17I")
_WCC_ATTR = struct.Struct(">IQ4I")  # follows=1, size, mtime, ctime

_S_IFDIR = 0o040000
_S_IFLNK = 0o120000
_S_IFREG = 0o100000
_S_IFMT = {DIR: _S_IFDIR, REG: _S_IFREG}

TRUE = struct.pack(">I", 1)
FALSE = struct.pack(">I", 0)
NO_WCC = FALSE + FALSE


_NS = 1_000_000_000
_UINT32 = 0xFFFFFFFF
_END_NS = (_UINT32 + 1) * _NS
_LATEST = (_UINT32, _NS - 1)


def _split(ns):
    """
    Return the nfstime (seconds, nanoseconds) of a time in nanoseconds.
    Both versions carry unsigned 32-bit seconds: a time before 1970 goes
    out as the Epoch and one after 2106 as the last second there is.  A
    lock file's times are its owner's to set (C{touch -d}), and root's
    LOOKUP of it must answer whatever they are.
    """
    if 0 <= ns < _END_NS:
        return divmod(ns, _NS)
    return (0, 0) if ns < 0 else _LATEST


class AttrEncoder:
    """
    Encode L{hlfs.core.linkfs.Attr} for one filesystem (C{fsid}).
    """

    def __init__(self, fsid):
        self.fsid = fsid

    def fattr3(self, a):
        msec, mnsec = _split(a.mtime)
        csec, cnsec = _split(a.ctime)
        return _FATTR3.pack(
            a.type, a.mode, a.nlink, a.uid, a.gid,
            a.size, 0,
            0, 0,
            self.fsid, a.fileid,
            msec, mnsec, msec, mnsec, csec, cnsec,
        )

    def post_op(self, a):
        """
        Return post_op_attr: none for L{None} (not known at once).
        """
        return FALSE if a is None else TRUE + self.fattr3(a)

    def wcc(self, a):
        """
        Return wcc_data for an operation that changed nothing (none for
        L{None}).
        """
        if a is None:
            return NO_WCC
        msec, mnsec = _split(a.mtime)
        csec, cnsec = _split(a.ctime)
        return _WCC_ATTR.pack(1, a.size, msec, mnsec, csec, cnsec) + self.post_op(a)

    def wcc_after(self, a):
        """
        Return wcc_data for an operation that changed the node: its
        attributes after, none from before (the client revalidates what
        it cached).
        """
        return FALSE + self.post_op(a)

    def fattr2(self, a):
        msec, mnsec = _split(a.mtime)
        csec, cnsec = _split(a.ctime)
        mode = a.mode | _S_IFMT.get(a.type, _S_IFLNK)
        return _FATTR2.pack(
            a.type, mode, a.nlink, a.uid, a.gid,
            min(a.size, _UINT32), 4096, 0, 1,
            self.fsid & _UINT32, a.fileid & _UINT32,
            msec, mnsec // 1000, msec, mnsec // 1000, csec, cnsec // 1000,
        )
