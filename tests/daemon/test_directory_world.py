"""
The directory test world itself: a real slapd, the real glibc name
service through nslcd and libnss-ldapd, visible inside a private mount
namespace only.
"""

import hashlib
import sys
import time

import pytest

from tests.support.directory import (
    DirectoryServer, DirectoryWorld, directory_name, directory_uid, missing_parts,
)

pytestmark = pytest.mark.skipif(missing_parts() is not None, reason=str(missing_parts()))


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def world():
    before = digest("/etc/nsswitch.conf"), digest("/etc/passwd")
    w = DirectoryWorld(count=1000)
    yield w
    w.close()
    assert (digest("/etc/nsswitch.conf"), digest("/etc/passwd")) == before


def test_directory_users_resolve_inside_only(world):
    """
    If a directory user is asked for inside the namespace, then the
    directory answers; outside, the machine's own name service does not
    know it.
    """
    inside = world.getent("passwd", "luser00001")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split(":")[2] == str(directory_uid(1))
    assert inside.stdout.strip().endswith(f"{world.homes}/luser00001:/bin/sh")
    by_uid = world.getent("passwd", str(directory_uid(1000)))
    assert by_uid.stdout.split(":")[0] == directory_name(1000)
    assert world.getent("passwd", "luser00001", inside=False).returncode == 2
    # The test's own local users are inside only too.
    assert world.getent("passwd", "alice").stdout.split(":")[5] == f"{world.homes}/alice"


def test_enumeration_lists_every_user(world):
    """
    If enumeration is on and slapd has no size limit, then C{getent
    passwd} lists the local users and all 1,000 directory users.
    """
    listed = world.getent("passwd").stdout.splitlines()
    assert sum(line.startswith("luser") for line in listed) == 1000
    assert sum(not line.startswith("luser") for line in listed) == 5


def test_searches_are_counted(world):
    """
    If a user is looked up, then slapd's log shows the search for it.
    """
    before = len(world.slapd.searches(f"(uidNumber={directory_uid(7)})"))
    world.getent("passwd", str(directory_uid(7)))
    time.sleep(0.2)  # slapd writes its log line after answering
    assert len(world.slapd.searches(f"(uidNumber={directory_uid(7)})")) == before + 1


SSSD = pytest.mark.skipif(missing_parts("sssd") is not None, reason=str(missing_parts("sssd")))

#: Asks the name service for uids the way the daemon does (getpwuid_r),
#: one line per uid: found, not found, or could not ask.
ASK = """
import sys
from hlfs.homes.nss import NameServiceUnavailable, account_by_uid
for uid in map(int, sys.argv[1:]):
    try:
        print("found" if account_by_uid(uid) else "not found")
    except NameServiceUnavailable:
        print("could not ask")
"""


def ask(world, *uids):
    out = world.namespace.run([sys.executable, "-c", ASK, *map(str, uids)])
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("nss", ["nslcd", pytest.param("sssd", marks=SSSD)])
def test_enumeration_off(nss):
    """
    If nslcd (or sssd) does not enumerate, then C{getent passwd} lists only the
    local users, while a directory user is still found by name and uid.
    """
    w = DirectoryWorld(count=20, enumerate=False, nss=nss)
    try:
        listed = w.getent("passwd").stdout.splitlines()
        assert [line.split(":")[0] for line in listed] == ["root", "daemon", "alice", "bob", "nobody"]
        assert w.getent("passwd", "luser00020").returncode == 0
        assert w.getent("passwd", str(directory_uid(3))).stdout.startswith("luser00003:")
    finally:
        w.close()


def test_size_limit_cuts_enumeration():
    """
    If slapd's size limit is 500, then enumerating 1,000 directory users
    yields at most 500 of them, and the rest are still found one by one.
    """
    w = DirectoryWorld(count=1000, size_limit=500)
    try:
        listed = w.getent("passwd").stdout.splitlines()
        assert sum(line.startswith("luser") for line in listed) <= 500
        assert w.getent("passwd", "luser01000").returncode == 0
    finally:
        w.close()


def test_slapd_stopped_frozen_and_back():
    """
    If slapd stops, then directory users are not found and local ones
    are; once it is back, they are found again.  If slapd is frozen,
    then a local user still answers at once.
    """
    w = DirectoryWorld(count=5)
    try:
        w.slapd.stop()
        assert w.getent("passwd", "luser00001").returncode != 0
        assert w.getent("passwd", "alice").returncode == 0
        w.slapd.start()
        deadline = time.monotonic() + 15
        while w.getent("passwd", "luser00001").returncode != 0:
            assert time.monotonic() < deadline, "nslcd did not reconnect"
            time.sleep(0.5)
        w.slapd.freeze()
        started = time.monotonic()
        assert w.getent("passwd", "alice").returncode == 0
        assert time.monotonic() - started < 1.0
        w.slapd.thaw()
    finally:
        w.close()


def test_daemon_runs_in_the_namespace(world):
    """
    If hlfs runs in the namespace with the name service enumerating the
    directory, then a directory user's link points into its home and a
    local user's too.
    """
    srv = DirectoryServer(world).start()
    try:
        assert srv.resolve(directory_uid(42)) == f"{world.homes}/{directory_name(42)}/.mailspool"
        assert srv.resolve(1001) == f"{world.homes}/alice/.mailspool"
        assert srv.resolve(29999) == str(world.alt)
    finally:
        srv.stop()
    assert "Traceback" not in srv.logtext(), srv.logtext()


@pytest.mark.parametrize("nss", ["nslcd", pytest.param("sssd", marks=SSSD)])
def test_slapd_stopped_answers(nss):
    """
    If slapd stops, then nslcd says it could not ask, for every user;
    sssd answers a directory user it has seen from its own cache
    (offline mode) and one it has not as a clean "no such user", the
    very answer it gives for a user that does not exist: through the
    name service the two cannot be told apart.  Once slapd is back, both
    find the user.
    """
    w = DirectoryWorld(count=5, enumerate=False, nss=nss)
    try:
        seen, unseen, ghost = directory_uid(1), directory_uid(2), 29999
        assert ask(w, seen, ghost) == ["found", "not found"]
        w.slapd.stop()
        if nss == "sssd":
            assert ask(w, seen, unseen, ghost) == ["found", "not found", "not found"]
        else:
            assert ask(w, seen, unseen, ghost) == ["could not ask"] * 3
        w.slapd.start()
        deadline = time.monotonic() + 30
        while ask(w, unseen) != ["found"]:
            assert time.monotonic() < deadline, f"{nss} did not find the user once slapd was back"
            time.sleep(0.5)
    finally:
        w.close()
