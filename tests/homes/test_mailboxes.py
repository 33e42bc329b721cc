"""
L{hlfs.homes.mailboxes.MailboxFiles}: root's view of real mailboxes as
jobs of the home-check processes, run as the mailbox's user: one stream
of jobs per mailbox, the write data held for them bounded, a hung home
holding its own user's jobs only.
"""

import errno
import os

import pytest
from twisted.internet import task

from hlfs.core.locks import TRYLATER, LockFailed
from hlfs.core.resolver import SpoolRules
from hlfs.homes.mailboxes import MailboxFiles
from hlfs.homes.resolver import HomeResolver
from tests.support.checks import started_engine, stop_engine
from tests.support.filesystems import frozen_mount
from tests.support.probes import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mailboxes are written with other users' identities"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def made(rt, homes):
    engines = []

    def make(deadline=5.0, processes=2, **bounds):
        clock = task.Clock()
        engine = started_engine(rt, processes, clock=clock, stuck_after=deadline)
        engines.append(engine)
        resolver = HomeResolver(
            homes.table(), SpoolRules(b".mailspool", os.fsencode(homes.alt)), clock, engine,
            deadline=deadline, reactor=rt.reactor,
        )
        return MailboxFiles(resolver, **bounds), clock, engine

    yield make
    for engine in engines:
        stop_engine(rt, engine)


def user_with_spool(homes, name, source=None):
    uid = homes.add(name)
    spool = homes.spool(name)
    os.mkdir(spool, 0o700)
    os.chown(spool, uid, uid)
    if source is not None:
        os.mkdir(source, 0o700)
        os.chown(source, uid, uid)
    return uid, spool + b"/" + name.encode()


def test_written_as_the_user(rt, homes, made):
    """
    If root makes, writes, reads and truncates a user's mailbox, then
    each is done on the real file as the user: the file is the user's,
    with the mode asked; a mailbox that is a link or a FIFO is refused
    (EACCES), never followed nor opened for long.
    """
    uid, path = user_with_spool(homes, "alice")
    files, _, _ = made()
    st = rt.call(files.create, b"alice", path, 0o600)
    assert (st.uid, st.mode, os.lstat(path).st_uid) == (uid, 0o600, uid)
    assert rt.call(files.write, b"alice", path, 0, b"hello\n").size == 6
    assert rt.call(files.read, b"alice", path, 1, 100)[1] == b"ello\n"
    assert rt.call(files.truncate, b"alice", path, 2).size == 2
    assert rt.call(files.sync, b"alice", path).size == 2
    with pytest.raises(LockFailed) as e:
        rt.call(files.create, b"alice", path, 0o600)
    assert e.value.errno == errno.EEXIST
    os.unlink(path)
    for plant in (lambda: os.symlink("/etc/shadow", path), lambda: os.mkfifo(path)):
        plant()
        for call in (lambda: files.stat(b"alice", path), lambda: files.write(b"alice", path, 0, b"x")):
            with pytest.raises(LockFailed) as e:
                rt.call(call)
            assert e.value.errno in (errno.EACCES, errno.ELOOP), e.value.errno
        os.unlink(path)
    assert files.counts["write"] == 1 and files.written == 6


def test_one_stream_per_mailbox_and_bounded_data(rt, homes, made):
    """
    While a user's home hangs (a frozen FUSE mount), root's writes to that
    user's mailbox wait one behind the other: one process is stuck, the
    other writes another user's mailbox; the write data held for them is
    bounded for each mailbox (past it a write is told to try again at
    once, and another user's writes are not held up); at the
    deadline every caller is told to try again, and nothing is lost: once
    the home thaws, the write that was running is done, once.
    """
    uid, path = user_with_spool(homes, "bob", source=os.path.join(homes.base, "bob-src"))
    _, alice_path = user_with_spool(homes, "alice")
    files, clock, engine = made(deadline=1.0, max_pending_per_user=3 * 4096)
    src = os.path.join(homes.base, "bob-src")
    with frozen_mount(src, os.fsdecode(homes.spool("bob"))) as mount:
        rt.call(files.create, b"bob", path, 0o600)
        mount.freeze()
        answers = []
        for i in range(3):
            rt.call(lambda i=i: files.write(b"bob", path, i * 4096, bytes([65 + i]) * 4096)
                    .addBoth(answers.append) and None)
        with pytest.raises(LockFailed) as e:
            rt.call(files.write, b"bob", path, 3 * 4096, b"x")
        assert e.value.status == TRYLATER and files.counts["busy"] == 1
        wait_for(lambda: rt.call(engine.busy) == 1)
        assert rt.call(engine.queued) == 2  # behind the first: one stream
        rt.call(files.create, b"alice", alice_path, 0o600)
        assert rt.call(files.write, b"alice", alice_path, 0, b"alice\n").size == 6
        rt.call(clock.advance, 1.5)
        wait_for(lambda: len(answers) == 3)
        assert all(isinstance(a.value, LockFailed) and a.value.status == TRYLATER for a in answers)
        assert files.pending == 0
        mount.thaw()
        wait_for(lambda: rt.call(engine.count) == 0)
    data = open(os.path.join(src, "bob"), "rb").read()
    # The first write was running; those queued behind it were dropped at
    # their deadline, for the client to send again.
    assert data == b"A" * 4096 and files.counts["write"] == 2
