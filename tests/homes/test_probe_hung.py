"""
Homes that hang: a real FUSE filesystem (bindfs) whose server process
the test freezes with SIGSTOP, as a dead NFS server freezes a hard mount.

Every test thaws and unmounts in a C{finally} (L{frozen_mount}); every
wait on the frozen mount has a timeout.
"""

import os
import shutil

import pytest
from twisted.internet.defer import gatherResults

from hlfs.homes import creds
from hlfs.homes.pool import ProbePool
from hlfs.homes.cache import ProbingResolver
from hlfs.core.resolver import SpoolRules
from tests.support.probes import LogCapture, thread_ids, wait_for
from tests.support.filesystems import frozen_mount

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(90),
]

DEADLINE = 0.5


class HungSetup:
    """
    Users C{hung1} and C{hung2} whose homes are on a bindfs mount, and
    users C{ok0}..C{ok4} on the test's disk; a resolver on the real
    reactor's clock.
    """

    def __init__(self, rt, homes, threads):
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
        self.threads = threads

    def start(self):
        reactor = self.rt.reactor
        self.pool = ProbePool(threads=self.threads, reactor=reactor)
        self.resolver = ProbingResolver(
            self.homes.table(), SpoolRules(b".mailspool", self.alt), reactor, self.pool,
            deadline=DEADLINE,
        )
        self.pool.start()
        return self

    def resolve(self, uid, timeout=10):
        return self.rt.timed(self.resolver.resolve, uid, timeout=timeout)

    def stop(self):
        self.rt.call(self.pool.stop)


@pytest.fixture
def hung_setup(rt, homes):
    made = []

    def make(threads=4):
        s = HungSetup(rt, homes, threads)
        made.append(s)
        return s

    yield make
    for s in made:
        if hasattr(s, "pool"):
            s.stop()


def test_hung_home_gives_the_alternate_mailbox_in_time(hung_setup):
    """
    If a mailbox link (Table 2) is first asked for while its home hangs,
    then the answer is the alternate spool's NAME within the deadline, and
    a second ask waits on the same probe instead of starting another.
    """
    s = hung_setup()
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        mount.freeze()
        answer, took = s.rt.timed(s.resolver.mailbox, b"hung1")
        assert answer.target == s.alt + b"/hung1"
        assert DEADLINE * 0.9 <= took < DEADLINE + 0.5
        started = s.pool.started_count
        again, _ = s.rt.timed(s.resolver.mailbox, b"hung1")
        assert again.target == s.alt + b"/hung1"
        assert s.pool.started_count == started
        mount.thaw()


def test_hung_home_gets_the_alternate_spool_in_time(hung_setup):
    s = hung_setup()
    hung = s.hung[0]
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        home, _ = s.resolve(hung)
        assert home.target == s.homes.spool("hung1")  # through FUSE, while it works
        mount.freeze()
        s.rt.call(s.resolver.flush)
        with LogCapture() as logs:
            answer, took = s.resolve(hung)
        assert answer.target == s.alt
        assert answer.changed > home.changed
        assert DEADLINE * 0.9 <= took < DEADLINE + 0.5
        assert logs.matching("still running after", os.fsdecode(s.homes.spool("hung1")))
        started = s.pool.started_count

        # Everybody else: probed and answered as usual, well within the deadline.
        for uid in s.ok:
            answer, took = s.resolve(uid)
            assert answer.target.endswith(b"/.mailspool"), answer
            assert took < DEADLINE
        assert s.pool.started_count == started + len(s.ok)

        # The hung user again: no new probe, and no wait: its probe is
        # already past the deadline.
        for _ in range(5):
            answer, took = s.resolve(hung)
            assert answer.target == s.alt
            assert took < DEADLINE / 2
        assert s.pool.started_count == started + len(s.ok)

        [stuck] = s.rt.call(s.resolver.hung)
        assert stuck.key == hung and stuck.path == s.homes.spool("hung1")
        assert stuck.running >= DEADLINE
        assert [f.key for f in s.rt.call(s.resolver.in_flight)] == [hung]

        mount.thaw()
        wait_for(lambda: s.rt.call(s.pool.count) == 0, timeout=10)
        # The late probe's result is in the cache: home again, at a new time.
        back, took = s.resolve(hung)
        assert back.target == s.homes.spool("hung1")
        assert back.changed > answer.changed
        assert s.pool.started_count == started + len(s.ok)
        assert s.resolver.stats.late == 1
        # And the next probe, once that result expires, finds the home.
        s.rt.call(s.resolver.flush, hung)
        again, took = s.resolve(hung)
        assert again == back
        assert s.pool.started_count == started + len(s.ok) + 1


def test_exhausted_pool_answers_at_once(hung_setup):
    """
    With every thread stuck, a new probe is not queued behind them: the
    caller gets the alternate spool at once, and the log says why, once.
    """
    s = hung_setup(threads=2)
    with frozen_mount(s.src, s.mnt) as mount:
        s.start()
        mount.freeze()

        def both():
            return gatherResults([s.resolver.resolve(uid) for uid in s.hung])

        answers = s.rt.call(both)
        assert [a.target for a in answers] == [s.alt, s.alt]
        wait_for(lambda: s.rt.call(s.pool.exhausted), timeout=5)
        with LogCapture() as logs:
            answer, took = s.resolve(s.ok[0])
            again, _ = s.resolve(s.ok[1])
        assert answer.target == again.target == s.alt
        assert took < DEADLINE / 2
        assert s.pool.exhausted_count == 2
        [line] = logs.matching("probe pool exhausted")
        assert "all 2 probe threads are stuck" in line
        assert s.pool.started_count == 2  # nothing was queued

        mount.thaw()
        wait_for(lambda: s.rt.call(s.pool.count) == 0, timeout=10)
        assert not s.rt.call(s.pool.exhausted)
        answer, _ = s.resolve(s.ok[0])
        assert answer.target == s.homes.spool("ok0")
        for uid, name in zip(s.hung, ("hung1", "hung2")):
            assert s.resolve(uid)[0].target == s.homes.spool(name)


def test_privilege_while_probes_hang(rt, homes):
    """
    While a probe hangs with the user's identity, that identity is the
    stuck thread's alone: the process's real, effective and saved uids
    stay 0 in every thread, and the reactor thread's filesystem ids and
    groups are root's.
    """
    uid = homes.add("stuck")
    spool = os.fsdecode(homes.spool("stuck"))
    os.mkdir(spool)
    src = os.path.join(homes.base, "spool-src")
    os.mkdir(src, 0o700)
    os.chown(src, uid, uid)
    reactor_before = creds.thread_status(rt.tid)
    pool = ProbePool(threads=2, reactor=rt.reactor)
    resolver = ProbingResolver(
        homes.table(), SpoolRules(b".mailspool", os.fsencode(homes.alt)), rt.reactor, pool,
        deadline=DEADLINE,
    )
    pool.start()
    try:
        with frozen_mount(src, spool) as mount:
            mount.freeze()
            answer = rt.call(resolver.resolve, uid)
            assert answer.target == os.fsencode(homes.alt)
            assert len(rt.call(resolver.hung)) == 1
            statuses = {tid: creds.thread_status(tid) for tid in thread_ids()}
            for tid, status in statuses.items():
                assert status["Uid"][:3] == (0, 0, 0), (tid, status)
                assert status["Gid"][:3] == (0, 0, 0), (tid, status)
            assert statuses[rt.tid] == reactor_before
            assert statuses[rt.tid]["Uid"][3] == 0
            probing = [tid for tid, st in statuses.items() if st["Uid"][3] == uid]
            assert len(probing) == 1 and probing[0] != rt.tid
            assert statuses[probing[0]]["Gid"][3] == uid
            assert os.getuid() == os.geteuid() == 0
            mount.thaw()
            wait_for(lambda: rt.call(pool.count) == 0, timeout=10)
            assert rt.call(resolver.resolve, uid).target == os.fsencode(spool)
        for tid in thread_ids():
            assert creds.thread_status(tid)["Uid"] == (0, 0, 0, 0)
    finally:
        rt.call(pool.stop)
