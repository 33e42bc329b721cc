"""
Every procedure of NFSv2, NFSv3 and MOUNT, and the RPC error replies,
as bytes on real sockets against a real `twistd hlfs`.
"""

import os
import socket
import struct

import pytest

from hlfs.rpc.message import AUTH_SYS, CALL_HEADER, Credential, encode_call
from hlfs.xdr import pack_opaque
from tests.support.server import HLFS_GID
from tests.support.rpcsock import (
    MOUNT, NFS, call, cred, lookup3, mount_root, readlink3, recv_record,
    tcp_connect, udp_exchange,
)

ALICE = cred(1001)
BOB = cred(1002)
FINGER = cred(1002, HLFS_GID)

# NFS status codes
OK, PERM, NOENT, EXIST, NOTDIR, ISDIR, INVAL, ROFS, STALE = 0, 1, 2, 17, 20, 21, 22, 30, 70
TOOSMALL, BAD_COOKIE = 10005, 10003


def fh3(fh):
    return pack_opaque(fh)


def sattr3_empty():
    return struct.pack(">6I", 0, 0, 0, 0, 0, 0)


@pytest.fixture(scope="module")
def handles(_module_server):
    server = _module_server
    root = mount_root(server.port, ALICE)
    status, alice_link, _ = lookup3(server.port, root, b"home", ALICE)
    assert status == OK
    status, bob_link, _ = lookup3(server.port, root, b"home", BOB)
    assert status == OK
    return root, alice_link, bob_link


def nfs3(server, proc, args, credential=ALICE, transport="udp"):
    reply = call(server.port, NFS, 3, proc, args, credential, transport)
    assert reply.stat == 0
    return reply.body.uint(), reply.body


def skip_post_op(body):
    if body.bool():
        body.skip(84)


def skip_wcc(body):
    """
    Skip wcc_data; return (pre present, post present).
    """
    pre = body.bool()
    if pre:
        body.skip(24)
    post = body.bool()
    if post:
        body.skip(84)
    return pre, post


@pytest.mark.verify_optional
def test_per_caller_handles(server, handles):
    """
    If two callers look up the link, then each gets a handle of its own,
    and reading the other's handle answers STALE: a client can never hand
    one user's cached link to another.
    """
    root, alice_link, bob_link = handles
    assert alice_link != bob_link
    assert readlink3(server.port, alice_link, ALICE) == (OK, f"{server.base}/home/alice/.mailspool".encode())
    assert readlink3(server.port, alice_link, BOB) == (STALE, None)
    status, _ = nfs3(server, 1, fh3(alice_link), BOB)
    assert status == STALE
    status, body = nfs3(server, 1, fh3(alice_link), ALICE)
    assert status == OK
    ftype, mode, nlink, uid = struct.unpack(">4I", body.fixed(16))
    assert (ftype, mode, uid) == (5, 0o777, 1001)


@pytest.mark.verify_optional
def test_getattr_root_and_link_size(server, handles):
    root, alice_link, _ = handles
    status, body = nfs3(server, 1, fh3(root))
    assert status == OK
    ftype, mode = struct.unpack(">2I", body.fixed(8))
    assert (ftype, mode) == (2, 0o555)
    status, body = nfs3(server, 1, fh3(alice_link))
    fields = body.fixed(84)
    size = struct.unpack_from(">Q", fields, 20)[0]
    assert size == len(f"{server.base}/home/alice/.mailspool")


@pytest.mark.verify_optional
def test_lookup_errors(server, handles):
    """
    If a name is unknown, then NOENT; looking up in the link, NOTDIR; a
    handle that is not ours, STALE; `.` and `..` give the root.
    """
    root, alice_link, _ = handles
    assert lookup3(server.port, root, b"nosuch", ALICE)[0] == NOENT
    assert lookup3(server.port, root, b"alice", ALICE)[0] == NOENT
    assert lookup3(server.port, alice_link, b"x", ALICE)[0] == NOTDIR
    assert lookup3(server.port, os.urandom(32), b"home", ALICE)[0] == STALE
    assert lookup3(server.port, b"", b"home", ALICE)[0] == STALE
    assert lookup3(server.port, root, b".", ALICE)[1] == root
    assert lookup3(server.port, root, b"..", ALICE)[1] == root
    assert lookup3(server.port, root, b"x" * 300, ALICE)[0] == 63
    assert lookup3(server.port, root, b"../../etc/passwd", FINGER)[0] == NOENT


def test_mailbox_links(server, handles):
    """
    If an HLFS_GID caller looks up a user's name, then it gets a link to
    that user's mailbox.
    """
    root = handles[0]
    status, fh, _ = lookup3(server.port, root, b"bob", FINGER)
    assert status == OK
    assert readlink3(server.port, fh, FINGER) == (OK, f"{server.base}/home/bob/.mailspool/bob".encode())


@pytest.mark.verify_optional
def test_readlink_errors(server, handles):
    """
    READLINK of the root answers INVAL (v3) and ISDIR (v2); an anonymous
    (AUTH_NONE) caller's link answers PERM.
    """
    root = handles[0]
    assert readlink3(server.port, root, ALICE) == (INVAL, None)
    reply = call(server.port, NFS, 2, 5, root, ALICE)
    assert reply.body.uint() == ISDIR
    status, anon_link, _ = lookup3(server.port, root, b"home", None)
    assert status == OK
    reply = call(server.port, NFS, 3, 5, fh3(anon_link))
    assert reply.body.uint() == PERM


WRITE_CALLS = {
    # proc: (args builder(root, link), wcc layout, status)
    2: (lambda r, l: fh3(l) + sattr3_empty() + struct.pack(">I", 0), "wcc", ROFS),
    7: (lambda r, l: fh3(l) + struct.pack(">QII", 0, 3, 0) + pack_opaque(b"abc"), "wcc", INVAL),
    8: (lambda r, l: fh3(r) + pack_opaque(b"f") + struct.pack(">I", 0) + sattr3_empty(), "wcc", ROFS),
    9: (lambda r, l: fh3(r) + pack_opaque(b"d") + sattr3_empty(), "wcc", ROFS),
    10: (lambda r, l: fh3(r) + pack_opaque(b"s") + sattr3_empty() + pack_opaque(b"/x"), "wcc", ROFS),
    11: (lambda r, l: fh3(r) + pack_opaque(b"n") + struct.pack(">I", 7) + sattr3_empty(), "wcc", ROFS),
    12: (lambda r, l: fh3(r) + pack_opaque(b"home"), "wcc", ROFS),
    13: (lambda r, l: fh3(r) + pack_opaque(b"home"), "wcc", NOTDIR),
    14: (lambda r, l: fh3(r) + pack_opaque(b"home") + fh3(r) + pack_opaque(b"b"), "wcc2", ROFS),
    15: (lambda r, l: fh3(l) + fh3(r) + pack_opaque(b"x"), "link", ROFS),
    21: (lambda r, l: fh3(l) + struct.pack(">QI", 0, 0), "wcc", INVAL),
}


@pytest.mark.verify_optional
@pytest.mark.parametrize("proc", sorted(WRITE_CALLS))
def test_v3_write_procedures_rofs(server, handles, proc):
    """
    If a client tries to change anything, then ROFS (or what the node's
    type answers first: INVAL for writing a link, NOTDIR for removing it
    as a directory), with wcc data whose attributes are present and
    complete.
    """
    root, link, _ = handles
    build, layout, expected = WRITE_CALLS[proc]
    status, body = nfs3(server, proc, build(root, link))
    assert status == expected
    if layout == "link":
        skip_post_op(body)
    assert skip_wcc(body) == (True, True)
    if layout == "wcc2":
        assert skip_wcc(body) == (True, True)
    assert body.remaining() == 0


@pytest.mark.verify_optional
def test_v3_write_to_stale_handle(server):
    status, body = nfs3(server, 2, fh3(os.urandom(32)) + sattr3_empty() + struct.pack(">I", 0))
    assert status == STALE
    assert skip_wcc(body) == (False, False)


@pytest.mark.verify_optional
def test_v3_read_access_fs_calls(server, handles):
    root, link, _ = handles
    status, body = nfs3(server, 6, fh3(link) + struct.pack(">QI", 0, 100))
    assert status == INVAL
    status, body = nfs3(server, 4, fh3(root) + struct.pack(">I", 0x3F))
    assert status == OK
    skip_post_op(body)
    assert body.uint() == 0x03  # READ | LOOKUP, never MODIFY/EXTEND/DELETE
    status, body = nfs3(server, 4, fh3(link) + struct.pack(">I", 0x3F))
    assert status == OK
    skip_post_op(body)
    assert body.uint() == 0x21  # READ | EXECUTE
    for proc in (18, 19, 20):
        status, body = nfs3(server, proc, fh3(root))
        assert status == OK, proc
        assert body.bool()
    status, body = nfs3(server, 19, fh3(root))
    skip_post_op(body)
    rtmax, _, _, wtmax, _, _, dtpref, maxfilesize, _, delta_ns, props = struct.unpack(
        ">7IQIII", body.fixed(48)
    )
    assert rtmax > 0 and dtpref > 0 and delta_ns == 1 and props & 0x2
    assert body.remaining() == 0
    for proc in (18, 19, 20):
        assert nfs3(server, proc, fh3(os.urandom(32)))[0] == STALE


def readdir_names(body, plus):
    skip_post_op(body)
    assert body.fixed(8) == bytes(8)
    names = []
    while body.bool():
        body.uhyper()
        names.append(body.opaque())
        cookie = body.uhyper()
        if plus:
            skip_post_op(body)
            if body.bool():
                names.append(("fh", body.opaque(64)))
    return names, body.bool(), cookie if names else None


@pytest.mark.verify_optional
@pytest.mark.parametrize("plus", [False, True])
def test_v3_readdir(server, handles, plus):
    """
    If the root is listed, then it holds `.`, `..` and the link; READDIRPLUS
    carries the caller's own link handle; small counts page with cookies.
    """
    root, alice_link, _ = handles
    proc = 17 if plus else 16
    tail = struct.pack(">II", 4096, 8192) if plus else struct.pack(">I", 8192)
    status, body = nfs3(server, proc, fh3(root) + struct.pack(">Q", 0) + bytes(8) + tail)
    assert status == OK
    names, eof, _ = readdir_names(body, plus)
    plain = [n for n in names if not isinstance(n, tuple)]
    assert plain == [b".", b"..", b"home"] and eof
    if plus:
        assert ("fh", alice_link) in names
    # A count that fits one entry at a time pages through the directory.
    small = struct.pack(">II", 200, 300) if plus else struct.pack(">I", 140)
    seen, cookie = [], 0
    for _ in range(5):
        status, body = nfs3(server, proc, fh3(root) + struct.pack(">Q", cookie) + bytes(8) + small)
        assert status == OK
        names, eof, cookie = readdir_names(body, plus)
        seen += [n for n in names if not isinstance(n, tuple)]
        if eof:
            break
    assert seen == [b".", b"..", b"home"]
    assert nfs3(server, proc, fh3(root) + struct.pack(">Q", 99) + bytes(8) + tail)[0] == BAD_COOKIE
    assert nfs3(server, proc, fh3(alice_link) + struct.pack(">Q", 0) + bytes(8) + tail)[0] == NOTDIR


@pytest.mark.verify_optional
def test_v2_procedures(server, handles):
    """
    Every NFSv2 procedure answers: lookups and links work, writes ROFS
    (or what the name or node answers first), READ of a link INVAL, STATFS
    and READDIR answer sensibly.
    """
    root = mount_root(server.port, ALICE, vers=1)
    assert root == handles[0]

    def nfs2(proc, args, credential=ALICE):
        reply = call(server.port, NFS, 2, proc, args, credential)
        assert reply.stat == 0
        return reply.body

    for proc in (0, 3, 7):
        assert nfs2(proc, b"").remaining() == 0
    body = nfs2(4, root + pack_opaque(b"home"))
    assert body.uint() == OK
    link = body.fixed(32)
    ftype, mode = struct.unpack(">2I", body.fixed(8))
    assert ftype == 5 and mode == 0o120777
    body = nfs2(5, link)
    assert body.uint() == OK and body.opaque() == f"{server.base}/home/alice/.mailspool".encode()
    assert nfs2(5, link, BOB).uint() == STALE
    body = nfs2(1, root)
    assert body.uint() == OK and struct.unpack(">2I", body.fixed(8)) == (2, 0o40555)
    sattr = bytes(32)
    assert nfs2(2, link + sattr).uint() == ROFS
    assert nfs2(6, link + bytes(12)).uint() == INVAL
    assert nfs2(8, link + bytes(12) + pack_opaque(b"x")).uint() == INVAL
    assert nfs2(9, root + pack_opaque(b"f") + sattr).uint() == ROFS
    assert nfs2(9, root + pack_opaque(b"home") + sattr).uint() == EXIST
    assert nfs2(10, root + pack_opaque(b"home")).uint() == ROFS
    assert nfs2(11, root + pack_opaque(b"a") + root + pack_opaque(b"b")).uint() == NOENT
    assert nfs2(11, root + pack_opaque(b"home") + root + pack_opaque(b"b")).uint() == ROFS
    assert nfs2(12, link + root + pack_opaque(b"b")).uint() == ROFS
    assert nfs2(13, root + pack_opaque(b"s") + pack_opaque(b"/t") + sattr).uint() == ROFS
    assert nfs2(14, root + pack_opaque(b"d") + sattr).uint() == ROFS
    assert nfs2(15, root + pack_opaque(b"d")).uint() == NOENT
    assert nfs2(9, os.urandom(32) + pack_opaque(b"f") + sattr).uint() == STALE
    body = nfs2(16, root + bytes(4) + struct.pack(">I", 4096))
    assert body.uint() == OK
    names = []
    while body.bool():
        body.uint()
        names.append(body.opaque())
        body.fixed(4)
    assert names == [b".", b"..", b"home"] and body.bool()
    body = nfs2(17, root)
    assert body.uint() == OK and body.remaining() == 20


@pytest.mark.verify_optional
def test_mount_procedures(server):
    """
    MNT of another path is refused with NOENT; DUMP lists our mount;
    UMNT removes it; EXPORT lists exactly the mount directory.
    """
    machine = b"dumptest"
    c = Credential(AUTH_SYS, 0, 0, (), machine)
    reply = call(server.port, MOUNT, 3, 1, pack_opaque(b"/etc"), c)
    assert reply.body.uint() == NOENT
    mount_root(server.port, c, b"/mail/", vers=3)

    def dump():
        body = call(server.port, MOUNT, 3, 2, b"", c).body
        entries = []
        while body.bool():
            entries.append((body.opaque(), body.opaque()))
        return entries

    assert (machine, b"/mail") in dump()
    call(server.port, MOUNT, 3, 3, pack_opaque(b"/mail/"), c)
    assert (machine, b"/mail") not in dump()
    mount_root(server.port, c, vers=1)
    call(server.port, MOUNT, 1, 4, b"", c)
    assert all(host != machine for host, _ in dump())
    body = call(server.port, MOUNT, 3, 5).body
    assert body.bool() and body.opaque() == b"/mail" and not body.bool() and not body.bool()


# -- RPC-level errors and bad input


def raw_call(xid, prog, vers, proc, credential=ALICE, args=b"", rpcvers=2):
    data = bytearray(encode_call(xid, prog, vers, proc, credential, args))
    struct.pack_into(">I", data, 8, rpcvers)
    return bytes(data)


def reply_words(raw, n):
    return struct.unpack_from(f">{n}I", raw)


def still_serving(port, xid):
    """
    A NULL call answers; retransmitted like any UDP client would, since a
    flood may have filled the socket's receive queue.
    """
    for _ in range(3):
        raw = udp_exchange(port, raw_call(xid, NFS, 3, 0), timeout=2)
        if raw is not None:
            return reply_words(raw, 6) == (xid, 1, 0, 0, 0, 0)
    return False


@pytest.mark.verify_optional
def test_rpc_errors(server):
    port = server.port
    # PROC_UNAVAIL
    assert reply_words(udp_exchange(port, raw_call(1, NFS, 3, 22)), 6) == (1, 1, 0, 0, 0, 3)
    assert reply_words(udp_exchange(port, raw_call(2, NFS, 2, 18)), 6) == (2, 1, 0, 0, 0, 3)
    assert reply_words(udp_exchange(port, raw_call(3, MOUNT, 1, 7)), 6) == (3, 1, 0, 0, 0, 3)
    # PROG_MISMATCH with the supported range
    assert reply_words(udp_exchange(port, raw_call(4, NFS, 4, 0)), 8) == (4, 1, 0, 0, 0, 2, 2, 3)
    # PROG_UNAVAIL
    assert reply_words(udp_exchange(port, raw_call(5, 100000, 2, 0)), 6) == (5, 1, 0, 0, 0, 1)
    # RPC_MISMATCH: MSG_DENIED, low = high = 2
    assert reply_words(udp_exchange(port, raw_call(6, NFS, 3, 0, rpcvers=3)), 6) == (6, 1, 1, 0, 2, 2)
    # GARBAGE_ARGS: a LOOKUP whose name runs past the end
    bad = raw_call(7, NFS, 3, 3, args=pack_opaque(bytes(32)) + struct.pack(">I", 1000) + b"ab")
    assert reply_words(udp_exchange(port, bad), 6) == (7, 1, 0, 0, 0, 4)
    # AUTH_ERROR / AUTH_BADCRED: unknown flavor, and a malformed AUTH_SYS body
    data = bytearray(raw_call(8, NFS, 3, 1, args=pack_opaque(bytes(32))))
    struct.pack_into(">I", data, 24, 99)
    assert reply_words(udp_exchange(port, bytes(data)), 5) == (8, 1, 1, 1, 1)
    data = CALL_HEADER.pack(9, 0, 2, NFS, 3, 1, AUTH_SYS, 8) + struct.pack(">II", 0, 300) + bytes(8)
    assert reply_words(udp_exchange(port, data), 5) == (9, 1, 1, 1, 1)
    # A reply message, and a datagram too short to hold a call: dropped.
    assert udp_exchange(port, struct.pack(">II", 10, 1) + bytes(16), timeout=0.5) is None
    assert udp_exchange(port, b"\x00\x01", timeout=0.5) is None
    # And the server still answers.
    assert reply_words(udp_exchange(port, raw_call(11, NFS, 3, 0)), 6) == (11, 1, 0, 0, 0, 0)


@pytest.mark.verify_optional
def test_garbage_never_kills(server):
    """
    If random and truncated datagrams arrive, then each gets an error
    reply or none, and the server keeps answering.
    """
    port = server.port
    good = raw_call(77, NFS, 3, 1, args=pack_opaque(bytes(32)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(len(good)):
            s.sendto(good[:i], ("127.0.0.1", port))
        for _ in range(300):
            s.sendto(os.urandom(1 + os.urandom(1)[0]), ("127.0.0.1", port))
        s.sendto(good + os.urandom(60000), ("127.0.0.1", port))
    assert still_serving(port, 12)


@pytest.mark.verify_optional
def test_tcp_fragments_and_pipelining(server, handles):
    """
    If a call arrives in several fragments, and several calls in one
    write, then each is answered.
    """
    call1 = raw_call(21, NFS, 3, 5, args=fh3(handles[1]))
    call2 = raw_call(22, NFS, 3, 0)
    with tcp_connect(server.port) as s:
        a, b, c = call1[:10], call1[10:30], call1[30:]
        s.sendall(
            struct.pack(">I", len(a)) + a
            + struct.pack(">I", len(b)) + b
            + struct.pack(">I", 0x80000000 | len(c)) + c
            + struct.pack(">I", 0x80000000 | len(call2)) + call2
        )
        r1, r2 = recv_record(s), recv_record(s)
    assert reply_words(r1, 7)[:7] == (21, 1, 0, 0, 0, 0, 0)
    assert reply_words(r2, 6) == (22, 1, 0, 0, 0, 0)


@pytest.mark.verify_optional
def test_tcp_huge_record_closes(server):
    """
    If a client announces a record far larger than any call, then the
    connection is closed (not buffered), and the server keeps serving.
    """
    with tcp_connect(server.port) as s:
        s.sendall(struct.pack(">I", 0x80000000 | 0x7FFFFFF0) + bytes(1000))
        assert recv_record(s) is None
    with tcp_connect(server.port) as s:
        # Fragments adding up past the limit, too.
        for _ in range(20):
            try:
                s.sendall(struct.pack(">I", 8000) + bytes(8000))
            except OSError:
                break
        assert recv_record(s) is None
    assert still_serving(server.port, 13)
    assert "exceeds the 65536-byte limit" in server.logtext()


@pytest.mark.verify_optional
def test_tcp_truncated_then_closed(server):
    with tcp_connect(server.port) as s:
        s.sendall(struct.pack(">I", 0x80000000 | 100) + bytes(20))
    with tcp_connect(server.port) as s:
        s.sendall(struct.pack(">I", 0x80000000 | 8) + bytes(8))
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
    assert still_serving(server.port, 14)


@pytest.mark.root(reason="calls from privileged source ports")
def test_secure_ports(make_server):
    """
    Without --insecure, if a call comes from an unprivileged port, then
    AUTH_ERROR/AUTH_TOOWEAK (NULL excepted); from a privileged port, it is
    served.
    """
    srv = make_server()
    data = raw_call(31, NFS, 3, 1, args=pack_opaque(bytes(32)))
    assert reply_words(udp_exchange(srv.port, data), 5) == (31, 1, 1, 1, 5)
    assert reply_words(udp_exchange(srv.port, raw_call(32, NFS, 3, 0)), 6)[5] == 0
    data = raw_call(33, MOUNT, 3, 1, args=pack_opaque(b"/mail"))
    assert reply_words(udp_exchange(srv.port, data), 5) == (33, 1, 1, 1, 5)
    for source in range(700, 1000):
        try:
            raw = udp_exchange(srv.port, data, source_port=source)
        except OSError:
            continue
        break
    assert reply_words(raw, 7) == (33, 1, 0, 0, 0, 0, 0)
