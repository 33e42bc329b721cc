"""
L{hlfs.core.lookups}: per-user lookups (their kept answers, bounds and
deadline) and the reload guard, on a test clock with the lookups in a
real L{hlfs.homes.threads.LookupThreads}.

The name service here is a Python function (a dictionary, a gate that
holds it, an error it raises): the rules are what is tested.  The real
slapd, nslcd and glibc NSS are in tests/daemon/test_directory.py.
"""

import errno
import os
import threading

import pytest
from twisted.internet import task

from hlfs.core.lookups import UserLookups, guard_reload
from hlfs.core.resolver import Resolution
from hlfs.core.users import Account, User, UserTable
from hlfs.homes.threads import LookupThreads
from tests.support.checks import started_engine, stop_engine
from tests.support.probes import LogCapture, wait_for


class Directory:
    """
    A name service: C{users} by uid; C{down} makes it fail; C{gate}
    holds every lookup until set.
    """

    def __init__(self, count=10):
        self.users = {20000 + n: Account(f"u{n}".encode(), 20000 + n, 100, f"/h/u{n}".encode())
                      for n in range(count)}
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.asked = []

    def by_uid(self, uid):
        self.asked.append(uid)
        self.gate.wait(30)
        if self.down:
            raise OSError(errno.ENOENT, "nslcd: cannot reach the server")
        return self.users.get(uid)

    def by_name(self, name):
        for account in self.users.values():
            if account.name == name:
                return self.by_uid(account.uid)
        return self.by_uid(-1)


class Setup:
    def __init__(self, rt, directory, threads=2, max_in_flight=4, max_cached=1000):
        self.rt = rt
        self.clock = task.Clock()
        self.pool = LookupThreads(threads, rt.reactor, clock=self.clock,
                                  max_flights=max_in_flight)
        self.lookups = UserLookups(self.pool, directory.by_uid, directory.by_name, self.clock,
                                   deadline=1.0, negative_ttl=60.0, max_cached=max_cached)
        self.pool.start()

    def find(self, uid):
        return self.rt.call(self.lookups.find_uid, uid)

    def stop(self):
        self.rt.call(self.pool.stop)


@pytest.fixture
def setup(rt):
    made = []

    def make(directory, **kw):
        s = Setup(rt, directory, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_found_is_kept_until_forget(setup):
    """
    If a uid is found, then later calls answer without asking, until the
    table is reloaded.
    """
    d = Directory()
    s = setup(d)
    assert s.find(20001) == User(b"u1", 20001, b"/h/u1")
    assert s.find(20001) == User(b"u1", 20001, b"/h/u1")
    assert s.rt.call(s.lookups.find_name, b"u1") == User(b"u1", 20001, b"/h/u1")
    assert d.asked == [20001]
    s.rt.call(s.lookups.forget)
    assert s.find(20001).name == b"u1"
    assert d.asked == [20001, 20001]


def test_not_found_is_kept_for_a_while(setup):
    """
    If a uid is not found, then the answer is kept for the negative
    lifetime only.
    """
    d = Directory()
    s = setup(d)
    assert s.find(29999) is None
    assert s.find(29999) is None
    assert d.asked == [29999]
    s.rt.call(s.clock.advance, 61)
    assert s.find(29999) is None
    assert d.asked == [29999, 29999]


def test_could_not_ask_is_never_kept(setup):
    """
    If the name service fails, then the caller gets "unknown", the error
    is counted and logged, and the next call asks again and finds the
    user once the service is back.
    """
    d = Directory()
    d.down = True
    s = setup(d)
    with LogCapture("hlfs.users") as logs:
        assert s.find(20001) is None
    assert logs.matching("could not be asked for uid 20001")
    assert s.lookups.stats.errors == 1
    assert s.lookups.stats.last_error_time is not None
    d.down = False
    s.rt.call(s.clock.advance, 1.0)
    assert s.find(20001).name == b"u1"
    assert d.asked == [20001, 20001]


def test_could_not_ask_pauses_the_queries_of_its_key(setup):
    """
    If the name service fails for a uid, then callers of that uid in the
    next second get "unknown" without a query (a directory that is down
    is not asked once per call), other uids are still asked, and the uid
    is asked again after the pause.
    """
    d = Directory()
    d.down = True
    s = setup(d)
    for _ in range(5):
        assert s.find(20001) is None
    assert d.asked == [20001]
    assert s.lookups.stats.backed_off == 4
    assert s.find(20002) is None
    assert d.asked == [20001, 20002]
    s.rt.call(s.clock.advance, 0.5)
    assert s.find(20001) is None
    assert d.asked == [20001, 20002]
    d.down = False
    s.rt.call(s.clock.advance, 0.5)
    assert s.find(20001).name == b"u1"
    assert d.asked == [20001, 20002, 20001]
    assert s.lookups.stats.errors == 2


def test_could_not_ask_is_logged_once_an_interval(setup):
    """
    If the name service keeps failing, then one warning a minute is
    logged, the next one saying how many were left out, while every
    error is counted.
    """
    d = Directory()
    d.down = True
    s = setup(d)
    with LogCapture("hlfs.users") as logs:
        for uid in range(20000, 20005):
            assert s.find(uid) is None
        s.rt.call(s.clock.advance, 61)
        assert s.find(20005) is None
    lines = logs.matching("could not be asked")
    assert len(lines) == 2, lines
    assert "4 more such errors in the last 61 s" in str(lines[1])
    assert s.lookups.stats.errors == 6
    assert s.lookups.stats.last_error.startswith("uid 20005")


def test_deadline_and_late_answer(setup):
    """
    If the name service hangs, then callers get "unknown" at the
    deadline, one query is in flight for the key however many ask, and
    its late answer is kept for the next caller.
    """
    d = Directory()
    d.gate.clear()
    s = setup(d)
    try:
        got = []
        for _ in range(3):
            s.rt.call(lambda: s.lookups.find_uid(20002).addCallback(got.append) and None)
        assert s.rt.call(s.lookups.in_flight) == 1
        s.rt.call(s.clock.advance, 1.1)
        assert got == [None, None, None]
        assert s.find(20002) is None  # past the deadline: no wait
        d.gate.set()
        wait_for(lambda: s.rt.call(s.lookups.in_flight) == 0)
        assert s.find(20002).name == b"u2"
        assert d.asked == [20002]
        assert s.lookups.stats.late == 1
    finally:
        d.gate.set()


def test_lookups_in_flight_are_capped(setup):
    """
    If more distinct keys are asked for than the cap allows while the
    service hangs, then the extra ones are answered "unknown" at once
    without a query.
    """
    d = Directory()
    d.gate.clear()
    s = setup(d, threads=2, max_in_flight=4)
    try:
        answers = [s.rt.call(lambda u=u: s.lookups.find_uid(u) is None) for u in range(30000, 30100)]
        assert answers.count(True) == 96
        assert s.rt.call(s.lookups.in_flight) == 4
        assert s.lookups.stats.refused == 96
    finally:
        d.gate.set()
    wait_for(lambda: s.rt.call(s.lookups.in_flight) == 0)
    assert len(d.asked) == 4


def test_kept_answers_are_bounded(setup):
    """
    If more distinct uids are looked up than the cache holds, then the
    oldest answers go.
    """
    d = Directory(count=50)
    s = setup(d, max_cached=20)
    for uid in range(20000, 20050):
        s.find(uid)
    for uid in range(40000, 40050):
        s.find(uid)
    # A found user is kept under its uid and its name: 20 entries hold the
    # 10 newest users.
    assert s.lookups.positive() == 10
    assert [u.uid for u in s.lookups.users()] == list(range(20040, 20050))
    assert s.lookups.negative() == 20


def table(*uids):
    return UserTable([(f"u{u - 20000}".encode(), u, f"/h/u{u - 20000}".encode()) for u in uids])


def test_guard_accepts_a_list_that_lost_a_few_confirmed_users():
    """
    If a reload's list lacks a few users, then those the name service
    still knows are kept and those it does not know are dropped.
    """
    d = Directory(count=20)
    del d.users[20003]
    old = table(*range(20000, 20020))
    new = table(*(u for u in range(20000, 20020) if u not in (20003, 20007)))
    got, verdict = guard_reload(old, new, d.by_uid)
    assert [u.uid for u in got] == [u for u in range(20000, 20020) if u != 20003]
    assert verdict == "accepted: 2 users missing from the list, 1 confirmed gone"


def test_guard_refuses_a_partial_list():
    """
    If a reload's list lacks more than 10 % of the users and they are
    still known one by one (a size limit), or the service cannot be
    asked (it is down), then the previous table is kept and the verdict
    names the numbers.
    """
    d = Directory(count=100)
    old = table(*range(20000, 20100))
    new = table(*range(20000, 20050))
    got, verdict = guard_reload(old, new, d.by_uid)
    assert got is old
    assert verdict.startswith("refused: the name service listed 50 users, 50 of the 100 loaded "
                              "missing (50% > 10%), and u50 is still known one by one")
    d.down = True
    got, verdict = guard_reload(old, new, d.by_uid)
    assert got is old
    assert "could not be asked for u50" in verdict


def test_guard_accepts_a_confirmed_mass_deletion():
    """
    If a large share of users is missing and every one is confirmed
    gone, then the new table is taken.
    """
    d = Directory(count=30)
    for uid in range(20010, 20030):
        del d.users[uid]
    old = table(*range(20000, 20030))
    new = table(*range(20000, 20010))
    got, verdict = guard_reload(old, new, d.by_uid)
    assert got is new
    assert verdict == "accepted: 20 users missing from the list, 20 confirmed gone"


def test_guard_keeps_unconfirmed_users_when_the_service_stops_answering():
    d = Directory(count=20)
    d.down = True
    old = table(*range(20000, 20020))
    new = table(*range(20000, 20019))
    got, verdict = guard_reload(old, new, d.by_uid)
    assert got == old
    assert "1 kept unconfirmed" in verdict


def test_local_users_take_their_groups_from_the_files(tmp_path, monkeypatch):
    """
    If a user is in /etc/passwd, then its probe's groups come from the
    files (primary gid, then every group listing it), never from the
    name service; any other user's are looked up first (L{lookup}, in a
    lookup thread) and then only read by the probe; a lookup that failed
    gives the home's group once, and is asked again.
    """
    from hlfs.homes import credentials as module
    from hlfs.homes.nss import FilesAccounts

    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:1001:100::/h/a:/bin/sh\n")
    (tmp_path / "group").write_text("users:x:100:\nstaff:x:50:alice,bob\nwheel:x:10:root,alice\n")
    asked = []

    def nss_credentials(name, uid):
        asked.append(name)
        if name == b"down":
            raise OSError(errno.ENOENT, "getpwnam_r: No such file or directory")
        return uid, 20000, (20000, 20500)

    monkeypatch.setattr(module, "_nss_credentials", nss_credentials)
    credentials = module.Credentials(files=FilesAccounts(str(tmp_path / "passwd"),
                                                         str(tmp_path / "group")))

    def settled(user, home):
        return module.settle(credentials.plan(user, home))[0]

    def lookup(user):
        credentials.looked_up(user, credentials.lookup(user))

    alice, root = User(b"alice", 1001, b"/h/a"), User(b"root", 0, b"/root")
    assert not credentials.needs_lookup(alice) and not credentials.needs_lookup(root)
    assert settled(alice, b"/h/a") == (1001, 100, (100, 50, 10))
    assert settled(root, b"/root") == (0, 0, (0, 10))
    luser = User(b"luser", 20001, b"/h/l")
    assert credentials.needs_lookup(luser)
    lookup(luser)
    assert not credentials.needs_lookup(luser)
    assert settled(luser, b"/h/l") == (20001, 20000, (20000, 20500))
    home = os.fsencode(tmp_path)
    down = User(b"down", 20002, home)
    lookup(down)
    assert not credentials.needs_lookup(down)
    assert settled(down, home) == (20002, os.stat(home).st_gid, ())
    assert credentials.needs_lookup(down)
    assert asked == [b"luser", b"down"]


def test_groups_found_before_a_reload_stand_in_until_asked_again(tmp_path, monkeypatch):
    """
    If a directory user's groups were found before a reload (L{forget}),
    then its probe uses them at once, without asking, while they are
    asked for again (L{lookup}): through failures of the name service and
    further reloads, until an answer replaces them.
    """
    from hlfs.homes import credentials as module
    from hlfs.homes.nss import FilesAccounts

    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "group").write_text("wheel:x:10:root\n")
    groups = {b"luser": (20001, 20000, (20000, 20500))}
    asked = []

    def nss_credentials(name, uid):
        asked.append(name)
        found = groups[name]
        if found is None:
            raise OSError(errno.ENOENT, "getpwnam_r: No such file or directory")
        return found

    monkeypatch.setattr(module, "_nss_credentials", nss_credentials)
    credentials = module.Credentials(files=FilesAccounts(str(tmp_path / "passwd"),
                                                         str(tmp_path / "group")))

    def settled(user, home):
        return module.settle(credentials.plan(user, home))[0]

    def lookup(user):
        credentials.looked_up(user, credentials.lookup(user))

    luser, other = User(b"luser", 20001, b"/h/l"), User(b"other", 20001, b"/h/l")
    lookup(luser)
    credentials.forget()
    assert credentials.needs_lookup(luser)
    assert credentials.known_before(luser) and not credentials.known_before(other)
    assert settled(luser, b"/h/l") == (20001, 20000, (20000, 20500))
    groups[b"luser"] = None  # the directory is down
    lookup(luser)
    credentials.forget()
    assert settled(luser, b"/h/l") == (20001, 20000, (20000, 20500))
    assert credentials.needs_lookup(luser)
    assert asked == [b"luser", b"luser"]
    groups[b"luser"] = (20001, 20000, (20000,))
    lookup(luser)
    assert not credentials.needs_lookup(luser)
    assert settled(luser, b"/h/l") == (20001, 20000, (20000,))


@pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities")
def test_resolver_asks_for_users_the_table_lacks(rt, homes):
    """
    If a uid or an HLFS_GID caller's name is not in the table, then the
    resolver asks the lookups and answers with the user's checked home;
    a reload its guard refuses keeps the table and says so in the status.
    """
    from hlfs.core.resolver import SpoolRules
    from hlfs.homes.resolver import HomeResolver

    local = homes.add("local")
    extra = homes.add("extra")
    listed = UserTable([u for u in homes.users if u[1] == local])
    found = {extra: Account(b"extra", extra, extra, os.fsencode(homes.spool("extra")[:-11]))}
    asked = []

    def by_uid(uid):
        asked.append(uid)
        return found.get(uid)

    def by_name(name):
        return next((a for a in found.values() if a.name == name), None)

    clock = task.Clock()
    engine = started_engine(rt, 2, clock=clock, stuck_after=5.0)
    lookup_pool = LookupThreads(2, rt.reactor, clock=clock)
    lookups = UserLookups(lookup_pool, by_uid, by_name, clock, deadline=5.0)
    verdicts = iter([(None, "refused: the name service listed 0 users")])

    def guard(old, new):
        table, verdict = next(verdicts)
        return (old if table is None else table), verdict

    resolver = HomeResolver(listed, SpoolRules(b".mailspool", os.fsencode(homes.alt)), clock,
                            engine, deadline=5.0, lookups=lookups, reload_guard=guard,
                            reactor=rt.reactor)
    lookup_pool.start()
    try:
        assert rt.call(resolver.resolve, extra).target == homes.spool("extra")
        assert rt.call(resolver.resolve, extra).target == homes.spool("extra")
        assert rt.call(resolver.resolve, 49999).target == os.fsencode(homes.alt)
        assert asked == [extra, 49999]
        assert rt.call(resolver.find_mailbox, b"extra").target == homes.spool("extra") + b"/extra"
        assert rt.call(resolver.find_mailbox, b"nobody-here") is None
        assert [u.uid for u in resolver.learned_users()] == [extra]
        assert rt.call(resolver.reload, lambda: UserTable([])) is None
        assert resolver.table is listed
        pairs = dict(rt.call(resolver.status))
        assert pairs["last_reload_verdict"] == "refused: the name service listed 0 users"
        assert pairs["reloads_kept_previous"] == 1
        assert pairs["users_looked_up"] == 1
    finally:
        stop_engine(rt, engine)
        rt.call(lookup_pool.stop)


def test_learned_users_dropped_keep_the_others_state():
    """
    If a learned user is dropped, then the others keep their entries,
    names and state, and the count of users to confirm follows.
    """
    from hlfs.homes.state import CHECKED, UNCONFIRMED, LearnedState

    learned = LearnedState(0)
    for n in range(3):
        learned.add(User(b"u%d" % n, 20000 + n, b"/h/u%d" % n), 100 + n)
    learned.status[2] = CHECKED
    learned.mark_unconfirmed()
    assert learned.unconfirmed() == 3
    learned.drop(20000)
    assert [u.uid for u in learned] == [20002, 20001]
    i = learned.index_of(20002)
    assert (learned.by_name(b"u2"), learned.status[i], learned.changed[i]) == \
        (User(b"u2", 20002, b"/h/u2"), CHECKED | UNCONFIRMED, 102)
    assert learned.by_name(b"u0") is None and learned.index_of(20000) == -1
    learned.status[learned.index_of(20001)] &= ~UNCONFIRMED
    assert learned.unconfirmed() == 1
    learned.drop(20002)
    learned.drop(20002)
    assert ([u.name for u in learned], learned.unconfirmed()) == ([b"u1"], 0)


class Reloading:
    """
    A resolver whose table lists one local user, and a directory user
    C{luser} found through C{directory} (a L{Directory}), on a test
    clock; C{reload()} makes an accepted reload of the same table.
    """

    def __init__(self, rt, homes, directory):
        from hlfs.core.resolver import SpoolRules
        from hlfs.homes.resolver import HomeResolver

        self.rt = rt
        self.homes = homes
        local = homes.add("local")
        self.uid = homes.add("luser")
        self.listed = [u for u in homes.users if u[1] == local]
        directory.users = {self.uid: self.account(homes.spool("luser"))}
        self.directory = directory
        self.clock = task.Clock()
        self.engine = started_engine(rt, 2, clock=self.clock, stuck_after=5.0)
        self.lookup_pool = LookupThreads(2, rt.reactor, clock=self.clock)
        self.lookups = UserLookups(self.lookup_pool, directory.by_uid, directory.by_name,
                                   self.clock, deadline=5.0)
        self.resolver = HomeResolver(
            UserTable(self.listed), SpoolRules(b".mailspool", os.fsencode(homes.alt)),
            self.clock, self.engine, deadline=5.0, lookups=self.lookups, reactor=rt.reactor,
        )
        self.lookup_pool.start()

    def account(self, spool):
        return Account(b"luser", self.uid, self.uid, spool[:-len(b"/.mailspool")])

    def resolve(self):
        """
        The answer for C{luser}, which must come at once (no waiting for
        the name service or a home check).
        """
        answer = self.rt.begin(self.resolver.resolve, self.uid)
        assert isinstance(answer, Resolution), "the caller waited"
        return answer

    def reload(self):
        assert self.rt.call(self.resolver.reload, lambda: UserTable(self.listed)) is not None

    def settled(self):
        wait_for(lambda: self.rt.call(self.lookup_pool.count) == 0)

    def source(self):
        return dict(self.rt.call(self.resolver.user_source))

    def stop(self):
        stop_engine(self.rt, self.engine)
        self.rt.call(self.lookup_pool.stop)


@pytest.fixture
def reloading(rt, homes):
    made = []

    def make(directory):
        s = Reloading(rt, homes, directory)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities")


@needs_root
def test_a_reload_keeps_a_found_user_while_the_name_service_cannot_answer(reloading, rt):
    """
    If a user found one by one is asked for after an accepted reload
    while the name service fails or hangs, then it is answered at once
    with its home, as before the reload (never the alternate spool),
    with its home check kept; the confirmation's failure is counted and
    asked again at the next call a second later.
    """
    d = Directory()
    s = reloading(d)
    home = s.homes.spool("luser")
    first = rt.result(rt.begin(s.resolver.resolve, s.uid))
    assert first.target == home
    probes = s.engine.started_count
    s.reload()
    d.down = True
    with LogCapture("hlfs.users") as logs:
        assert s.resolve() == first
        s.settled()
    assert logs.matching(f"could not be asked for uid {s.uid}", "found before the reload is kept")
    assert s.lookups.stats.errors == 1
    assert s.source()["users_to_confirm"] == 1
    assert s.resolve() == first
    s.settled()
    # Within a second of the failure the name service is not asked again.
    assert (d.asked, s.lookups.stats.errors) == ([s.uid] * 2, 1)
    rt.call(s.clock.advance, 1.0)
    assert s.resolve() == first
    s.settled()
    assert (d.asked, s.lookups.stats.errors) == ([s.uid] * 3, 2)
    # Hung: served at once while the confirmation waits, counted late.
    rt.call(s.clock.advance, 1.0)
    d.down = False
    d.gate.clear()
    try:
        assert s.resolve() == first
        rt.call(s.clock.advance, 6)
        assert s.resolve() == first
        assert rt.call(s.lookup_pool.count) == 1
    finally:
        d.gate.set()
    s.settled()
    assert s.lookups.stats.late == 1
    assert s.source()["users_to_confirm"] == 0
    assert s.resolve() == first
    assert s.engine.started_count == probes
    assert len(d.asked) == 4


@needs_root
def test_a_reload_drops_a_found_user_the_name_service_no_longer_knows(reloading, rt):
    """
    If the confirmation after an accepted reload says "no such user",
    then the user is dropped: its next answer is the alternate spool,
    with a later link time.
    """
    d = Directory()
    s = reloading(d)
    first = rt.result(rt.begin(s.resolver.resolve, s.uid))
    s.reload()
    del d.users[s.uid]
    with LogCapture("hlfs.probe") as logs:
        assert s.resolve() == first
        s.settled()
    assert logs.matching("luser", f"uid {s.uid}", "no longer known")
    gone = s.resolve()
    assert gone.target == os.fsencode(s.homes.alt)
    assert gone.changed > first.changed
    assert rt.call(s.resolver.learned_users) == []
    assert s.source()["users_to_confirm"] == 0
    assert rt.call(s.resolver.find_mailbox, b"luser") is None


@needs_root
def test_a_reload_takes_the_changed_home_of_a_found_user(reloading, rt):
    """
    If the confirmation after an accepted reload finds another home,
    then the user's next answer is the new home, checked afresh, with a
    later link time.
    """
    d = Directory()
    s = reloading(d)
    first = rt.result(rt.begin(s.resolver.resolve, s.uid))
    s.reload()
    moved = os.path.join(s.homes.base, "moved")
    os.makedirs(moved)
    os.chown(moved, s.uid, s.uid)
    d.users[s.uid] = s.account(os.fsencode(moved) + b"/.mailspool")
    probes = s.engine.started_count
    with LogCapture("hlfs.probe") as logs:
        assert s.resolve() == first
        s.settled()
    assert logs.matching(f"changed uid {s.uid}", f"(home {moved})", "checked afresh")
    now = rt.result(rt.begin(s.resolver.resolve, s.uid))
    assert now.target == os.fsencode(moved) + b"/.mailspool"
    assert now.changed > first.changed
    assert s.engine.started_count == probes + 1
    assert [u.home for u in rt.call(s.resolver.learned_users)] == [os.fsencode(moved)]
    assert rt.call(s.resolver.find_mailbox, b"luser").target == \
        os.fsencode(moved) + b"/.mailspool/luser"
