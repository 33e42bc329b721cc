"""
Names that are there, and the Linux client's silly rename, on the wire:
CREATE of a name that is there answers EXIST in every mode and over
NFSv2; root's lock renamed to a hidden C{.nfs} name is removed, the
hidden name's later REMOVE answered as done; nobody else can do either.
Against a real C{twistd hlfs}, as in L{tests.nfs.test_lock_wire}.
"""

import contextlib
import os

import pytest

from hlfs.xdr import pack_opaque
from tests.nfs.test_lock_wire import (  # noqa: F401 (lock_file is a fixture)
    ACCES, ALICE, CREATE2, EXCLUSIVE, EXIST, FINGER, GUARDED, NOENT, OK, REMOVE2, ROFS, ROOT,
    UNCHECKED, V3, lock_file, rpc, sattr2, skip_wcc, spool,
)
from tests.support.rpcsock import mount_root


RENAME3, RENAME2 = 14, 11


def hidden_name(n):
    """
    A hidden name as the Linux client's silly rename makes it.
    """
    return b".nfs%016x%08x" % (0x6000000000000000 + n, n)


@contextlib.contextmanager
def alice_mailbox(server):
    """
    alice's mailbox, there while the block runs.
    """
    V3(server, "udp").lookup(b"alice", credential=FINGER)  # her home check makes her spool
    mailbox = spool(server, "alice") / "alice"
    mailbox.touch()
    os.chown(mailbox, 1001, 1001)
    try:
        yield mailbox
    finally:
        mailbox.unlink()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_v3_existing_names_answer_exist(server, transport):
    """
    If a caller creates a name that is there, then EXIST in every create
    mode: C{home} for anyone, a user's name for HLFS_GID; for root, whose
    view holds each user's real mailbox, a mailbox that is there
    (OpenSMTPD's root opens C{/var/mail/NAME} with C{O_CREAT|O_EXCL} and
    delivers on EEXIST only), but UNCHECKED opens it, as RFC 1813 says.
    A name that is not there stays ROFS (for root, a scratch file is
    made: L{hlfs.core.scratch}).
    """
    nfs = V3(server, transport)
    with alice_mailbox(server):
        for credential, name in ((ALICE, b"home"), (ROOT, b"home"), (ROOT, b"alice"), (FINGER, b"bob")):
            for how in (UNCHECKED, GUARDED, EXCLUSIVE):
                want = OK if (credential, name, how) == (ROOT, b"alice", UNCHECKED) else EXIST
                assert nfs.create(name, how=how, credential=credential)[0] == want, (credential, name, how)
    assert nfs.create(b"alice", credential=ALICE)[0] == ROFS
    assert nfs.create(b"nobody-here", credential=FINGER)[0] == ROFS


def test_v2_existing_names_answer_exist(server):
    """
    NFSv2 likewise (its CREATE has no modes and is always exclusive).
    """
    root = mount_root(server.port, ALICE, vers=1)
    with alice_mailbox(server):
        for credential, name in ((ALICE, b"home"), (ROOT, b"alice")):
            status, _ = rpc(server.port, 2, CREATE2, root + pack_opaque(name) + sattr2(0o600), credential)
            assert status == EXIST, (credential, name)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_v3_silly_rename_removes_the_lock(server, lock_file, transport):
    """
    If root renames its lock to a hidden C{.nfs} name, as the Linux client
    does when a process removes a lock it holds open, then the real lock
    is gone at once; the client's later REMOVE of the hidden name answers
    OK, once, and leaves a lock made meanwhile alone.
    """
    nfs = V3(server, transport)
    hidden = hidden_name(1)
    assert nfs.create(b"alice.lock")[0] == OK
    assert nfs.lookup(hidden)[0] == NOENT  # the client checks the name is free
    status, body = nfs.call(RENAME3, pack_opaque(nfs.root) + pack_opaque(b"alice.lock") + pack_opaque(nfs.root) + pack_opaque(hidden))
    assert status == OK
    skip_wcc(body)
    skip_wcc(body)
    assert body.remaining() == 0
    assert not lock_file.exists()
    assert nfs.lookup(b"alice.lock")[0] == NOENT
    assert nfs.create(b"alice.lock")[0] == OK  # the next delivery's lock
    assert nfs.remove(hidden) == OK
    assert lock_file.exists()
    assert nfs.remove(hidden) == NOENT
    assert nfs.remove(b"alice.lock") == OK


def test_v2_silly_rename_removes_the_lock(server, lock_file):
    root = mount_root(server.port, ALICE, vers=1)
    hidden = hidden_name(2)
    assert rpc(server.port, 2, CREATE2, root + pack_opaque(b"alice.lock") + sattr2(0o600))[0] == OK
    status, _ = rpc(server.port, 2, RENAME2, root + pack_opaque(b"alice.lock") + root + pack_opaque(hidden))
    assert status == OK
    assert not lock_file.exists()
    assert rpc(server.port, 2, REMOVE2, root + pack_opaque(hidden))[0] == OK
    assert rpc(server.port, 2, REMOVE2, root + pack_opaque(hidden))[0] == NOENT


def test_hidden_names_only_for_root(make_server):
    """
    Only root from a privileged port can hide a lock or have a hidden name
    removed: an ordinary user (who sees no locks) gets NOENT, an HLFS_GID
    caller ACCES, root from another port is refused, and a hidden name
    nobody made is NOENT, even for root.  The lock stays.
    """
    srv = make_server()
    nfs = V3(srv, "tcp")
    nfs.lookup(b"alice")
    path = spool(srv, "alice") / "alice.lock"
    hidden = hidden_name(3)
    assert nfs.create(b"alice.lock")[0] == OK
    args = pack_opaque(nfs.root) + pack_opaque(b"alice.lock") + pack_opaque(nfs.root) + pack_opaque(hidden)
    assert nfs.call(RENAME3, args, credential=ALICE)[0] == NOENT
    assert nfs.call(RENAME3, args, credential=FINGER)[0] == ACCES
    assert nfs.call(RENAME3, args, privileged=False)[0][0] == "denied"
    assert path.exists()
    for credential in (ALICE, FINGER, ROOT):
        assert nfs.remove(hidden, credential=credential) == NOENT
    assert nfs.remove(b"alice.lock") == OK
