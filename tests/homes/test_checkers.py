"""
The home-check processes (L{hlfs.homes.checkers}): real processes
spawned by the real reactor, checking real homes; a frozen FUSE mount
(bindfs) for a home that hangs.  The hung-home behaviour the resolver
shows (deadlines, exhaustion, late results) is in test_probe_hung.py,
which runs each of its tests with these processes too.
"""

import errno
import os
import shutil
import signal
import sys
import time

import pytest
from twisted.internet import task

from hlfs.homes import checker
from hlfs.homes.checker import Progress
from hlfs.homes.checkers import CheckerProcess, CheckerProcesses
from hlfs.homes.pool import ProbePool
from hlfs.homes.probe import Credentials, HomeProbe
from tests.support.filesystems import frozen_mount
from tests.support.probes import LogCapture, wait_for

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="checks take other users' identities")
needs_bindfs = pytest.mark.skipif(shutil.which("bindfs") is None,
                                  reason="bindfs (Debian package bindfs) is missing")
pytestmark = pytest.mark.timeout(90)


class User:
    def __init__(self, name, uid):
        self.name, self.uid = name, uid


class Checks:
    """
    L{CheckerProcesses} on the running reactor, and the answers it gave.
    """

    def __init__(self, rt, size=2, argv=None):
        self.rt = rt
        self.probe = HomeProbe(credentials=Credentials(nss=False))
        self.processes = CheckerProcesses(size, rt.reactor, argv=argv)
        self.answers = {}
        rt.call(self.processes.start)

    def submit(self, key, user, spool):
        def answer(found):
            self.answers[key] = found

        job = self.probe.job(user, spool)
        self.rt.call(self.processes.submit, job, spool, answer)

    def answer(self, key, timeout=20):
        wait_for(lambda: key in self.answers, timeout=timeout)
        return self.answers[key]

    def pids(self):
        return self.rt.call(lambda: [c.transport.pid for c in self.processes._children])

    def on_job(self):
        """
        The pid of the process that is on a job.
        """
        def find():
            return [c.transport.pid for c in self.processes._children
                    if c.owed and c.progress.since()]
        wait_for(lambda: self.rt.call(find), timeout=10)
        [pid] = self.rt.call(find)
        return pid

    def stop(self):
        self.rt.call(self.processes.stop)


@pytest.fixture
def checks(rt):
    made = []

    def make(**kwargs):
        c = Checks(rt, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def hung_home(homes):
    """
    Return C{(src, mnt, uid)}: user C{hung}'s home is C{src/hung}, seen
    at C{mnt/hung} through the bindfs mount the test makes (and freezes).
    """
    src, mnt = os.path.join(homes.base, "src"), os.path.join(homes.base, "mnt")
    os.makedirs(os.path.join(src, "hung"))
    os.makedirs(mnt)
    return src, mnt, homes.add("hung", home=os.path.join(src, "hung"))


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:  # ENOENT, or ESRCH when it ends between open and read
        return True


def ids(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return tuple(int(v) for v in line.split()[1:])
    raise KeyError(key)


def test_frames_round_trip_in_pieces():
    jobs = [(1, 42001, b"alice", b"/home/alice", b".mailspool", b"/home/alice/.mailspool", 0,
             (42001, 100, (100, 27)))]
    data = checker.encode(jobs) + checker.encode([])
    for cut in range(len(data)):
        first, rest = checker.decode(data[:cut])
        later, rest = checker.decode(rest + data[cut:])
        assert [*first, *later] == [jobs, []]
        assert rest == b""


@pytest.mark.parametrize("data, why", [
    (b"\xff\xff\xff\xff", "a frame of 4294967295 bytes"),
    (b"\x00\x00\x00\x05\xe9\x05\x00\x00\x00", "a frame that is not a list"),
    (b"\x00\x00\x00\x01\x99", "not data"),
])
def test_bad_frames_are_refused(data, why):
    with pytest.raises(checker.FrameError, match=why):
        checker.decode(data)


@root_only
def test_checks_run_as_each_user_in_processes(rt, homes, checks):
    """
    Each check runs in a home-check process with the user's identity: the
    spool directory it makes belongs to the user.  A spool owned by
    someone else is refused (EPERM), and a home that is missing is
    reported as missing.
    """
    c = checks()
    uids = [homes.add(f"user{n}") for n in range(20)]
    for n, uid in enumerate(uids):
        c.submit(n, User(f"user{n}".encode(), uid), homes.spool(f"user{n}"))
    for n, uid in enumerate(uids):
        result, kept = c.answer(n)
        assert (result.ok, result.errno) == (True, 0), result
        assert os.stat(homes.spool(f"user{n}")).st_uid == uid
        assert kept == (uid, uid, ())  # the home's group, for the next check
        assert os.listdir(homes.spool(f"user{n}")) == []  # the test file went
    daemon = os.getpid()
    assert daemon not in c.pids()

    other = homes.add("other")
    os.mkdir(homes.spool("other"))
    os.chown(homes.spool("other"), uids[0], uids[0])
    c.submit("other", User(b"other", other), homes.spool("other"))
    result, _ = c.answer("other")
    assert (result.ok, result.errno) == (False, errno.EPERM)
    assert result.reason == f"owned by uid {uids[0]}, not {other}"

    missing = homes.add("missing", make=False)
    c.submit("missing", User(b"missing", missing), homes.spool("missing"))
    result, _ = c.answer("missing")
    assert (result.ok, result.errno) == (False, errno.ENOENT)
    assert result.path == homes.spool("missing")[: -len(b"/.mailspool")]


@root_only
@needs_bindfs
def test_a_hung_check_holds_one_process_and_only_its_own_identity(rt, homes, checks):
    """
    While a check hangs, the users behind it are checked by another
    process; the stuck process has the user's filesystem identity and
    nothing else; the daemon's threads all keep root's.
    """
    src, mnt, hung = hung_home(homes)
    os.makedirs(os.path.join(src, "hung", ".mailspool"))
    os.chown(os.path.join(src, "hung", ".mailspool"), hung, hung)
    ok = [homes.add(f"ok{n}") for n in range(5)]
    c = checks(size=3)
    # Its groups known, as after an earlier check: the process takes the
    # identity first, and hangs in the check itself (not in the stat of
    # the home, as root, that finds its group).
    user = User(b"hung", hung)
    c.probe.credentials.keep(user, os.fsencode(os.path.join(mnt, "hung")), (hung, hung, ()))
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        c.submit("hung", user, os.fsencode(os.path.join(mnt, "hung", ".mailspool")))
        for n, uid in enumerate(ok):
            c.submit(n, User(f"ok{n}".encode(), uid), homes.spool(f"ok{n}"))
        for n in range(len(ok)):
            assert c.answer(n, timeout=10)[0].ok
        assert "hung" not in c.answers
        stuck = c.on_job()
        assert ids(stuck, "Uid") == (0, 0, 0, hung)
        assert ids(stuck, "Gid")[3] == hung
        for tid in os.listdir("/proc/self/task"):
            assert ids(f"self/task/{tid}", "Uid") == (0, 0, 0, 0)
            assert ids(f"self/task/{tid}", "Gid") == (0, 0, 0, 0)
        mount.thaw()
        result, _ = c.answer("hung")
        assert result.ok


@root_only
@needs_bindfs
def test_a_process_that_ends_is_replaced_and_its_check_tried_once_more(rt, homes, checks):
    """
    A process killed in the middle of a check: the check goes to another
    process, once; killed again, the answer is EIO, with a log line each
    time, and no process is left behind.
    """
    src, mnt, hung = hung_home(homes)
    c = checks(size=2)
    with frozen_mount(src, mnt) as mount, LogCapture() as logs:
        mount.freeze()
        c.submit("hung", User(b"hung", hung), os.fsencode(os.path.join(mnt, "hung", ".mailspool")))
        first = c.on_job()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: gone(first))
        second = c.on_job()
        assert second != first
        os.kill(second, signal.SIGKILL)
        result, kept = c.answer("hung")
        assert (result.ok, result.errno, kept) == (False, errno.EIO, None)
        assert result.reason == "the home-check process ended twice"
        assert len(logs.matching("ended with 1 checks unanswered")) == 2
        mount.thaw()
    c.submit("again", User(b"hung", hung), os.fsencode(os.path.join(src, "hung", ".mailspool")))
    assert c.answer("again")[0].ok


@root_only
@needs_bindfs
def test_stop_ends_a_stuck_process(rt, homes, checks):
    src, mnt, hung = hung_home(homes)
    c = checks(size=2)
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        c.submit("hung", User(b"hung", hung), os.fsencode(os.path.join(mnt, "hung", ".mailspool")))
        stuck = c.on_job()
        pids = c.pids()
        c.stop()
        for pid in pids:
            wait_for(lambda: gone(pid), timeout=10)
        assert stuck in pids
        assert "hung" not in c.answers  # answers stop with the processes
        mount.thaw()


# A stand-in for a broken home-check process (no real one writes this):
# it says it is ready, then answers with bytes that are no frame.
GARBAGE = ("import os, sys\n"
           "sys.stdout.buffer.write(b'\\x00\\x00\\x00\\x05[\\x00\\x00\\x00\\x00'); sys.stdout.flush()\n"
           "os.read(0, 65536)\n"
           "sys.stdout.buffer.write(b'\\xff' * 16); sys.stdout.flush()\n"
           "os.read(0, 65536)\n")


def test_a_process_that_speaks_garbage_is_ended(rt, homes, checks, tmp_path):
    """
    Answers that are no frame end the process that sent them, with one
    log line; its check is tried once more, then answered EIO.
    """
    script = tmp_path / "garbage.py"
    script.write_text(GARBAGE)
    c = checks(size=2, argv=[sys.executable, str(script)])
    with LogCapture() as logs:
        c.submit("x", User(b"x", os.getuid()), os.fsencode(str(tmp_path / "x" / ".mailspool")))
        result, _ = c.answer("x")
    assert (result.ok, result.errno) == (False, errno.EIO)
    assert len(logs.matching("a frame of 4294967295 bytes; ending it")) == 2


# -- which process gets a job: the policy alone, on a test clock, with
# stand-ins for the processes (a fake transport records what each was
# sent; each one's progress is 8 bytes of plain memory).

class FakeTransport:
    def __init__(self):
        self.sent = b""

    def writeToChild(self, fd, data):
        self.sent += data


class Policy:
    def __init__(self, size=4, pace=0.00007, pace_cpu=0.00006):
        self.clock = task.Clock()
        self.processes = CheckerProcesses(size, self.clock)
        self.processes.pace, self.processes.pace_cpu = pace, pace_cpu

        def spawn():
            child = CheckerProcess(self.processes, len(self.processes._children))
            child.transport = FakeTransport()
            child.progress = Progress(memory=bytearray(8))
            child.ready = True
            self.processes._children.append(child)
            self.processes.started += 1
            return child

        self.processes._spawn = spawn
        self.processes.start()

    def submit(self, count):
        for n in range(count):
            self.processes.submit((n,), b"/home/u/.mailspool", lambda answer: None)
        self.clock.advance(0)  # the flush

    def owed(self):
        return [len(c.owed) for c in self.processes._children]


def test_quick_checks_stay_in_one_process():
    p = Policy()
    for _ in range(5):
        p.submit(32)
    assert p.owed() == [160, 0]  # and the spare stays idle


def test_checks_that_wait_spread_over_processes():
    p = Policy(pace=0.003, pace_cpu=0.00005)  # 3 ms a check, 50 us of it CPU
    for _ in range(6):
        p.submit(8)
    owed = p.owed()
    assert len(owed) == 4 and min(owed) > 0, owed  # all four, none idle
    assert sum(owed) == 48


def test_a_slow_process_gets_no_more_jobs_and_its_queue_moves():
    p = Policy()
    p.submit(10)
    first = p.processes._children[0]
    # It has been on its first job for 50 ms (past slow_after: 10 ms).
    first.progress.slot[0] = time.monotonic_ns() - 50_000_000
    p.submit(5)
    assert p.owed()[0] == 10 and sum(p.owed()[1:]) == 5
    p.processes._recheck()
    assert p.processes.moved == 9  # all but the one it is on
    assert sum(p.owed()[1:]) == 14


@root_only
def test_checks_run_in_threads_while_no_process_has_started(rt, homes, tmp_path):
    """
    A check asked for while no home-check process has started (at the
    daemon's start, or on a machine where a start takes seconds) runs at
    once in the pool's threads, as before there were processes: it does
    not wait for a process.
    """
    # A stand-in for a process that has not started yet (no real one is
    # that slow here): it never says it is ready, and ends with its input.
    script = tmp_path / "starting.py"
    script.write_text("import sys\nsys.stdin.buffer.read()\n")
    checkers = CheckerProcesses(2, rt.reactor, argv=[sys.executable, str(script)])
    pool = ProbePool(threads=2, reactor=rt.reactor, checkers=checkers)
    probe = HomeProbe(credentials=Credentials(nss=False))
    uid = homes.add("early")
    spool = homes.spool("early")
    rt.call(pool.start)
    try:
        def check():
            flight = pool.submit(uid, spool, probe, (User(b"early", uid), spool),
                                 lambda flight, result: result)
            return pool.wait(flight, 30, lambda flight: None)

        result = rt.result(rt.begin(check), timeout=10)
        assert (result.ok, result.errno) == (True, 0), result
        assert os.stat(spool).st_uid == uid  # made as the user, in a thread
        assert rt.call(checkers.processes) >= 1 and not rt.call(checkers.can_take)
    finally:
        rt.call(pool.stop)
