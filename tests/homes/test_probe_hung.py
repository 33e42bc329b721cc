"""
Homes that hang: a real FUSE filesystem (bindfs) whose server process
the test freezes with SIGSTOP, as a dead NFS server freezes a hard mount.

The deadline runs on a L{task.Clock} the test advances: a caller's answer
is shown to wait for the deadline (pending just before it, the alternate
spool at it) or to come at once (returned, not a Deferred, with the clock
standing still), never by measuring how long it took.  Checks run in the
engine's real check processes and answer through the real reactor.

Every test thaws and unmounts in a C{finally} (L{frozen_mount}); every
wait on the frozen mount has a timeout (a hang guard).
"""

import os
import shutil

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults

from hlfs.homes import creds
from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import Resolution, SpoolRules
from tests.support.checks import ids, started_engine, stop_engine
from tests.support.probes import LogCapture, thread_ids, wait_for
from tests.support.filesystems import frozen_mount

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(90),
]

DEADLINE = 0.5
JUST_BEFORE = DEADLINE - 0.125  # exact in binary: no rounding at the deadline


def on_test_clock(rt, table, alt, size):
    """
    Return C{(clock, engine, resolver)}: a resolver and its engine on a
    test clock, answers delivered through the real reactor; the engine's
    processes started.
    """
    clock = task.Clock()
    engine = started_engine(rt, size, clock=clock, stuck_after=DEADLINE)
    resolver = HomeResolver(
        table, SpoolRules(b".mailspool", alt), clock, engine, deadline=DEADLINE,
        reactor=rt.reactor,
    )
    return clock, engine, resolver


def wait_running(rt, engine, count):
    """
    Wait until C{count} checks run in their processes (their start time is
    taken as they are sent, from the test clock).
    """
    wait_for(lambda: rt.call(engine.busy) == count, timeout=10)


def answered_at_deadline(rt, clock, d):
    """
    Assert that Deferred C{d} is still waiting just before the deadline
    and fires at it; return its result.
    """
    assert isinstance(d, Deferred), d
    rt.call(clock.advance, JUST_BEFORE)
    assert rt.pending(d)
    rt.call(clock.advance, DEADLINE - JUST_BEFORE)
    assert not rt.pending(d)
    return rt.result(d)


class HungSetup:
    """
    Users C{hung1} and C{hung2} whose homes are on a bindfs mount, and
    users C{ok0}..C{ok4} on the test's disk; a resolver on a test clock.
    """

    def __init__(self, rt, homes, size):
        self.rt = rt
        self.homes = homes
        self.src = os.path.join(homes.base, "fuse-src")
        self.mnt = os.path.join(homes.base, "fuse")
        os.makedirs(self.src)
        os.makedirs(self.mnt)
        self.hung = []
        for name in ("hung1", "hung2"):
            uid = homes.add(name, home=os.path.join(self.src, name))
            homes.users[-1] = (name.encode(), uid, os.fsencode(os.path.join(self.mnt, name)))
            self.hung.append(uid)
        self.ok = [homes.add(f"ok{n}") for n in range(5)]
        self.alt = os.fsencode(homes.alt)
        self.size = size

    def start(self):
        self.clock, self.engine, self.resolver = on_test_clock(
            self.rt, self.homes.table(), self.alt, self.size
        )
        return self

    def begin(self, uid):
        """
        Ask for C{uid}'s link: a L{Resolution} if answered at once, else
        the caller's Deferred.
        """
        return self.rt.begin(self.resolver.resolve, uid)

    def resolve(self, uid):
        """
        Ask for C{uid}'s link and wait for the answer, the clock standing
        still: it comes from a probe or the cache, never the deadline.
        """
        return self.rt.result(self.begin(uid))

    def at_deadline(self, d):
        return answered_at_deadline(self.rt, self.clock, d)

    def stop(self):
        stop_engine(self.rt, self.engine)


@pytest.fixture
def hung_setup(rt, homes):
    """
    Make a L{HungSetup}; its engine is stopped after the test.
    """
    made = []

    def make(size=4):
        s = HungSetup(rt, homes, size)
        made.append(s)
        return s

    yield make
    for s in made:
        if hasattr(s, "engine"):
            s.stop()


def test_hung_home_gives_the_alternate_mailbox_at_the_deadline(hung_setup):
    """
    If a mailbox link (Table 2) is first asked for while its home hangs,
    then the answer is the alternate spool's NAME at the deadline, and a
    second ask is answered at once from the same probe instead of
    starting another.
    """
    s = hung_setup()
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        mount.freeze()
        d = s.rt.begin(s.resolver.mailbox, b"hung1")
        wait_running(s.rt, s.engine, 1)
        answer = s.at_deadline(d)
        assert answer.target == s.alt + b"/hung1"
        started = s.engine.started_count
        again = s.rt.begin(s.resolver.mailbox, b"hung1")
        assert isinstance(again, Resolution) and again.target == s.alt + b"/hung1"
        assert s.engine.started_count == started
        mount.thaw()


def test_hung_home_gets_the_alternate_spool_at_the_deadline(hung_setup):
    s = hung_setup()
    hung = s.hung[0]
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        home = s.resolve(hung)
        assert home.target == s.homes.spool("hung1")  # through FUSE, while it works
        mount.freeze()
        s.rt.call(s.resolver.flush)
        with LogCapture() as logs:
            d = s.begin(hung)
            wait_running(s.rt, s.engine, 1)
            answer = s.at_deadline(d)
        assert answer.target == s.alt
        assert answer.changed > home.changed
        assert logs.matching("still running after", os.fsdecode(s.homes.spool("hung1")))
        started = s.engine.started_count

        # Everybody else: probed and answered as usual, with the clock
        # standing still (so before any deadline).
        for uid in s.ok:
            answer = s.resolve(uid)
            assert answer.target.endswith(b"/.mailspool"), answer
        assert s.engine.started_count == started + len(s.ok)

        # The hung user again: no new probe, and no wait: its probe is
        # already past the deadline.
        for _ in range(5):
            answer = s.begin(hung)
            assert isinstance(answer, Resolution) and answer.target == s.alt
        assert s.engine.started_count == started + len(s.ok)

        [stuck] = s.rt.call(s.resolver.hung)
        assert (stuck.key, stuck.path) == (hung, s.homes.spool("hung1"))
        assert (stuck.age, stuck.running) == (DEADLINE, DEADLINE)
        assert [f.key for f in s.rt.call(s.resolver.in_flight)] == [hung]

        mount.thaw()
        wait_for(lambda: s.rt.call(s.engine.count) == 0, timeout=10)
        # The late probe's result is in the cache: home again, at once, at
        # a new time.
        back = s.begin(hung)
        assert isinstance(back, Resolution) and back.target == s.homes.spool("hung1")
        assert back.changed > answer.changed
        assert s.engine.started_count == started + len(s.ok)
        assert s.resolver.stats.late == 1
        # And the next probe, once that result expires, finds the home.
        s.rt.call(s.resolver.flush, hung)
        again = s.begin(hung)
        assert isinstance(again, Deferred)
        assert s.rt.result(again) == back
        assert s.engine.started_count == started + len(s.ok) + 1


def test_exhausted_pool_answers_at_once(hung_setup):
    """
    With every check process stuck, a new check is not queued behind
    them: the caller gets the alternate spool at once, and the log says
    why, once.
    """
    s = hung_setup(size=2)
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        mount.freeze()

        def both():
            return gatherResults([s.resolver.resolve(uid) for uid in s.hung])

        d = s.rt.begin(both)
        wait_running(s.rt, s.engine, 2)
        assert not s.rt.call(s.engine.exhausted)  # running, not yet stuck
        answers = s.at_deadline(d)
        assert [a.target for a in answers] == [s.alt, s.alt]
        assert s.rt.call(s.engine.exhausted)
        with LogCapture() as logs:
            answer = s.begin(s.ok[0])
            again = s.begin(s.ok[1])
        assert isinstance(answer, Resolution) and isinstance(again, Resolution)
        assert answer.target == again.target == s.alt
        assert s.engine.exhausted_count == 2
        [line] = logs.matching("home checks exhausted")
        assert "all 2 home-check processes are stuck" in line
        assert s.engine.started_count == 2  # nothing was queued

        mount.thaw()
        wait_for(lambda: s.rt.call(s.engine.count) == 0, timeout=10)
        assert not s.rt.call(s.engine.exhausted)
        assert s.resolve(s.ok[0]).target == s.homes.spool("ok0")
        for uid, name in zip(s.hung, ("hung1", "hung2")):
            assert s.rt.result(s.begin(uid)).target == s.homes.spool(name)


def test_privilege_while_probes_hang(rt, homes):
    """
    While a check hangs with the user's identity, that identity is its
    process's alone: the process's real, effective and saved uids are 0,
    its filesystem uid and gid the user's; every thread of the daemon
    keeps root's ids, the reactor thread's as they were.
    """
    uid = homes.add("stuck")
    src, spool = homes.spool_to_freeze("stuck", uid)
    reactor_before = creds.thread_status(rt.tid)
    clock, engine, resolver = on_test_clock(rt, homes.table(), os.fsencode(homes.alt), 2)
    try:
        with frozen_mount(src, spool) as mount:
            mount.freeze()
            d = rt.begin(resolver.resolve, uid)
            wait_running(rt, engine, 1)
            answer = answered_at_deadline(rt, clock, d)
            assert answer.target == os.fsencode(homes.alt)
            assert len(rt.call(resolver.hung)) == 1
            [stuck] = [p.pid for p in engine.processes.alive if p.flight is not None]
            wait_for(lambda: ids(stuck, "Uid")[3] == uid)
            assert ids(stuck, "Uid") == (0, 0, 0, uid) and ids(stuck, "Gid")[3] == uid
            statuses = {tid: creds.thread_status(tid) for tid in thread_ids()}
            for tid, status in statuses.items():
                assert status["Uid"] == (0, 0, 0, 0), (tid, status)
                assert status["Gid"] == (0, 0, 0, 0), (tid, status)
            assert statuses[rt.tid] == reactor_before
            assert os.getuid() == os.geteuid() == 0
            mount.thaw()
            wait_for(lambda: rt.call(engine.count) == 0, timeout=10)
            assert rt.call(resolver.resolve, uid).target == os.fsencode(spool)
    finally:
        stop_engine(rt, engine)
