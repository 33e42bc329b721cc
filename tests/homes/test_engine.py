"""
The home-check engine (L{hlfs.homes.engine}, L{hlfs.homes.processes},
L{hlfs.homes.checker}): real check processes forked under the session's
reactor, checking real homes; a frozen FUSE mount (bindfs) for a home
that hangs.  Deadlines run on a L{task.Clock} the test advances; answers
come through the real reactor.  How the resolver uses the engine is in
test_probe_hung.py and test_probe_resolver.py; the engine through the
whole daemon is in test_checks_daemon.py.
"""

import errno
import os
import select
import shutil
import signal

import pytest
from twisted.internet import task

from hlfs.homes import records
from hlfs.homes.checkprocess import ANSWER_BYTES_PER_TURN
from hlfs.homes.credentials import Credentials
from hlfs.homes.engine import CheckEngine
from hlfs.homes.records import CheckHome, FrameError, LockFile
from tests.support.checks import STANDIN, gone, ids, started_engine, stop_engine
from tests.support.filesystems import frozen_mount
from tests.support.probes import LogCapture, wait_for

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="checks take other users' identities")
needs_bindfs = pytest.mark.skipif(shutil.which("bindfs") is None,
                                  reason="bindfs (Debian package bindfs) is missing")
pytestmark = pytest.mark.timeout(90)

DEADLINE = 0.5


class User:
    def __init__(self, name, uid, home=b""):
        self.name, self.uid, self.home = name, uid, home


def check_job(user, spool, credentials=None):
    """
    The L{CheckHome} job of C{spool} for C{user}, as the daemon plans it.
    """
    credentials = credentials or Credentials(nss=False)
    identity = credentials.plan(user, spool.rpartition(b"/")[0])
    return CheckHome(**identity._asdict(), spool=spool, fsync=False)


class Jobs:
    """
    An engine on the running reactor, deadlines on a test clock, and the
    answers its jobs gave.
    """

    def __init__(self, rt, size=2, argv=None, **kwargs):
        self.rt = rt
        self.clock = task.Clock()
        self.engine = started_engine(rt, size, clock=self.clock, stuck_after=DEADLINE,
                                     argv=argv, **kwargs)
        self.answers = {}

    def submit(self, key, job, home=None):
        """
        Submit C{job} for C{key}; return its flight, or None if refused.
        """
        return self.rt.call(self.submit_here, key, job, home)

    def submit_here(self, key, job, home=None):
        """
        L{submit}, called in the reactor thread.
        """
        def finish(flight, answer):
            self.answers[key] = answer
            return answer

        return self.engine.submit(key, getattr(job, "spool", b"/"), job, finish, home)

    def answer(self, key, timeout=20):
        wait_for(lambda: key in self.answers, timeout=timeout)
        return self.answers[key]

    def pids(self):
        return self.rt.call(self.engine.processes.pids)

    def on_job(self, count=1):
        """
        The pids of the processes that are on a job, once there are
        C{count}.
        """
        def find():
            return [p.pid for p in self.engine.processes.alive if p.flight is not None]

        wait_for(lambda: len(self.rt.call(find)) == count, timeout=10)
        return self.rt.call(find)

    def stop(self):
        stop_engine(self.rt, self.engine)


@pytest.fixture
def jobs(rt):
    made = []

    def make(**kwargs):
        j = Jobs(rt, **kwargs)
        made.append(j)
        return j

    yield make
    for j in made:
        j.stop()


def hung_home(homes, name="hung"):
    """
    Return C{(src, mnt, uid)}: user C{name}'s home is C{mnt/name}, a
    bindfs mirror of C{src/name} that the test freezes.
    """
    src, mnt = os.path.join(homes.base, "src"), os.path.join(homes.base, "mnt")
    os.makedirs(os.path.join(src, name, ".mailspool"))
    os.makedirs(mnt, exist_ok=True)
    uid = homes.add(name, home=os.path.join(src, name))
    for path in (os.path.join(src, name), os.path.join(src, name, ".mailspool")):
        os.chown(path, uid, uid)
    return src, mnt, uid


def known(user, home):
    """
    Credentials that know C{user}'s groups, as after an earlier check:
    the process takes the user's identity first, and hangs in the check
    itself, not in the stat of the home (as root) that finds its group.
    """
    credentials = Credentials(nss=False)
    credentials.keep(user, home, (user.uid, user.uid, ()))
    return credentials


# -- records: the typed, versioned messages on the pipes


def test_records_round_trip_in_pieces():
    jobs = [check_job(User(b"alice", 42001), b"/home/alice/.mailspool"),
            records.Hello(records.VERSION, 7, "check")]
    data = b"".join(map(records.encode, jobs))
    for cut in range(len(data)):
        first, rest = records.decode(data[:cut])
        later, rest = records.decode(rest + data[cut:])
        assert [*first, *later] == jobs
        assert rest == b""


def test_chunks_of_several_writers_come_apart_in_order():
    """
    Frames of several writers, each cut in chunks a pipe keeps whole and
    interleaved as they may be, come apart by writer, in order, whatever
    the reads.
    """
    big = records.encode(records.Refused("x" * 10_000))
    small = records.encode(records.Hello(records.VERSION, 1, "check"))
    a, b = records.chunks(1, big), records.chunks(2, small)
    assert len(a) == 3 and all(len(piece) <= records.PIPE_BUF for piece in a)
    stream = a[0] + b[0] + a[1] + a[2]
    for cut in range(0, len(stream), 97):
        reader = records.Unchunker()
        got = {}
        for number, piece in reader.feed(stream[:cut]) + reader.feed(stream[cut:]):
            got[number] = got.get(number, b"") + piece
        assert got == {1: big, 2: small}


@pytest.mark.parametrize("data, why", [
    (b"\xff\xff\xff\xff", "a frame of 4294967295 bytes"),
    (b"\x00\x00\x00\x05\xe9\x05\x00\x00\x00", "a frame that is not a record"),
    (b"\x00\x00\x00\x01\x99", "not data"),
])
def test_bad_frames_are_refused(data, why):
    with pytest.raises(FrameError, match=why):
        records.decode(data)


@pytest.mark.parametrize("fields, why", [
    ({"kind": "nonesuch"}, "unknown kind 'nonesuch'"),
    ({"kind": "hello", "version": 1, "pid": 2}, "hello record with fields"),
    ({"kind": "hello", "version": 1, "pid": 2, "role": "check", "extra": 0},
     "hello record with fields"),
    ({"kind": "hello", "version": "1", "pid": 2, "role": "check"}, "whose version is str"),
    ({"kind": "check-done", "ok": 1, "errno": 0, "path": b"/", "reason": "", "kept": None},
     "whose ok is int"),
])
def test_records_other_than_declared_are_refused(fields, why):
    import marshal

    body = marshal.dumps(fields)
    with pytest.raises(FrameError, match=why):
        records.decode(len(body).to_bytes(4, "big") + body)


# -- jobs in real processes


@root_only
def test_checks_run_as_each_user_in_processes(rt, homes, jobs):
    """
    Each check runs in a check process with the user's identity: the spool
    directory it makes belongs to the user.  A spool owned by someone
    else is refused (EPERM), and a home that is missing is reported as
    missing.  No check process is the daemon.
    """
    j = jobs()
    uids = [homes.add(f"user{n}") for n in range(20)]
    for n, uid in enumerate(uids):
        j.submit(n, check_job(User(f"user{n}".encode(), uid), homes.spool(f"user{n}")))
    for n, uid in enumerate(uids):
        done = j.answer(n)
        assert (done.ok, done.errno) == (True, 0), done
        assert os.stat(homes.spool(f"user{n}")).st_uid == uid
        assert done.kept == (uid, uid, ())  # the home's group, for the next check
        assert os.listdir(homes.spool(f"user{n}")) == []  # the test file went
    assert os.getpid() not in j.pids() and len(j.pids()) == 2

    other = homes.add("other")
    os.mkdir(homes.spool("other"))
    os.chown(homes.spool("other"), uids[0], uids[0])
    j.submit("other", check_job(User(b"other", other), homes.spool("other")))
    done = j.answer("other")
    assert (done.ok, done.errno) == (False, errno.EPERM)
    assert done.reason == f"owned by uid {uids[0]}, not {other}"

    missing = homes.add("missing", make=False)
    j.submit("missing", check_job(User(b"missing", missing), homes.spool("missing")))
    done = j.answer("missing")
    assert (done.ok, done.errno) == (False, errno.ENOENT)
    assert done.path == homes.spool("missing")[: -len(b"/.mailspool")]


def answers_written(pipe, count, timeout=10):
    """
    Wait, blocking the reactor thread, until C{count} whole answers are
    in the answer pipe; read them out of it and return their bytes.
    """
    unchunker, frames, got, data = records.Unchunker(), {}, 0, b""
    while got < count:
        if not select.select([pipe.read], [], [], timeout)[0]:
            raise TimeoutError(f"{got} of {count} answers written")
        more = os.read(pipe.read, 1 << 16)
        data += more
        for number, piece in unchunker.feed(more):
            done, frames[number] = records.decode(frames.get(number, b"") + piece)
            got += len(done)
    assert unchunker.buffer == b"" and not any(frames.values())
    return data


def test_a_job_submitted_takes_no_answer_waiting(rt, homes, jobs):
    """
    Submitting a job takes none of the answers waiting in the pipe: they
    are taken when the reactor turns to the pipe.  A call that submits a
    job does not answer other callers, nor write their next jobs, in its
    own turn, while the calls behind it wait.
    """
    j = jobs(size=1)
    first, second = homes.add("first"), homes.add("second")
    pipe = j.engine.processes._answers

    def submit_with_an_answer_waiting():
        j.submit_here("first", check_job(User(b"first", first), homes.spool("first")))
        if not select.select([pipe.read], [], [], 10)[0]:
            raise TimeoutError("no answer written")
        flight = j.submit_here("second", check_job(User(b"second", second),
                                                   homes.spool("second")))
        return flight.state, sorted(j.answers)

    assert rt.call(submit_with_an_answer_waiting) == ("queued", [])
    assert j.answer("first").ok and j.answer("second").ok


def test_a_turn_takes_a_few_answers_and_leaves_the_rest(rt, homes, jobs):
    """
    One turn of the reactor on the answer pipe takes a few answers
    (L{ANSWER_BYTES_PER_TURN} bytes), not every one waiting: the calls
    that came meanwhile are answered before the rest, which the next turns
    take.
    """
    j = jobs(size=4)
    names = [f"user{n}" for n in range(4)]
    uids = [homes.add(name) for name in names]
    pipe = j.engine.processes._answers

    def one_turn_with_four_answers_waiting():
        for name, uid in zip(names, uids):
            j.submit_here(name, check_job(User(name.encode(), uid), homes.spool(name)))
        waiting = answers_written(pipe, len(names))
        assert len(waiting) > ANSWER_BYTES_PER_TURN
        os.write(pipe.write, waiting)  # back in the pipe, for the reactor
        pipe.doRead()
        return len(j.answers)

    assert 1 <= rt.call(one_turn_with_four_answers_waiting) < len(names)
    for name in names:
        assert j.answer(name).ok


@root_only
def test_lock_files_are_jobs_of_the_same_processes(rt, homes, jobs):
    """
    A lock-file operation runs in a check process as its user: the lock
    is the user's, made exclusively, and removed.
    """
    j = jobs(size=1)
    uid = homes.add("alice")
    spool = homes.spool("alice")
    os.mkdir(spool, 0o700)
    os.chown(spool, uid, uid)
    user = User(b"alice", uid)
    identity = Credentials(nss=False).plan(user, spool.rpartition(b"/")[0])

    def lock(op, key):
        j.submit(key, LockFile(**identity._asdict(), op=op, path=spool + b"/alice.lock",
                               mode=0o600, alt_dir=os.fsencode(homes.alt)))
        return j.answer(key)

    made = lock("create", 1)
    assert made.ok and made.stat[:2] == (0o600, uid)
    assert lock("create", 2).errno == errno.EEXIST
    assert [p.pid for p in j.engine.processes.alive] == j.pids()
    assert lock("remove", 3).ok and not os.path.exists(spool + b"/alice.lock")


@root_only
@needs_bindfs
def test_a_hung_check_holds_one_process_and_only_its_own_identity(rt, homes, jobs):
    """
    While a check hangs, the users after it are checked by the other
    process; the stuck process has the user's filesystem uid and gid,
    and real, effective and saved uid 0; the daemon's threads all keep
    root's ids.
    """
    src, mnt, hung = hung_home(homes)
    user = User(b"hung", hung)
    home = os.fsencode(os.path.join(mnt, "hung"))
    ok = [homes.add(f"ok{n}") for n in range(5)]
    j = jobs(size=2)
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        j.submit("hung", check_job(user, home + b"/.mailspool", known(user, home)), home=hung)
        [stuck] = j.on_job()
        for n, uid in enumerate(ok):
            j.submit(n, check_job(User(f"ok{n}".encode(), uid), homes.spool(f"ok{n}")))
        for n in range(len(ok)):
            assert j.answer(n, timeout=10).ok
        assert "hung" not in j.answers
        wait_for(lambda: ids(stuck, "Uid")[3] == hung)
        assert ids(stuck, "Uid") == (0, 0, 0, hung)
        assert ids(stuck, "Gid")[3] == hung
        for tid in os.listdir("/proc/self/task"):
            assert ids(f"self/task/{tid}", "Uid") == (0, 0, 0, 0)
            assert ids(f"self/task/{tid}", "Gid") == (0, 0, 0, 0)
        mount.thaw()
        assert j.answer("hung").ok


@root_only
@needs_bindfs
def test_one_job_per_home_at_a_time(rt, homes, jobs):
    """
    A job for a home whose job hangs waits for it, and is dropped at its
    deadline without running (its waiters get their fallback, the job no
    answer): a hung home holds one process, whatever is asked of it.
    """
    src, mnt, hung = hung_home(homes)
    user = User(b"hung", hung)
    home = os.fsencode(os.path.join(mnt, "hung"))
    j = jobs(size=2)
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        j.submit("check", check_job(user, home + b"/.mailspool", known(user, home)), home=hung)
        j.on_job()
        identity = known(user, home).plan(user, home)
        lock = j.submit("lock", LockFile(**identity._asdict(), op="stat",
                                         path=home + b"/.mailspool/hung.lock", mode=0,
                                         alt_dir=b"/nonexistent"), home=hung)
        waited = []
        rt.call(lambda: j.engine.wait(lock, DEADLINE, lambda f: "fallback").addCallback(
            waited.append) and None)
        assert lock.state == "blocked" and rt.call(j.engine.busy) == 1
        rt.call(j.clock.advance, DEADLINE)
        assert waited == ["fallback"] and lock.state == "dropped"
        assert j.engine.expired_count == 1
        assert rt.call(j.engine.busy) == 1  # the other process never took it
        mount.thaw()
        assert j.answer("check").ok
    assert "lock" not in j.answers


@root_only
@needs_bindfs
def test_all_processes_stuck_refuses_at_once_and_queues_expire(rt, homes, jobs):
    """
    With its only process on a job past the deadline, the engine is
    exhausted: a new job is refused at once, with one log line however
    many are refused.  A job queued before that (the process busy, not yet
    stuck) is dropped at its deadline, never run.
    """
    src, mnt, hung = hung_home(homes)
    user = User(b"hung", hung)
    home = os.fsencode(os.path.join(mnt, "hung"))
    other = homes.add("other")
    j = jobs(size=1)
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        j.submit("hung", check_job(user, home + b"/.mailspool", known(user, home)), home=hung)
        j.on_job()
        queued = j.submit("queued", check_job(User(b"other", other), homes.spool("other")))
        assert queued.state == "queued" and rt.call(j.engine.queued) == 1
        assert not rt.call(j.engine.exhausted)
        rt.call(j.clock.advance, DEADLINE)
        assert queued.state == "dropped" and rt.call(j.engine.queued) == 0
        assert rt.call(j.engine.exhausted) and rt.call(j.engine.stuck) == 1
        with LogCapture() as logs:
            refused = [j.submit(n, check_job(User(b"other", other), homes.spool("other")))
                       for n in range(3)]
        assert refused == [None, None, None] and j.engine.exhausted_count == 3
        [line] = logs.matching("home checks exhausted")
        assert "all 1 home-check processes are stuck" in line
        mount.thaw()
        assert j.answer("hung").ok
        assert not rt.call(j.engine.exhausted)
        j.submit("after", check_job(User(b"other", other), homes.spool("other")))
        assert j.answer("after").ok
    assert "queued" not in j.answers


@root_only
@needs_bindfs
def test_a_process_that_ends_is_replaced_and_its_job_fails(rt, homes, jobs):
    """
    A process killed in the middle of a job: the job is answered
    L{None} (it is not run again), one log line says so, and a new process
    takes the next jobs.
    """
    src, mnt, hung = hung_home(homes)
    user = User(b"hung", hung)
    home = os.fsencode(os.path.join(mnt, "hung"))
    j = jobs(size=1)
    with frozen_mount(src, mnt) as mount, LogCapture() as logs:
        mount.freeze()
        j.submit("hung", check_job(user, home + b"/.mailspool", known(user, home)), home=hung)
        [first] = j.on_job()
        os.kill(first, signal.SIGKILL)
        assert j.answer("hung") is None
        wait_for(lambda: gone(first))
        [line] = logs.matching("ended in the middle of a job")
        assert f"home-check process {first} " in line
        wait_for(lambda: len(j.pids()) == 1 and j.pids() != [first], timeout=10)
        assert j.engine.lost_count == 1 and j.engine.processes.started == 2
        mount.thaw()
    j.submit("again", check_job(user, os.fsencode(os.path.join(src, "hung", ".mailspool"))))
    assert j.answer("again").ok


@root_only
@needs_bindfs
def test_stop_ends_a_stuck_process_and_the_forker(rt, homes, jobs):
    src, mnt, hung = hung_home(homes)
    user = User(b"hung", hung)
    home = os.fsencode(os.path.join(mnt, "hung"))
    j = jobs(size=2)
    with frozen_mount(src, mnt) as mount:
        mount.freeze()
        j.submit("hung", check_job(user, home + b"/.mailspool", known(user, home)), home=hung)
        [stuck] = j.on_job()
        pids = j.pids()
        forker = _parent(stuck)
        rt.call(j.engine.stop)
        for pid in (*pids, forker):
            wait_for(lambda: gone(pid), timeout=10)
        assert "hung" not in j.answers  # answers stop with the processes
        mount.thaw()


def _parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


@root_only
def test_processes_start_before_the_engine_is_ready(rt, monkeypatch):
    """
    The engine is ready once all its processes have said hello; a forker
    whose processes never do leaves it waiting (the service then serves
    without them, past its own timeout).
    """
    engine = CheckEngine(3, rt.reactor)
    ready = rt.begin(engine.start)
    assert rt.result(ready, timeout=30) is engine and len(engine.processes.alive) == 3
    stop_engine(rt, engine)

    monkeypatch.setenv("HLFS_STANDIN", "never-ready")
    engine = CheckEngine(2, rt.reactor, argv=STANDIN)
    ready = rt.begin(engine.start)
    wait_for(lambda: len(engine.processes.numbered) == 2, timeout=10)
    assert rt.pending(ready) and engine.processes.alive == []
    rt.call(engine.stop)
    assert not rt.pending(ready)  # cancelled


def test_a_process_that_speaks_garbage_is_ended(rt, homes, jobs, monkeypatch, tmp_path):
    """
    Answers that are no frame end the process that sent them, with one
    log line; its job fails (it is not run again), and a new process
    takes its place.  (A stand-in writes the garbage: no real check
    process does.)
    """
    monkeypatch.setenv("HLFS_STANDIN", "garbage")
    j = jobs(size=1, argv=STANDIN)
    first = j.pids()
    with LogCapture() as logs:
        j.submit("x", check_job(User(b"x", os.getuid()), os.fsencode(str(tmp_path / "x"))))
        assert j.answer("x") is None
    [line] = logs.matching("a frame of 4294967295 bytes; ending it")
    wait_for(lambda: len(j.pids()) == 1 and j.pids() != first, timeout=10)


def test_processes_of_another_version_are_refused_with_one_line(rt, monkeypatch):
    """
    A forker speaking another protocol version (hlfs changed under a
    running daemon) is refused, with one log line, and no job ever goes
    to it.
    """
    monkeypatch.setenv("HLFS_STANDIN", "other-version")
    engine = CheckEngine(2, rt.reactor, argv=STANDIN)
    with LogCapture() as logs:
        ready = rt.begin(engine.start)
        wait_for(lambda: logs.matching("speaks protocol version"), timeout=20)
    try:
        [line] = logs.matching("speaks protocol version")
        assert f"version {records.VERSION + 1}, this daemon {records.VERSION}" in line
        assert rt.pending(ready) and engine.processes.alive == []
    finally:
        rt.call(engine.stop)
