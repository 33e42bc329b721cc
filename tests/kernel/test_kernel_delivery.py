"""
Scenarios 4 and 5: mail delivered through the link by C{hlfs deliver} in
the guest lands in each user's own spool on the host, and a delivery loop
running while the daemon is killed and restarted loses nothing.

One guest runs both.  The homes and the alternate spool reach the guest
through a writable 9p share of the host directory, at the same path.
"""

import time

import pytest

import guestscript as gs
from hlfsserver import HlfsServer, venv_bin
from world import World

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
    lines = [gs.preamble(probe), gs.mount("$P", "/mail", port, 3, gs.daemon_cache_options()), gs.spool_link()]
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
    lines.append("grep ' nfs ' /proc/mounts")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


@pytest.fixture(scope="module")
def delivery_run(guest, probe, kernel_workdir, precompiled):
    """
    Boot one guest for scenarios 4 and 5; kill and restart the host's
    daemon when the guest's delivery loop asks for it.
    """
    world = World(kernel_workdir / "delivery").create()
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
