"""
XDR and RPC encodings against byte-exact vectors built from the RFCs'
structures, and properties over arbitrary input.
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import SpoolRules
from hlfs.rpc import message
from hlfs.rpc.dispatch import Dispatcher, Program
from hlfs.rpc.message import (
    AUTH_SYS, NO_CREDENTIAL, Credential, Drop, Rejected, decode_call, decode_reply, encode_call,
)
from hlfs.daemon.server import build_programs
from hlfs.core.users import UserTable
from hlfs.xdr import Packer, Unpacker, XDRError


def test_rfc4506_file_example():
    """
    RFC 4506 section 7's example: the file "sillyprog", type EXEC,
    interpreter "lisp", owner "john", data "(quit)" encodes to 48 bytes.
    """
    expected = bytes.fromhex(
        "00000009 73696c6c 7970726f 67000000 00000002 00000004 6c697370"
        " 00000004 6a6f686e 00000006 28717569 74290000"
    )
    p = Packer()
    p.opaque(b"sillyprog")
    p.uint(2)
    p.opaque(b"lisp")
    p.opaque(b"john")
    p.opaque(b"(quit)")
    assert p.getvalue() == expected
    u = Unpacker(expected)
    assert [u.opaque(255), u.uint(), u.opaque(), u.opaque(), u.opaque()] == [
        b"sillyprog", 2, b"lisp", b"john", b"(quit)"
    ]
    assert u.remaining() == 0


def test_xdr_primitives():
    p = Packer()
    p.int(-1)
    p.uhyper(2**64 - 1)
    p.bool(True)
    p.fixed(b"abc")
    assert p.getvalue() == bytes.fromhex("ffffffff ffffffffffffffff 00000001 61626300")
    with pytest.raises(XDRError):
        Unpacker(b"\0\0\0\2").bool()
    with pytest.raises(XDRError):
        Unpacker(b"\0\0\0\5abc").opaque()
    with pytest.raises(XDRError):
        Unpacker(b"\0\0\1\0" + b"x" * 256).opaque(255)
    with pytest.raises(XDRError):
        Unpacker(b"\0\0").uint()


# RFC 5531 section 9 call: xid, CALL, rpcvers 2, NFS 3 READLINK, AUTH_SYS
# (stamp 0, machine "host", uid 1001, gid 100, gids [100]), AUTH_NONE verifier.
CALL_VECTOR = bytes.fromhex(
    "12345678 00000000 00000002 000186a3 00000003 00000005"
    " 00000001 0000001c 00000000 00000004 686f7374 000003e9 00000064 00000001 00000064"
    " 00000000 00000000"
)


def test_call_vector():
    cred = Credential(AUTH_SYS, 1001, 100, (100,), b"host")
    assert encode_call(0x12345678, 100003, 3, 5, cred) == CALL_VECTOR
    call = decode_call(CALL_VECTOR + b"ARGS")
    assert call == message.Call(0x12345678, 100003, 3, 5, cred, len(CALL_VECTOR), CALL_VECTOR + b"ARGS")


def test_reply_vectors():
    """
    Accepted and denied replies, word by word from RFC 5531's reply_body.
    """
    assert message.success_header(7) == bytes.fromhex("00000007 00000001 00000000 00000000 00000000 00000000")
    assert message.prog_mismatch(7, 2, 3) == bytes.fromhex(
        "00000007 00000001 00000000 00000000 00000000 00000002 00000002 00000003"
    )
    assert message.accepted(7, message.GARBAGE_ARGS)[-4:] == bytes.fromhex("00000004")
    assert message.rpc_mismatch(7) == bytes.fromhex(
        "00000007 00000001 00000001 00000000 00000002 00000002"
    )
    assert message.auth_error(7, message.AUTH_TOOWEAK) == bytes.fromhex(
        "00000007 00000001 00000001 00000001 00000005"
    )
    reply = decode_reply(message.prog_mismatch(9, 2, 3))
    assert (reply.xid, reply.stat, reply.body.uint(), reply.body.uint()) == (9, 2, 2, 3)
    assert decode_reply(message.auth_error(9, 5)).reject == (1, 5)


def test_decode_call_errors():
    with pytest.raises(Drop):
        decode_call(CALL_VECTOR[:20])
    with pytest.raises(Drop):
        decode_call(b"\0\0\0\1\0\0\0\1" + CALL_VECTOR[8:])
    bad_version = CALL_VECTOR[:8] + b"\0\0\0\3" + CALL_VECTOR[12:]
    with pytest.raises(Rejected) as e:
        decode_call(bad_version)
    assert e.value.reply == message.rpc_mismatch(0x12345678)
    with pytest.raises(Rejected):
        decode_call(CALL_VECTOR[:40])


credentials = st.builds(
    Credential,
    st.just(AUTH_SYS),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**32 - 1), max_size=16).map(tuple),
    st.binary(max_size=255),
)


@given(
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), credentials, st.binary(max_size=64),
)
def test_call_roundtrip(xid, prog, vers, proc, cred, args):
    data = encode_call(xid, prog, vers, proc, cred, args)
    call = decode_call(data)
    assert call == message.Call(xid, prog, vers, proc, cred, len(data) - len(args), data)
    assert data[call.offset :] == args


values = st.one_of(
    st.tuples(st.just("uint"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("int"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("uhyper"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("opaque"), st.binary(max_size=40)),
)


@given(st.lists(values, max_size=20))
def test_xdr_roundtrip(items):
    p = Packer()
    for kind, value in items:
        getattr(p, kind)(value)
    data = p.getvalue()
    assert len(data) % 4 == 0
    u = Unpacker(data)
    assert [(kind, getattr(u, kind)()) for kind, _ in items] == items
    assert u.remaining() == 0


def memory_dispatcher():
    table = UserTable.from_passwd_bytes(b"alice:x:1001:1001::/home/alice:/bin/sh\n")
    resolver = HomeResolver(table, SpoolRules(b".mailspool", b"/var/alt_mail"), Clock(), None, verify=False)
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", 50), resolver, 1)
    return Dispatcher(build_programs(fs), insecure=True), fs


DISPATCHER, FS = memory_dispatcher()


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    reply = DISPATCHER.dispatch(data, ("127.0.0.1", 800))
    assert_reply_to(data, reply)
    assert DISPATCHER.stats["errors"] == 0


def assert_reply_to(call, reply):
    """
    C{reply} is no answer (dropped) or an RPC REPLY to C{call}: its xid,
    message type 1, whole XDR words.
    """
    if reply is None:
        return
    assert isinstance(reply, bytes) and len(reply) % 4 == 0 and len(reply) >= 12, reply
    assert reply[:4] == call[:4] and struct.unpack(">I", reply[4:8]) == (1,), (call[:8], reply[:8])


def _valid_calls():
    cred = Credential(AUTH_SYS, 1001, 1001, (), b"h")
    fh = FS.root_handle
    link = FS.handles.link(1001, 0)
    o = lambda b: struct.pack(">I", len(b)) + b + bytes(-len(b) & 3)  # noqa: E731
    calls = []
    for proc in range(22):
        calls.append(encode_call(proc, 100003, 3, proc, cred, o(fh) + o(b"home") + bytes(64)))
        calls.append(encode_call(proc, 100003, 3, proc, cred, o(link) + bytes(80)))
    for proc in range(18):
        calls.append(encode_call(proc, 100003, 2, proc, cred, fh + o(b"home") + bytes(64)))
    for vers in (1, 3):
        for proc in range(6):
            calls.append(encode_call(proc, 100005, vers, proc, cred, o(b"/mail")))
    return calls


@settings(max_examples=500)
@given(
    st.sampled_from(_valid_calls()),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    st.integers(0, 400),
)
def test_mutated_calls_never_raise(data, flips, cut):
    """
    Valid calls of every procedure, with bytes flipped and cut short: the
    dispatcher answers or drops, never raises.
    """
    data = bytearray(data)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    call = bytes(data[: max(cut, 24)])
    reply = DISPATCHER.dispatch(call, ("127.0.0.1", 800))
    assert_reply_to(call, reply)
    assert not [key for key in DISPATCHER.stats if key[0] == "system_err"]


def test_error_replies_are_counted_by_kind_and_call():
    """
    Each error reply is counted under its name and the served program,
    version and procedure it was about; what is not served counts as
    L{None}, so no caller can make the counters grow without bound.
    """
    answer = lambda args, call: b""  # noqa: E731
    dispatcher = Dispatcher([Program(999, "test", {1: [answer] * 3})])
    for prog, vers, proc in ((7, 1, 0), (999, 1, 0), (999, 9, 0), (999, 1, 77), (999, 1, 2)):
        dispatcher.dispatch(encode_call(1, prog, vers, proc, NO_CREDENTIAL, b""), ("127.0.0.1", 2000))
    dispatcher.dispatch(b"\0\0\0\1\0\0\0\0\0\0\0\3" + b"\0" * 20, ("127.0.0.1", 800))
    assert dict(dispatcher.stats) == {
        ("prog_unavail", None, None, None): 1,
        ("prog_mismatch", 999, None, None): 1,
        ("proc_unavail", 999, 1, None): 1,
        ("auth_tooweak", 999, 1, 2): 1,
        (999, 1, 0): 1,
        ("rpc_mismatch", None, None, None): 1,
    }
