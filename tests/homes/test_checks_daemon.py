"""
Home checks through the real daemon: C{twistd hlfs} answering NFS calls
over loopback UDP, homes on the disk and on a FUSE (bindfs) mount the
test freezes, as a dead NFS server freezes a hard mount.  What the test
looks at is outside the daemon: the files the kernel saw created in each
spool (inotify), and the identities in C{/proc} of every thread and
process the daemon runs.

These tests use only the daemon's command line and its wire (the old
C{--probe-threads} is still the size of the home checks), so they run
against any hlfs: they failed against the one whose checks could run in
a thread as well as in a process, and whose queued checks could move to
another process.
"""

import os
import shutil
import time

import pytest
from twisted.internet import defer

from hlfs.cli.query import HomeLinkClient, credential
from hlfs.rpc.client import RPCClient
from tests.support.checks import CreatedFiles, ids
from tests.support.filesystems import frozen_mount
from tests.support.probes import ReactorThread, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="checks take other users' identities; mounts"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
    pytest.mark.timeout(120),
]

OK_UID, FROZEN_UID = 43000, 43100
DEADLINE = 1.0


def users(ok, frozen):
    return ([(f"ok{n}", OK_UID + n, f"{{base}}/home/ok{n}") for n in range(ok)]
            + [(f"frozen{n}", FROZEN_UID + n, f"{{base}}/fuse/frozen{n}") for n in range(frozen)])


def spools(base, ok, frozen):
    """
    Make the homes and their spools, owned by their users; return the
    spool directories the kernel sees the checks' files made in (the
    frozen homes' through the mount's source).
    """
    made = {}
    for name, uid, home in users(ok, frozen):
        real = home.format(base=base).replace(f"{base}/fuse/", f"{base}/fuse-src/")
        spool = os.path.join(real, ".mailspool")
        os.makedirs(spool)
        for path in (real, spool):
            os.chown(path, uid, uid)
        os.chmod(spool, 0o700)
        made[uid] = spool
    os.makedirs(os.path.join(base, "fuse"))
    return made


@pytest.fixture
def client():
    rt = ReactorThread.get()
    made = []

    def connect(port):
        rpc = rt.call(RPCClient.connect, rt.reactor, "127.0.0.1", port, "udp", timeout=30.0)
        made.append(rpc)
        return HomeLinkClient(rpc)

    yield connect
    for rpc in made:
        rt.call(rpc.close)


def roots(rt, client, uids):
    """
    Each caller's root handle (MOUNT MNT): no home is checked yet.
    """
    @defer.inlineCallbacks
    def mount():
        found = {}
        for uid in uids:
            found[uid] = yield client.mnt(b"/mail", credential(uid, uid))
        return found

    return rt.call(mount)


def lookups(rt, client, handles, uids):
    """
    LOOKUP of C{home} for every caller of C{uids}, all sent in one turn of
    the reactor, in that order (each one needs its caller's home checked);
    return a list of Deferreds of C{(uid, seconds, handle or error)}.
    """
    def send():
        sent = []
        for uid in uids:
            began = time.monotonic()
            d = client.lookup(handles[uid], b"home", credential(uid, uid))
            d.addBoth(lambda result, uid=uid, began=began: (uid, time.monotonic() - began, result))
            sent.append(d)
        return sent

    return rt.call(send)


def targets(rt, client, answers):
    """
    READLINK of each handle looked up: the caller's link.
    """
    @defer.inlineCallbacks
    def read():
        found = {}
        for uid, _, fh in answers:
            found[uid] = yield client.readlink(fh, credential(uid, uid))
        return found

    return rt.call(read)


def descendants(daemon):
    """
    The pids of every process under C{daemon}.
    """
    tree = {daemon}
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
        except OSError:
            continue
        if parent in tree:
            tree.add(pid)
    return tree - {daemon}


def waiting(daemon):
    """
    Whether every process under C{daemon} sleeps waiting for input (a
    pipe, or a socket through select): none has work left.
    """
    for pid in descendants(daemon):
        try:
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
        except OSError:
            continue
        if not any(where in wchan for where in ("pipe_read", "poll_schedule_timeout", "do_select")):
            return False
    return True


def checking(daemon, uids):
    """
    The tasks (threads of the daemon and of every process under it) whose
    filesystem uid is one of C{uids}, with their ids: the checks in
    flight.
    """
    found = []
    for pid in {daemon} | descendants(daemon):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                uid = ids(f"{pid}/task/{tid}", "Uid")
            except (OSError, KeyError):
                continue
            if uid[3] in uids:
                found.append((pid, int(tid), uid))
    return found


def test_checks_queued_behind_a_hung_one_run_exactly_once(make_server, client):
    """
    If the checks of eight users are asked for right behind one whose home
    hangs, then each of those homes sees exactly one check file made,
    before and after the hung home comes back: nothing queued behind the
    hung check is run twice.  The hung caller gets the alternate spool
    past the deadline, the others are answered as usual.

    Every call checks (C{-c 0}).  The hung user's home hangs once before,
    and comes back: its check then knows its groups, takes its identity
    first and hangs in its spool, as a check of a known user does.
    """
    rt = ReactorThread.get()
    srv = make_server("--insecure", "--probe-threads", "2", "--probe-deadline", str(DEADLINE),
                      "--cache-interval", "0", users=users(8, 1))
    made = spools(srv.base, 8, 1)
    created = CreatedFiles()
    try:
        for spool in made.values():
            created.watch(spool)

        def checked(uid):
            return len(created.read()[os.fsencode(made[uid])])

        def settled():
            # No check in flight, and every process under the daemon waits
            # for work: none still owes a check.
            return in_flight(srv) == 0 and waiting(srv.proc.pid)

        nfs = client(srv.port)
        frozen, ok = FROZEN_UID, [OK_UID + n for n in range(8)]
        with frozen_mount(str(srv.base / "fuse-src"), str(srv.base / "fuse")) as mount:
            handles = roots(rt, nfs, [frozen, *ok])
            mount.freeze()
            [rt.result(d) for d in lookups(rt, nfs, handles, [frozen])]
            mount.thaw()
            wait_for(lambda: checked(frozen) == 1 and settled(), timeout=30)
            mount.freeze()
            sent = lookups(rt, nfs, handles, [frozen, *ok])
            answers = [rt.result(d, timeout=30) for d in sent]
            for uid, seconds, result in answers:
                assert isinstance(result, bytes), (uid, result)
            assert targets(rt, nfs, answers[:1]) == {frozen: os.fsencode(srv.alt)}
            mount.thaw()
            wait_for(lambda: checked(frozen) == 2 and settled(), timeout=30)
        counts = {uid: checked(uid) for uid in made}
        assert counts == {frozen: 2, **{uid: 1 for uid in ok}}, counts
    finally:
        created.close()


def in_flight(srv):
    """
    The checks in flight, from C{hlfs status}.
    """
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "hlfs.cli", "status", "--server",
                          f"127.0.0.1:{srv.port}"], capture_output=True, timeout=30, check=True)
    for line in out.stdout.decode().splitlines():
        name, _, value = line.partition(" ")
        if name == "probes_in_flight":
            return int(value)
    raise AssertionError(out.stdout)


def test_no_more_checks_in_flight_than_the_bound(make_server, client):
    """
    If seven users' homes hang (two more than the bound, five), then at
    no time are more than five checks in flight, in threads or processes
    of the daemon, each with its user's filesystem uid alone (real,
    effective and saved uid 0); every caller past them gets the alternate
    spool within the deadline, and the daemon's own threads keep root's
    identity.  Once the homes come back, every user gets its home.
    """
    rt = ReactorThread.get()
    bound, hung = 5, 7
    srv = make_server("--insecure", "--probe-threads", str(bound), "--probe-deadline", str(DEADLINE),
                      "--cache-interval", "0", users=users(2, hung))
    spools(srv.base, 2, hung)
    nfs = client(srv.port)
    frozen = [FROZEN_UID + n for n in range(hung)]
    seen = []
    with frozen_mount(str(srv.base / "fuse-src"), str(srv.base / "fuse")) as mount:
        handles = roots(rt, nfs, frozen + [OK_UID, OK_UID + 1])
        # Each checked once while its home works: its checks then take its
        # identity first, and hang in its spool.
        [rt.result(d) for d in lookups(rt, nfs, handles, frozen)]
        mount.freeze()
        for round_ in range(3):
            sent = lookups(rt, nfs, handles, frozen)
            while not all(d.called for d in sent):
                seen.append(checking(srv.proc.pid, set(frozen)))
                time.sleep(0.05)
            answers = [rt.result(d) for d in sent]
            for uid, seconds, _ in answers:
                assert seconds < DEADLINE + 0.5, (round_, uid, seconds)
            assert set(targets(rt, nfs, answers).values()) == {os.fsencode(srv.alt)}
            seen.append(checking(srv.proc.pid, set(frozen)))
        # Users whose homes work: still checked (the hung ones hold only
        # their own processes) or refused at once, never kept waiting.
        answers = [rt.result(d) for d in lookups(rt, nfs, handles, [OK_UID, OK_UID + 1])]
        assert all(seconds < DEADLINE + 0.5 for _, seconds, _ in answers)
        most = max(len(tasks) for tasks in seen)
        assert most == bound, seen
        for tasks in seen:
            for pid, tid, uid in tasks:
                assert pid != srv.proc.pid, "a check in a thread of the daemon"
                assert uid[:3] == (0, 0, 0) and uid[3] in frozen, (pid, tid, uid)
        for tid in os.listdir(f"/proc/{srv.proc.pid}/task"):
            assert ids(f"{srv.proc.pid}/task/{tid}", "Uid") == (0, 0, 0, 0)
        mount.thaw()
        wait_for(lambda: in_flight(srv) == 0, timeout=30)
        links = targets(rt, nfs, [rt.result(d) for d in lookups(rt, nfs, handles, frozen)])
        assert links == {uid: os.fsencode(f"{srv.base}/fuse/frozen{n}/.mailspool")
                         for n, uid in enumerate(frozen)}
