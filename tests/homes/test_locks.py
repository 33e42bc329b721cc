"""
L{hlfs.homes.locks.SpoolLocks}: lock files made, looked at and removed
as their users, as jobs of the home-check processes, with the deadline.
"""

import errno
import os
import shutil

import pytest
from twisted.internet import task

from hlfs.core.locks import TRYLATER, LockFailed
from hlfs.core.resolver import SpoolRules
from hlfs.homes.locks import SpoolLocks
from hlfs.homes.resolver import HomeResolver
from tests.support.checks import started_engine, stop_engine
from tests.support.filesystems import frozen_mount
from tests.support.probes import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="locks are made with other users' identities"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def made(rt, homes):
    engines = []

    def make(deadline=5.0):
        clock = task.Clock()
        engine = started_engine(rt, 2, clock=clock, stuck_after=deadline)
        engines.append(engine)
        resolver = HomeResolver(
            homes.table(), SpoolRules(b".mailspool", os.fsencode(homes.alt)), clock, engine,
            deadline=deadline, reactor=rt.reactor,
        )
        return SpoolLocks(resolver), clock

    yield make
    for engine in engines:
        stop_engine(rt, engine)


def test_made_and_removed_as_the_user(rt, homes, made):
    """
    If root's lock for a user is made, then it is that user's file in the
    user's spool, with the mode asked whatever the umask; making it again
    is EEXIST; it is removed, and then there is none.
    """
    uid = homes.add("alice")
    spool = homes.spool("alice")
    os.mkdir(spool, 0o700)
    os.chown(spool, uid, uid)
    locks, _ = made()
    path = spool + b"/alice.lock"
    st = rt.call(locks.create, b"alice", path, 0o640)
    real = os.lstat(path)
    assert (st.uid, st.mode, real.st_uid, real.st_mode & 0o7777) == (uid, 0o640, uid, 0o640)
    assert st.ctime == real.st_ctime_ns
    with pytest.raises(LockFailed) as e:
        rt.call(locks.create, b"alice", path, 0)
    assert e.value.errno == errno.EEXIST
    assert rt.call(locks.stat, b"alice", path) == st
    assert rt.call(locks.remove, b"alice", path) is None
    assert not os.path.exists(path)
    assert rt.call(locks.stat, b"alice", path) is None
    with pytest.raises(LockFailed) as e:
        rt.call(locks.remove, b"alice", path)
    assert e.value.errno == errno.ENOENT


def test_nothing_the_user_could_not_do(rt, homes, made):
    """
    If the spool is not the user's to write (or is a symbolic link the user
    planted), then root's lock fails as the user's own would, and nothing
    is made; an unknown user gets ENOENT.
    """
    homes.add("bob")
    home = homes.spool("bob")[: -len(b"/.mailspool")]
    os.symlink(b"/etc", home + b"/.mailspool")
    locks, _ = made()
    with pytest.raises(LockFailed) as e:
        rt.call(locks.create, b"bob", home + b"/.mailspool/bob.lock", 0)
    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert not os.path.exists(b"/etc/bob.lock")
    os.unlink(home + b"/.mailspool")
    os.mkdir(home + b"/.mailspool", 0o755)  # root's, not bob's
    with pytest.raises(LockFailed) as e:
        rt.call(locks.create, b"bob", home + b"/.mailspool/bob.lock", 0)
    assert e.value.errno == errno.EACCES
    with pytest.raises(LockFailed) as e:
        rt.call(locks.create, b"nobody", home + b"/.mailspool/nobody.lock", 0)
    assert e.value.errno == errno.ENOENT


@pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing")
def test_late_lock_is_removed(rt, homes, made):
    """
    If making a lock outlasts the deadline (its spool on a frozen FUSE
    mount), then its caller is told to come back (TRYLATER) and the lock,
    made after all, is removed at once: nobody holds it.
    """
    uid = homes.add("carol")
    spool = homes.spool("carol")
    src = os.path.join(homes.base, "spool-src")
    os.mkdir(spool, 0o700)
    os.mkdir(src, 0o700)
    for path in (spool, src):
        os.chown(path, uid, uid)
    path = spool + b"/carol.lock"
    locks, clock = made(deadline=1.0)
    with frozen_mount(src, os.fsdecode(spool)) as mount:
        mount.freeze()
        answers = []
        rt.call(lambda: locks.create(b"carol", path, 0).addBoth(answers.append) and None)
        rt.call(clock.advance, 1.5)
        wait_for(lambda: answers)
        assert isinstance(answers[0].value, LockFailed) and answers[0].value.status == TRYLATER
        assert locks.late == 1 and locks.made == 0
        mount.thaw()
        wait_for(lambda: locks.made == 1 and locks.removed == 1)
        assert not os.path.exists(os.path.join(src, "carol.lock"))
