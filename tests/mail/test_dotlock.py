"""
Tests for L{hlfs.mail.dotlock}: the NFS-safe, owner-checked dotlock and the
fcntl mailbox lock, against a real file system and real processes.
"""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from twisted.internet.task import Clock

from hlfs.mail.dotlock import DotLock, LockError, LockTimeout, lock_fd


def fake_time():
    clock = Clock()
    clock.advance(1000)
    return clock


def test_acquire_and_release(tmp_path):
    """
    The lock file exists while held and is removed on release.  While
    held it keeps a second link, the unique file it was made from, so its
    inode cannot be reused; nothing outlives the release.
    """
    path = tmp_path / "alice.lock"
    lock = DotLock(path)
    lock.acquire()
    assert path.exists()
    assert lock.still_ours()
    assert os.stat(path).st_nlink == 2
    pid, host, twin = path.read_bytes().split()
    assert (pid, host) == (str(os.getpid()).encode(), socket.gethostname().encode())
    assert os.path.samefile(path, tmp_path / os.fsdecode(twin))
    assert lock.release() is True
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_context_manager(tmp_path):
    path = tmp_path / "alice.lock"
    with DotLock(path):
        assert path.exists()
    assert not path.exists()


def test_held_lock_times_out(tmp_path):
    """
    A lock held by a live holder makes a second taker wait the whole
    timeout, measured on the injected clock, and fail.
    """
    path = tmp_path / "alice.lock"
    holder = DotLock(path)
    holder.acquire()
    clock = fake_time()
    waiter = DotLock(path, timeout=30, clock=clock.seconds, sleep=clock.advance)
    with pytest.raises(LockTimeout):
        waiter.acquire()
    assert clock.seconds() >= 1030
    assert holder.still_ours()
    # Only the holder's lock and its twin: the waiter left nothing behind.
    assert len(os.listdir(tmp_path)) == 2
    holder.release()
    assert os.listdir(tmp_path) == []


def test_stale_by_age_is_broken_and_logged(tmp_path):
    """
    A lock older than C{stale_after} (by the file system's clock) is
    broken with a log line.
    """
    path = tmp_path / "alice.lock"
    path.write_bytes(b"12345 some-other-host\n")
    old = os.stat(path).st_mtime - 3600
    os.utime(path, (old, old))
    lines = []
    lock = DotLock(path, stale_after=300, timeout=5, log=lines.append)
    lock.acquire()
    assert lock.still_ours()
    assert len(lines) == 1 and "broke stale lock" in lines[0] and "older than 300s" in lines[0]
    lock.release()


def test_young_lock_of_other_host_is_not_broken(tmp_path):
    path = tmp_path / "alice.lock"
    path.write_bytes(b"12345 some-other-host\n")
    clock = fake_time()
    lock = DotLock(path, stale_after=300, timeout=5, clock=clock.seconds, sleep=clock.advance)
    with pytest.raises(LockTimeout):
        lock.acquire()
    assert path.read_bytes() == b"12345 some-other-host\n"


def test_lock_of_dead_local_process_is_broken(tmp_path):
    """
    A fresh lock whose holder was a process of this host that was killed
    is broken at once, without waiting for it to age, and the dead
    holder's twin file goes with it.
    """
    path = tmp_path / "alice.lock"
    proc = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "from hlfs.mail.dotlock import DotLock\n"
         "DotLock(sys.argv[1]).acquire()\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n",
         str(path)],
    )
    assert proc.returncode == -9
    assert len(os.listdir(tmp_path)) == 2
    dead = int(path.read_bytes().split()[0])
    lines = []
    lock = DotLock(path, timeout=5, log=lines.append)
    lock.acquire()
    assert any(f"process {dead} on this host, is gone" in line for line in lines)
    lock.release()
    assert os.listdir(tmp_path) == []


def test_lock_of_live_local_process_is_kept(tmp_path):
    path = tmp_path / "alice.lock"
    path.write_bytes(b"%d %s\n" % (os.getpid(), socket.gethostname().encode()))
    clock = fake_time()
    lock = DotLock(path, timeout=5, clock=clock.seconds, sleep=clock.advance)
    with pytest.raises(LockTimeout):
        lock.acquire()
    assert path.exists()


def test_taken_over_lock_is_not_removed(tmp_path):
    """
    When another process replaced our lock (broke it and made its own),
    releasing leaves the new lock in place and says so.
    """
    path = tmp_path / "alice.lock"
    lines = []
    lock = DotLock(path, log=lines.append)
    lock.acquire()
    os.unlink(path)
    path.write_bytes(b"999 other\n")
    assert lock.release() is False
    assert path.read_bytes() == b"999 other\n"
    assert any("taken over by another process" in line for line in lines)


def test_vanished_lock_is_reported(tmp_path):
    path = tmp_path / "alice.lock"
    lines = []
    lock = DotLock(path, log=lines.append)
    lock.acquire()
    os.unlink(path)
    assert lock.release() is False
    assert any("vanished" in line for line in lines)


def test_unwritable_directory_is_an_error_not_a_wait(tmp_path):
    """
    A directory that refuses new files fails at once: waiting cannot help.
    """
    with pytest.raises(LockError) as raised:
        DotLock(tmp_path / "missing" / "alice.lock").acquire()
    assert not isinstance(raised.value, LockTimeout)
    assert "cannot create a lock file" in str(raised.value)


def test_lock_name_taken_by_a_directory(tmp_path):
    """
    Something that is not a lock file sitting on the lock name is never
    treated as ours (link() fails, the link count stays 1).
    """
    (tmp_path / "alice.lock").mkdir()
    clock = fake_time()
    lock = DotLock(tmp_path / "alice.lock", timeout=3, clock=clock.seconds, sleep=clock.advance)
    with pytest.raises(LockTimeout):
        lock.acquire()
    assert (tmp_path / "alice.lock").is_dir()


def test_owner_gets_the_lock_file(tmp_path):
    """
    A lock taken by root on a user's behalf belongs to that user, so the
    user's own agent may break it in a sticky spool.
    """
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    path = tmp_path / "alice.lock"
    lock = DotLock(path, owner=60001)
    lock.acquire()
    assert os.stat(path).st_uid == 60001
    lock.release()


COUNTER = textwrap.dedent(
    """
    import sys
    from hlfs.mail.dotlock import DotLock
    lock_path, counter, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for _ in range(rounds):
        with DotLock(lock_path, timeout=60):
            with open(counter) as f:
                n = int(f.read())
            with open(counter, "w") as f:
                f.write(str(n + 1))
    """
)


def test_mutual_exclusion_between_processes(tmp_path):
    """
    Processes doing read-increment-write under the lock lose no update.
    """
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTER, str(tmp_path / "c.lock"), str(counter), "15"])
        for _ in range(6)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert counter.read_text() == "90"
    assert sorted(os.listdir(tmp_path)) == ["counter"]


def test_fcntl_lock_held_by_other_process_times_out(tmp_path):
    mailbox = tmp_path / "alice"
    mailbox.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); sys.stdin.read()",
         str(mailbox)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        fd = os.open(mailbox, os.O_RDWR)
        clock = fake_time()
        with pytest.raises(LockTimeout):
            lock_fd(fd, timeout=10, clock=clock.seconds, sleep=clock.advance)
        assert clock.seconds() >= 1010
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    lock_fd(fd, timeout=0)
    os.close(fd)


def test_a_lock_retaken_while_judged_stale_is_left_alone(tmp_path):
    """
    Between judging a lock stale and breaking it, another taker broke it
    first and took the lock: its fresh lock (another inode) is not broken.
    The other taker is a real L{DotLock}; it runs at the one point of the
    window where the code reads the lock's content, the only place a test
    can step in without a second process racing at random.
    """
    path = tmp_path / "alice.lock"
    path.write_bytes(b"12345 some-other-host\n")
    old = os.stat(path).st_mtime - 3600
    os.utime(path, (old, old))
    theirs = []
    other = DotLock(path, stale_after=300, timeout=5, log=theirs.append)

    class RacedLock(DotLock):
        def _holder(self, st):
            holder = DotLock._holder(self, st)
            if not other.held:
                other.acquire()
            return holder

    ours = []
    clock = fake_time()
    lock = RacedLock(path, stale_after=300, timeout=5, log=ours.append,
                     clock=clock.seconds, sleep=clock.advance)
    with pytest.raises(LockTimeout):
        lock.acquire()
    assert other.still_ours()
    assert len(theirs) == 1 and "broke stale lock" in theirs[0]
    assert ours == []
    other.release()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("named", ["mbox", ".alice.lock.x/../../mbox", ".other.lock.host.1.ab"])
def test_breaking_a_lock_removes_only_its_own_twin(tmp_path, named):
    """
    A stale lock names its holder's unique file, which goes with it; a
    name that is not a unique file of this lock, or that leads out of the
    directory, is left alone.
    """
    spool = tmp_path / "spool"
    (spool / ".alice.lock.x").mkdir(parents=True)
    (tmp_path / "mbox").write_bytes(b"outside\n")
    (spool / "mbox").write_bytes(b"mailbox\n")
    (spool / ".other.lock.host.1.ab").write_bytes(b"")
    twin = spool / ".alice.lock.host.1.ab"
    twin.write_bytes(b"")
    path = spool / "alice.lock"
    for content in (f"12345 some-other-host {named}\n", "12345 some-other-host .alice.lock.host.1.ab\n"):
        path.write_bytes(content.encode())
        old = os.stat(path).st_mtime - 3600
        os.utime(path, (old, old))
        with DotLock(path, stale_after=300, timeout=5):
            pass
        assert (tmp_path / "mbox").read_bytes() == b"outside\n"
        assert (spool / "mbox").read_bytes() == b"mailbox\n"
        assert (spool / ".other.lock.host.1.ab").exists()
    assert not twin.exists()
