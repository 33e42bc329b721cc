"""
What the policy core answers to changes of its directory and to calls on
its nodes' contents (hlfs.core.changes, hlfs.core.contents,
hlfs.core.hidden), without sockets or files: a name that is there comes
first (EXIST, NOENT), root's silly rename of its lock is the lock's
removal, and what the core remembers of it is bounded.
"""

import pytest
from twisted.internet.task import Clock

from hlfs.core import hidden, linkfs
from hlfs.core.hidden import HiddenNames
from hlfs.core.linkfs import EXCLUSIVE, GUARDED, UNCHECKED, HomeLinkFS, LinkConfig
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable
from hlfs.homes.resolver import HomeResolver
from tests.core.test_locks import HLFS_GID, PASSWD, STAT, FakeLocks, result, status_of

LOCK = b"/users/ezk/.mailspool/ezk.lock"
HIDDEN = b".nfs" + b"0123456789abcdef" + b"00000001"


@pytest.fixture(params=[False, True], ids=["now", "later"])
def world(request):
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt", uid_min=1000),
        Clock(), None, verify=False,
    )
    fake = FakeLocks(later=request.param)
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), resolver, 1, fake)
    callers = {
        "root": fs.caller(1, 0, 0),
        "finger": fs.caller(1, 1001, HLFS_GID),
        "ezk": fs.caller(1, 1001, 100),
    }
    return fs, fake, callers


def test_creating_a_name_that_is_there(world):
    """
    If any caller makes a name it finds in the directory (its link; for
    Table 2 a user's name), then EXIST in every create mode and for every
    kind of node; C{.} and C{..} are the directory itself.  A name it does
    not find is ROFS, and nothing is made.
    """
    fs, fake, callers = world
    top = fs.root_handle
    for who, caller in callers.items():
        names = [b"home"] + ([b"ezk", b"slash"] if who != "ezk" else [])
        for name in names:
            for how in (UNCHECKED, GUARDED, EXCLUSIVE):
                assert status_of(lambda: fs.create(top, name, caller, True, 0o600, how)) == linkfs.EXIST
            assert status_of(lambda: fs.make(top, name, caller)) == linkfs.EXIST
        for name in (b".", b".."):
            assert status_of(lambda: fs.create(top, name, caller, True)) == linkfs.ISDIR
            assert status_of(lambda: fs.make(top, name, caller)) == linkfs.EXIST
        assert status_of(lambda: fs.create(top, b"ghost", caller, True)) == linkfs.ROFS
        assert status_of(lambda: fs.make(top, b"ghost", caller)) == linkfs.ROFS
    assert status_of(lambda: fs.create(top, b"ezk", callers["ezk"], True)) == linkfs.ROFS
    assert fake.files == {}


def test_unchecked_create_of_a_held_lock(world):
    """
    If root asks an UNCHECKED create of a lock that is there, then the lock
    as it is (RFC 1813: UNCHECKED opens an existing file), unless it asks
    for another size (ROFS: hlfs writes no lock); the caller who may only
    look gets ACCES.
    """
    fs, fake, callers = world
    top = fs.root_handle
    fake.files[LOCK] = STAT
    fh, attr = result(fs.create(top, b"ezk.lock", callers["root"], True, 0o644, UNCHECKED))
    assert fh == fs.handles.lock(b"ezk") and attr.mode == STAT.mode and attr.uid == STAT.uid
    result(fs.create(top, b"ezk.lock", callers["root"], True, None, UNCHECKED, size=0))
    assert status_of(
        lambda: fs.create(top, b"ezk.lock", callers["root"], True, None, UNCHECKED, size=7)
    ) == linkfs.ROFS
    assert status_of(
        lambda: fs.create(top, b"ezk.lock", callers["finger"], True, None, UNCHECKED)
    ) == linkfs.ACCES
    assert fake.files == {LOCK: STAT}
    del fake.files[LOCK]
    result(fs.create(top, b"ezk.lock", callers["root"], True, 0o640, UNCHECKED))
    assert fake.files[LOCK].mode == 0o640


def test_removing_what_is_not_there(world):
    """
    If a caller removes or renames a name it does not find, then NOENT;
    one it finds, ROFS (RMDIR: NOTDIR, nothing here is a directory but
    the directory itself); the directory's own names are ISDIR, NOTEMPTY
    and INVAL, as a server answers.
    """
    fs, _, callers = world
    top = fs.root_handle
    for who, caller in callers.items():
        there = b"home" if who == "ezk" else b"ezk"
        assert status_of(lambda: fs.remove(top, b"ghost", caller, True)) == linkfs.NOENT
        assert status_of(lambda: fs.remove(top, there, caller, True)) == linkfs.ROFS
        assert status_of(lambda: fs.remove(top, b".", caller, True)) == linkfs.ISDIR
        assert status_of(lambda: fs.rmdir(top, b"ghost", caller)) == linkfs.NOENT
        assert status_of(lambda: fs.rmdir(top, there, caller)) == linkfs.NOTDIR
        assert status_of(lambda: fs.rmdir(top, b"..", caller)) == linkfs.NOTEMPTY
        assert status_of(lambda: fs.rename(top, b"ghost", top, b"x", caller, True)) == linkfs.NOENT
        assert status_of(lambda: fs.rename(top, there, top, b"x", caller, True)) == linkfs.ROFS
        assert status_of(lambda: fs.rename(top, b".", top, b"x", caller, True)) == linkfs.INVAL
    link, _ = fs.lookup(top, b"home", callers["root"])
    assert status_of(lambda: fs.remove(link, b"ghost", callers["root"], True)) == linkfs.NOTDIR
    assert status_of(lambda: fs.rename(top, b"ghost", b"x" * 32, b"x", callers["root"], True)) == linkfs.STALE


def test_link(world):
    """
    LINK is never taken; only root, which may write the directory, learns
    that the name is there (EXIST); a foreign handle is STALE.
    """
    fs, _, callers = world
    top = fs.root_handle
    root, finger = callers["root"], callers["finger"]
    link, _ = fs.lookup(top, b"home", root)
    assert status_of(lambda: fs.link(link, top, b"ezk", root, True)) == linkfs.EXIST
    assert status_of(lambda: fs.link(link, top, b".", root, True)) == linkfs.EXIST
    assert status_of(lambda: fs.link(link, top, b"new", root, True)) == linkfs.ROFS
    assert status_of(lambda: fs.link(link, top, b"ezk", root, False)) == linkfs.ROFS
    finger_link, _ = fs.lookup(top, b"home", finger)
    assert status_of(lambda: fs.link(finger_link, top, b"ezk", finger, True)) == linkfs.ROFS
    assert status_of(lambda: fs.link(link, top, b"ezk", finger, True)) == linkfs.STALE


def test_silly_rename_removes_the_lock(world):
    """
    If root renames its lock to a hidden C{.nfs} name (the Linux client's
    silly rename of an open file it removes), then the lock is removed at
    once, as NAME, and the later REMOVE of the hidden name by the same
    client is answered as done, once, without touching a lock made since.
    """
    fs, fake, callers = world
    top = fs.root_handle
    root = callers["root"]
    result(fs.create(top, b"ezk.lock", root, True))
    assert result(fs.rename(top, b"ezk.lock", top, HIDDEN, root, True, b"host1")) == ()
    assert LOCK not in fake.files and fake.calls[-1] == ("remove", b"ezk", LOCK)
    assert status_of(lambda: fs.lookup(top, HIDDEN, root)) == linkfs.NOENT
    assert status_of(lambda: fs.lookup(top, b"ezk.lock", root)) == linkfs.NOENT
    result(fs.create(top, b"ezk.lock", root, True))
    assert status_of(lambda: fs.remove(top, HIDDEN, root, True, b"host2")) == linkfs.NOENT
    assert status_of(lambda: fs.remove(top, HIDDEN, root, False, b"host1")) == linkfs.NOENT
    assert result(fs.remove(top, HIDDEN, root, True, b"host1")) == ()
    assert LOCK in fake.files
    assert status_of(lambda: fs.remove(top, HIDDEN, root, True, b"host1")) == linkfs.NOENT
    assert len(fs.hidden) == 0


def test_silly_rename_refused(world):
    """
    Only root from a privileged port hides a lock: an HLFS_GID caller or
    root from another port gets ACCES (the lock stays), an ordinary caller
    NOENT (it sees no locks), and root itself ROFS for any other target
    name; a lock that is not there is NOENT.  Nothing is remembered.
    """
    fs, fake, callers = world
    top = fs.root_handle
    root = callers["root"]
    fake.files[LOCK] = STAT
    assert status_of(lambda: fs.rename(top, b"ezk.lock", top, HIDDEN, callers["finger"], True)) == linkfs.ACCES
    assert status_of(lambda: fs.rename(top, b"ezk.lock", top, HIDDEN, root, False)) == linkfs.ACCES
    assert status_of(lambda: fs.rename(top, b"ezk.lock", top, HIDDEN, callers["ezk"], True)) == linkfs.NOENT
    for name in (b".nfs1234", b".nfs" + b"G" * 24, b"ezk.lock.old", HIDDEN + b"0"):
        assert status_of(lambda: fs.rename(top, b"ezk.lock", top, name, root, True)) == linkfs.ROFS
    assert fake.files == {LOCK: STAT}
    del fake.files[LOCK]
    assert status_of(lambda: fs.rename(top, b"ezk.lock", top, HIDDEN, root, True)) == linkfs.NOENT
    assert status_of(lambda: fs.rename(top, b"home", top, HIDDEN, root, True)) == linkfs.ROFS
    assert len(fs.hidden) == 0


def test_hidden_names():
    assert hidden.is_hidden(HIDDEN)
    for name in (b".nfs", HIDDEN[:-1], HIDDEN + b"0", HIDDEN.upper(), b"x" + HIDDEN[1:], HIDDEN + b"\n"):
        assert not hidden.is_hidden(name), name


def test_hidden_names_are_bounded():
    """
    A client's hidden names beyond its bound, and clients beyond theirs,
    are forgotten oldest first.
    """
    names = HiddenNames(per_client=4, clients=3)
    for n in range(10):
        names.remember(b"host", b"%d" % n, b"ezk")
    assert len(names) == 4
    assert names.forget(b"host", b"5") is None
    assert names.forget(b"host", b"9") == b"ezk"
    for n in range(10):
        names.remember(b"host%d" % n, b"x", b"ezk")
    assert len(names) == 3
    assert names.forget(b"host6", b"x") is None
    assert names.forget(b"host9", b"x") == b"ezk"
    # host7 is used again: host8 is now the oldest, and goes first.
    names.remember(b"host7", b"y", b"ezk")
    names.remember(b"host10", b"x", b"ezk")
    names.remember(b"host11", b"x", b"ezk")
    assert names.forget(b"host8", b"x") is None
    assert names.forget(b"host7", b"y") == b"ezk"


def test_node_contents(world):
    """
    READ, WRITE and COMMIT answer the node's type first (ISDIR, INVAL),
    then what hlfs does with a lock file: never read (ACCES), never
    written (ROFS), nothing to commit.  SETATTR is ROFS.  ACCESS grants
    reading and looking up the directory, writing it to root from a
    privileged port, reading and following a link, nothing of a lock.
    """
    fs, fake, callers = world
    top = fs.root_handle
    root = callers["root"]
    link, _ = fs.lookup(top, b"home", root)
    mailbox, _ = result(fs.lookup(top, b"ezk", root))
    lock, attr = result(fs.create(top, b"ezk.lock", root, True))
    for op, lock_status in ((fs.read, linkfs.ACCES), (fs.write, linkfs.ROFS)):
        assert status_of(lambda: op(top, root, True)) == linkfs.ISDIR
        assert status_of(lambda: op(link, root, True)) == linkfs.INVAL
        assert status_of(lambda: op(mailbox, root, True)) == linkfs.INVAL
        assert status_of(lambda: op(lock, root, True)) == lock_status
    assert fs.commit(lock, root, True) == attr
    assert status_of(lambda: fs.commit(top, root, True)) == linkfs.ISDIR
    for fh in (top, link, mailbox, lock):
        assert status_of(lambda: fs.setattr(fh, root, True)) == linkfs.ROFS
    assert fs.access(top, root, True, 0x3F) == (fs.root_attr, 0x1F)
    assert fs.access(top, root, False, 0x3F)[1] == 0x03
    assert fs.access(top, callers["finger"], True, 0x3F)[1] == 0x03
    assert fs.access(top, callers["ezk"], True, 0x01)[1] == 0x01
    assert fs.access(link, root, True, 0x3F)[1] == 0x21
    assert fs.access(lock, root, True, 0x3F)[1] == 0
    ezk_link, _ = fs.lookup(top, b"home", callers["ezk"])
    assert status_of(lambda: fs.access(ezk_link, root, True, 0x3F)) == linkfs.STALE
    assert status_of(lambda: fs.read(ezk_link, root, True)) == linkfs.STALE
