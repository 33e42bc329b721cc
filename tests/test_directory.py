"""
Directory users through a real C{twistd hlfs}: slapd with 1,000
posixAccount users, nslcd and glibc's NSS in a private mount namespace
(L{tests.directory_world}), and the link asked for over NFS on the wire
(C{hlfs resolve}, and this module's own blocking RPC calls).

Each scenario asserts exact link values: a directory user's home, a
local user's home, or the alternate spool.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.directory_world import (
    DirectoryServer, DirectoryWorld, directory_name, directory_uid, missing_parts,
)
from tests.rpcsock import cred, lookup3, mount_root, readlink3

pytestmark = [
    pytest.mark.skipif(missing_parts() is not None, reason=str(missing_parts())),
    pytest.mark.timeout(300),
]

DEADLINE = 1.0


def link(srv, uid, gid=None):
    """
    What C{home} reads for C{uid}: MOUNT, LOOKUP and READLINK over UDP.
    """
    c = cred(uid, gid)
    root = mount_root(srv.port, c)
    status, fh, _ = lookup3(srv.port, root, b"home", c)
    assert status == 0, status
    status, target = readlink3(srv.port, fh, c)
    assert status == 0, status
    return os.fsdecode(target)


def timed_link(srv, uid):
    start = time.monotonic()
    target = link(srv, uid)
    return target, time.monotonic() - start


def home_of(world, n):
    return f"{world.homes}/{directory_name(n)}/.mailspool"


def local_home(world, name):
    return f"{world.homes}/{name}/.mailspool"


def status(srv):
    from tests.conftest import BIN

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


@pytest.fixture(scope="module")
def unlisted():
    w = DirectoryWorld(count=1000, enumerate=False)
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
    assert link(srv, 0) == local_home(world, "root")
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
    from tests.conftest import HLFS_GID

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


def test_slapd_frozen(serve):
    """
    If slapd is frozen (SIGSTOP), then local users, also ones never
    asked for before (their probe's groups come from the files), and
    directory users already known keep their homes within the deadline,
    even while many new directory users are being looked up; a new
    directory user gets the alternate spool at the deadline, and its
    home once slapd thaws.
    """
    world = DirectoryWorld(count=50, enumerate=False)
    try:
        srv = serve(world)
        assert link(srv, directory_uid(1)) == home_of(world, 1)
        assert link(srv, 1001) == local_home(world, "alice")
        world.slapd.freeze()
        try:
            target, took = timed_link(srv, directory_uid(1))
            assert (target, took < DEADLINE) == (home_of(world, 1), True)
            # Twelve new directory users at once, then local users.
            newcomers = []
            threads = [
                threading.Thread(target=lambda n=n: newcomers.append(link(srv, directory_uid(n))))
                for n in range(10, 22)
            ]
            for t in threads:
                t.start()
            time.sleep(0.2)
            for uid, name in ((0, "root"), (1002, "bob"), (1001, "alice")):
                target, took = timed_link(srv, uid)
                assert (target, took < DEADLINE) == (local_home(world, name), True)
            for t in threads:
                t.join(30)
            assert newcomers == [str(world.alt)] * 12
            target, took = timed_link(srv, directory_uid(2))
            assert target == str(world.alt)
            assert DEADLINE * 0.8 <= took < DEADLINE + 1.0
        finally:
            world.slapd.thaw()
        wait_until(lambda: link(srv, directory_uid(2)) == home_of(world, 2),
                   what="the directory user's home after the thaw")
        assert link(srv, directory_uid(15)) == home_of(world, 15)
    finally:
        world.close()


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
    # A real directory user is still found after the burst.
    assert link(srv, directory_uid(3)) == home_of(world, 3)
