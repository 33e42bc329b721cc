"""
The dotlocks of root's view (hlfs.core.locks, hlfs.core.lockfs) without
sockets or files: which names are locks, who may make them, where they
go, and what each failure answers.
"""

import errno

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from hlfs.core import linkfs, locks
from hlfs.core.linkfs import HomeLinkFS, LinkConfig, NFSError
from hlfs.core.locks import ISpoolLocks, LockFailed, LockStat
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable
from hlfs.homes.resolver import HomeResolver

PASSWD = b"""\
root:x:0:0:root:/root:/bin/bash
ezk:x:1001:100::/users/ezk:/bin/sh
slash:x:1003:100::/:/bin/sh
postfix:x:105:110::/var/spool/postfix:/usr/sbin/nologin
averyveryverylongusername1:x:1004:100::/users/long:/bin/sh
"""
HLFS_GID = 77
STAT = LockStat(0, 1001, 100, 0, 5, 6)


@implementer(ISpoolLocks)
class FakeLocks:
    """
    Lock files in a dict, answering at once or (C{later}) by Deferred.
    """

    def __init__(self, later=False):
        self.files = {}
        self.calls = []
        self.later = later
        self.fail = None

    def _answer(self, value):
        if self.fail is not None:
            raise LockFailed(self.fail)
        return succeed(value) if self.later else value

    def stat(self, name, path):
        self.calls.append(("stat", name, path))
        return self._answer(self.files.get(path))

    def create(self, name, path, mode):
        self.calls.append(("create", name, path, mode))
        if path in self.files:
            raise LockFailed(errno.EEXIST)
        st = STAT._replace(mode=mode)
        self.files[path] = st
        return self._answer(st)

    def remove(self, name, path):
        self.calls.append(("remove", name, path))
        if path not in self.files:
            raise LockFailed(errno.ENOENT)
        del self.files[path]
        return self._answer(None)


@pytest.fixture(params=[False, True], ids=["now", "later"])
def world(request):
    clock = Clock()
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt", uid_min=1000),
        clock, None, verify=False,
    )
    fake = FakeLocks(later=request.param)
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), resolver, 1, fake)
    return fs, fake


def result(answer):
    """
    The value of an answer given now or by an already fired Deferred;
    its NFSError raised.
    """
    if not isinstance(answer, Deferred):
        return answer
    out = []
    answer.addBoth(out.append)
    value = out[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def status_of(f):
    with pytest.raises(NFSError) as e:
        result(f())
    return e.value.status


ROOT = (1, 0, 0)


def test_lock_owner():
    assert locks.lock_owner(b"ezk.lock") == b"ezk"
    assert locks.lock_owner(b"a.b.lock") == b"a.b"
    for name in (b".lock", b"..lock", b"...lock", b"ezk", b"ezk.lock.x", b"a/b.lock", b"a\0.lock"):
        assert locks.lock_owner(name) is None, name


def test_lock_path_next_to_the_mailbox():
    assert locks.lock_path(b"/users/ezk/.mailspool/ezk") == b"/users/ezk/.mailspool/ezk.lock"
    assert locks.lock_path(b"/alt/slash") == b"/alt/slash.lock"


def test_who_may_lock(world):
    fs, _ = world
    root = fs.caller(*ROOT)
    assert locks.may_lock(root, True)
    assert not locks.may_lock(root, False)
    assert not locks.may_lock(fs.caller(1, 1001, HLFS_GID), True)
    assert not locks.may_lock(fs.caller(1, 1001, 100), True)
    assert not locks.may_lock(fs.caller(0, 0, 0), True)  # AUTH_NONE
    assert locks.may_look(fs.caller(1, 1001, HLFS_GID)) and locks.may_look(root)
    assert not locks.may_look(fs.caller(1, 1001, 100))


def test_status_of_errnos():
    assert locks.status_of(errno.EEXIST) == locks.EXIST
    assert locks.status_of(errno.ENOSPC) == locks.NOSPC
    assert locks.status_of(errno.EDQUOT) == locks.DQUOT
    assert locks.status_of(errno.ESTALE) == locks.TRYLATER
    assert locks.status_of(errno.EACCES) == linkfs.ACCES
    assert locks.status_of(errno.ELOOP) == linkfs.IO


def test_root_makes_the_lock_next_to_the_mailbox(world):
    """
    If root creates C{NAME.lock}, then the lock made is the mailbox link's
    target plus C{.lock}, for NAME, in the home spool or the alternate
    spool as the mailbox is; LOOKUP and GETATTR show it as a regular file;
    a second create is EXIST; REMOVE removes it.
    """
    fs, fake = world
    root = fs.caller(*ROOT)
    fh, attr = result(fs.create(fs.root_handle, b"ezk.lock", root, True, 0))
    assert fake.calls[-1] == ("create", b"ezk", b"/users/ezk/.mailspool/ezk.lock", 0)
    assert (attr.type, attr.mode, attr.uid, attr.ctime) == (linkfs.REG, 0, 1001, 6)
    assert status_of(lambda: fs.create(fs.root_handle, b"ezk.lock", root, True, 0)) == locks.EXIST
    assert result(fs.lookup(fs.root_handle, b"ezk.lock", root)) == (fh, attr)
    assert result(fs.getattr(fh, root)) == attr
    assert fs.attr_for_update(fh, root) == attr
    assert not fs.lasting(attr) and fs.lasting(fs.root_attr)
    result(fs.create(fs.root_handle, b"slash.lock", root, True, 0o644))
    assert fake.calls[-1] == ("create", b"slash", b"/alt/slash.lock", 0o644)
    result(fs.create(fs.root_handle, b"postfix.lock", root, True, None))
    assert fake.calls[-1] == ("create", b"postfix", b"/alt/postfix.lock", 0o600)
    assert result(fs.remove(fs.root_handle, b"ezk.lock", root, True)) == ()
    assert b"/users/ezk/.mailspool/ezk.lock" not in fake.files
    assert status_of(lambda: fs.getattr(fh, root)) == linkfs.STALE
    assert status_of(lambda: fs.attr_for_update(fh, root)) == linkfs.STALE
    assert status_of(lambda: fs.lookup(fs.root_handle, b"ezk.lock", root)) == linkfs.NOENT
    assert status_of(lambda: fs.remove(fs.root_handle, b"ezk.lock", root, True)) == linkfs.NOENT
    assert status_of(lambda: fs.readlink(fh, root)) == linkfs.INVAL


def test_refusals(world):
    """
    Who may not, and names that are no lock: each its own NFS error, and
    no lock is made or removed.  A caller who may look at locks but not
    make them (root from an unprivileged port, HLFS_GID) learns only what
    LOOKUP tells it; others see no lock files at all.
    """
    fs, fake = world
    root = fs.caller(*ROOT)
    finger = fs.caller(1, 1001, HLFS_GID)
    ezk = fs.caller(1, 1001, 100)
    top = fs.root_handle
    assert status_of(lambda: fs.create(top, b"ezk.lock", root, False)) == linkfs.ACCES
    assert status_of(lambda: fs.create(top, b"ezk.lock", finger, True)) == linkfs.ACCES
    assert status_of(lambda: fs.remove(top, b"ezk.lock", finger, True)) == linkfs.NOENT
    assert status_of(lambda: fs.create(top, b"ezk.lock", ezk, True)) == linkfs.ROFS
    assert status_of(lambda: fs.remove(top, b"ezk.lock", ezk, True)) == linkfs.NOENT
    assert status_of(lambda: fs.lookup(top, b"ezk.lock", ezk)) == linkfs.NOENT
    assert status_of(lambda: fs.create(top, b"home", root, True)) == linkfs.EXIST
    assert status_of(lambda: fs.create(top, b"..lock", root, True)) == linkfs.ROFS
    assert status_of(lambda: fs.create(top, b"x" * 256, root, True)) == linkfs.NAMETOOLONG
    assert status_of(lambda: fs.create(top, b"ezk.lock", root, True, how=linkfs.EXCLUSIVE)) == linkfs.NOTSUPP
    link, _ = fs.lookup(top, b"home", root)
    assert status_of(lambda: fs.create(link, b"ezk.lock", root, True)) == linkfs.NOTDIR
    assert status_of(lambda: fs.create(b"x" * 32, b"ezk.lock", root, True)) == linkfs.STALE
    assert status_of(lambda: fs.create(top, b"ghost.lock", root, True)) == linkfs.NOENT
    assert [call[0] for call in fake.calls] == ["stat"] * 4
    assert fake.files == {}
    fake.files[b"/users/ezk/.mailspool/ezk.lock"] = STAT
    assert status_of(lambda: fs.create(top, b"ezk.lock", root, False)) == linkfs.EXIST
    assert status_of(lambda: fs.create(top, b"ezk.lock", finger, True)) == linkfs.EXIST
    assert status_of(
        lambda: fs.create(top, b"ezk.lock", finger, True, how=linkfs.UNCHECKED)
    ) == linkfs.ACCES
    assert status_of(lambda: fs.remove(top, b"ezk.lock", finger, True)) == linkfs.ACCES
    assert status_of(lambda: fs.remove(top, b"ezk.lock", root, False)) == linkfs.ACCES
    assert [call[0] for call in fake.calls if call[0] != "stat"] == []


def test_long_names_lock(world):
    """
    A user whose name is too long for a handle to hold (over 25 bytes)
    has a lock file all the same: root makes it, looks it up and
    removes it, through a handle holding the name's digest.
    """
    fs, fake = world
    root = fs.caller(*ROOT)
    top = fs.root_handle
    long_lock = b"averyveryverylongusername1.lock"
    assert status_of(lambda: fs.lookup(top, long_lock, root)) == linkfs.NOENT
    fh, attr = result(fs.create(top, long_lock, root, True))
    assert b"averyvery" not in fh and len(fh) == 32
    assert result(fs.lookup(top, long_lock, root))[0] == fh
    assert result(fs.getattr(fh, root)) == attr
    assert fake.files.keys() == {b"/users/long/.mailspool/averyveryverylongusername1.lock"}
    assert result(fs.remove(top, long_lock, root, True)) == ()
    assert fake.files == {}


def test_failures_become_nfs_errors(world):
    """
    If the lock operation fails (a full home, a deadline passed), then
    the NFS error its errno maps to; TRYLATER when hlfs asks to come back.
    """
    fs, fake = world
    root = fs.caller(*ROOT)
    fake.fail = errno.EDQUOT
    assert status_of(lambda: fs.create(fs.root_handle, b"ezk.lock", root, True, 0)) == locks.DQUOT
    fake.fail = errno.EAGAIN
    assert status_of(lambda: fs.lookup(fs.root_handle, b"ezk.lock", root)) == locks.TRYLATER


def test_no_locks_without_a_lock_maker():
    """
    Without an L{ISpoolLocks}, NAME.lock does not exist and cannot be made.
    """
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt"), Clock(), None,
        verify=False,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, 1)
    root = fs.caller(*ROOT)
    assert status_of(lambda: fs.lookup(fs.root_handle, b"ezk.lock", root)) == linkfs.NOENT
    assert status_of(lambda: fs.create(fs.root_handle, b"ezk.lock", root, True)) == linkfs.ROFS
    assert status_of(lambda: fs.remove(fs.root_handle, b"ezk.lock", root, True)) == linkfs.NOENT
