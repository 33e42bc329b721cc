"""
Root sees real mailboxes, on the wire: for uid 0 from a privileged port,
C{NAME} in hlfs's directory is NAME's real mailbox, a regular file that
hlfs makes, reads, writes and truncates as NAME (hlfs.core.mailfiles,
hlfs.homes.mailboxes), over NFSv2 and v3, UDP and TCP, against a real
C{twistd hlfs}: a full home (a tmpfs filled to the last byte) answers
NOSPC, a hung home (a frozen FUSE mount) JUKEBOX within the deadline (and
no reply over NFSv2) while other homes go on, and nobody else may use
such a handle.
"""

import os
import random
import socket
import struct
import time

import pytest

from hlfs.rpc.message import AUTH_NONE, Credential, encode_call
from hlfs.xdr import pack_opaque
from tests.nfs.test_lock_wire import (
    ALICE, EXCLUSIVE, EXIST, FINGER, NOENT, OK, ROOT, STALE, UNCHECKED, V3, fattr3, rpc,
    skip_wcc, spool,
)
from tests.support.filesystems import fill, frozen_mount, tmpfs
from tests.support.rpcsock import cred, mount_root, privileged_socket
from tests.support.server import USERS

pytestmark = [pytest.mark.root(reason="hlfs works in the homes as their users: setfsuid needs root")]

PERM, ACCES, INVAL, FBIG, NOSPC, JUKEBOX = 1, 13, 22, 27, 28, 10008
REG, LNK = 1, 5
GETATTR3, SETATTR3, LOOKUP3, ACCESS3, READ3, WRITE3, COMMIT3 = 1, 2, 3, 4, 6, 7, 21
GETATTR2, LOOKUP2, READ2, WRITE2 = 1, 4, 6, 8
FILE_SYNC = 2
BOB = cred(1002)
ANONYMOUS = Credential(AUTH_NONE)

#: A user whose name is longer than a 32-byte handle can hold.
LONG_NAME = "firstname.lastname-of-a-directory-user"


class Files(V3):
    """
    NFSv3 calls on root's mailbox files.
    """

    def write(self, fh, offset, data, count=None, **kw):
        args = pack_opaque(fh) + struct.pack(">QII", offset, len(data) if count is None else count, 0)
        status, body = self.call(WRITE3, args + pack_opaque(data), **kw)
        if status != OK:
            return status, None
        skip_wcc(body)
        count, committed = body.uint(), body.uint()
        body.skip(8)
        assert body.remaining() == 0
        return status, (count, committed)

    def read(self, fh, offset, count, **kw):
        status, body = self.call(READ3, pack_opaque(fh) + struct.pack(">QI", offset, count), **kw)
        if status != OK:
            return status, None
        assert body.bool()
        fattr3(body)
        body.uint()
        eof = body.bool()
        return status, (body.opaque(), eof)

    def setattr(self, fh, mode=None, uid=None, size=None, **kw):
        sattr = struct.pack(">I", 0) if mode is None else struct.pack(">II", 1, mode)
        sattr += struct.pack(">I", 0) if uid is None else struct.pack(">II", 1, uid)
        sattr += struct.pack(">I", 0)  # gid
        sattr += struct.pack(">I", 0) if size is None else struct.pack(">IQ", 1, size)
        sattr += struct.pack(">II", 0, 0)
        status, body = self.call(SETATTR3, pack_opaque(fh) + sattr + struct.pack(">I", 0), **kw)
        return status

    def commit(self, fh, **kw):
        return self.call(COMMIT3, pack_opaque(fh) + struct.pack(">QI", 0, 0), **kw)[0]

    def access(self, fh, **kw):
        status, body = self.call(ACCESS3, pack_opaque(fh) + struct.pack(">I", 0x3F), **kw)
        if status != OK:
            return status
        if body.bool():
            body.skip(84)
        return body.uint()


def home_checked(server, name):
    """
    Check C{name}'s home (its spool made) through an HLFS_GID lookup.
    """
    assert V3(server, "udp").lookup(name.encode(), credential=FINGER)[0] == OK


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_root_makes_writes_reads_and_truncates_the_real_mailbox(server, transport):
    """
    If root creates alice's mailbox, writes to it, reads it back and
    truncates it through hlfs, then each call is done on
    C{~alice/.mailspool/alice}, as alice: the file is hers, 0600, holds
    what was written; LOOKUP and GETATTR show it as a regular file; every
    write is on disk when answered (FILE_SYNC); an owner or mode may be
    set only to what it is (PERM otherwise); ACCESS grants reading,
    writing and extending.
    """
    home_checked(server, "alice")
    path = spool(server, "alice") / "alice"
    nfs = Files(server, transport)
    try:
        assert nfs.lookup(b"alice")[0] == NOENT
        assert nfs.create(b"alice", how=EXCLUSIVE)[0] == 10004  # NOTSUPP: the client asks GUARDED
        status, fh, (ftype, mode, uid, size, fileid, _) = nfs.create(b"alice", mode=0o600)
        assert (status, ftype, mode, uid, size) == (OK, REG, 0o600, 1001, 0)
        st = path.lstat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1001, 0o600)
        assert nfs.create(b"alice")[0] == EXIST
        message = b"From sender@example.org Sun Dec  6 12:00:00 2026\nSubject: hi\n\nhello\n\n"
        assert nfs.write(fh, 0, message) == (OK, (len(message), FILE_SYNC))
        assert nfs.write(fh, len(message), message) == (OK, (len(message), FILE_SYNC))
        assert path.read_bytes() == message * 2
        assert nfs.read(fh, 0, 8192) == (OK, (message * 2, True))
        assert nfs.read(fh, 0, 10) == (OK, (message[:10], False))
        status, fh_again, attr = nfs.lookup(b"alice")
        assert (status, fh_again, attr[0], attr[3], attr[4]) == (OK, fh, REG, 2 * len(message), fileid)
        assert nfs.setattr(fh, uid=1001) == OK  # a delivery agent's fchown to the recipient
        assert nfs.setattr(fh, mode=0o600) == OK
        assert nfs.setattr(fh, uid=0) == PERM
        assert nfs.setattr(fh, mode=0o644) == PERM
        assert nfs.setattr(fh, size=len(message)) == OK
        assert path.read_bytes() == message
        assert nfs.commit(fh) == OK
        assert nfs.access(fh) == 0x01 | 0x04 | 0x08
        st = path.lstat()
        assert (st.st_uid, st.st_mode & 0o7777) == (1001, 0o600)
        status, fh_again, attr = nfs.create(b"alice", how=UNCHECKED, mode=0o644)
        assert (status, fh_again, attr[1], attr[3]) == (OK, fh, 0o600, len(message))
    finally:
        path.unlink(missing_ok=True)
    assert nfs.getattr(fh)[0] == STALE
    assert nfs.write(fh, 0, b"x")[0] == 2  # NOENT: nothing is made by a write


def test_writes_beyond_bounds_are_refused(server):
    """
    If root's WRITE holds more than a transfer, or another count than its
    data, or reaches past the largest mailbox or far past the file's end,
    or its SETATTR would make the file huge, then an error, and the file
    is as it was: no huge file, no allocation.
    """
    home_checked(server, "bob")
    path = spool(server, "bob") / "bob"
    nfs = Files(server, "tcp")
    try:
        status, fh, _ = nfs.create(b"bob", mode=0o600)
        assert status == OK
        assert nfs.write(fh, 0, b"x" * 9000)[0] == INVAL
        assert nfs.write(fh, 0, b"x" * 10, count=20)[0] == INVAL
        assert nfs.write(fh, 1 << 41, b"x")[0] == FBIG
        assert nfs.write(fh, (1 << 24) + 1, b"x")[0] == FBIG
        assert nfs.setattr(fh, size=1 << 41) == FBIG
        assert nfs.setattr(fh, size=(1 << 24) + 1) == FBIG
        assert path.stat().st_size == 0 and path.stat().st_blocks == 0
        assert nfs.write(fh, 4096, b"x")[0] == OK  # a gap the client's writes may leave
        assert path.stat().st_size == 4097
    finally:
        path.unlink(missing_ok=True)


def test_another_users_file_in_the_alternate_spool_is_refused(server):
    """
    If bob makes the file of slash's name in the mode-1777 alternate spool
    (slash's mailbox is there: his home is /), readable and writable by
    all, then root's LOOKUP, CREATE and WRITE of slash answer ACCES, and
    nothing root is given for slash lands in bob's file.
    """
    path = server.alt / "slash"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.fchmod(fd, 0o666)
        os.fchown(fd, 1002, 1002)
        os.close(fd)
        nfs = Files(server, "tcp")
        assert nfs.lookup(b"slash")[0] == ACCES
        assert nfs.create(b"slash", how=UNCHECKED, mode=0o600)[0] == ACCES
        assert path.read_bytes() == b"" and path.stat().st_uid == 1002
    finally:
        path.unlink(missing_ok=True)


def test_only_root_from_a_privileged_port_uses_the_file(make_server):
    """
    If anyone but root presents a mailbox file's handle (alice herself,
    bob, an HLFS_GID caller, AUTH_NONE), then STALE for every call, as for
    a foreign handle; root from an unprivileged port is refused outright;
    an HLFS_GID caller finds Table 2's link in NAME, as before.
    """
    server = make_server()  # not --insecure: the port decides
    home_checked(server, "alice")
    path = spool(server, "alice") / "alice"
    path.write_bytes(b"secret\n")
    os.chown(path, 1001, 1001)
    path.chmod(0o600)
    nfs = Files(server, "udp")
    status, fh, attr = nfs.lookup(b"alice")
    assert (status, attr[0]) == (OK, REG)
    outsiders = {"alice": ALICE, "bob": BOB, "HLFS_GID": FINGER, "AUTH_NONE": ANONYMOUS}
    for label, credential in outsiders.items():
        assert nfs.getattr(fh, credential=credential)[0] == STALE, label
        assert nfs.read(fh, 0, 100, credential=credential)[0] == STALE, label
        assert nfs.write(fh, 0, b"x", credential=credential)[0] == STALE, label
        assert nfs.setattr(fh, size=0, credential=credential) == STALE, label
    # Root from an unprivileged port is refused before any handle is
    # looked at (hlfs is not --insecure).
    assert nfs.read(fh, 0, 100, privileged=False)[0][0] == "denied"
    assert nfs.write(fh, 0, b"x", privileged=False)[0][0] == "denied"
    status, link_fh, attr = nfs.lookup(b"alice", credential=FINGER)
    assert (status, attr[0]) == (OK, LNK) and link_fh != fh
    assert path.read_bytes() == b"secret\n"


def test_nfsv2(server):
    """
    Over NFSv2 likewise: root's LOOKUP finds a regular file of alice's,
    WRITE writes it as alice and READ reads it.
    """
    home_checked(server, "carol")
    path = spool(server, "carol") / "carol"
    path.write_bytes(b"")
    os.chown(path, 1003, 1003)
    try:
        root = mount_root(server.port, ALICE, vers=1)
        status, body = rpc(server.port, 2, LOOKUP2, root + pack_opaque(b"carol"))
        assert status == OK
        fh = body.fixed(32)
        ftype, mode, _, uid = struct.unpack(">4I", body.fixed(16))
        assert (ftype, mode & 0o170000, uid) == (REG, 0o100000, 1003)
        status, body = rpc(server.port, 2, WRITE2, fh + struct.pack(">3I", 0, 0, 0) + pack_opaque(b"v2 mail\n"))
        assert status == OK and struct.unpack(">I", body.fixed(68)[20:24])[0] == 8  # size
        status, body = rpc(server.port, 2, READ2, fh + struct.pack(">3I", 0, 100, 0))
        assert status == OK
        body.skip(68)
        assert body.opaque() == b"v2 mail\n"
        assert path.read_bytes() == b"v2 mail\n" and path.stat().st_uid == 1003
    finally:
        path.unlink(missing_ok=True)


def test_long_user_names(make_server):
    """
    If a user's name is longer than a 32-byte handle can hold (a
    directory user's C{firstname.lastname}), then root still finds, makes
    and writes that user's mailbox and lock over NFSv3 and v2: its handle
    holds a digest of the name.
    """
    server = make_server("--insecure", users=USERS + [(LONG_NAME, 1006, "{base}/home/long")])
    home = server.base / "home" / "long"
    home.mkdir()
    os.chown(home, 1006, 1006)
    name = LONG_NAME.encode()
    home_checked(server, LONG_NAME)
    nfs = Files(server, "udp")
    status, fh, attr = nfs.create(name, mode=0o600)
    assert status == OK and len(fh) == 32 and name not in fh and attr[2] == 1006
    assert nfs.write(fh, 0, b"long\n")[0] == OK
    assert nfs.lookup(name)[1] == fh
    assert nfs.create(name + b".lock")[0] == OK
    assert (spool(server, "long") / (LONG_NAME + ".lock")).lstat().st_uid == 1006
    assert nfs.remove(name + b".lock") == OK
    root = mount_root(server.port, ALICE, vers=1)
    status, body = rpc(server.port, 2, LOOKUP2, root + pack_opaque(name))
    assert status == OK and body.fixed(32) == fh
    status, body = rpc(server.port, 2, READ2, fh + struct.pack(">3I", 0, 100, 0))
    body.skip(68)
    assert status == OK and body.opaque() == b"long\n"
    assert (spool(server, "long") / LONG_NAME).read_bytes() == b"long\n"


def test_a_full_home_answers_nospc(make_server):
    """
    If alice's home is full (a tmpfs filled to the last byte), then
    root's WRITE to her mailbox answers NOSPC, so that the delivery agent
    defers; its SETATTR of the size it had takes back what it wrote.
    """
    server = make_server("--insecure")
    home = server.base / "home" / "alice"
    with tmpfs(home, "256k"):
        os.chown(home, 1001, 1001)
        home_checked(server, "alice")
        path = spool(server, "alice") / "alice"
        nfs = Files(server, "tcp")
        status, fh, _ = nfs.create(b"alice", mode=0o600)
        assert status == OK
        assert nfs.write(fh, 0, b"first message\n")[0] == OK
        fill(str(spool(server, "alice")))
        offset, status = 14, OK
        for _ in range(64):
            status, _ = nfs.write(fh, offset, b"y" * 8192)
            if status != OK:
                break
            offset += 8192
        assert status == NOSPC
        assert nfs.setattr(fh, size=14) == OK
        assert path.read_bytes() == b"first message\n"


def _v2_read_answered(port, fh, timeout):
    """
    Send one NFSv2 READ as root; return whether any reply came within
    C{timeout} seconds.
    """
    xid = random.getrandbits(32)
    data = encode_call(xid, 100003, 2, READ2, ROOT, fh + struct.pack(">3I", 0, 100, 0))
    with privileged_socket(socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            s.recv(65536)
        except socket.timeout:
            return False
    return True


def test_a_hung_home_answers_jukebox(make_server):
    """
    If bob's home hangs (a frozen FUSE mount) while root reads his
    mailbox, then root is told to come back (JUKEBOX) within the check
    deadline, and over NFSv2 gets no reply (its client sends the call
    again); meanwhile root writes alice's mailbox as ever.
    """
    server = make_server("--insecure", "--probe-deadline", "0.5")
    home = server.base / "home" / "bob"
    source = server.base / "bob-source"
    source.mkdir()
    os.chown(source, 1002, 1002)
    (source / ".mailspool").mkdir()
    os.chown(source / ".mailspool", 1002, 1002)
    with frozen_mount(str(source), str(home)) as mount:
        home_checked(server, "bob")
        home_checked(server, "alice")
        mailbox = source / ".mailspool" / "bob"
        mailbox.write_bytes(b"bob's mail\n")
        os.chown(mailbox, 1002, 1002)
        nfs = Files(server, "udp")
        status, fh, _ = nfs.lookup(b"bob")
        assert status == OK
        mount.freeze()
        started = time.monotonic()
        assert nfs.read(fh, 0, 100)[0] == JUKEBOX
        assert time.monotonic() - started < 3
        assert not _v2_read_answered(server.port, fh, 2.0)
        status, alice_fh, _ = nfs.create(b"alice", mode=0o600)
        assert status == OK and nfs.write(alice_fh, 0, b"alice goes on\n")[0] == OK
        mount.thaw()
        deadline = time.monotonic() + 10
        while nfs.read(fh, 0, 100)[0] != OK and time.monotonic() < deadline:
            time.sleep(0.2)
        assert nfs.read(fh, 0, 100) == (OK, (b"bob's mail\n", True))
    (spool(server, "alice") / "alice").unlink()
