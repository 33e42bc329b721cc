"""
RPC call and reply messages (RFC 5531), and AUTH_SYS credentials.

Decoding a call yields a L{Call}; a call too broken to answer raises
L{Drop} (nothing can be replied, e.g. no xid), and one that must be
answered with an error raises L{Rejected} carrying the encoded reply.
"""

import struct
from typing import NamedTuple

from hlfs.xdr import UINT, Unpacker, XDRError

RPC_VERSION = 2

CALL = 0
REPLY = 1

MSG_ACCEPTED = 0
MSG_DENIED = 1

# accept_stat
SUCCESS = 0
PROG_UNAVAIL = 1
PROG_MISMATCH = 2
PROC_UNAVAIL = 3
GARBAGE_ARGS = 4
SYSTEM_ERR = 5

# reject_stat
RPC_MISMATCH = 0
AUTH_ERROR = 1

# auth_stat
AUTH_OK = 0
AUTH_BADCRED = 1
AUTH_REJECTEDCRED = 2
AUTH_BADVERF = 3
AUTH_REJECTEDVERF = 4
AUTH_TOOWEAK = 5
AUTH_STAT_NAMES = {
    AUTH_BADCRED: "auth_badcred",
    AUTH_REJECTEDCRED: "auth_rejectedcred",
    AUTH_BADVERF: "auth_badverf",
    AUTH_REJECTEDVERF: "auth_rejectedverf",
    AUTH_TOOWEAK: "auth_tooweak",
}

# auth_flavor
AUTH_NONE = 0
AUTH_SYS = 1

MAX_AUTH_BYTES = 400
MAX_MACHINE_NAME = 255
MAX_GIDS = 16

CALL_HEADER = struct.Struct(">IIIIIIII")  # xid .. proc, cred flavor, cred length
_AUTH_SYS_IDS = struct.Struct(">II")
_REPLY_HEADER = struct.Struct(">IIIIII")  # xid, REPLY, ACCEPTED, verf, stat
_DENIED = struct.Struct(">IIII")
_ACCEPTED_SUCCESS = struct.Struct(">IIIII").pack(REPLY, MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS)
# A successful reply after its xid, up to the results.
accepted_success_tail = _ACCEPTED_SUCCESS


class Credential(NamedTuple):
    flavor: int
    uid: int = 0
    gid: int = 0
    gids: tuple = ()
    machine: bytes = b""


NO_CREDENTIAL = Credential(AUTH_NONE)


class Call(NamedTuple):
    """
    A decoded call header.  C{offset} is where the procedure's arguments
    start in C{message}, the whole call; C{privileged} says whether it
    counts as from a privileged port (under 1024, or the server trusts
    every port: C{--insecure}).
    """

    xid: int
    prog: int
    vers: int
    proc: int
    cred: Credential
    offset: int
    message: bytes = b""
    privileged: bool = False


class Drop(Exception):
    """
    The message cannot be answered (too short to hold an xid, not a call).
    """


class Rejected(Exception):
    """
    The call must be answered with C{reply}, an encoded error reply.
    """

    def __init__(self, reply, reason):
        Exception.__init__(self, reason)
        self.reply = reply
        self.reason = reason

    @property
    def kind(self):
        """
        The rejection's name, for counting: C{rpc_mismatch}, or the
        C{auth_stat} of an authentication error (C{auth_badcred}, ...).
        """
        if UINT.unpack_from(self.reply, 12)[0] == RPC_MISMATCH:
            return "rpc_mismatch"
        return AUTH_STAT_NAMES.get(UINT.unpack_from(self.reply, 16)[0], "auth_error")


def success_header(xid):
    """
    Return the header of a successful accepted reply (RFC 5531 section 9).
    """
    return UINT.pack(xid) + _ACCEPTED_SUCCESS


def accepted(xid, stat, body=b""):
    return _REPLY_HEADER.pack(xid, REPLY, MSG_ACCEPTED, AUTH_NONE, 0, stat) + body


def prog_mismatch(xid, low, high):
    return accepted(xid, PROG_MISMATCH, struct.pack(">II", low, high))


def rpc_mismatch(xid):
    return _DENIED.pack(xid, REPLY, MSG_DENIED, RPC_MISMATCH) + struct.pack(
        ">II", RPC_VERSION, RPC_VERSION
    )


def auth_error(xid, stat):
    return _DENIED.pack(xid, REPLY, MSG_DENIED, AUTH_ERROR) + UINT.pack(stat)


# Decoded AUTH_SYS credentials by their bytes: clients send the same few
# over and over.
_CREDENTIALS = {}
_MAX_CREDENTIALS = 4096


def _auth_sys(body):
    """
    Decode an AUTH_SYS credential body (RFC 5531 appendix A).
    """
    u = Unpacker(body)
    u.uint()  # stamp
    machine = u.opaque(MAX_MACHINE_NAME)
    uid, gid = u.uint(), u.uint()
    count = u.uint()
    if count > MAX_GIDS:
        raise XDRError(f"{count} groups, at most {MAX_GIDS} allowed")
    gids = tuple(u.uint() for _ in range(count))
    if u.remaining():
        raise XDRError("trailing bytes in AUTH_SYS credential")
    return Credential(AUTH_SYS, uid, gid, gids, machine)


def decode_call(data, privileged=False):
    """
    Decode the header of a call message (from a privileged port, or not).

    @raise Drop: if nothing can be answered.
    @raise Rejected: if the call gets an error reply.
    """
    try:
        xid, mtype, rpcvers, prog, vers, proc, flavor, length = CALL_HEADER.unpack_from(data)
    except struct.error:
        raise Drop(f"{len(data)}-byte message is too short for a call header") from None
    if mtype != CALL:
        raise Drop(f"message type {mtype} is not a call")
    if rpcvers != RPC_VERSION:
        raise Rejected(rpc_mismatch(xid), f"RPC version {rpcvers}")
    offset = CALL_HEADER.size
    end = offset + length + (-length & 3)
    if length > MAX_AUTH_BYTES or end + 8 > len(data):
        raise Rejected(auth_error(xid, AUTH_BADCRED), "credential too long or truncated")
    if flavor == AUTH_SYS:
        body = data[offset : offset + length]
        cred = _CREDENTIALS.get(body)
        if cred is None:
            try:
                cred = _auth_sys(body)
            except XDRError as e:
                raise Rejected(auth_error(xid, AUTH_BADCRED), f"bad AUTH_SYS credential: {e}")
            if len(_CREDENTIALS) >= _MAX_CREDENTIALS:
                _CREDENTIALS.clear()
            _CREDENTIALS[body] = cred
    elif flavor == AUTH_NONE:
        cred = NO_CREDENTIAL
    else:
        raise Rejected(auth_error(xid, AUTH_BADCRED), f"unsupported auth flavor {flavor}")
    verf_length = UINT.unpack_from(data, end + 4)[0]
    if verf_length > MAX_AUTH_BYTES:
        raise Rejected(auth_error(xid, AUTH_BADVERF), "verifier too long")
    offset = end + 8 + verf_length + (-verf_length & 3)
    if offset > len(data):
        raise Rejected(auth_error(xid, AUTH_BADVERF), "verifier truncated")
    return Call(xid, prog, vers, proc, cred, offset, data, privileged)


def encode_call(xid, prog, vers, proc, cred=NO_CREDENTIAL, args=b""):
    """
    Encode a call message (for clients).
    """
    if cred.flavor == AUTH_SYS:
        body = (
            UINT.pack(0)
            + UINT.pack(len(cred.machine))
            + cred.machine
            + bytes(-len(cred.machine) & 3)
            + _AUTH_SYS_IDS.pack(cred.uid, cred.gid)
            + UINT.pack(len(cred.gids))
            + b"".join(UINT.pack(g) for g in cred.gids)
        )
    else:
        body = b""
    return (
        CALL_HEADER.pack(xid, CALL, RPC_VERSION, prog, vers, proc, cred.flavor, len(body))
        + body
        + b"\0" * 8
        + args
    )


class Reply(NamedTuple):
    """
    A decoded reply.  C{stat} is the accept_stat of an accepted reply, or
    for a denied one C{None} with C{reject} set to C{(reject_stat, detail)}.
    """

    xid: int
    stat: int | None
    reject: tuple | None
    body: Unpacker


def decode_reply(data):
    """
    Decode a reply message (for clients).

    @raise XDRError: if it is not a well-formed reply.
    """
    u = Unpacker(data)
    xid, mtype = u.uint(), u.uint()
    if mtype != REPLY:
        raise XDRError(f"message type {mtype} is not a reply")
    if u.uint() == MSG_ACCEPTED:
        u.uint()
        u.opaque(MAX_AUTH_BYTES)
        return Reply(xid, u.uint(), None, u)
    stat = u.uint()
    if stat == RPC_MISMATCH:
        detail = (u.uint(), u.uint())
    else:
        detail = u.uint()
    return Reply(xid, None, (stat, detail), u)
