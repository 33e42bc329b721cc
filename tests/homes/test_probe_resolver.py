"""
L{hlfs.homes.resolver.HomeResolver}: caching, link times, fallback and
reloads, with checks of real filesystems in the engine's real check
processes.

The cache interval and link times run on a L{task.Clock} the test
advances (in the reactor thread); probe results come back through the
real reactor, which runs in a thread of its own (L{ReactorThread}).
"""

import contextlib
import os
import time

import pytest
from twisted.internet import task

from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import Resolution, SpoolRules
from hlfs.homes.tableload import TableLoadError, load_in_subprocess
from hlfs.core.users import UserTable
from tests.support.checks import started_engine, stop_engine
from tests.support.probes import LogCapture, reload_while_serving, wait_for
from tests.support.filesystems import fill, frozen_mount, tmpfs

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities"),
    pytest.mark.timeout(120),
]

INTERVAL = 300


class Setup:
    """
    A resolver over C{homes} on a test clock, its engine's processes on the
    real reactor.
    """

    def __init__(self, rt, homes, size=4, deadline=5.0, verify=True, interval=INTERVAL):
        self.rt = rt
        self.homes = homes
        self.clock = task.Clock()
        self.engine = started_engine(rt, size, clock=self.clock, stuck_after=deadline)
        self.rules = SpoolRules(b".mailspool", os.fsencode(homes.alt))
        self.resolver = HomeResolver(
            homes.table(), self.rules, self.clock, self.engine,
            cache_interval=interval, deadline=deadline, verify=verify, reactor=rt.reactor,
        )

    def resolve(self, uid):
        return self.rt.call(self.resolver.resolve, uid)

    def advance(self, seconds):
        self.rt.call(self.clock.advance, seconds)

    def stop(self):
        stop_engine(self.rt, self.engine)


@pytest.fixture
def setup(rt, homes):
    made = []

    def make(**kw):
        s = Setup(rt, homes, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_disk_full_falls_back_and_comes_home(setup, homes):
    """
    A home on a tiny tmpfs: full, the link points to the alternate spool
    (with a log line naming the user, the path and ENOSPC); freed, it
    points home again once the cached failure expires.  The link time
    moves at each change and only then.
    """
    mnt = os.path.join(homes.base, "home")
    with tmpfs(mnt, "64k"):
        uid = homes.add("alice")
        s = setup()
        spool = homes.spool("alice")
        first = s.resolve(uid)
        assert first.target == spool

        ballast = fill(mnt)
        # Cached: the full disk goes unnoticed for the cache interval.
        assert s.resolve(uid) == first
        s.advance(INTERVAL + 1)
        with LogCapture() as logs:
            full = s.resolve(uid)
        assert full.target == os.fsencode(homes.alt)
        assert full.changed > first.changed
        [line] = logs.matching("alice", os.fsdecode(spool), "ENOSPC")
        assert f"uid {uid}" in line

        os.unlink(ballast)
        assert s.resolve(uid) == full  # the failure is cached too
        s.advance(INTERVAL + 1)
        back = s.resolve(uid)
        assert back.target == spool
        assert back.changed > full.changed

        # The same answer again after a new probe: the same link time.
        s.advance(INTERVAL + 1)
        started = s.engine.started_count
        assert s.resolve(uid) == back
        assert s.engine.started_count == started + 1


def test_cache_hits_do_not_probe(setup, homes):
    uid = homes.add("alice")
    s = setup()
    s.resolve(uid)
    for _ in range(5):
        s.resolve(uid)
    assert s.engine.started_count == 1
    stats = s.resolver.stats_dict()
    assert stats["hits"] == 5 and stats["misses"] == 1 and stats["started"] == 1


def test_flush_probes_again(setup, homes):
    a, b = homes.add("alice"), homes.add("bob")
    s = setup()
    s.resolve(a), s.resolve(b)
    s.rt.call(s.resolver.flush, a)
    s.resolve(a), s.resolve(b)
    assert s.engine.started_count == 3
    s.rt.call(s.resolver.flush)
    s.resolve(a), s.resolve(b)
    assert s.engine.started_count == 5


def test_unknown_and_unusable_homes_never_probe(setup, homes):
    slash = homes.add("slash", home="/", make=False)
    relative = homes.add("relative", home="home/relative", make=False)
    s = setup()
    alt = os.fsencode(homes.alt)
    assert s.resolve(slash).target == alt
    assert s.resolve(relative).target == alt
    assert s.resolve(12345).target == alt
    assert s.engine.started_count == 0


def test_no_verify(setup, homes):
    """
    hlfsd's C{-n}: the home without a probe, even a missing one.
    """
    uid = homes.add("ghost", make=False)
    s = setup(verify=False)
    assert s.resolve(uid).target == homes.spool("ghost")
    assert s.engine.started_count == 0


def test_permission_failures_are_logged_and_cached(setup, homes):
    uid = homes.add("alice")
    spool = homes.spool("alice")
    os.symlink("/etc", spool)
    s = setup()
    with LogCapture() as logs:
        r = s.resolve(uid)
        assert r.target == os.fsencode(homes.alt)
        s.resolve(uid)
    [line] = logs.lines
    assert "alice" in line and os.fsdecode(spool) in line and "symbolic link" in line
    assert s.engine.started_count == 1


def test_link_times(setup, homes):
    """
    A user's link time is strictly later whenever the value changes, and
    stays put when it does not, across probes and reloads.
    """
    uid = homes.add("alice")
    other = homes.add("bob")
    s = setup()
    spool = os.fsdecode(homes.spool("alice"))
    home = spool.rpartition("/")[0]
    r1 = s.resolve(uid)
    s.rt.call(s.resolver.flush)
    assert s.resolve(uid) == r1

    os.chmod(spool, 0o000)
    os.chown(spool, 0, 0)
    s.rt.call(s.resolver.flush)
    r2 = s.resolve(uid)
    assert r2.target == os.fsencode(homes.alt) and r2.changed > r1.changed
    os.chown(spool, uid, uid)
    os.chmod(spool, 0o700)
    s.rt.call(s.resolver.flush)
    r3 = s.resolve(uid)
    assert r3.target == r1.target and r3.changed > r2.changed

    # A reload that changes nothing keeps times and cached results.
    bob = s.resolve(other)
    started = s.engine.started_count
    s.rt.call(s.resolver.set_table, homes.table())
    assert s.resolve(uid) == r3
    assert s.resolve(other) == bob
    assert s.engine.started_count == started

    # A new home: a new value, a new time, a new probe; bob untouched.
    moved = home + "-moved"
    os.rename(home, moved)
    homes.users[0] = (b"alice", uid, os.fsencode(moved))
    s.rt.call(s.resolver.set_table, homes.table())
    r4 = s.resolve(uid)
    assert r4.target == os.fsencode(moved) + b"/.mailspool"
    assert r4.changed > r3.changed
    assert s.engine.started_count == started + 1
    assert s.resolve(other) == bob

    # Gone from the table: the alternate spool, at a new time.
    del homes.users[0]
    s.rt.call(s.resolver.set_table, homes.table())
    r5 = s.resolve(uid)
    assert r5.target == os.fsencode(homes.alt) and r5.changed > r4.changed
    assert s.resolve(other) == bob


def test_peek_and_mailbox_follow_the_last_answer(setup, homes):
    uid = homes.add("alice")
    spool = homes.spool("alice")
    s = setup()
    r = s.resolve(uid)
    assert s.rt.call(s.resolver.peek, uid) == r
    assert s.rt.call(s.resolver.mailbox, b"alice") == Resolution(spool + b"/alice", r.changed)
    os.chmod(os.fsdecode(spool), 0o000)
    os.chown(os.fsdecode(spool), 0, 0)
    s.rt.call(s.resolver.flush)
    alt = s.resolve(uid)
    assert s.rt.call(s.resolver.peek, uid) == alt
    mailbox = s.rt.call(s.resolver.mailbox, b"alice")
    assert mailbox.target == os.fsencode(homes.alt) + b"/alice"
    assert s.rt.call(s.resolver.mailbox, b"nobody-here") is None


def test_mailbox_checks_the_home_like_the_link(setup, homes):
    """
    If a mailbox link (Table 2) is asked for before its user's own link,
    then it checks the home itself, with the same probe and cache as the
    user's link: one probe for both, and an unusable home gives the
    alternate spool's NAME.
    """
    alice = homes.add("alice")
    homes.add("locked")
    s = setup()
    # A home the user cannot write: no spool can be made in it.
    locked = os.path.dirname(os.fsdecode(homes.spool("locked")))
    os.chown(locked, 0, 0)
    os.chmod(locked, 0o755)
    started = s.engine.started_count
    mailbox = s.rt.call(s.resolver.mailbox, b"alice")
    assert mailbox.target == homes.spool("alice") + b"/alice"
    assert s.engine.started_count == started + 1
    assert s.resolve(alice) == Resolution(homes.spool("alice"), mailbox.changed)
    assert s.rt.call(s.resolver.mailbox, b"alice") == mailbox
    assert s.engine.started_count == started + 1
    with LogCapture() as logs:
        refused = s.rt.call(s.resolver.mailbox, b"locked")
    assert refused.target == os.fsencode(homes.alt) + b"/locked"
    assert logs.matching("locked", "EACCES")
    assert s.engine.started_count == started + 2


def test_mailbox_of_a_full_home(setup, homes):
    """
    If a home is full when its mailbox link is first asked for, then the
    link is the alternate spool's NAME.
    """
    mnt = os.path.join(homes.base, "home")
    with tmpfs(mnt, "64k"):
        homes.add("alice")
        s = setup()
        ballast = fill(mnt)
        try:
            full = s.rt.call(s.resolver.mailbox, b"alice")
        finally:
            os.unlink(ballast)
        assert full.target == os.fsencode(homes.alt) + b"/alice"


def test_reload_under_load(setup, homes, rt, monkeypatch):
    """
    A 200,000-user password file is reloaded (parsed in a child process,
    remapped in a thread) while the reactor keeps resolving: no request
    fails, none waits for the reload, and users whose entry did not
    change keep their cached result.  The reload is held, in its thread,
    after loading and again in the remapping: the reactor goes on
    answering at both points.
    """
    uids = [homes.add(f"user{n}") for n in range(20)]
    passwd = os.path.join(homes.base, "passwd")
    homes.write_passwd(passwd, 200_000)
    s = setup()
    for uid in uids:
        s.resolve(uid)
    started = s.engine.started_count
    answers = []

    def tick():
        answers.append(s.resolver.resolve(uids[len(answers) % len(uids)]))

    loop = task.LoopingCall(tick)
    rt.call(lambda: loop.start(0.001).addBoth(lambda _: None) and None)
    try:
        table, held_in = reload_while_serving(rt, s.resolver, passwd, answers, monkeypatch)
    finally:
        rt.call(loop.stop)
    assert len(table) == 200_020
    assert s.resolver.table is table
    assert rt.tid not in held_in
    assert all(isinstance(a, Resolution) and a.target.endswith(b"/.mailspool") for a in answers)
    # Cached results survived the reload: no new probes.
    assert s.engine.started_count == started
    # The new users resolve.
    assert s.resolve(100_005).target == os.fsencode(homes.alt)  # no such home: probe fails
    # A mailbox link checks its home like the user's own link: none here.
    assert s.rt.call(s.resolver.mailbox, b"gen7").target == os.fsencode(homes.alt) + b"/gen7"
    assert s.rt.call(s.resolver.mailbox, b"gen8", False).target == b"/nonexistent/gen8/.mailspool/gen8"


def test_reload_failure_keeps_the_table(setup, homes):
    uid = homes.add("alice")
    s = setup()
    r = s.resolve(uid)

    def broken():
        raise OSError(2, "No such file or directory")

    with LogCapture() as logs:
        assert s.rt.call(s.resolver.reload, broken) is None
    assert logs.matching("reloading the user table failed", "keeping the 1 users")
    assert s.resolve(uid) == r


def test_reloads_asked_for_during_a_reload_share_it(setup, homes):
    homes.add("alice")
    s = setup()
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return homes.table()

    def both():
        from twisted.internet.defer import gatherResults

        return gatherResults([s.resolver.reload(slow), s.resolver.reload(slow)])

    t1, t2 = s.rt.call(both)
    assert t1 is t2 and len(calls) == 1


def test_footprint_is_small(setup, homes):
    """
    The per-user state is three flat arrays: 17 bytes a user.
    """
    table = UserTable((b"u%d" % n, n, b"/home/u%d" % n) for n in range(10_000))
    s = setup()
    s.rt.call(s.resolver.set_table, table)
    assert s.resolver.footprint() - table.footprint() == 17 * 10_000


@contextlib.contextmanager
def alice_on_a_frozen_spool(setup, homes):
    """
    Alice, whose spool is a FUSE mount frozen from the start, and the
    resolver set up with a 1 s deadline: yields C{(s, uid, mount)}.
    """
    uid = homes.add("alice")
    src, spool = homes.spool_to_freeze("alice", uid)
    s = setup(deadline=1.0)
    with frozen_mount(src, spool) as mount:
        mount.freeze()
        yield s, uid, mount


def test_waiters_wait_on_the_test_clock_deadline(setup, homes):
    """
    A check slower than the deadline (its spool on a frozen FUSE mount):
    the caller gets the alternate spool when the clock passes the
    deadline, the check's late answer updates the cache, and the link
    time moves both ways.
    """
    with alice_on_a_frozen_spool(setup, homes) as (s, uid, mount):
        rt, resolver = s.rt, s.resolver
        before = rt.call(resolver.peek, uid)
        got = []
        rt.call(lambda: resolver.resolve(uid).addCallback(got.append) and None)
        rt.call(s.clock.advance, 0.5)
        assert got == []
        assert len(rt.call(resolver.in_flight)) == 1
        with LogCapture() as logs:
            rt.call(s.clock.advance, 0.6)
        assert got[0].target == os.fsencode(homes.alt)
        assert got[0].changed > before.changed
        assert logs.matching("still running after 1.0 s")
        # Later callers: the check is past its deadline: no wait at all.
        assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
        assert s.engine.started_count == 1
        mount.thaw()
        wait_for(lambda: rt.call(s.engine.count) == 0)
        home = rt.call(resolver.resolve, uid)
        assert home.target == homes.spool("alice")
        assert home.changed > got[0].changed
        assert resolver.stats.late == 1


def test_answers_given_during_a_reload_survive_it(setup, homes):
    """
    The per-user state is copied in the loading thread while the reactor
    goes on changing it: what changed meanwhile is carried over at the
    swap, and a flush of everything during the reload still holds after.
    """
    import threading

    a = homes.add("alice")
    b = homes.add("bob")
    s = setup()
    ra = s.resolve(a)
    gate = threading.Event()
    loaded = threading.Event()

    def slow_loader():
        table = homes.table()
        loaded.set()
        gate.wait(30)
        return table

    # A changed table (a new user), so the state is remapped, not copied.
    homes.add("carol")
    done = []
    s.rt.call(lambda: s.resolver.reload(slow_loader).addCallback(done.append) and None)
    assert loaded.wait(10)
    spool = os.fsdecode(homes.spool("alice"))
    os.chmod(spool, 0o000)
    os.chown(spool, 0, 0)
    s.rt.call(s.resolver.flush, a)
    alt = s.resolve(a)  # probed during the reload: a failure now
    assert alt.target == os.fsencode(homes.alt) and alt.changed > ra.changed
    rb = s.resolve(b)  # first seen during the reload
    started = s.engine.started_count
    gate.set()
    wait_for(lambda: bool(done))
    assert len(s.resolver.table) == 3
    assert s.resolve(a) == alt
    assert s.resolve(b) == rb
    assert s.engine.started_count == started

    # flush() during a reload applies to the table swapped in.
    gate.clear()
    loaded.clear()
    homes.add("dave")
    done.clear()
    s.rt.call(lambda: s.resolver.reload(slow_loader).addCallback(done.append) and None)
    assert loaded.wait(10)
    s.rt.call(s.resolver.flush)
    gate.set()
    wait_for(lambda: bool(done))
    s.resolve(b)
    assert s.engine.started_count == started + 1


def test_child_loader_errors_are_one_line(setup, homes):
    uid = homes.add("alice")
    s = setup()
    r = s.resolve(uid)
    missing = os.path.join(homes.base, "no-such-passwd")
    with pytest.raises(TableLoadError) as e:
        load_in_subprocess(missing)
    assert str(e.value) == f"cannot read password file {missing}: No such file or directory"
    with LogCapture() as logs:
        assert s.rt.call(s.resolver.reload, lambda: load_in_subprocess(missing)) is None
    [line] = logs.lines
    assert "keeping the 1 users" in line and "No such file or directory" in line
    assert "Traceback" not in line
    assert s.resolve(uid) == r


def test_child_loader_gives_the_same_table(homes):
    homes.add("alice")
    homes.add("bob")
    passwd = os.path.join(homes.base, "passwd")
    homes.write_passwd(passwd, 1000)
    with open(passwd, "ab") as f:
        f.write(b"broken line\n")
    table = load_in_subprocess(passwd)
    direct = UserTable.from_passwd_file(passwd)
    assert table == direct
    assert table.problems == direct.problems and len(table.problems) == 1
    assert table.by_name(b"gen5") == direct.by_name(b"gen5")


def test_operator_views(setup, homes):
    """
    What the console, the status report and the SIGUSR1 dump show of a
    user's cached state.
    """
    a = homes.add("alice")
    b = homes.add("bob")
    s = setup()
    r = s.resolver
    assert s.rt.call(r.describe, a) == ("unverified", "-")
    assert s.rt.call(r.cache_entry, 12345) is None
    s.resolve(a)
    s.advance(10)
    entry = s.rt.call(r.cache_entry, a)
    assert entry.state == "ok" and entry.age == 10 and entry.expires_in == INTERVAL - 10
    assert entry.target == homes.spool("alice") and not entry.probing
    assert s.rt.call(r.describe, a) == ("ok", "10")
    s.advance(INTERVAL)
    assert s.rt.call(r.describe, a) == ("ok-expired", str(INTERVAL + 10))
    assert s.rt.call(r.describe, b) == ("unverified", "-")
    status = dict(s.rt.call(r.status))
    assert status["cache_misses"] == 1 and status["probes_started"] == 1
    assert status["check_processes_max"] == 4 and status["probes_in_flight"] == 0
    assert (status["check_processes"], status["check_processes_stuck"]) == (4, 0)


def test_resolver_for_the_daemon_config(rt, homes):
    """
    The daemon builds its resolver and engine from its Config: -c, -n,
    --probe-deadline, --home-checks, and NSS or a password file.
    """
    from hlfs.daemon.config import Config
    from hlfs.homes.resolver import resolver_for

    uid = homes.add("alice")
    rules = SpoolRules(b".mailspool", os.fsencode(homes.alt))
    config = Config(cache_interval=42.0, probe_deadline=0.25, home_checks=3,
                    password_file="/etc/passwd-like")
    resolver, engine = resolver_for(config, homes.table(), rules, rt.reactor)
    assert (resolver.cache_interval, resolver.deadline, resolver.verify) == (42.0, 0.25, True)
    assert (engine.size, engine.stuck_after) == (3, 0.25) and resolver.engine is engine
    assert resolver.credentials.nss is False and resolver.lookups is None
    rt.result(rt.begin(engine.start), timeout=30)
    try:
        assert rt.call(resolver.resolve, uid).target == homes.spool("alice")
    finally:
        stop_engine(rt, engine)
    resolver, engine = resolver_for(Config(verify=False), homes.table(), rules, rt.reactor)
    assert not resolver.verify and resolver.credentials.nss is True
    assert resolver.lookups.pool.size == Config.lookup_threads
    assert rt.call(resolver.resolve, uid).target == homes.spool("alice")
    assert engine.started_count == 0


def _snapshot(path):
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            found[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


@pytest.mark.parametrize("case", ["spool owned by another user", "symlink as spool", "home is a file"])
def test_permission_problems(setup, homes, case):
    """
    Each gets the alternate spool and one log line naming the user, the
    path and the error, and nothing outside the user's home changes.
    """
    uid = homes.add("alice")
    spool = os.fsdecode(homes.spool("alice"))
    home = spool.rpartition("/")[0]
    outside = os.path.join(homes.base, "outside")
    os.mkdir(outside, 0o777)
    os.chown(outside, uid, uid)
    if case == "spool owned by another user":
        os.mkdir(spool, 0o777)
        os.chown(spool, uid + 1, uid + 1)
        errname, path = "EPERM", spool
    elif case == "symlink as spool":
        os.symlink(outside, spool)
        os.lchown(spool, uid, uid)
        errname, path = "ENOTDIR", spool
    else:
        os.rmdir(home)
        with open(home, "w") as f:
            f.write("a file\n")
        errname, path = "ENOTDIR", home
    before = _snapshot(homes.base)
    s = setup()
    with LogCapture() as logs:
        answer = s.resolve(uid)
    assert answer.target == os.fsencode(homes.alt)
    [line] = logs.lines
    assert "alice" in line and f"uid {uid}" in line and f"{path}: {errname}" in line, line
    assert _snapshot(homes.base) == before


def test_child_loader_that_hangs_is_killed(homes):
    """
    A loader stuck (in the name service, say) is killed after the timeout
    and the reload fails with one line, instead of holding reloads
    forever.
    """
    stuck = os.path.join(homes.base, "stuck-python")
    pidfile = os.path.join(homes.base, "stuck.pid")
    with open(stuck, "w") as f:
        # Never ends by itself: a loader that waited for it would hang the
        # test (until its timeout), one that left it running is caught below.
        f.write(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep infinity\n")
    os.chmod(stuck, 0o755)
    with pytest.raises(TableLoadError) as e:
        load_in_subprocess(None, timeout=0.5, python=stuck)
    assert str(e.value) == "loading the user table took more than 0.5 s"
    # Killed and reaped, not waited for: the process is gone.
    with open(pidfile) as f:
        pid = int(f.read())
    assert not os.path.exists(f"/proc/{pid}")


def test_reload_without_an_engine(rt, homes):
    """
    A resolver that does not verify homes needs no engine: its reloads run
    in the injected reactor's threads all the same.
    """
    a = homes.add("alice")
    rules = SpoolRules(b".mailspool", os.fsencode(homes.alt))
    resolver = HomeResolver(homes.table(), rules, rt.reactor, None, verify=False)
    b = homes.add("bob")
    table = rt.call(resolver.reload, homes.table)
    assert len(table) == 2 and resolver.table is table
    assert rt.call(resolver.resolve, a).target == homes.spool("alice")
    assert rt.call(resolver.resolve, b).target == homes.spool("bob")


def test_a_user_changed_during_a_reload_and_in_the_new_table(setup, homes):
    """
    alice fails her check while a reload runs, and the new table gives her
    another home: her failure belongs to the old home and is not carried
    over; the new home is checked afresh.
    """
    import threading

    a = homes.add("alice")
    s = setup()
    assert s.resolve(a).target == homes.spool("alice")
    moved = os.path.join(homes.base, "home", "alice-moved")
    os.makedirs(moved)
    os.chown(moved, a, a)
    new_table = UserTable([(b"alice", a, os.fsencode(moved))])
    gate = threading.Event()
    loaded = threading.Event()

    def slow_loader():
        loaded.set()
        gate.wait(30)
        return new_table

    done = []
    s.rt.call(lambda: s.resolver.reload(slow_loader).addCallback(done.append) and None)
    assert loaded.wait(10)
    spool = os.fsdecode(homes.spool("alice"))
    os.chmod(spool, 0o000)
    os.chown(spool, 0, 0)
    s.rt.call(s.resolver.flush, a)
    assert s.resolve(a).target == os.fsencode(homes.alt)  # dirty during the reload
    started = s.engine.started_count
    gate.set()
    wait_for(lambda: bool(done))
    assert s.resolve(a).target == os.fsencode(moved) + b"/.mailspool"
    assert s.engine.started_count == started + 1


def test_an_unusable_home_logs_when_it_changes_and_a_count_meanwhile(setup, homes):
    """
    A home that stays unusable logs one line when it becomes so and one
    when it is usable again, not one per check: checked again every cache
    interval, it is only counted, and one line every report interval
    counts the homes still unusable.
    """
    uid = homes.add("alice")
    homes.add("bob")
    s = setup(interval=60)
    spool = os.fsdecode(homes.spool("alice"))
    os.mkdir(spool, 0o000)
    with LogCapture() as logs:
        for _ in range(12):  # twelve checks, an hour
            assert s.resolve(uid).target == os.fsencode(homes.alt)
            s.advance(61)
        bob = homes.users[1][1]
        assert s.resolve(bob).target == homes.spool("bob")
        os.chown(spool, uid, uid)
        os.chmod(spool, 0o700)
        assert s.resolve(uid).target == os.fsencode(spool)
        for _ in range(3):
            s.advance(61)
            assert s.resolve(uid).target == os.fsencode(spool)
    assert len(logs.matching("unusable, mail goes to", "alice")) == 1
    counts = logs.matching("home(s) still unusable")
    assert len(counts) == 1 and "1 home(s) still unusable" in counts[0] and "alice" in counts[0]
    assert len(logs.matching("usable again", "alice")) == 1
    assert len(logs.lines) == 3, logs.lines
    assert s.engine.started_count == 12 + 1 + 4


def test_a_check_answered_after_a_reload_is_kept_for_its_user_only(setup, homes):
    """
    A check in flight while the table is swapped for one where its user
    sits at another place (a user with a smaller uid came in): its result
    is kept for that user, at the new place, and for nobody else.
    """
    with alice_on_a_frozen_spool(setup, homes) as (s, uid, mount):
        rt, resolver = s.rt, s.resolver
        got = []
        rt.call(lambda: resolver.resolve(uid).addCallback(got.append) and None)
        wait_for(lambda: rt.call(s.engine.busy) == 1)
        zed = homes.add("zed", uid=uid - 1)
        rt.call(resolver.set_table, homes.table())
        mount.thaw()
        wait_for(lambda: bool(got))
    assert got[0].target == homes.spool("alice")
    started = s.engine.started_count
    assert rt.call(resolver.valid_until, uid) == INTERVAL
    assert rt.call(resolver.resolve, uid) == got[0]
    assert s.engine.started_count == started
    # Zed, now where alice was, was never checked.
    assert rt.call(resolver.valid_until, zed) == 0.0


def test_a_check_of_a_home_the_table_moved_is_not_kept(setup, homes):
    """
    A check in flight while a reload gives its user another home: its
    late result is about the old home, so it is not kept; the next call
    checks the new one.
    """
    new_home = os.path.join(homes.base, "elsewhere", "alice")
    with alice_on_a_frozen_spool(setup, homes) as (s, uid, mount):
        rt, resolver = s.rt, s.resolver
        got = []
        rt.call(lambda: resolver.resolve(uid).addCallback(got.append) and None)
        wait_for(lambda: rt.call(s.engine.busy) == 1)
        homes.users[0] = (b"alice", uid, os.fsencode(new_home))
        os.makedirs(new_home)
        os.chown(new_home, uid, uid)
        rt.call(resolver.set_table, homes.table())
        mount.thaw()
        wait_for(lambda: bool(got))
    assert rt.call(resolver.valid_until, uid) == 0.0
    started = s.engine.started_count
    assert rt.call(resolver.resolve, uid).target == os.fsencode(new_home) + b"/.mailspool"
    assert s.engine.started_count == started + 1
