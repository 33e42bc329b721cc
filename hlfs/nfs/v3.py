"""
NFS version 3 (RFC 1813): every procedure, over the L{HomeLinkFS} core.

Write-type procedures decode their arguments and answer what the core
says (L{hlfs.core.changes}, L{hlfs.core.contents}: mostly EXIST, NOENT or
ROFS) with the object's (or directory's) weak cache consistency data.
The calls on a file's contents (READ, WRITE, COMMIT, SETATTR) are
L{hlfs.nfs.passthrough}'s: root's view of real mailboxes reads and
writes them.
"""

import struct

from hlfs.core import linkfs
from hlfs.core.linkfs import EXCLUSIVE, ISDIR, INVAL, NFSError, ROFS
from hlfs.core.mailfiles import MAX_COUNT, MAX_FILE_SIZE
from hlfs.nfs.attrs import FALSE, NO_WCC, TRUE
from hlfs.nfs.common import answer, caller_of, client_of, name, path, remember
from hlfs.nfs.passthrough import FileCalls3, sattr3
from hlfs.xdr import UHYPER, UINT, XDRError, pack_opaque

PROGRAM = 100003
VERSION = 3

OK = 0
BAD_COOKIE = 10003
TOOSMALL = 10005

FHSIZE3 = 64

_STATUS = [UINT.pack(i) for i in range(128)]
_OK = _STATUS[0]
_FSSTAT = struct.Struct(">6QI").pack(0, 0, 0, 0, 0, 0, 0)
# rtmax rtpref rtmult wtmax wtpref wtmult dtpref maxfilesize time_delta properties
# FSF3_SYMLINK | FSF3_HOMOGENEOUS: symlinks, and pathconf holds everywhere.
_FSINFO = struct.Struct(">7IQIII").pack(
    MAX_COUNT, MAX_COUNT, 4096, MAX_COUNT, MAX_COUNT, 4096, 8192, MAX_FILE_SIZE, 0, 1, 0x0002 | 0x0008
)
_PATHCONF = struct.Struct(">6I").pack(1, linkfs.MAX_NAME, 1, 1, 0, 1)
COOKIE_VERIFIER = bytes(8)

# Sizes for READDIR/READDIRPLUS accounting.
_READDIR_OVERHEAD = 4 + 4 + 84 + 8 + 4 + 4
_ENTRY_FIXED = 4 + 8 + 4 + 8
_PLUS_EXTRA = 4 + 84 + 4 + 4 + FHSIZE3


def status(code):
    return _STATUS[code] if code < len(_STATUS) else UINT.pack(code)


def fh3(args):
    return args.opaque(FHSIZE3)


def _diropargs(args):
    return fh3(args), name(args)


class NFSv3:
    """
    The procedure table of NFS version 3 for one L{HomeLinkFS}.
    """

    def __init__(self, fs, encoder, replies=None):
        self.fs = fs
        self.enc = encoder
        self.replies = replies
        # The write verifier of COMMIT: the same for as long as this
        # server runs.
        self.verifier = UHYPER.pack(fs.start & 0xFFFFFFFFFFFFFFFF)
        self.status = status
        files = FileCalls3(self)
        self.read, self.write, self.commit, self.setattr = (
            files.read, files.write, files.commit, files.setattr)
        self.procedures = (
            self.null, self.getattr, self.setattr, self.lookup, self.access,
            self.readlink, self.read, self.write, self.create, self.mkdir,
            self.symlink, self.mknod, self.remove, self.rmdir, self.rename,
            self.link, self.readdir, self.readdirplus, self.fsstat, self.fsinfo,
            self.pathconf, self.commit,
        )

    # -- helpers

    def _post_op_of(self, fh, caller):
        """
        post_op_attr of C{fh} for an error reply: attributes when the
        handle is ours, none otherwise.
        """
        try:
            return self.enc.post_op(self.fs.attr_for_update(fh, caller))
        except NFSError:
            return FALSE

    def _refuse_write(self, fh, caller, extra=b"", code=ROFS):
        """
        ROFS (or C{code}) with C{fh}'s wcc_data (STALE with none for a
        foreign handle).
        """
        try:
            attr = self.fs.attr_for_update(fh, caller)
        except NFSError as e:
            return status(e.status) + NO_WCC + extra
        return status(code) + self.enc.wcc(attr) + extra

    def _wcc_of(self, fh, caller):
        """
        wcc_data of C{fh}, none for a handle that is not this caller's.
        """
        try:
            return self.enc.wcc(self.fs.attr_for_update(fh, caller))
        except NFSError:
            return NO_WCC

    def _made(self, result):
        """
        The reply of a call that made C{result}: C{(fh, Attr)}.
        """
        fh, attr = result
        return _OK + TRUE + pack_opaque(fh) + self.enc.post_op(attr) + self.enc.wcc(self.fs.root_attr)

    # -- procedures

    def null(self, args, call):
        return b""

    def getattr(self, args, call):
        fh = fh3(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.getattr(fh, caller),
            lambda a: remember(self.replies, self.fs, call, caller, _OK + self.enc.fattr3(a), a),
            status,
        )

    def lookup(self, args, call):
        dirfh, filename = _diropargs(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.lookup(dirfh, filename, caller),
            lambda r: remember(
                self.replies, self.fs, call, caller,
                _OK + pack_opaque(r[0]) + self.enc.post_op(r[1]) + self.enc.post_op(self.fs.root_attr),
                r[1],
            ),
            lambda s: status(s) + self._post_op_of(dirfh, caller),
        )

    def access(self, args, call):
        fh = fh3(args)
        wanted = args.uint()
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.access(fh, caller, call.privileged, wanted),
            lambda r: _OK + self.enc.post_op(r[0]) + UINT.pack(r[1]),
            lambda code: status(code) + self._post_op_of(fh, caller),
        )

    def readlink(self, args, call):
        fh = fh3(args)
        caller = caller_of(self.fs, call)

        def fail(code):
            return status(INVAL if code == ISDIR else code) + self._post_op_of(fh, caller)

        return answer(
            lambda: self.fs.readlink(fh, caller),
            lambda r: remember(
                self.replies, self.fs, call, caller, _OK + self.enc.post_op(r[1]) + pack_opaque(r[0])
            ),
            fail,
        )

    def create(self, args, call):
        """
        CREATE: root's lock file (L{hlfs.core.lockfs}); EXIST for another
        name that is there, ROFS for one that is not
        (L{hlfs.core.changes}).
        """
        dirfh, filename = _diropargs(args)
        how = args.uint()
        mode = size = None
        if how in (0, 1):
            changes = sattr3(args)
            mode, size = changes.mode, changes.size
        elif how == EXCLUSIVE:
            args.skip(8)
        else:
            raise XDRError(f"invalid createmode3 {how}")
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.create(dirfh, filename, caller, call.privileged, mode, how, size),
            self._made,
            lambda code: self._refuse_write(dirfh, caller, code=code),
        )

    def _make(self, call, dirfh, filename):
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.make(dirfh, filename, caller),
            self._made,
            lambda code: self._refuse_write(dirfh, caller, code=code),
        )

    def mkdir(self, args, call):
        dirfh, filename = _diropargs(args)
        sattr3(args)
        return self._make(call, dirfh, filename)

    def symlink(self, args, call):
        dirfh, filename = _diropargs(args)
        sattr3(args)
        path(args)
        return self._make(call, dirfh, filename)

    def mknod(self, args, call):
        dirfh, filename = _diropargs(args)
        ftype = args.uint()
        if ftype in (3, 4):  # CHR, BLK
            sattr3(args)
            args.skip(8)
        elif ftype in (6, 7):  # SOCK, FIFO
            sattr3(args)
        elif not 1 <= ftype <= 7:
            raise XDRError(f"invalid ftype3 {ftype}")
        return self._make(call, dirfh, filename)

    def remove(self, args, call):
        """
        REMOVE: root's lock file, or the hidden name of one the client
        renamed (L{hlfs.core.changes}).
        """
        dirfh, filename = _diropargs(args)
        caller = caller_of(self.fs, call)
        root_wcc = self.enc.wcc(self.fs.root_attr)
        return answer(
            lambda: self.fs.remove(dirfh, filename, caller, call.privileged, client_of(call)),
            lambda r: _OK + root_wcc,
            lambda code: self._refuse_write(dirfh, caller, code=code),
        )

    def rmdir(self, args, call):
        dirfh, filename = _diropargs(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.rmdir(dirfh, filename, caller),
            None,
            lambda code: self._refuse_write(dirfh, caller, code=code),
        )

    def rename(self, args, call):
        """
        RENAME: only the client's silly rename of root's lock file
        (L{hlfs.core.changes}).
        """
        fromfh, fromname = _diropargs(args)
        tofh, toname = _diropargs(args)
        caller = caller_of(self.fs, call)

        def fail(code):
            return status(code) + self._wcc_of(fromfh, caller) + self._wcc_of(tofh, caller)

        return answer(
            lambda: self.fs.rename(
                fromfh, fromname, tofh, toname, caller, call.privileged, client_of(call)
            ),
            lambda r: _OK + self.enc.wcc(self.fs.root_attr) * 2,
            fail,
        )

    def link(self, args, call):
        fh = fh3(args)
        dirfh, filename = _diropargs(args)
        caller = caller_of(self.fs, call)
        return answer(
            lambda: self.fs.link(fh, dirfh, filename, caller, call.privileged),
            lambda attr: _OK + self.enc.post_op(attr) + self.enc.wcc(self.fs.root_attr),
            lambda code: status(code) + self._post_op_of(fh, caller) + self._wcc_of(dirfh, caller),
        )

    def _entries(self, args, call, plus):
        fh = fh3(args)
        cookie = args.uhyper()
        verifier = args.fixed(8)
        count = args.uint()
        if plus:
            count = args.uint()  # maxcount bounds the whole reply
        caller = caller_of(self.fs, call)
        try:
            entries = self.fs.readdir(fh, caller)
        except NFSError as e:
            return status(e.status) + self._post_op_of(fh, caller)
        dir_attr = self.enc.post_op(self.fs.root_attr)
        if cookie and (verifier != COOKIE_VERIFIER or cookie > len(entries)):
            return status(BAD_COOKIE) + dir_attr
        parts = [_OK, dir_attr, COOKIE_VERIFIER]
        size = _READDIR_OVERHEAD
        for i in range(cookie, len(entries)):
            e = entries[i]
            entry_size = _ENTRY_FIXED + len(e.name) + (-len(e.name) & 3)
            if plus:
                entry_size += _PLUS_EXTRA
            if size + entry_size > count:
                if len(parts) == 3:
                    return status(TOOSMALL) + dir_attr
                parts.append(FALSE + FALSE)
                return b"".join(parts)
            size += entry_size
            parts.append(TRUE + UHYPER.pack(e.fileid) + pack_opaque(e.name) + UHYPER.pack(i + 1))
            if plus:
                parts.append(self.enc.post_op(e.attr) + TRUE + pack_opaque(e.fh))
        parts.append(FALSE + TRUE)
        return b"".join(parts)

    def readdir(self, args, call):
        return self._entries(args, call, plus=False)

    def readdirplus(self, args, call):
        return self._entries(args, call, plus=True)

    def _fs_info(self, args, call, body):
        fh = fh3(args)
        caller = caller_of(self.fs, call)
        try:
            attr = self.fs.attr_for_update(fh, caller)
        except NFSError as e:
            return status(e.status) + FALSE
        return _OK + self.enc.post_op(attr) + body

    def fsstat(self, args, call):
        return self._fs_info(args, call, _FSSTAT)

    def fsinfo(self, args, call):
        return self._fs_info(args, call, _FSINFO)

    def pathconf(self, args, call):
        return self._fs_info(args, call, _PATHCONF)
