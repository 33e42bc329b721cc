"""
The calls on a file's contents over NFSv2 and v3: READ, WRITE, COMMIT
and SETATTR, decoded in full and answered from the core
(L{hlfs.core.contents}): for the mailbox files of root's view
(L{hlfs.core.mailfiles}) with their data, for any other node with the
refusal the core gives.

Every write is on disk before it is answered, so WRITE says FILE_SYNC
whatever the client asked, and COMMIT has nothing left to wait for but
the sync it asks for.

Past the check deadline the core answers L{TRYLATER}: NFSv3's JUKEBOX,
which the client retries after a pause.  NFSv2 has no such answer (IO
would fail the caller's write), so a v2 call that would get it gets no
reply at all, and the client sends it again, as after a lost datagram.
"""

import struct

from hlfs.core.locks import TRYLATER
from hlfs.core.mailfiles import FileChanges
from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.nfs.common import answer, caller_of
from hlfs.xdr import UINT, XDRError, pack_opaque

#: stable_how's FILE_SYNC.
FILE_SYNC = 2

#: The most bytes a WRITE carries on the wire (a count past the core's
#: bound is refused there; this only bounds the decoding).
MAX_WRITE_ON_WIRE = 1 << 16

_UNSET2 = 0xFFFFFFFF


def sattr3(args):
    """
    Decode a sattr3; return its L{FileChanges} (times are not changed:
    a file's times follow its writes).
    """
    mode = args.uint() if args.bool() else None
    uid = args.uint() if args.bool() else None
    gid = args.uint() if args.bool() else None
    size = args.uhyper() if args.bool() else None
    for _ in range(2):  # atime, mtime
        how = args.uint()
        if how == 2:
            args.skip(8)
        elif how > 2:
            raise XDRError(f"invalid time_how {how}")
    return FileChanges(mode, uid, gid, size)


def sattr2(args):
    """
    Decode an NFSv2 sattr: each field -1 when not set.
    """
    mode, uid, gid, size = struct.unpack(">4I", args.fixed(16))
    args.skip(16)  # atime, mtime
    return FileChanges(*(None if v == _UNSET2 else v for v in (mode, uid, gid, size)))


class FileCalls3:
    """
    READ, WRITE, COMMIT and SETATTR of NFSv3, for an L{hlfs.nfs.v3.NFSv3}
    (its C{fs}, C{enc}, C{verifier}, C{status} and C{_refuse_write}).
    """

    def __init__(self, nfs):
        self.nfs = nfs

    def read(self, args, call):
        nfs = self.nfs
        fh = args.opaque(64)
        offset = args.uhyper()
        count = args.uint()
        caller = caller_of(nfs.fs, call)

        def ok(result):
            attr, data, eof = result
            return (nfs.status(0) + nfs.enc.post_op(attr) + UINT.pack(len(data))
                    + (TRUE if eof else FALSE) + pack_opaque(data))

        return answer(
            lambda: nfs.fs.read(fh, caller, call.privileged, offset, count),
            ok,
            lambda code: nfs.status(code) + nfs._post_op_of(fh, caller),
        )

    def write(self, args, call):
        nfs = self.nfs
        fh = args.opaque(64)
        offset = args.uhyper()
        count = args.uint()
        if args.uint() > 2:
            raise XDRError("invalid stable_how")
        data = args.opaque(MAX_WRITE_ON_WIRE)
        caller = caller_of(nfs.fs, call)
        return answer(
            lambda: nfs.fs.write(fh, caller, call.privileged, offset, count, data),
            lambda attr: (nfs.status(0) + nfs.enc.wcc_after(attr) + UINT.pack(len(data))
                          + UINT.pack(FILE_SYNC) + nfs.verifier),
            lambda code: nfs._refuse_write(fh, caller, code=code),
        )

    def commit(self, args, call):
        nfs = self.nfs
        fh = args.opaque(64)
        args.uhyper()
        args.uint()
        caller = caller_of(nfs.fs, call)
        return answer(
            lambda: nfs.fs.commit(fh, caller, call.privileged),
            lambda attr: nfs.status(0) + nfs.enc.wcc_after(attr) + nfs.verifier,
            lambda code: nfs._refuse_write(fh, caller, code=code),
        )

    def setattr(self, args, call):
        nfs = self.nfs
        fh = args.opaque(64)
        changes = sattr3(args)
        if args.bool():  # guard: the client's ctime; hlfs's files follow their writes
            args.skip(8)
        caller = caller_of(nfs.fs, call)
        return answer(
            lambda: nfs.fs.setattr(fh, caller, call.privileged, changes),
            lambda attr: nfs.status(0) + nfs.enc.wcc_after(attr),
            lambda code: nfs._refuse_write(fh, caller, code=code),
        )


class FileCalls2:
    """
    READ, WRITE and SETATTR of NFSv2, for an L{hlfs.nfs.v2.NFSv2} (its
    C{fs} and C{enc}) and its C{status} encoder.
    """

    def __init__(self, nfs, status):
        self.nfs = nfs
        self.status = status

    def _failed(self, code):
        # None: no reply (the dispatcher sends none), for the client to
        # send the call again.
        return None if code == TRYLATER else self.status(code)

    def _answer(self, compute, ok):
        return answer(compute, ok, self._failed)

    def read(self, args, call):
        nfs = self.nfs
        fh = args.fixed(32)
        offset = args.uint()
        count = args.uint()
        args.skip(4)  # totalcount
        caller = caller_of(nfs.fs, call)
        return self._answer(
            lambda: nfs.fs.read(fh, caller, call.privileged, offset, count),
            lambda r: self.status(0) + nfs.enc.fattr2(r[0]) + pack_opaque(r[1]),
        )

    def write(self, args, call):
        nfs = self.nfs
        fh = args.fixed(32)
        args.skip(4)  # beginoffset
        offset = args.uint()
        args.skip(4)  # totalcount
        data = args.opaque(8192)
        caller = caller_of(nfs.fs, call)
        return self._answer(
            lambda: nfs.fs.write(fh, caller, call.privileged, offset, len(data), data),
            lambda attr: self.status(0) + nfs.enc.fattr2(attr),
        )

    def setattr(self, args, call):
        nfs = self.nfs
        fh = args.fixed(32)
        changes = sattr2(args)
        caller = caller_of(nfs.fs, call)
        return self._answer(
            lambda: nfs.fs.setattr(fh, caller, call.privileged, changes),
            lambda attr: self.status(0) + nfs.enc.fattr2(attr),
        )
