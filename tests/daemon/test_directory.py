"""
Directory users through a real C{twistd hlfs}: slapd with 1,000
posixAccount users, nslcd and glibc's NSS in a private mount namespace
(L{tests.support.directory}), and the link asked for over NFS on the wire
(C{hlfs resolve}, and this module's own blocking RPC calls).

Each scenario asserts exact link values: a directory user's home, a
local user's home, or the alternate spool.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.directory import (
    DirectoryServer, DirectoryWorld, directory_name, directory_uid, missing_parts,
)
from tests.support.mail import SENDMAIL, hlfs_command
from tests.support.rpcsock import cred, lookup3, mount_root, readlink3
from tests.support.server import BIN, HLFS_GID

pytestmark = [
    pytest.mark.skipif(missing_parts() is not None, reason=str(missing_parts())),
    pytest.mark.timeout(300),
]

#: The NSS daemons in front of slapd for the enumeration-off scenarios
#: (sssd's default is not to enumerate); nslcd alone for the others.
#: Runs C{hlfs lostmail} with its clock fixed.
LOSTMAIL_AT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "support", "lostmail_at.py")

NSS = [
    "nslcd",
    pytest.param("sssd", marks=pytest.mark.skipif(
        missing_parts("sssd") is not None, reason=str(missing_parts("sssd")))),
]

DEADLINE = 1.0


def link(srv, uid, gid=None, name=b"home"):
    """
    What link C{name} reads for C{uid}: MOUNT, LOOKUP and READLINK over UDP.
    """
    c = cred(uid, gid)
    root = mount_root(srv.port, c)
    status, fh, _ = lookup3(srv.port, root, name, c)
    assert status == 0, status
    status, target = readlink3(srv.port, fh, c)
    assert status == 0, status
    return os.fsdecode(target)


def own_link(srv, uid):
    """
    A user's own link; for root with gid HLFS_GID, which sees every
    user's mailbox link (Table 2), root's own mailbox link.
    """
    if uid == 0:
        return link(srv, 0, HLFS_GID, name=b"root")
    return link(srv, uid)


def counters(srv, *names):
    pairs = status(srv)
    return tuple(int(pairs[name]) for name in names)


def home_of(world, n):
    return f"{world.homes}/{directory_name(n)}/.mailspool"


def local_home(world, name):
    return f"{world.homes}/{name}/.mailspool"


def local_links(world):
    """
    C{(uid, what own_link should read)} for root and two local users.
    """
    return [(0, local_home(world, "root") + "/root"),
            (1002, local_home(world, "bob")), (1001, local_home(world, "alice"))]


def status(srv):
    out = subprocess.run(
        [str(BIN / "hlfs"), "status", "--server", f"127.0.0.1:{srv.port}"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    pairs = {}
    for line in out.stdout.splitlines():
        name, _, value = line.partition(" ")
        pairs[name] = value.strip()
    return pairs


def wait_until(predicate, timeout=20.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def serve():
    started = []

    def start(world, *args):
        srv = DirectoryServer(world, ["--probe-deadline", str(DEADLINE), *args]).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        assert "Traceback" not in srv.logtext(), srv.logtext()


@pytest.fixture(scope="module")
def enumerating():
    w = DirectoryWorld(count=1000)
    yield w
    w.close()


@pytest.fixture(scope="module", params=NSS)
def unlisted(request):
    w = DirectoryWorld(count=1000, enumerate=False, nss=request.param)
    yield w
    w.close()


def test_enumeration_on(enumerating, serve):
    """
    If the directory lists all its users, then they all come from the
    table: their homes, and no per-user query.
    """
    world = enumerating
    srv = serve(world)
    before = len(world.slapd.searches("uidNumber="))
    assert srv.resolve(directory_uid(1)) == home_of(world, 1)
    assert link(srv, directory_uid(1000)) == home_of(world, 1000)
    assert link(srv, 1001) == local_home(world, "alice")
    assert link(srv, 0) == "."
    assert link(srv, 0, HLFS_GID, name=b"root") == local_home(world, "root") + "/root"
    assert srv.resolve(31000) == str(world.alt)
    pairs = status(srv)
    assert pairs["users_table"] == "1005"
    assert pairs["users_source"] == "NSS"
    assert pairs["users_looked_up"] == "0"
    # One query for uid 31000 only (not a table user).
    time.sleep(0.2)
    assert [f for f in world.slapd.searches("uidNumber=")[before:] if "31000" not in f] == []


def test_enumeration_off(unlisted, serve):
    """
    If the directory does not enumerate, then a directory user is looked
    up by uid and gets its home, at once and then from the cache, and
    an HLFS_GID caller finds its mailbox link by name.
    """
    world = unlisted
    srv = serve(world)
    assert "loaded 5 users" in srv.logtext()
    uid = directory_uid(17)
    before = len(world.slapd.searches(f"(uidNumber={uid})"))
    assert srv.resolve(uid) == home_of(world, 17)
    assert srv.resolve(uid) == home_of(world, 17)
    time.sleep(0.2)
    assert len(world.slapd.searches(f"(uidNumber={uid})")) == before + 1
    name = directory_name(18)
    assert srv.resolve(0, gid=HLFS_GID, name=name) == f"{world.homes}/{name}/.mailspool/{name}"
    assert srv.resolve(31001) == str(world.alt)
    pairs = status(srv)
    assert pairs["users_table"] == "5"
    assert int(pairs["users_looked_up"]) >= 2
    assert pairs["users_not_found_cached"] == "1"


def test_size_limit(serve):
    """
    If slapd cuts the list at 500 entries, then users past the limit
    are looked up one by one and get their homes.
    """
    world = DirectoryWorld(count=1000, size_limit=500)
    try:
        srv = serve(world)
        table = int(status(srv)["users_table"])
        assert table <= 505
        assert srv.resolve(directory_uid(1)) == home_of(world, 1)
        assert srv.resolve(directory_uid(1000)) == home_of(world, 1000)
        assert srv.resolve(directory_uid(777)) == home_of(world, 777)
    finally:
        world.close()


def test_slapd_stopped_then_reload_then_back(serve):
    """
    If slapd is down during a reload, then the reload is refused with a
    warning naming the numbers and every directory user keeps its home;
    a directory user looked up meanwhile gets the alternate spool and
    is not remembered as missing: once slapd is back, it gets its home.
    """
    world = DirectoryWorld(count=200, size_limit=100)
    try:
        srv = serve(world)
        assert srv.resolve(directory_uid(5)) == home_of(world, 5)
        assert srv.resolve(directory_uid(150)) == home_of(world, 150)  # looked up
        world.slapd.stop()
        mark = len(srv.logtext())
        srv.signal(signal.SIGHUP)
        srv.wait_for_log("reload", start=mark)
        wait_until(lambda: "keeping the previous table" in srv.logtext()[mark:], what="the refusal")
        assert "listed 5 users, 100 of the 105 loaded missing" in srv.logtext()[mark:]
        assert status(srv)["last_reload_verdict"].startswith("refused")
        assert srv.resolve(directory_uid(5)) == home_of(world, 5)
        assert srv.resolve(1001) == local_home(world, "alice")
        assert srv.resolve(directory_uid(160)) == str(world.alt)
        assert int(status(srv)["directory_errors"]) >= 1
        world.slapd.start()
        wait_until(lambda: srv.resolve(directory_uid(160)) == home_of(world, 160),
                   what="the directory user's home once slapd is back")
    finally:
        world.close()


@pytest.mark.parametrize("nss", NSS)
def test_slapd_frozen(serve, nss):
    """
    If slapd is frozen (SIGSTOP), then local users, also ones never
    asked for before (their probe's groups come from the files), and
    directory users already known keep their homes (an answer that
    waited for the frozen directory would be the alternate spool, at the
    deadline), even while many new directory users are being looked up;
    a new directory user gets the alternate spool while its lookup is
    still in flight, and its home once slapd thaws.
    (sssd's own LDAP timeouts, 6-8 s, are longer than the freeze: it is
    still waiting when slapd thaws, and answers.)
    """
    world = DirectoryWorld(count=50, enumerate=False, nss=nss)
    try:
        srv = serve(world)
        assert link(srv, directory_uid(1)) == home_of(world, 1)
        assert link(srv, 1001) == local_home(world, "alice")
        world.slapd.freeze()
        try:
            assert own_link(srv, directory_uid(1)) == home_of(world, 1)
            started, in_flight = counters(srv, "user_lookups_started", "user_lookups_in_flight")
            assert own_link(srv, directory_uid(2)) == str(world.alt)
            assert counters(srv, "user_lookups_started", "user_lookups_in_flight") == \
                (started + 1, in_flight + 1)
            # Twelve new directory users at once (more than the lookup
            # threads), then local users.
            newcomers = []
            threads = [
                threading.Thread(target=lambda n=n: newcomers.append(link(srv, directory_uid(n))))
                for n in range(10, 22)
            ]
            for t in threads:
                t.start()
            time.sleep(0.2)
            for uid, expected in local_links(world):
                assert own_link(srv, uid) == expected
            for t in threads:
                t.join(30)
            assert newcomers == [str(world.alt)] * 12
            # Every lookup thread is stuck now: a new user is answered at
            # once, its lookup refused, not queued behind the stuck ones.
            started, refused = counters(srv, "user_lookups_started", "user_lookups_refused")
            assert own_link(srv, directory_uid(30)) == str(world.alt)
            # (LOOKUP and READLINK each ask, and each is refused.)
            now_started, now_refused = counters(srv, "user_lookups_started", "user_lookups_refused")
            assert (now_started, now_refused > refused) == (started, True)
        finally:
            world.slapd.thaw()
        wait_until(lambda: link(srv, directory_uid(2)) == home_of(world, 2),
                   what="the directory user's home after the thaw")
        assert link(srv, directory_uid(15)) == home_of(world, 15)
    finally:
        world.close()


def test_slapd_frozen_with_listed_users(enumerating, serve):
    """
    If slapd freezes while twelve listed directory users are checked at
    once (more than the probe threads), then their group lookups hold
    lookup threads, never probe threads: root and the local users are
    answered their homes (not the alternate spool the deadline would
    give), and the directory users get theirs once slapd thaws.
    """
    world = enumerating
    srv = serve(world)
    world.slapd.freeze()
    try:
        answers = []
        threads = [
            threading.Thread(target=lambda n=n: answers.append(link(srv, directory_uid(n))))
            for n in range(100, 112)
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)
        for uid, expected in local_links(world):
            assert own_link(srv, uid) == expected
        for t in threads:
            t.join(30)
        assert answers == [str(world.alt)] * 12
    finally:
        world.slapd.thaw()
    # Each user's home once its lookup is answered again: a lookup that
    # failed during the freeze is retried a second later at the earliest,
    # and its user gets the alternate spool until then.
    homes = [home_of(world, n) for n in range(100, 112)]
    wait_until(lambda: [link(srv, directory_uid(n)) for n in range(100, 112)] == homes,
               what="the directory users' homes after the thaw")


def answered_in_time(srv, uid):
    """
    What C{uid}'s own link reads, asserting it came within the deadline.
    """
    started = time.monotonic()
    target = own_link(srv, uid)
    assert time.monotonic() - started < DEADLINE, f"uid {uid} waited for the directory"
    return target


def reloaded(srv, mark, users=5):
    srv.wait_for_log(f"reloaded {users} users from NSS", start=mark)


def test_known_directory_users_survive_a_reload_then_slapd_stopped(serve):
    """
    If the directory does not enumerate, then the directory users whose
    homes are known keep them across an accepted reload (SIGHUP, which
    also flushes the home checks) even when slapd stops right after it:
    they are answered their homes in time, waiting for no lookup, and the
    failed confirmations count as directory errors.  Once slapd is back,
    a user deleted from it meanwhile gets the alternate spool after its
    confirmation, and the others are confirmed.
    """
    world = DirectoryWorld(count=20, enumerate=False)
    try:
        srv = serve(world)
        kept, deleted = directory_uid(3), directory_uid(4)
        assert link(srv, kept) == home_of(world, 3)
        assert link(srv, deleted) == home_of(world, 4)
        mark = len(srv.logtext())
        srv.signal(signal.SIGHUP)
        reloaded(srv, mark)
        assert status(srv)["last_reload_verdict"] == "accepted"
        assert status(srv)["users_to_confirm"] == "2"
        srv.signal(signal.SIGUSR1)
        dump = world.base / "hlfs-dump.txt"
        wait_until(dump.exists, what="the dump")
        lines = dump.read_text().splitlines()
        # (unverified: SIGHUP flushed the home checks.)
        assert [line.split("\t")[4] for line in lines
                if line.startswith((f"{kept}\t", f"{deleted}\t"))] == ["unverified+to-confirm"] * 2
        assert "# users_to_confirm\t2" in lines
        world.slapd.stop()
        errors = int(status(srv)["directory_errors"])
        assert answered_in_time(srv, kept) == home_of(world, 3)
        assert answered_in_time(srv, deleted) == home_of(world, 4)
        wait_until(lambda: int(status(srv)["directory_errors"]) > errors,
                   what="the failed confirmations")
        assert answered_in_time(srv, kept) == home_of(world, 3)
        assert status(srv)["users_to_confirm"] == "2"

        world.slapd.start()
        world.delete_user(4)
        assert world.getent("passwd", str(deleted)).returncode == 2
        wait_until(lambda: own_link(srv, deleted) == str(world.alt),
                   what="the deleted user's confirmation")
        wait_until(lambda: own_link(srv, kept) == home_of(world, 3)
                   and status(srv)["users_to_confirm"] == "0", what="the confirmation")
        assert own_link(srv, kept) == home_of(world, 3)
        assert "is no longer known to the name service: dropped" in srv.logtext()
    finally:
        world.close()


def test_known_directory_users_survive_a_reload_then_slapd_frozen(serve):
    """
    If slapd freezes after an accepted reload (SIGHUP), then directory
    users whose homes were known before it are answered their homes
    within the deadline, again and again (their confirmations and group
    lookups wait in the lookup threads), also across a further reload;
    they are confirmed once slapd thaws.  (nslcd only: sssd answers them
    from its own cache while slapd is frozen, so a fresh lookup would not
    wait either.)
    """
    world = DirectoryWorld(count=20, enumerate=False)
    try:
        srv = serve(world)
        known = directory_uid(3)
        assert link(srv, known) == home_of(world, 3)
        mark = len(srv.logtext())
        srv.signal(signal.SIGHUP)
        reloaded(srv, mark)
        assert status(srv)["users_to_confirm"] == "1"
        world.slapd.freeze()
        try:
            for _ in range(3):
                assert answered_in_time(srv, known) == home_of(world, 3)
            assert int(status(srv)["user_lookups_in_flight"]) >= 1
            mark = len(srv.logtext())
            srv.signal(signal.SIGHUP)
            reloaded(srv, mark)
            assert answered_in_time(srv, known) == home_of(world, 3)
        finally:
            world.slapd.thaw()
        wait_until(lambda: own_link(srv, known) == home_of(world, 3)
                   and status(srv)["users_to_confirm"] == "0",
                   what="the confirmation after the thaw")
    finally:
        world.close()


def test_one_query_per_unknown_user_while_slapd_is_frozen(unlisted, serve):
    """
    If twelve callers ask for one new directory user while slapd is
    frozen, then one lookup is in flight and one query reaches slapd;
    they all get the alternate spool while it is, and once slapd
    thaws the late answer is kept: the user gets its home with no
    second query.
    """
    world = unlisted
    srv = serve(world)
    uid = directory_uid(400)
    started = int(status(srv)["user_lookups_started"])
    before = len(world.slapd.searches(f"(uidNumber={uid})"))
    world.slapd.freeze()
    try:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(own_link(srv, uid)))
                   for _ in range(12)]
        for t in threads:
            t.start()
        wait_until(lambda: status(srv)["user_lookups_in_flight"] == "1", what="the lookup")
        for t in threads:
            t.join(30)
        pairs = status(srv)
        assert (pairs["user_lookups_in_flight"], int(pairs["user_lookups_started"])) == \
            ("1", started + 1)
        assert answers == [str(world.alt)] * 12
    finally:
        world.slapd.thaw()
    wait_until(lambda: status(srv)["user_lookups_in_flight"] == "0", what="the late answer")
    assert link(srv, uid) == home_of(world, 400)
    time.sleep(0.2)
    assert len(world.slapd.searches(f"(uidNumber={uid})")) == before + 1
    assert int(status(srv)["user_lookups_started"]) == started + 1


def test_burst_of_unknown_uids_is_bounded(unlisted, serve):
    """
    If many distinct unknown uids ask at once, then each is asked of
    the directory at most once, the kept answers stay within their
    bound and the daemon's memory does not grow with them.
    """
    world = unlisted
    srv = serve(world, "--user-cache", "500")
    uids = range(40000, 42000)
    before = len(world.slapd.searches("uidNumber="))

    def rss():
        with open(f"/proc/{srv.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    link(srv, 40000)
    start_rss = rss()
    errors = []

    def ask(chunk):
        try:
            for uid in chunk:
                assert link(srv, uid) == str(world.alt)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(uids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    time.sleep(0.3)
    queries = len(world.slapd.searches("uidNumber=")) - before
    assert queries <= len(uids)
    pairs = status(srv)
    assert int(pairs["users_not_found_cached"]) <= 500
    assert int(pairs["user_lookups_in_flight"]) == 0
    assert rss() - start_rss < 20_000  # kB
    # A real directory user is still found after the burst (at the latest
    # by its lookup's late answer, if the directory is slow to answer it).
    wait_until(lambda: link(srv, directory_uid(3)) == home_of(world, 3),
               what="a directory user's home after the burst")


class Recorder:
    """
    The alternate spool's mail and a recording sendmail (the mail tools'
    tests' own) for C{hlfs lostmail} in the world's namespace.
    """

    def __init__(self, world):
        self.world = world
        self.dir = world.base / "sendmail"
        (self.dir / "out").mkdir(parents=True, exist_ok=True)
        self.sendmail = self.dir / "sendmail"
        self.sendmail.write_text(SENDMAIL.format(python=sys.executable, here=str(self.dir)))
        self.sendmail.chmod(0o755)

    def mailbox(self, name, uid):
        path = self.world.alt / name
        path.write_bytes(
            b"From sender@example.org Mon Nov 23 01:00:00 2026\n"
            b"Subject: for " + name.encode() + b"\n\nhello " + name.encode() + b"\n\n"
        )
        os.chown(path, uid, uid)
        path.chmod(0o600)

    def run(self, *args, now=None):
        """
        Run C{hlfs lostmail}; with C{now}, with its clock fixed there
        (L{tests.support.lostmail_at}).
        """
        command = hlfs_command("lostmail") if now is None else [
            sys.executable, str(LOSTMAIL_AT), "--now", repr(now), "--"]
        return self.world.namespace.run(
            [*command, "--alt-dir", str(self.world.alt), "--state-dir",
             str(self.world.base / "state"), "--sendmail", str(self.sendmail),
             "--syslog-socket", "", "--lock-timeout", "5", *args],
            cwd=self.world.base,
        )

    def recipients(self):
        out = self.dir / "out"
        return [json.loads((out / n).read_text())["argv"][-1]
                for n in sorted(os.listdir(out)) if n.endswith(".json")]


def check(world, *args):
    return world.namespace.run(
        [*hlfs_command("check"), "--mount-point", str(world.base), "--alt-dir", str(world.alt),
         "--group", "hlfs", *args],
        cwd=world.base,
    )


@pytest.mark.parametrize("nss", NSS)
def test_mail_tools_with_enumeration_off_and_the_directory_down(nss):
    """
    If the directory does not enumerate, then C{hlfs lostmail} resends a
    directory user's mail to that user and keeps a nonexistent user's
    until it has been missing for C{--unknown-wait}, then resends it to
    the postmaster; C{hlfs check} says it saw only local users and checks
    a directory user by name.  If the directory is down, then a
    directory user's mail stays, with a log line, and goes to its user
    once the directory is back, never to the postmaster: nslcd says it
    could not ask; sssd (offline) says "no such user" for a user it has
    not cached, which only starts that user's wait.
    """
    world = DirectoryWorld(count=20, enumerate=False, nss=nss)
    try:
        mail = Recorder(world)
        mail.mailbox(directory_name(5), directory_uid(5))
        # A deleted user's mailbox: its owner uid is no user's.
        mail.mailbox("ghost", 39999)
        t0 = float(int(time.time()))  # whole seconds: the record keeps milliseconds
        result = mail.run(now=t0)
        assert result.returncode == 0, result.stderr
        assert mail.recipients() == [directory_name(5)]
        assert "ghost: no such user according to the name service; its mail is kept until " \
            in result.stderr
        assert (world.alt / "ghost").exists()
        # Missing at two runs spanning the (here short) wait, by the
        # remailer's clock: the postmaster's.
        result = mail.run("--unknown-wait", "60", now=t0 + 60)
        assert result.returncode == 0, result.stderr
        assert sorted(mail.recipients()) == [directory_name(5), "postmaster"], result.stderr
        assert "ghost: no such user; resending to postmaster" in result.stderr

        # A name that is no user name is not even asked for: nslcd
        # refuses it, and glibc would report "could not ask".
        mail.mailbox("x+y", directory_uid(5))
        result = mail.run()
        assert "x+y: not a user name; skipped" in result.stderr
        assert "could not be asked" not in result.stderr
        (world.alt / "x+y").unlink()

        out = check(world)
        assert f"5 users seen through the name service (5 local, 0 from {world.nss.source})" in out.stdout
        assert "enumeration is off or the directory did not answer" in out.stdout
        out = check(world, "--user", directory_name(7))
        assert f"user {directory_name(7)}: uid {directory_uid(7)}, home {world.homes}/" \
               f"{directory_name(7)}" in out.stdout
        assert "warning" not in out.stdout
        assert "no such user" in check(world, "--user", "nobody-here").stdout

        world.slapd.stop()
        mail.mailbox(directory_name(6), directory_uid(6))
        result = mail.run()
        if nss == "nslcd":
            assert result.returncode != 0
            assert f"{directory_name(6)}: the name service could not be asked" in result.stderr
            out = check(world, "--user", directory_name(8))
            assert f"user {directory_name(8)}: the name service could not be asked" in out.stdout
        else:
            assert result.returncode == 0, result.stderr
            assert f"{directory_name(6)}: no such user according to the name service; its mail " \
                   "is kept until " in result.stderr
            out = check(world, "--user", directory_name(8))
            assert f"user {directory_name(8)}: no such user, or none in sssd's cache" in out.stdout
        assert sorted(mail.recipients()) == [directory_name(5), "postmaster"]
        assert (world.alt / directory_name(6)).exists()

        world.slapd.start()
        # nslcd answers once slapd does; sssd once it is back online and
        # its negative cache for the user (15 s) has expired.
        deadline = time.monotonic() + 40
        while True:
            result = mail.run("--unknown-wait", "3600")
            if directory_name(6) in mail.recipients() or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stderr
        assert sorted(mail.recipients()) == [directory_name(5), directory_name(6), "postmaster"]
        assert (world.alt / directory_name(6)).stat().st_size == 0  # taken: emptied
    finally:
        world.close()


@pytest.mark.parametrize("nss", NSS)
def test_deliver_defers_while_the_directory_is_down(nss):
    """
    If the directory does not enumerate, then C{hlfs deliver} delivers to
    a directory user by name; if slapd is then down, a delivery that the
    name service cannot answer for exits 75 (the MTA keeps the message),
    with a log line, never 67 (a bounce as "no such user").  sssd answers
    from its cache for a user it has seen, so that delivery goes through.
    """
    world = DirectoryWorld(count=5, enumerate=False, nss=nss)
    try:
        spool = world.base / "deliver-spool"
        spool.mkdir()
        spool.chmod(0o1777)
        name = directory_name(3)

        def deliver(subject):
            return world.namespace.run(
                [*hlfs_command("deliver"), "--spool", str(spool), "-f", "s@example.org", name],
                input=f"Subject: {subject}\n\nhello\n", cwd=world.base)

        first = deliver("one")
        assert first.returncode == 0, first.stderr
        world.slapd.stop()
        second = deliver("two")
        mailbox = (spool / name).read_text()
        if nss == "sssd":
            assert second.returncode == 0, second.stderr
            assert "Subject: two" in mailbox
        else:
            assert second.returncode == 75, second.stderr
            assert f"{name}: the name service could not be asked" in second.stderr
            assert "deferred" in second.stderr
            assert "Subject: two" not in mailbox
        assert "Subject: one" in mailbox
        world.slapd.start()
        third = deliver("three")
        assert third.returncode == 0, third.stderr
        assert "Subject: three" in (spool / name).read_text()
    finally:
        world.close()
