"""
NFS version 2 (RFC 1094): every procedure, over the L{HomeLinkFS} core.
"""

import struct

from hlfs.core.linkfs import IO, NFSError
from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.nfs.common import answer, caller_of, client_of, name, path, remember
from hlfs.nfs.passthrough import FileCalls2, sattr2
from hlfs.xdr import UINT, pack_opaque

PROGRAM = 100003
VERSION = 2

FHSIZE = 32

_OK = UINT.pack(0)
# tsize bsize blocks bfree bavail
_STATFS = struct.Struct(">5I").pack(8192, 4096, 0, 0, 0)
_READDIR_OVERHEAD = 4 + 4 + 4
_ENTRY_FIXED = 4 + 4 + 4 + 4


def status(code):
    # NFSv2 has no codes of v3's own (JUKEBOX, NOTSUPP, ...): IO for them.
    return UINT.pack(code if code < 10000 else IO)


def fhandle(args):
    return args.fixed(FHSIZE)


class NFSv2:
    """
    The procedure table of NFS version 2 for one L{HomeLinkFS}.
    """

    def __init__(self, fs, encoder, replies=None):
        self.fs = fs
        self.enc = encoder
        self.replies = replies
        files = FileCalls2(self, status)
        self.read, self.write, self.setattr = files.read, files.write, files.setattr
        self.procedures = (
            self.null, self.getattr, self.setattr, self.null, self.lookup,
            self.readlink, self.read, self.null, self.write, self.create,
            self.remove, self.rename, self.link, self.symlink, self.mkdir,
            self.rmdir, self.readdir, self.statfs,
        )

    def _status(self, compute, ok=lambda r: _OK):
        """
        Answer a change: C{ok(result)} or the error's status, now or later.
        """
        return answer(compute, ok, status)

    def null(self, args, call):
        return b""

    def getattr(self, args, call):
        fh = fhandle(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.getattr(fh, caller),
            lambda a: remember(self.replies, self.fs, call, caller, _OK + self.enc.fattr2(a), a),
            status,
        )

    def lookup(self, args, call):
        dirfh = fhandle(args)
        filename = name(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.lookup(dirfh, filename, caller),
            lambda r: remember(self.replies, self.fs, call, caller, _OK + r[0] + self.enc.fattr2(r[1]), r[1]),
            status,
        )

    def readlink(self, args, call):
        fh = fhandle(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.readlink(fh, caller),
            lambda r: remember(self.replies, self.fs, call, caller, _OK + pack_opaque(r[0])),
            status,
        )

    def create(self, args, call):
        """
        CREATE: root's lock file (L{hlfs.core.lockfs}), always exclusive
        (NFSv2 has no create modes: GUARDED); EXIST for another name that
        is there, ROFS for one that is not (L{hlfs.core.changes}).
        """
        dirfh = fhandle(args)
        filename = name(args)
        mode = sattr2(args).mode
        caller = caller_of(self.fs, call)
        return self._status(
            lambda: self.fs.create(dirfh, filename, caller, call.privileged, mode),
            lambda r: _OK + r[0] + self.enc.fattr2(r[1]),
        )

    def mkdir(self, args, call):
        dirfh = fhandle(args)
        filename = name(args)
        sattr2(args)
        caller = caller_of(self.fs, call)
        return self._status(lambda: self.fs.make(dirfh, filename, caller))

    def remove(self, args, call):
        """
        REMOVE: root's lock file, or the hidden name of one the client
        renamed (L{hlfs.core.changes}).
        """
        dirfh = fhandle(args)
        filename = name(args)
        caller = caller_of(self.fs, call)
        return self._status(
            lambda: self.fs.remove(dirfh, filename, caller, call.privileged, client_of(call))
        )

    def rmdir(self, args, call):
        dirfh = fhandle(args)
        filename = name(args)
        caller = caller_of(self.fs, call)
        return self._status(lambda: self.fs.rmdir(dirfh, filename, caller))

    def rename(self, args, call):
        """
        RENAME: only the client's silly rename of root's lock file.
        """
        fromfh = fhandle(args)
        fromname = name(args)
        tofh = fhandle(args)
        toname = name(args)
        caller = caller_of(self.fs, call)
        return self._status(
            lambda: self.fs.rename(
                fromfh, fromname, tofh, toname, caller, call.privileged, client_of(call)
            )
        )

    def link(self, args, call):
        fh = fhandle(args)
        dirfh = fhandle(args)
        filename = name(args)
        caller = caller_of(self.fs, call)
        return self._status(lambda: self.fs.link(fh, dirfh, filename, caller, call.privileged))

    def symlink(self, args, call):
        dirfh = fhandle(args)
        filename = name(args)
        path(args)
        sattr2(args)
        caller = caller_of(self.fs, call)
        return self._status(lambda: self.fs.make(dirfh, filename, caller))

    def readdir(self, args, call):
        fh = fhandle(args)
        (cookie,) = struct.unpack(">I", args.fixed(4))
        count = args.uint()
        try:
            entries = self.fs.readdir(fh, caller_of(self.fs, call))
        except NFSError as e:
            return status(e.status)
        parts = [_OK]
        size = _READDIR_OVERHEAD
        for i in range(min(cookie, len(entries)), len(entries)):
            e = entries[i]
            entry_size = _ENTRY_FIXED + len(e.name) + (-len(e.name) & 3)
            if size + entry_size > count:
                parts.append(FALSE + FALSE)
                return b"".join(parts)
            size += entry_size
            parts.append(
                TRUE + UINT.pack(e.fileid & 0xFFFFFFFF) + pack_opaque(e.name) + UINT.pack(i + 1)
            )
        parts.append(FALSE + TRUE)
        return b"".join(parts)

    def statfs(self, args, call):
        fh = fhandle(args)
        caller = caller_of(self.fs, call)
        try:
            self.fs.attr_for_update(fh, caller)
        except NFSError as e:
            return status(e.status)
        return _OK + _STATFS
