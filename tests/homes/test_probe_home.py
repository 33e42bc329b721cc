"""
The blocking home check (L{hlfs.homes.probe.HomeProbe}, what a check
process runs) and per-thread credentials (L{hlfs.homes.creds}), on real
directories, tmpfs mounts and real uids.  Runs as root: the check takes
the identity of each test user.
"""

import errno
import os
import stat
import subprocess
import threading

import pytest

from hlfs.homes import creds
from hlfs.homes.credentials import Credentials, settle
from hlfs.homes.probe import HomeProbe
from hlfs.homes.records import CheckHome
from hlfs.core.users import User
from tests.support.filesystems import fill, tmpfs
from tests.support.probes import thread_ids

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities"),
    pytest.mark.timeout(60),
]


def probe_in_thread(probe, user, spool, fsync=False):
    """
    Run a check in a thread of its own (its identity is the thread's
    alone, as in a check process), planned as the daemon plans it.
    """
    identity = Credentials().plan(user, spool.rpartition(b"/")[0])
    job = CheckHome(**identity._asdict(), spool=spool, fsync=fsync)
    out = []
    t = threading.Thread(target=lambda: out.append(probe.check(job)[0]))
    t.start()
    t.join(30)
    assert out, "probe did not return"
    return out[0]


def user_of(homes, name):
    for n, uid, home in homes.users:
        if n == name.encode():
            return User(n, uid, home)
    raise KeyError(name)


def snapshot(path):
    """
    Every entry under C{path} with its mode, owner, size and times.
    """
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files + [""]:
            p = os.path.join(root, name)
            st = os.lstat(p)
            found[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


# -- credentials


def test_thread_credentials_are_per_thread():
    """
    Inside L{creds.as_user} the thread has the user's filesystem ids and
    groups; no other thread does, and the process uid never moves; after
    the block the thread is root again.
    """
    main_tid = threading.get_native_id()
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker():
        seen["tid"] = threading.get_native_id()
        with creds.as_user(43210, 43211, [43212, 43213]):
            inside.set()
            release.wait(10)
        seen["after"] = creds.thread_status()

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert inside.wait(10)
        status = creds.thread_status(seen["tid"])
        assert status["Uid"] == (0, 0, 0, 43210)
        assert status["Gid"] == (0, 0, 0, 43211)
        assert status["Groups"] == (43212, 43213)
        for tid in thread_ids():
            if tid == seen["tid"]:
                continue
            other = creds.thread_status(tid)
            assert other["Uid"] == (0, 0, 0, 0), tid
            assert 43212 not in other["Groups"]
        assert creds.thread_status(main_tid)["Uid"] == (0, 0, 0, 0)
        assert os.getuid() == os.geteuid() == 0
    finally:
        release.set()
        t.join(10)
    assert seen["after"]["Uid"] == (0, 0, 0, 0)
    assert seen["after"]["Gid"] == (0, 0, 0, 0)


def test_credentials_restored_after_an_exception():
    def worker():
        with pytest.raises(ZeroDivisionError):
            with creds.as_user(43210, 43211, [43212]):
                1 / 0
        out.append(creds.thread_status())

    out = []
    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert out[0]["Uid"] == (0, 0, 0, 0)
    assert 43212 not in out[0]["Groups"]


def test_run_as_switches_this_thread_only_and_restores():
    """
    L{creds.run_as}, the probe's switch: the function runs with the
    user's ids and groups in its thread alone; after it, and after it
    raises, the thread is root again with its own groups.
    """
    out = {}

    def inside():
        out["inside"] = creds.thread_status()
        out["others"] = [creds.thread_status(tid)["Uid"] for tid in thread_ids()
                         if tid != threading.get_native_id()]
        return "answer"

    def worker():
        out["result"] = creds.run_as(43210, 43211, (43212,), inside)
        out["after"] = creds.thread_status()
        with pytest.raises(ZeroDivisionError):
            creds.run_as(43210, 43211, [43212], lambda: 1 / 0)
        out["after_raise"] = creds.thread_status()

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert out["result"] == "answer"
    assert out["inside"]["Uid"] == (0, 0, 0, 43210)
    assert out["inside"]["Gid"] == (0, 0, 0, 43211)
    assert out["inside"]["Groups"] == (43212,)
    assert all(uid == (0, 0, 0, 0) for uid in out["others"])
    for key in ("after", "after_raise"):
        assert out[key]["Uid"] == (0, 0, 0, 0) and out[key]["Gid"] == (0, 0, 0, 0)
        assert 43212 not in out[key]["Groups"]


# -- the check itself


def test_success_creates_the_spool_directory_as_the_user(homes):
    uid = homes.add("alice")
    user = user_of(homes, "alice")
    spool = homes.spool("alice")
    result = probe_in_thread(HomeProbe(), user, spool)
    assert result.ok, result
    st = os.lstat(spool)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (uid, uid)  # the home's group
    assert os.listdir(spool) == []  # the test file is gone


def test_success_with_an_existing_spool_leaves_it_as_it_was(homes):
    uid = homes.add("alice")
    spool = os.fsdecode(homes.spool("alice"))
    os.mkdir(spool, 0o750)
    os.chown(spool, uid, uid)
    with open(os.path.join(spool, "alice"), "wb") as f:
        f.write(b"From x\n\nmail\n")
    before = snapshot(homes.base + "/home")
    for _ in range(3):
        result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), os.fsencode(spool), fsync=True)
        assert result.ok, result
    after = snapshot(homes.base + "/home")
    # The directory's times move (a file came and went); nothing else.
    for key in (spool, spool + "/"):
        del before[key], after[key]
    assert before == after


def test_missing_home(homes):
    homes.add("ghost", make=False)
    result = probe_in_thread(HomeProbe(), user_of(homes, "ghost"), homes.spool("ghost"))
    assert not result.ok
    assert result.errno == errno.ENOENT
    assert result.path == homes.spool("ghost").rpartition(b"/")[0]
    assert not os.path.exists(os.fsdecode(result.path))


def test_home_that_is_a_file(homes):
    home = os.path.join(homes.base, "home", "filed")
    os.makedirs(os.path.dirname(home), exist_ok=True)
    with open(home, "w") as f:
        f.write("not a directory\n")
    homes.add("filed", home=home, make=False)
    result = probe_in_thread(HomeProbe(), user_of(homes, "filed"), homes.spool("filed"))
    assert not result.ok
    assert result.errno == errno.ENOTDIR
    assert "ENOTDIR" in result.describe()


def test_symlink_planted_as_spool_is_not_followed(homes):
    """
    A user who replaces the spool directory by a link to somewhere else
    (here a directory the user may write, outside the home) gets the
    alternate spool; nothing is created or changed where the link points.
    """
    uid = homes.add("mallory")
    outside = os.path.join(homes.base, "outside")
    os.mkdir(outside)
    os.chown(outside, uid, uid)
    os.chmod(outside, 0o777)
    spool = homes.spool("mallory")
    os.symlink(outside, spool)
    os.lchown(spool, uid, uid)
    before = snapshot(outside)
    result = probe_in_thread(HomeProbe(), user_of(homes, "mallory"), spool)
    assert not result.ok
    assert result.errno in (errno.ENOTDIR, errno.ELOOP)
    assert "symbolic link" in result.reason
    assert snapshot(outside) == before
    assert os.path.islink(spool)


def test_dangling_symlink_planted_as_spool_creates_nothing(homes):
    uid = homes.add("mallory")
    target = os.path.join(homes.base, "nothing-here")
    spool = homes.spool("mallory")
    os.symlink(target, spool)
    os.lchown(spool, uid, uid)
    result = probe_in_thread(HomeProbe(), user_of(homes, "mallory"), spool)
    assert not result.ok
    assert not os.path.lexists(target)


def test_spool_owned_by_another_user(homes):
    uid = homes.add("alice")
    other = uid + 1000
    spool = homes.spool("alice")
    os.mkdir(spool, 0o700)
    os.chown(spool, other, other)
    result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool)
    assert not result.ok
    assert result.errno == errno.EPERM
    assert f"owned by uid {other}" in result.reason
    # Even when the other user's directory lets everybody write.
    os.chmod(spool, 0o777)
    before = snapshot(os.fsdecode(spool))
    result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool)
    assert not result.ok and result.errno == errno.EPERM
    assert snapshot(os.fsdecode(spool)) == before


def test_home_the_user_cannot_write(homes):
    homes.add("alice")
    home = os.fsdecode(homes.spool("alice")).rpartition("/")[0]
    os.chown(home, 0, 0)
    os.chmod(home, 0o755)
    result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), homes.spool("alice"))
    assert not result.ok
    assert result.errno == errno.EACCES
    assert os.listdir(home) == []


def test_disk_full(homes):
    mnt = os.path.join(homes.base, "home")
    with tmpfs(mnt, "64k"):
        homes.add("alice")
        spool = homes.spool("alice")
        assert probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool).ok
        ballast = fill(mnt)
        result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool)
        assert not result.ok
        assert result.errno == errno.ENOSPC, result
        assert os.listdir(spool) == []  # the probe cleaned up after itself
        os.unlink(ballast)
        assert probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool).ok


def test_read_only_filesystem(homes):
    mnt = os.path.join(homes.base, "home")
    with tmpfs(mnt, "1m"):
        homes.add("alice")
        spool = homes.spool("alice")
        assert probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool).ok
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True, timeout=10)
        result = probe_in_thread(HomeProbe(), user_of(homes, "alice"), spool)
        assert not result.ok
        assert result.errno == errno.EROFS


def test_credentials_from_nss_and_from_the_home():
    """
    A user NSS knows (root, daemon here) gets its NSS groups; one only a
    password file knows gets its home's group and no other; the lookups
    agree with the standard library's.
    """
    import grp
    import pwd

    from hlfs.homes import nss

    def settled(credentials, user, home):
        return settle(credentials.plan(user, home))[0]

    entry = pwd.getpwnam("daemon")
    user = User(b"daemon", entry.pw_uid, os.fsencode(entry.pw_dir))
    expected = sorted(os.getgrouplist("daemon", entry.pw_gid))
    uid, gid, groups = settled(Credentials(), user, user.home)
    assert (uid, gid, sorted(groups)) == (entry.pw_uid, entry.pw_gid, expected)
    assert nss.account_by_name(b"no-such-user-here") is None
    # Without NSS, or for a user NSS does not know: the home's group.
    home_group = (entry.pw_uid, os.stat("/tmp").st_gid, ())
    assert settled(Credentials(nss=False), user, b"/tmp") == home_group
    stranger = User(b"no-such-user-here", 43210, b"/tmp")
    assert settled(Credentials(), stranger, b"/tmp") == (43210, os.stat("/tmp").st_gid, ())
    assert grp.getgrgid(entry.pw_gid)
