"""
The NFS procedures a client can send to a directory and its entries,
encoded for any server and answered as a short comparable string, for the
conformance matrix (L{tests.support.conformance}).

An answer is the status name (C{OK}, C{EXIST}, C{ROFS}, ...); a successful
call that hands out an object adds its type (C{OK LNK}), ACCESS adds the
bits granted (C{OK RLX}: read, lookup, modify, extend, delete, execute).
A call refused at the RPC level answers C{denied} or its accept_stat.
"""

import os
import struct
from typing import NamedTuple

from hlfs.xdr import pack_opaque

NFS = 100003
MOUNT = 100005

STATUS = {
    0: "OK", 1: "PERM", 2: "NOENT", 5: "IO", 6: "NXIO", 13: "ACCES", 17: "EXIST", 18: "XDEV",
    19: "NODEV", 20: "NOTDIR", 21: "ISDIR", 22: "INVAL", 27: "FBIG", 28: "NOSPC", 30: "ROFS",
    31: "MLINK", 63: "NAMETOOLONG", 66: "NOTEMPTY", 69: "DQUOT", 70: "STALE", 71: "REMOTE",
    10001: "BADHANDLE", 10002: "NOT_SYNC", 10003: "BAD_COOKIE", 10004: "NOTSUPP",
    10005: "TOOSMALL", 10006: "SERVERFAULT", 10007: "BADTYPE", 10008: "JUKEBOX",
}
TYPES = {1: "REG", 2: "DIR", 3: "BLK", 4: "CHR", 5: "LNK", 6: "SOCK", 7: "FIFO"}
#: ACCESS3 bits, in order, and the letter each shows as.
ACCESS_BITS = ((0x01, "R"), (0x02, "L"), (0x04, "M"), (0x08, "E"), (0x10, "D"), (0x20, "X"))
ALL_ACCESS = 0x3F

UNCHECKED, GUARDED, EXCLUSIVE = 0, 1, 2
FIFO = 7
FATTR3 = 84


def sattr3(mode=None, size=None):
    """
    A sattr3 setting C{mode} and C{size} (each if given), nothing else.
    """
    mode_part = struct.pack(">II", 1, mode) if mode is not None else struct.pack(">I", 0)
    size_part = struct.pack(">IQ", 1, size) if size is not None else struct.pack(">I", 0)
    return mode_part + struct.pack(">II", 0, 0) + size_part + struct.pack(">II", 0, 0)


def sattr2(mode=0xFFFFFFFF, size=0xFFFFFFFF):
    return struct.pack(">8I", mode, 0xFFFFFFFF, 0xFFFFFFFF, size, *([0xFFFFFFFF] * 4))


class Target(NamedTuple):
    """
    What one call is about.

    @ivar dir: the directory's handle.
    @ivar name: the entry's name.
    @ivar fh: the entry's handle (from LOOKUP), or L{None}.
    @ivar link: a handle LINK links (the caller's C{home}).
    @ivar fresh: a name nobody has, for calls that make one.
    """

    dir: bytes
    name: bytes
    fh: bytes | None
    link: bytes | None
    fresh: bytes


class Procedure(NamedTuple):
    """
    One call of the matrix.

    @ivar label: its name in the matrix (C{CREATE/G}, C{SETATTR mode}).
    @ivar number: the procedure number.
    @ivar on_handle: whether it is sent to the entry's handle (else to its
        name in the directory).
    @ivar args: C{args(target)}: its arguments.
    @ivar hands_out: whether a success carries a post_op_fh3 or a handle
        and attributes whose type is shown.
    """

    label: str
    number: int
    on_handle: bool
    args: object
    hands_out: bool = False


def _diropargs(t):
    return pack_opaque(t.dir) + pack_opaque(t.name)


def _create(how):
    def args(t):
        tail = os.urandom(8) if how == EXCLUSIVE else sattr3(0o600)
        return _diropargs(t) + struct.pack(">I", how) + tail
    return args


V3 = (
    Procedure("LOOKUP", 3, False, _diropargs, True),
    Procedure("CREATE/U", 8, False, _create(UNCHECKED), True),
    Procedure("CREATE/G", 8, False, _create(GUARDED), True),
    Procedure("CREATE/E", 8, False, _create(EXCLUSIVE), True),
    Procedure("MKDIR", 9, False, lambda t: _diropargs(t) + sattr3(0o700), True),
    Procedure("SYMLINK", 10, False, lambda t: _diropargs(t) + sattr3() + pack_opaque(b"target"), True),
    Procedure("MKNOD", 11, False, lambda t: _diropargs(t) + struct.pack(">I", FIFO) + sattr3(0o600), True),
    Procedure("REMOVE", 12, False, _diropargs),
    Procedure("RMDIR", 13, False, _diropargs),
    Procedure("RENAME", 14, False, lambda t: _diropargs(t) + pack_opaque(t.dir) + pack_opaque(t.fresh)),
    Procedure("LINK to", 15, False, lambda t: pack_opaque(t.link) + _diropargs(t)),
    Procedure("GETATTR", 1, True, lambda t: pack_opaque(t.fh)),
    Procedure("SETATTR mode", 2, True, lambda t: pack_opaque(t.fh) + sattr3(mode=0o644) + struct.pack(">I", 0)),
    Procedure("SETATTR size", 2, True, lambda t: pack_opaque(t.fh) + sattr3(size=0) + struct.pack(">I", 0)),
    Procedure("ACCESS", 4, True, lambda t: pack_opaque(t.fh) + struct.pack(">I", ALL_ACCESS)),
    Procedure("READLINK", 5, True, lambda t: pack_opaque(t.fh)),
    Procedure("READ", 6, True, lambda t: pack_opaque(t.fh) + struct.pack(">QI", 0, 512)),
    Procedure("WRITE", 7, True, lambda t: pack_opaque(t.fh) + struct.pack(">QII", 0, 1, 2) + pack_opaque(b"x")),
    Procedure("COMMIT", 21, True, lambda t: pack_opaque(t.fh) + struct.pack(">QI", 0, 0)),
    Procedure("LINK from", 15, True, lambda t: pack_opaque(t.fh) + pack_opaque(t.dir) + pack_opaque(t.fresh)),
    Procedure("READDIR", 16, True, lambda t: pack_opaque(t.fh) + struct.pack(">Q8sI", 0, bytes(8), 4096)),
)


def _diropargs2(t):
    return t.dir + pack_opaque(t.name)


#: NFSv2's procedures, each with the label of the v3 call it answers as.
V2 = (
    Procedure("LOOKUP", 4, False, _diropargs2, True),
    Procedure("CREATE/G", 9, False, lambda t: _diropargs2(t) + sattr2(0o100600), True),
    Procedure("MKDIR", 14, False, lambda t: _diropargs2(t) + sattr2(0o40700), True),
    Procedure("SYMLINK", 13, False, lambda t: _diropargs2(t) + pack_opaque(b"target") + sattr2()),
    Procedure("REMOVE", 10, False, _diropargs2),
    Procedure("RMDIR", 15, False, _diropargs2),
    Procedure("RENAME", 11, False, lambda t: _diropargs2(t) + t.dir + pack_opaque(t.fresh)),
    Procedure("LINK to", 12, False, lambda t: t.link + _diropargs2(t)),
    Procedure("GETATTR", 1, True, lambda t: t.fh),
    Procedure("SETATTR mode", 2, True, lambda t: t.fh + sattr2(0o644)),
    Procedure("SETATTR size", 2, True, lambda t: t.fh + sattr2(size=0)),
    Procedure("READLINK", 5, True, lambda t: t.fh),
    Procedure("READ", 6, True, lambda t: t.fh + struct.pack(">III", 0, 512, 0)),
    Procedure("WRITE", 8, True, lambda t: t.fh + struct.pack(">III", 0, 0, 0) + pack_opaque(b"x")),
    Procedure("LINK from", 12, True, lambda t: t.fh + t.dir + pack_opaque(t.fresh)),
    Procedure("READDIR", 16, True, lambda t: t.fh + struct.pack(">II", 0, 4096)),
)


def _type_of(body):
    """
    The object type of a post_op_attr, or L{None} when absent.
    """
    if not body.bool():
        return None
    return TYPES.get(body.uint(), "?")


def answer(reply, procedure, vers):
    """
    @param reply: the L{hlfs.rpc.message.Reply} of C{procedure}.
    @return: the answer as a string, and the handle a successful LOOKUP
        returned (else L{None}).
    """
    if reply.stat is None:
        return "denied", None
    if reply.stat != 0:
        return f"accept_stat {reply.stat}", None
    body = reply.body
    code = body.uint()
    text = STATUS.get(code, str(code))
    if code != 0:
        return text, None
    fh = None
    kind = None
    if vers == 2:
        if procedure.hands_out:
            fh = body.fixed(32)
            kind = TYPES.get(body.uint(), "?")
    elif procedure.label == "LOOKUP":
        fh = body.opaque(64)
        kind = _type_of(body)
    elif procedure.hands_out:
        if body.bool():
            fh = body.opaque(64)
        kind = _type_of(body)
    elif procedure.label == "ACCESS":
        if body.bool():
            body.skip(FATTR3)
        granted = body.uint()
        text += " " + "".join(letter for bit, letter in ACCESS_BITS if granted & bit)
    if kind is not None:
        text += f" {kind}"
    return text, fh


def mount(connection, export, credential, vers=3):
    """
    @return: the root handle of C{export} (MOUNT v3, or v1 for NFSv2).
    """
    reply = connection.call(MOUNT, 3 if vers == 3 else 1, 1, pack_opaque(export), credential)
    assert reply.stat == 0, reply
    status = reply.body.uint()
    assert status == 0, f"MNT {export!r}: {status}"
    return reply.body.opaque(64) if vers == 3 else reply.body.fixed(32)
