"""
The dotlocks of root's view on the wire: C{NAME.lock} in hlfs's directory
is the real lock file next to NAME's mailbox, made and removed by hlfs as
NAME for root calling from a privileged port, over NFSv2 and v3, UDP and
TCP, against a real C{twistd hlfs}.
"""

import os
import random
import socket
import struct

import pytest

from hlfs.rpc.message import decode_reply, encode_call
from hlfs.xdr import pack_opaque
from tests.support.rpcsock import MOUNT, NFS, cred, mount_root, privileged_socket, recv_record
from tests.support.server import HLFS_GID

ROOT = cred(0)
ALICE = cred(1001)
FINGER = cred(1002, HLFS_GID)

OK, PERM, NOENT, IO, ACCES, EXIST, ROFS, NAMETOOLONG, STALE = 0, 1, 2, 5, 13, 17, 30, 63, 70
NOTSUPP = 10004
UNCHECKED, GUARDED, EXCLUSIVE = 0, 1, 2
LOOKUP3, GETATTR3, CREATE3, REMOVE3 = 3, 1, 8, 12
LOOKUP2, GETATTR2, CREATE2, REMOVE2 = 4, 1, 9, 10


def rpc(port, vers, proc, args, credential=ROOT, transport="udp", privileged=True, prog=NFS):
    """
    One NFS call; return the status and the reply body after it (for a
    refused call, C{("denied", reply stat)} and L{None}).
    """
    xid = random.getrandbits(32)
    data = encode_call(xid, prog, vers, proc, credential, args)
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    if privileged:
        s = privileged_socket(kind)
    else:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
    with s:
        s.settimeout(10)
        if transport == "udp":
            s.sendto(data, ("127.0.0.1", port))
            raw = s.recv(65536)
        else:
            s.connect(("127.0.0.1", port))
            s.sendall(struct.pack(">I", 0x80000000 | len(data)) + data)
            raw = recv_record(s)
    reply = decode_reply(raw)
    assert reply.xid == xid
    if reply.stat != 0:
        return ("denied", reply.stat), None
    return reply.body.uint(), reply.body


def sattr3(mode=None):
    mode_part = struct.pack(">II", 1, mode) if mode is not None else struct.pack(">I", 0)
    return mode_part + struct.pack(">5I", 0, 0, 0, 0, 0)


def sattr2(mode=0xFFFFFFFF):
    return struct.pack(">8I", mode, *([0xFFFFFFFF] * 7))


def fattr3(body):
    """
    Decode a fattr3: (type, mode, uid, size, fileid, ctime ns).
    """
    ftype, mode, _, uid, _, size = struct.unpack(">5IQ", body.fixed(28))
    body.skip(8 + 8 + 8)  # used, rdev, fsid
    fileid = body.uhyper()
    body.skip(16)  # atime, mtime
    csec, cnsec = struct.unpack(">2I", body.fixed(8))
    return ftype, mode, uid, size, fileid, csec * 10**9 + cnsec


def skip_wcc(body):
    if body.bool():
        body.skip(24)
    if body.bool():
        body.skip(84)


class V3:
    def __init__(self, server, transport, credential=ROOT, privileged=True):
        self.server = server
        self.transport = transport
        self.credential = credential
        self.privileged = privileged
        status, body = rpc(server.port, 3, 1, pack_opaque(b"/mail"), ALICE, prog=MOUNT)
        assert status == OK
        self.root = body.opaque(64)

    def call(self, proc, args, credential=None, privileged=None):
        return rpc(
            self.server.port, 3, proc, args, credential or self.credential, self.transport,
            self.privileged if privileged is None else privileged,
        )

    def lookup(self, name, **kw):
        status, body = self.call(LOOKUP3, pack_opaque(self.root) + pack_opaque(name), **kw)
        if status != OK:
            return status, None, None
        fh = body.opaque(64)
        assert body.bool()
        return status, fh, fattr3(body)

    def create(self, name, how=GUARDED, mode=0, **kw):
        tail = sattr3(mode) if how != EXCLUSIVE else os.urandom(8)
        status, body = self.call(
            CREATE3, pack_opaque(self.root) + pack_opaque(name) + struct.pack(">I", how) + tail, **kw
        )
        if status != OK:
            skip_wcc(body)
            assert body.remaining() == 0
            return status, None, None
        assert body.bool()
        fh = body.opaque(64)
        assert body.bool()
        attr = fattr3(body)
        skip_wcc(body)
        assert body.remaining() == 0
        return status, fh, attr

    def remove(self, name, **kw):
        status, body = self.call(REMOVE3, pack_opaque(self.root) + pack_opaque(name), **kw)
        skip_wcc(body)
        assert body.remaining() == 0
        return status

    def getattr(self, fh, **kw):
        status, body = self.call(GETATTR3, pack_opaque(fh), **kw)
        return status, (fattr3(body) if status == OK else None)


def spool(server, name):
    return server.base / "home" / name / ".mailspool"


@pytest.fixture
def lock_file(server):
    """
    alice's spool (made by the server's home check) and her lock file's
    path, which no test leaves behind.
    """
    V3(server, "udp").lookup(b"alice")  # checks alice's home: makes the spool
    path = spool(server, "alice") / "alice.lock"
    yield path
    if path.exists():
        path.unlink()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_v3_root_makes_and_removes_the_real_lock(server, lock_file, transport):
    """
    If root creates C{alice.lock} in hlfs's directory, then hlfs makes
    C{~alice/.mailspool/alice.lock}, owned by alice, with the mode asked;
    a second create answers EXIST (GUARDED, EXCLUSIVE), or the lock as it
    is (UNCHECKED, which RFC 1813 lets open an existing file); LOOKUP and
    GETATTR show the real file; REMOVE removes it, and the handle is STALE
    after.
    """
    nfs = V3(server, transport)
    assert nfs.lookup(b"alice.lock")[0] == NOENT
    status, fh, (ftype, mode, uid, size, fileid, ctime) = nfs.create(b"alice.lock", mode=0)
    assert status == OK
    st = lock_file.lstat()
    assert (ftype, mode, uid, size) == (1, 0, 1001, 0)
    assert (st.st_uid, st.st_mode & 0o7777, st.st_ctime_ns) == (1001, 0, ctime)
    assert nfs.create(b"alice.lock")[0] == EXIST
    assert nfs.create(b"alice.lock", how=EXCLUSIVE)[0] == EXIST
    status, fh_again, attr = nfs.create(b"alice.lock", how=UNCHECKED, mode=0o644)
    assert (status, fh_again, attr[1], attr[5]) == (OK, fh, 0, ctime)
    assert lock_file.lstat().st_ctime_ns == ctime
    status, fh2, attr = nfs.lookup(b"alice.lock")
    assert (status, fh2, attr[4]) == (OK, fh, fileid)
    assert nfs.getattr(fh)[0] == OK
    assert nfs.remove(b"alice.lock") == OK
    assert not lock_file.exists()
    assert nfs.remove(b"alice.lock") == NOENT
    assert nfs.getattr(fh)[0] == STALE
    assert nfs.lookup(b"alice.lock")[0] == NOENT


def test_v3_reader_lock_excludes_root(server, lock_file):
    """
    If alice holds her own dotlock (made in her spool, as a reader running
    as alice makes it), then root sees it and cannot make it; once she
    removes it, root can.  Nothing is answered from the reply cache.
    """
    nfs = V3(server, "udp")
    assert nfs.lookup(b"alice.lock")[0] == NOENT
    fd = os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.chown(lock_file, 1001, 1001)
    for _ in range(2):
        status, _, attr = nfs.lookup(b"alice.lock")
        assert (status, attr[2]) == (OK, 1001)
        assert nfs.create(b"alice.lock")[0] == EXIST
    lock_file.unlink()
    assert nfs.lookup(b"alice.lock")[0] == NOENT
    assert nfs.create(b"alice.lock")[0] == OK
    assert lock_file.exists()
    assert nfs.remove(b"alice.lock") == OK


def test_v3_exclusive_create_not_supported(server, lock_file):
    """
    If root asks for an EXCLUSIVE create (verifier semantics), then
    NOTSUPP, so that the client asks again GUARDED, and no file is made.
    """
    assert V3(server, "tcp").create(b"alice.lock", how=EXCLUSIVE)[0] == NOTSUPP
    assert not lock_file.exists()


def test_who_may_lock(server, lock_file):
    """
    Only root makes or removes lock files: an HLFS_GID caller gets ACCES,
    an ordinary or anonymous caller ROFS to make one and NOENT to remove
    one (its view has no lock files).  HLFS_GID callers may look.
    """
    nfs = V3(server, "udp")
    assert nfs.create(b"alice.lock", credential=FINGER)[0] == ACCES
    assert nfs.create(b"alice.lock", credential=ALICE)[0] == ROFS
    assert nfs.create(b"alice.lock", credential=cred(0xFFFFFFFE))[0] == ROFS
    assert not lock_file.exists()
    assert nfs.create(b"alice.lock")[0] == OK
    assert nfs.lookup(b"alice.lock", credential=FINGER)[0] == OK
    assert nfs.lookup(b"alice.lock", credential=ALICE)[0] == NOENT
    assert nfs.remove(b"alice.lock", credential=FINGER) == ACCES
    assert nfs.remove(b"alice.lock", credential=ALICE) == NOENT
    assert lock_file.exists()
    assert nfs.remove(b"alice.lock") == OK


def test_privileged_port(make_server):
    """
    If the server trusts only privileged ports (its default, the NFS
    C{secure} option), then root's lock from a privileged port is made,
    and from any other the call is refused (AUTH_TOOWEAK) and nothing is
    made.
    """
    srv = make_server()
    nfs = V3(srv, "tcp")
    V3(srv, "udp").lookup(b"alice")
    path = spool(srv, "alice") / "alice.lock"
    tail = struct.pack(">I", GUARDED) + sattr3(0)
    status, _ = nfs.call(CREATE3, pack_opaque(nfs.root) + pack_opaque(b"alice.lock") + tail, privileged=False)
    assert status[0] == "denied"
    assert not path.exists()
    assert nfs.create(b"alice.lock")[0] == OK
    assert path.exists()
    status, _ = nfs.call(REMOVE3, pack_opaque(nfs.root) + pack_opaque(b"alice.lock"), privileged=False)
    assert status[0] == "denied"
    assert path.exists()
    assert nfs.remove(b"alice.lock") == OK


def test_hostile_names(server):
    """
    Lock names that name no user, or no user hlfs can serve, get NFS
    errors and make nothing: NOENT for an unknown user, ROFS to make what
    is no lock name and NOENT to remove it, EXIST and ROFS for the names
    that are there, NAMETOOLONG past NFS's or the handle's length.
    """
    nfs = V3(server, "tcp")
    for name in (b"ghost.lock", b"..lock"):
        assert nfs.lookup(name)[0] == NOENT, name
    assert nfs.create(b"ghost.lock")[0] == NOENT
    assert nfs.remove(b"ghost.lock") == NOENT
    for name in (b"a/b.lock", b"alice.lock\0", b"a/b"):
        assert nfs.create(name)[0] == ROFS, name
        assert nfs.remove(name) == NOENT, name
    # Root's other names are scratch files (hlfs.core.scratch), of memory.
    for name in (b".lock", b"..lock", b"...lock"):
        assert nfs.create(name)[0] == OK, name
        assert nfs.remove(name) == OK, name
        assert nfs.remove(name) == NOENT, name
    # Root makes alice's mailbox itself (root sees real mailboxes), then
    # finds it there.
    assert nfs.create(b"alice")[0] == OK
    for name in (b"home", b"alice"):
        assert nfs.create(name)[0] == EXIST, name
        assert nfs.remove(name) == ROFS, name
    (spool(server, "alice") / "alice").unlink()
    assert nfs.create(b"x" * 300 + b".lock")[0] == NAMETOOLONG
    assert nfs.lookup(b"x" * 300 + b".lock")[0] == NAMETOOLONG
    assert nfs.create(b"x" * 40 + b".lock")[0] == NOENT
    assert nfs.lookup(b"x" * 40 + b".lock")[0] == NOENT
    assert not list(server.alt.glob("*.lock"))
    assert not list((server.base / "home").glob("*/.mailspool/*.lock"))


def test_lock_follows_the_mailbox(server):
    """
    If NAME's mailbox is in the alternate spool (a home of C{/}), then so
    is the lock root makes for NAME, made as NAME.
    """
    nfs = V3(server, "udp")
    nfs.lookup(b"slash")
    status, _, attr = nfs.create(b"slash.lock", mode=0o644)
    assert status == OK
    st = (server.alt / "slash.lock").lstat()
    assert (st.st_uid, st.st_mode & 0o777, attr[1]) == (1004, 0o644, 0o644)
    assert nfs.remove(b"slash.lock") == OK
    assert not (server.alt / "slash.lock").exists()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_v2_lock(server, lock_file, transport):
    """
    NFSv2 likewise: CREATE (always exclusive) makes the real lock as
    alice, LOOKUP shows a regular file, REMOVE removes it.
    """
    root = mount_root(server.port, ALICE, vers=1)

    def v2(proc, args, **kw):
        return rpc(server.port, 2, proc, args, transport=transport, **kw)

    assert v2(LOOKUP2, root + pack_opaque(b"alice.lock"))[0] == NOENT
    status, body = v2(CREATE2, root + pack_opaque(b"alice.lock") + sattr2(0))
    assert status == OK
    fh = body.fixed(32)
    ftype, mode, _, uid = struct.unpack(">4I", body.fixed(16))
    assert (ftype, mode, uid) == (1, 0o100000, 1001)
    assert lock_file.lstat().st_uid == 1001
    assert v2(CREATE2, root + pack_opaque(b"alice.lock") + sattr2(0))[0] == EXIST
    status, body = v2(LOOKUP2, root + pack_opaque(b"alice.lock"))
    assert (status, body.fixed(32)) == (OK, fh)
    assert v2(GETATTR2, fh)[0] == OK
    assert v2(REMOVE2, root + pack_opaque(b"alice.lock"))[0] == OK
    assert not lock_file.exists()
    assert v2(GETATTR2, fh)[0] == STALE
    assert v2(REMOVE2, root + pack_opaque(b"alice.lock"))[0] == NOENT
    assert v2(CREATE2, root + pack_opaque(b"ghost.lock") + sattr2(0))[0] == NOENT
    assert v2(CREATE2, root + pack_opaque(b"a/file") + sattr2(0))[0] == ROFS


@pytest.mark.parametrize("first", ["create", "getattr"])
def test_replies_before_an_oversized_record_are_sent(server, lock_file, first):
    """
    If a TCP client pipelines calls and then a record over the size limit
    in one send, then the connection is closed for it, but only after the
    replies to the calls before it: root's CREATE of C{alice.lock}, made
    in a home-check process and answered later, gets its OK (never a lost
    reply whose retransmission would find EXIST), and so does a GETATTR
    answered at once.
    """
    root = V3(server, "tcp").root
    create = encode_call(
        1, NFS, 3, CREATE3, ROOT,
        pack_opaque(root) + pack_opaque(b"alice.lock") + struct.pack(">I", GUARDED) + sattr3(0),
    )
    getattr_ = encode_call(2, NFS, 3, GETATTR3, ROOT, pack_opaque(root))
    calls = [create, getattr_] if first == "create" else [getattr_, create]
    data = b"".join(struct.pack(">I", 0x80000000 | len(c)) + c for c in calls)
    data += struct.pack(">I", 0x80000000 | 100_000) + bytes(1000)
    with privileged_socket(socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(("127.0.0.1", server.port))
        s.sendall(data)
        replies = {}
        while (raw := recv_record(s)) is not None:
            reply = decode_reply(raw)
            replies[reply.xid] = reply.body.uint()
    assert replies == {1: OK, 2: OK}
    assert lock_file.exists()
    assert V3(server, "udp").remove(b"alice.lock") == OK
