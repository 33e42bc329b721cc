"""
Scenarios 4 and 5: mail delivered through the link by C{hlfs deliver} in
the guest lands in each user's own spool on the host, and a delivery loop
running while the daemon is killed and restarted loses nothing.  Then
scenario 4b: a hostile local user against root's lock files and the home
checks (C{lock_attacks.py}).

One guest runs all three.  The homes and the alternate spool reach the
guest through a writable 9p share of the host directory, at the same path.
"""

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

import guestscript as gs
from hlfsserver import HlfsServer, venv_bin
from world import SUBDIR, User, World

#: The guest side of scenario 4b.
ATTACKS = Path(__file__).resolve().parent / "lock_attacks.py"
#: Users of scenario 4b whose homes nothing checks before it.
NEWCOMERS = {"erin": 5004, "frank": 5005, "gina": 5006, "hana": 5007}
#: 1960-01-01, in nanoseconds: hana's lock file's times.
BEFORE_1970 = -315_619_200 * 10**9

#: Recipients of scenario 4 (carol's home is unusable: alternate spool).
RECIPIENTS = ("alice", "bob", "root", "carol")

#: Messages of the delivery loop of scenario 5, and the one after which
#: the host kills the daemon.
LOOP_MESSAGES = 8
KILL_AFTER = 2

#: readlink(2) calls per batch of the two readers running across the kill.
READER_BATCH = 200

#: Exit status with which C{hlfs deliver} asks the MTA to retry (sysexits).
EX_TEMPFAIL = 75


def token(kind, name, n=0):
    return f"hlfs-kernel-{kind}-{name}-{n}"


def message(kind, name, n=0):
    return f"From: sender@example.org\nTo: {name}\nSubject: {token(kind, name, n)}\n\nbody {token(kind, name, n)}\n"


def scenario(world, probe, port):
    users = world.users
    deliver = f"{venv_bin('hlfs')} deliver --password-file {world.password_file} -f sender@example.org"
    # Read-write, as the daemon's own mount: root delivers into its view
    # of real mailboxes (root's own, here), through hlfs.
    lines = [gs.preamble(probe), gs.mount("$P", "/mail", port, 3, gs.daemon_cache_options() + ("rw",)),
             gs.spool_link()]
    # Scenario 4: one message per recipient, delivered as an MTA does (as
    # root, message on stdin), then read back by the recipient.
    for name in RECIPIENTS:
        user = users[name]
        lines.append(f"printf '{message('deliver', name)}' | {deliver} {name}")
        lines.append(f"R deliver.{name} $?")
        lines.append(f'R read.{name} "$(as {user.uid} {user.gid} {user.gid} grep -c \"^Subject: {token("deliver", name)}\\$\" /var/spool/mail/{name} 2>&1)"')
    # Scenario 5: a delivery loop alternating alice and bob while the host
    # kills the daemon (SIGKILL) and restarts it; a temporary failure is
    # retried, as an MTA's queue would.
    # Readers hammering the mount across the kill, so calls are in flight
    # when the daemon dies: the hard mount must retry them, no error.
    # Each reader runs batches until the host has restarted the daemon.
    for name in ("alice", "bob"):
        user = users[name]
        lines.append(
            f'( while :; do as {user.uid} {user.gid} {user.gid} "$P" loop readlink {READER_BATCH}'
            f" /mail/home {world.link_value(user.uid)} >> /tmp/reader-{name}.txt 2>&1;"
            " [ -e restarted ] && break; done ) &"
        )
    lines.append("R loop-start $(up)")
    lines.append(f"""
i=1
while [ $i -le {LOOP_MESSAGES} ]; do
    if [ $((i % 2)) = 1 ]; then name=alice; else name=bob; fi
    tries=0
    while :; do
        printf 'From: sender@example.org\\nTo: %s\\nSubject: hlfs-kernel-loop-%s-%s\\n\\nbody\\n' $name $name $i | {deliver} $name
        status=$?
        tries=$((tries + 1))
        [ $status = {EX_TEMPFAIL} ] && [ $tries -lt 20 ] || break
        sleep 1
    done
    R loop.$i $name $status $tries $(up)
    if [ $i = {KILL_AFTER} ]; then touch kill-now; fi
    i=$((i + 1))
done
""")
    lines.append("R loop-end $(up)")
    lines.append("wait")
    lines.append("R readers-end $(up)")
    for name in ("alice", "bob"):
        lines.append(f"sed 's/^/R reader.{name} /' /tmp/reader-{name}.txt")
    lines.append("while [ ! -e restarted ]; do sleep 0.1; done")
    for name in ("alice", "bob"):
        user = users[name]
        lines.append(f'R after.{name} "$(as {user.uid} {user.gid} {user.gid} readlink /mail/home 2>&1)"')
    lines.append(attacks(world, port))
    lines.append("grep ' nfs ' /proc/mounts")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def attacks(world, port):
    """
    Shell lines of scenario 4b: root's view mounted read-write (its
    dotlocks are CREATE and REMOVE), the guest's link protections off
    (the worst case for root: a user may link anything), then
    C{lock_attacks.py} as root.
    """
    uids = [str(world.users[n].uid) for n in ("alice", "bob", "carol", "erin", "frank")]
    return "\n".join([
        gs.mount("$P", "/mnt/rw", port, 3, gs.daemon_cache_options() + ("rw",)),
        "for p in protected_hardlinks protected_symlinks protected_regular protected_fifos; do"
        " echo 0 > /proc/sys/fs/$p; done",
        "R attacks-start $(up)",
        f"{sys.executable} {ATTACKS} \"$P\" /mnt/rw {world.homes} {world.alt_dir} {' '.join(uids)}",
        "R attacks-status $?",
        "R attacks-end $(up)",
    ])


def delivery_world(base):
    """
    The users of scenarios 4, 5 and 4b.  Some of scenario 4b's planted
    files are made here, as their users would have made them before:
    qemu's 9p server makes no special files for a guest, and takes no
    time before 1970 from it.  frank's spool is a FIFO, and so is gina's
    lock file; hana's lock file is dated 1960.
    """
    world = World(base)
    for name, uid in NEWCOMERS.items():
        world.users[name] = User(name, uid, uid, str(world.homes / name))
    world.create()
    frank = world.homes / "frank" / SUBDIR
    shutil.rmtree(frank)
    gina = world.homes / "gina" / SUBDIR / "gina.lock"
    for fifo, uid in ((frank, NEWCOMERS["frank"]), (gina, NEWCOMERS["gina"])):
        os.mkfifo(fifo, 0o600)
        os.chown(fifo, uid, uid)
    hana = world.homes / "hana" / SUBDIR / "hana.lock"
    hana.touch()
    os.utime(hana, ns=(BEFORE_1970, BEFORE_1970))
    os.chown(hana, NEWCOMERS["hana"], NEWCOMERS["hana"])
    return world


@pytest.fixture(scope="module")
def delivery_run(guest, probe, kernel_workdir, precompiled):
    """
    Boot one guest for scenarios 4 and 5; kill and restart the host's
    daemon when the guest's delivery loop asks for it.
    """
    world = delivery_world(kernel_workdir / "delivery")
    server = HlfsServer(world, kernel_workdir / "delivery-server").start()
    restart = {}
    try:
        running = guest.boot(
            kernel_workdir / "delivery-run", scenario(world, probe, server.port), shares=[world.base]
        )
        try:
            if running.wait_for_file("kill-now", timeout=400):
                restart["killed_at"] = time.monotonic()
                restart["kill_status"] = server.kill()
                server.start()
                restart["restarted_after"] = time.monotonic() - restart["killed_at"]
            (running.run_dir / "restarted").touch()
            result = running.wait(timeout=400)
        finally:
            running.kill()
    finally:
        server.stop()
    assert result.status == 0, result.describe() + server.log()
    return world, result, server, restart


def mailbox(world, name):
    user = world.users[name]
    spool = f"{user.home}/.mailspool" if user.usable else str(world.alt_dir)
    with open(f"{spool}/{name}", errors="replace") as f:
        return f.read()


def test_delivery(delivery_run, measure):
    """
    Scenario 4: C{hlfs deliver}, run as an MTA runs it, writes each
    message through C{/var/spool/mail/NAME} into that user's own spool on
    the host (the alternate spool for a user whose home is unusable), the
    user reads it back there, and no other mailbox has it.
    """
    world, result, _, _ = delivery_run
    got = gs.results(result.output)
    assert {k: got.get(k) for k in [f"deliver.{n}" for n in RECIPIENTS]} == {f"deliver.{n}": "0" for n in RECIPIENTS}, result.describe()
    assert {k: got.get(k) for k in [f"read.{n}" for n in RECIPIENTS]} == {f"read.{n}": "1" for n in RECIPIENTS}, result.describe()
    boxes = {name: mailbox(world, name) for name in RECIPIENTS}
    found = {
        (owner, name): boxes[owner].count(f"Subject: {token('deliver', name)}\n")
        for owner in RECIPIENTS
        for name in RECIPIENTS
    }
    assert found == {(owner, name): int(owner == name) for owner in RECIPIENTS for name in RECIPIENTS}
    measure(f"scenario 4 (delivery): {len(RECIPIENTS)} messages delivered in the guest, each found once in its own spool on the host")


def test_restart(delivery_run, measure):
    """
    Scenario 5: the daemon is killed (SIGKILL) in the middle of a delivery
    loop and restarted on the same port; the guest keeps its mount, every
    message of the loop lands exactly once in its mailbox, and the next
    accesses after the restart read the right links with no error.
    """
    world, result, server, restart = delivery_run
    got = gs.results(result.output)
    assert restart.get("kill_status") == -9, (restart, result.describe())
    assert server.starts == 2
    loop = {i: got.get(f"loop.{i}", "").split() for i in range(1, LOOP_MESSAGES + 1)}
    assert {i: v[1:2] for i, v in loop.items()} == {i: ["0"] for i in loop}, result.describe() + server.log()
    boxes = {name: mailbox(world, name) for name in ("alice", "bob")}
    for i in range(1, LOOP_MESSAGES + 1):
        name = "alice" if i % 2 else "bob"
        other = "bob" if i % 2 else "alice"
        assert boxes[name].count(f"Subject: hlfs-kernel-loop-{name}-{i}\n") == 1, (i, boxes[name])
        assert f"hlfs-kernel-loop-{name}-{i}\n" not in boxes[other]
    # The readers ran until the host said the daemon was back, so every
    # call in flight at the kill was among them: all must have succeeded.
    readers = {
        name: [gs.loop_counts(line[len(f"R reader.{name} "):]) for line in result.output.splitlines()
               if line.startswith(f"R reader.{name} ")]
        for name in ("alice", "bob")
    }
    for name, batches in readers.items():
        assert batches, result.describe()
        assert [(b["ok"], b["wrong"], b["errors"]) for b in batches] == [(READER_BATCH, 0, 0)] * len(batches), (
            name, result.describe())
    reads = sum(len(b) for b in readers.values()) * READER_BATCH
    assert got.get("after.alice") == world.link_value(world.users["alice"].uid), result.describe()
    assert got.get("after.bob") == world.link_value(world.users["bob"].uid), result.describe()
    retries = sum(int(v[2]) - 1 for v in loop.values())
    measure(
        f"scenario 5 (restart): {LOOP_MESSAGES} messages in a delivery loop, daemon killed after"
        f" message {KILL_AFTER} and serving again {restart['restarted_after']:.1f}s later;"
        f" 0 lost, {retries} retried by the loop, mount kept; {reads} readlink calls by 2 readers"
        f" across the kill and restart, 0 wrong, 0 errors"
    )


def fields(line):
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def test_hostile_user_against_roots_locks(delivery_run, measure):
    """
    Scenario 4b: alice, a local user of the guest, plants a symlink, a
    hard link to bob's mailbox, a FIFO, a directory and files dated 1960
    and 2200 at her own lock file's place, takes carol's lock name in the
    alternate spool (a file, a directory), swaps her spool for a link to
    bob's once and then in a loop; erin's spool is a link to bob's, frank's
    a FIFO; root looks up thousands of names and names with odd bytes.
    Root, through the kernel client as a delivery agent running as root,
    looks at, makes and removes the locks: nothing ever hangs, nothing is
    made or changed outside the attacker's own files, carol's lock is
    root's to make despite alice, the new users' links and locks go to the
    alternate spool, and the daemon logs no traceback.
    """
    world, result, server, _ = delivery_run
    got = gs.results(result.output)
    assert got.get("attacks-status") == "0", result.describe()
    home = world.homes
    # Root sees her real mailbox, a regular file of hers (once there is one).
    assert got["alice.link"] == "ENOENT" or got["alice.link"].startswith(f"file:{world.users['alice'].uid}:")
    lock = {key[len("lock."):]: fields(value) for key, value in got.items() if key.startswith("lock.")}
    seen = {label: v.pop("stat") for label, v in lock.items()}
    expected = {"plant": "0", "create": "EEXIST", "remove": "ok", "left": "none"}
    assert lock == {
        "symlink": expected, "hardlink": expected, "fifo": dict(expected, plant="before"),
        # Her own lock, which she alone can keep: her own mail waits.
        "dir": dict(expected, remove="EISDIR", left="dir"),
        "time.before1970": dict(expected, plant="before"), "time.after2106": expected,
        "alt.file": dict(expected, create="ok"), "alt.dir": dict(expected, create="ok"),
    }, result.describe()
    alice, bob = world.users["alice"].uid, world.users["bob"].uid
    gina, hana = world.users["gina"].uid, world.users["hana"].uid
    assert {label: s.rsplit(":", 1)[0] for label, s in seen.items()} == dict(
        {label: f"file:{alice}" for label in lock}, hardlink=f"file:{bob}", fifo=f"file:{gina}",
        **{"time.before1970": f"file:{hana}"},
        # Another user's file in the place of carol's lock is no lock.
        **{"alt.file": "ENOENT", "alt.dir": "ENOENT"}), seen
    assert seen["time.before1970"].endswith(":0") and seen["time.after2106"].endswith(":4294967295")
    # Her spool a link: never followed, for the lock or the mailbox.
    assert fields(got["swapped"]) == {"create": "EIO", "remove": "EIO", "link": "EIO"}
    race = fields(got["race"])
    assert set(race) <= {"create:ok", "create:EIO", "create:ENOENT", "create:EEXIST",
                         "remove:ok", "remove:EIO", "remove:ENOENT"}, race
    assert sum(int(n) for n in race.values()) == 200 and race.get("create:ok"), race
    for name in ("erin", "frank"):
        assert fields(got[f"home.{name}"]) == {
            # Root sees the mailbox in the alternate spool: none yet.
            "own": str(world.alt_dir), "root": "ENOENT", "create": "ok", "remove": "ok"
        }, got[f"home.{name}"]
    assert fields(got["names"]) == {"ENOENT": "4000"}, got["names"]
    # Root's other names are scratch files of hlfs's memory (hlfs.core.scratch).
    assert set(got["odd"].replace("/", " ").split()) <= {"ok", "ENOENT", "EROFS", "ENAMETOOLONG"}, got["odd"]
    assert got["bob.mailbox"] == "same"
    # On the host: no lock file left anywhere, bob's spool as it was.
    assert not list(home.glob(f"*/{SUBDIR}*/*.lock")) and not list(world.alt_dir.glob("*lock*"))
    assert sorted(p.name for p in (home / "bob" / SUBDIR).iterdir()) == [".owner", "bob"]
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
    assert len(re.findall(r"another user's file in the place of carol's lock", log)) == 2, log[-5000:]
    marks = {k: got.get(k) for k in ("attacks-start", "attacks-end")}
    measure(
        f"scenario 4b (root's locks attacked): {len(lock)} planted locks, a 200-operation swap race"
        f" ({race}), 4,000 names looked up in {got['names'].split()[0]}, guest uptime {marks}"
    )
