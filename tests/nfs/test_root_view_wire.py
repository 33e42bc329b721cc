"""
Root's view (Table 2) on the wire, as a hostile caller meets it: handles
of mailbox links and lock files presented by callers who do not see
Table 2, and lock files whose attributes their owner chose.  Real bytes
to a real C{twistd hlfs}, over NFSv2 and v3.
"""

import os
import struct
import zlib

import pytest

from hlfs.rpc.message import AUTH_NONE, Credential
from hlfs.xdr import pack_opaque
from tests.support.rpcsock import NFS, call, cred, lookup3, mount_root
from tests.nfs.test_lock_wire import V3
from tests.support.server import HLFS_GID

ROOT = cred(0)
FINGER = cred(1002, HLFS_GID)
ALICE = cred(1001)
BOB = cred(1002)
ANONYMOUS = Credential(AUTH_NONE)

OK, NOENT, EXIST, STALE = 0, 2, 17, 70
GETATTR, LOOKUP, ACCESS, READLINK, READ, FSSTAT = 1, 3, 4, 5, 6, 18
V2_GETATTR, V2_LOOKUP, V2_READLINK, V2_READ, V2_STATFS = 1, 4, 5, 6, 17

#: Callers who do not see Table 2: anonymous (AUTH_NONE, which may say it
#: is anyone), an ordinary user, and the very user the mailbox belongs to.
OUTSIDERS = {"AUTH_NONE": ANONYMOUS, "alice": ALICE, "bob": BOB}


def forged(kind, name, export=b"/mail", linkname=b"home"):
    """
    A mailbox-link (kind 3) or lock-file (kind 4) handle made as anyone
    can: nothing in it is secret.
    """
    fh = struct.pack(">BBI", 0x68, kind, zlib.crc32(export + b"\0" + linkname))
    fh += bytes((len(name),)) + name
    return fh + bytes(32 - len(fh))


def v3(server, proc, args, credential):
    reply = call(server.port, NFS, 3, proc, args, credential)
    assert reply.stat == 0
    return reply.body.uint(), reply.body


def v2(server, proc, args, credential):
    reply = call(server.port, NFS, 2, proc, args, credential)
    assert reply.stat == 0
    return reply.body.uint(), reply.body


@pytest.fixture
def bob_lock(server):
    """
    bob's lock file, made in his spool as bob would make it; removed after.
    """
    root = mount_root(server.port, ALICE)
    assert lookup3(server.port, root, b"bob", FINGER)[0] == OK  # checks bob's home
    path = server.base / "home" / "bob" / ".mailspool" / "bob.lock"
    path.touch()
    if os.geteuid() == 0:
        os.chown(path, 1002, 1002)
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.verify_optional
def test_mailbox_and_lock_handles_only_for_table2_callers(server, bob_lock):
    """
    If a caller who does not see Table 2 presents the handle of bob's
    mailbox link or of his lock file (a forged one: it holds nothing
    secret), then every procedure answers STALE, over v2 and v3, as for
    another caller's link; root and an HLFS_GID caller, who may look the
    names up, may use them.
    """
    root = mount_root(server.port, ALICE)
    status, minted, _ = lookup3(server.port, root, b"bob", FINGER)
    assert status == OK and minted == forged(3, b"bob")
    status, minted_lock, _ = lookup3(server.port, root, b"bob.lock", FINGER)
    assert status == OK and minted_lock == forged(4, b"bob.lock"[:-5])
    mailbox = f"{server.base}/home/bob/.mailspool/bob".encode()
    for fh in (forged(3, b"bob"), forged(4, b"bob")):
        is_lock = fh[1] == 4
        for label, outsider in OUTSIDERS.items():
            for proc, args in (
                (GETATTR, pack_opaque(fh)),
                (READLINK, pack_opaque(fh)),
                (ACCESS, pack_opaque(fh) + struct.pack(">I", 0x3F)),
                (READ, pack_opaque(fh) + struct.pack(">QI", 0, 4096)),
                (FSSTAT, pack_opaque(fh)),
                (LOOKUP, pack_opaque(fh) + pack_opaque(b"x")),
            ):
                status, body = v3(server, proc, args, outsider)
                assert status == STALE, (label, fh[1], proc, status)
            for proc, args in (
                (V2_GETATTR, fh),
                (V2_READLINK, fh),
                (V2_READ, fh + bytes(12)),
                (V2_STATFS, fh),
                (V2_LOOKUP, fh + pack_opaque(b"x")),
            ):
                assert v2(server, proc, args, outsider)[0] == STALE, (label, fh[1], proc)
        for insider in (ROOT, FINGER):
            assert v3(server, GETATTR, pack_opaque(fh), insider)[0] == OK
            status, body = v2(server, V2_READLINK, fh, insider)
            assert (status, None if is_lock else body.opaque()) == ((22, None) if is_lock else (OK, mailbox))


def lock_times_v3(body):
    """
    (mtime, ctime) as (seconds, nanoseconds) pairs from a fattr3.
    """
    fields = struct.unpack(">5I2Q2I2Q6I", body.fixed(84))
    return fields[13:15], fields[15:17]


def lock_times_v2(body):
    fields = struct.unpack(">17I", body.fixed(68))
    return fields[13:15], fields[15:17]


@pytest.mark.verify_optional
@pytest.mark.parametrize(
    "when, wire",
    [
        # touch -d 1960-01-01, and a time before the Epoch by less than a second
        (-315_619_200 * 10**9, (0, 0)),
        (-1, (0, 0)),
        # touch -d 2200-01-01: past NFS's unsigned 32-bit seconds (2106)
        (7_258_118_400 * 10**9 + 5, (0xFFFFFFFF, 999_999_999)),
    ],
)
def test_lock_times_out_of_nfs_range(server, bob_lock, when, wire):
    """
    If bob sets his lock file's mtime before 1970 or after 2106, then
    root's LOOKUP and GETATTR of C{bob.lock} still answer, over v3 and v2,
    with the time clamped to what NFS can carry, and nothing is logged.
    """
    os.utime(bob_lock, ns=(when, when))
    log_size = len(server.logtext())
    root = mount_root(server.port, ALICE)
    status, fh, body = lookup3(server.port, root, b"bob.lock", ROOT)
    assert status == OK
    assert body.bool()
    mtime, _ = lock_times_v3(body)
    assert mtime == wire
    status, body = v3(server, GETATTR, pack_opaque(fh), ROOT)
    assert (status, lock_times_v3(body)[0]) == (OK, wire)
    root2 = mount_root(server.port, ALICE, vers=1)
    status, body = v2(server, V2_LOOKUP, root2 + pack_opaque(b"bob.lock"), ROOT)
    assert status == OK
    fh2 = body.fixed(32)
    v2_wire = (wire[0], wire[1] // 1000)
    assert lock_times_v2(body)[0] == v2_wire
    status, body = v2(server, V2_GETATTR, fh2, ROOT)
    assert (status, lock_times_v2(body)[0]) == (OK, v2_wire)
    assert server.logtext()[log_size:] == ""


def squat(path, uid):
    """
    Make C{path} as a user would in the alternate spool (mode 1777).
    """
    path.touch()
    os.chown(path, uid, uid)


@pytest.mark.root(reason="the squatter's file belongs to another user")
def test_another_users_file_in_the_place_of_a_lock(server):
    """
    If alice makes C{slash.lock} in the alternate spool (where slash's
    mailbox is: his home is C{/}), which slash could never remove there,
    then root's LOOKUP does not see it (the Linux client would answer
    an exclusive create with EEXIST without asking), root's CREATE of
    C{slash.lock} replaces it with slash's own lock and root's REMOVE
    removes it, each with one log line; a lock of slash's own or root's
    is seen and respected (EXIST).
    """
    nfs = V3(server, "udp")
    lock = server.alt / "slash.lock"
    assert nfs.lookup(b"slash", credential=FINGER)[0] == OK
    squat(lock, 1001)
    log_size = len(server.logtext())
    assert nfs.lookup(b"slash.lock")[0] == NOENT
    status, _, attr = nfs.create(b"slash.lock", mode=0o600)
    assert status == OK and lock.lstat().st_uid == 1004 and attr[2] == 1004
    assert nfs.remove(b"slash.lock") == OK and not lock.exists()
    squat(lock, 1001)
    assert nfs.remove(b"slash.lock") == OK and not lock.exists()
    lock.mkdir()
    os.chown(lock, 1001, 1001)
    assert nfs.create(b"slash.lock")[0] == OK and lock.lstat().st_uid == 1004
    assert nfs.remove(b"slash.lock") == OK
    assert server.logtext()[log_size:].count("another user's file in the place of slash's lock") == 3
    for owner in (1004, 0):
        squat(lock, owner)
        assert nfs.lookup(b"slash.lock")[0] == OK
        assert nfs.create(b"slash.lock")[0] == EXIST
        assert lock.lstat().st_uid == owner
        lock.unlink()
