"""
Scenario 11: the homes on a real NFS server with C{root_squash}, as sites
keep them (L{ganesha}: nfs-ganesha on the host), in one boot.

The guest mounts the export at the homes' own path (the password file's
C{/.../home}) with the client's ordinary caching, and again, with
C{nosharecache}, at C{/nfs2}: a second NFS client of the same export, with
its own superblock and caches.  The alternate spool stays on the host's
9p share.  Then:

  - Scenario 8 (L{test_kernel_postfix}) runs on these homes, its
    C{held} case aside: under the defaults local(8) delivers as the
    recipient, over NFS; in the root-opening states (C{lowered},
    C{transport}) root opens the mailbox in a home, squashed on the
    server: through root's view of real mailboxes hlfs writes it as the
    recipient, so those deliveries land as well.  (Before, root's open
    failed with C{EACCES}, which local(8) bounces: the scenario keeps the
    delivery status filter of docs/mta.md, which would turn such a bounce
    into a deferral, and long back-off times, so that a refused message
    would be tried exactly once in the run.)
  - C{hlfs deliver}'s concurrent-delivery test: 12 writers, half through
    each mount, and a locking reader on each, started first and released
    at once when all 12 wait on their input.
"""

import mailbox
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from hlfs.mail import mbox

import guestscript as gs
import test_kernel_postfix as postfix
from hlfsserver import venv_bin
from tests.support import ganesha
from tests.support.mail import LOCKING_READER, message
from world import SUBDIR, User

#: The second NFS client's mount point.
NFS2 = "/nfs2"

#: The user of the concurrent deliveries, whose home is on the export.
DAVE = 5004

#: Writers of the concurrent deliveries; even ones write through the
#: homes mount, odd ones through the second.
WRITERS = 12

#: What the filter of docs/mta.md turns from a bounce into a deferral.
DSN_FILTER = (
    r"/^5(\.[0-9]+\.[0-9]+ cannot update mailbox .*: (Permission denied|Read-only file system))$/ 4$1"
)

SETTINGS = (
    "local_delivery_status_filter=regexp:/etc/postfix/local_dsn_filter",
    "minimal_backoff_time=2h",
    "maximal_backoff_time=2h",
)

#: The phases in which local(8) opens the mailbox as root.
ROOT_PHASES = tuple(phase for phase, _, _ in postfix.PHASES if postfix.DAEMON[phase] == "lowered")

EX_OK = 0


@pytest.fixture(scope="module")
def homes_server(kernel_workdir):
    """
    The world of the scenario and nfs-ganesha exporting its homes.
    """
    reason = ganesha.missing()
    if reason:
        pytest.skip(reason)
    base = kernel_workdir / "nfs"
    world = postfix.make_world(base, [User("dave", DAVE, DAVE, str(base / "home" / "dave"))])
    # hlfs, on the host, reads and writes the homes themselves, behind
    # ganesha's back (a mail host would reach them through its own NFS
    # client, coherent by close-to-open): ganesha must not keep their
    # attributes, or the guest's writers through it would append at a
    # stale end of a mailbox hlfs has written since.
    export = ganesha.Export(world.homes, attr_expiration=0)
    server = ganesha.Ganesha([export], kernel_workdir / "nfs-ganesha").start()
    try:
        yield world, server
    finally:
        server.stop()


def homes_lines(world, server):
    """
    Shell lines mounting the export on the homes and on L{NFS2}, and
    writing the delivery status filter.
    """
    port, mountport = server.mount_options()
    source = f"{gs.HOST_FROM_GUEST}:{world.homes}"
    lines = [
        gs.mount("$P", str(world.homes), port, 3, ("rw",), source=source, mountport=mountport),
        gs.mount("$P", NFS2, port, 3, ("rw", "nosharecache"), source=source, mountport=mountport),
        f'R homes-mount "$(grep " {world.homes} nfs " /proc/mounts)"',
        f'R nfs2-mount "$(grep " {NFS2} nfs " /proc/mounts)"',
        f'R devices $(stat -c %d {world.homes}) $(stat -c %d {NFS2})',
        f"printf '%s\\n' {shlex.quote(DSN_FILTER)} > /etc/postfix/local_dsn_filter",
    ]
    return "\n".join(lines) + "\n"


def queue_lines():
    """
    Shell lines listing what Postfix's queue still holds, one
    C{QUEUE QUEUE-NAME SUBJECT} line per message.
    """
    return """\
for q in maildrop incoming active deferred hold; do
    find /var/spool/postfix/$q -type f 2>/dev/null | while read f; do
        echo "QUEUE $q $(postcat "$f" 2>/dev/null | sed -n 's/^Subject: //p' | head -1)"
    done
done
"""


def concurrent_lines(world, messages):
    """
    Shell lines running the concurrent deliveries to dave: a locking
    reader on each mount (as dave), then the writers (as root, as an MTA
    runs the agent), each blocked on a pipe whose writer waits on one
    FIFO; once all writers are in C{read(0, ...)} (C{/proc/PID/syscall}),
    the FIFO's last writer closes and every message goes in at once.
    """
    python = sys.executable
    deliver = (
        f"{venv_bin('hlfs')} deliver --password-file {world.password_file} --lock-timeout 600"
    )
    spools = {"homes": f"{world.homes}/dave/{SUBDIR}", "nfs2": f"{NFS2}/dave/{SUBDIR}"}
    as_dave = f"as {DAVE} {DAVE} {DAVE}"
    lines = ["rm -f /tmp/stop /tmp/go && mkfifo /tmp/go"]
    for mount, spool in spools.items():
        lines.append(
            f"{as_dave} {python} {LOCKING_READER} {spool}/dave /tmp/stop 600"
            f" > /tmp/reader.{mount}.out 2>&1 &"
        )
        lines.append(f"echo $! > /tmp/reader.{mount}.pid")
    # The shell keeps the FIFO open for writing; the gates and writers
    # must not inherit that descriptor, or its close would not end them.
    lines.append("exec 9<>/tmp/go")
    for n in range(WRITERS):
        spool = spools["homes" if n % 2 == 0 else "nfs2"]
        lines.append(
            f"( exec 9>&-; cat /tmp/go; cat {messages}/{n} ) |"
            f" {deliver} --spool {spool} -f s{n}@example.org dave 9>&- 2>/tmp/writer.{n}.err &"
        )
        lines.append(f"echo $! > /tmp/writer.{n}.pid")
    lines.append(f"""\
R writers-start $(up)
n=0
while :; do
    ready=0
    for p in $(cat /tmp/writer.*.pid); do
        [ "$(cut -d' ' -f1,2 /proc/$p/syscall 2>/dev/null)" = "0 0x0" ] && ready=$((ready + 1))
    done
    [ $ready = {WRITERS} ] || [ $n -ge 1800 ] && break
    sleep 0.5
    n=$((n + 1))
done
R writers-ready $ready $(up)
exec 9>&-
""")
    for n in range(WRITERS):
        lines.append(f'wait $(cat /tmp/writer.{n}.pid); R writer.{n} $? "$(tr "\\n" " " < /tmp/writer.{n}.err)"')
    lines.append("R writers-done $(up)")
    lines.append("touch /tmp/stop")
    for mount in spools:
        lines.append(f'wait $(cat /tmp/reader.{mount}.pid); R reader.{mount} $? "$(tr "\\n" " " < /tmp/reader.{mount}.out)"')
    lines.append(f"ls -la {spools['homes']} | sed 's/^/DAVE /'")
    return "\n".join(lines) + "\n"


def bodies():
    return {n: message(n, body=b"line of text\n" * (50 * n)) for n in range(WRITERS)}


@pytest.fixture(scope="module")
def nfs_run(guest, probe, kernel_workdir, precompiled, postfix_tree, homes_server, measure):  # noqa: F811
    world, server = homes_server
    messages = kernel_workdir / "nfs-messages"
    messages.mkdir()
    os.chmod(messages, 0o755)
    for n, text in bodies().items():
        (messages / str(n)).write_bytes(text)
    daemons = postfix.start_daemons(world, kernel_workdir / "nfs-daemons")
    try:
        ports = {state: s.port for state, s in daemons.items()}
        script = postfix.scenario(
            world, probe, postfix_tree, ports,
            homes=homes_lines(world, server), settings=SETTINGS, held=False,
            after=queue_lines() + concurrent_lines(world, messages),
        )
        result = guest.run(kernel_workdir / "nfs-run", script, shares=[world.base], timeout=1800)
    finally:
        for daemon in daemons.values():
            daemon.stop()
    logs = "".join(d.log() for d in daemons.values()) + server.log()
    assert result.status == 0, result.describe() + logs
    got = gs.results(result.output)
    measure(
        f"scenario 11 (homes on nfs-ganesha, root_squash): boot and scenario {result.elapsed:.1f}s;"
        f" concurrent writers started at {got.get('writers-start')}s, all waiting at"
        f" {got.get('writers-ready', '?').split()[-1]}s, done at {got.get('writers-done')}s of guest uptime"
    )
    return world, result, logs


def test_homes_are_the_export(nfs_run):
    """
    The guest's homes are the NFS export, mounted twice: the second mount
    is a separate client (C{nosharecache}: another superblock, device
    number).
    """
    world, result, _ = nfs_run
    got = gs.results(result.output)
    assert f"{gs.HOST_FROM_GUEST}:{world.homes} {world.homes} nfs " in got["homes-mount"], result.describe()
    assert "nosharecache" in got["nfs2-mount"].split()[3], result.describe()
    first, second = got["devices"].split()
    assert first != second, got["devices"]


def root_opened(world):
    """
    @return: (recipient, subject) of every message root opens the mailbox
        for: those of the root-opening phases to users whose homes are on
        the export.
    """
    return sorted(
        (name, postfix.subject(phase, way, name))
        for phase, _, ways in postfix.PHASES if phase in ROOT_PHASES
        for name in postfix.RECIPIENTS if world.users[name].usable
        for way in ways
    )


def test_every_message_in_its_own_mailbox(nfs_run):
    """
    Every message Postfix delivers lands exactly once in its recipient's
    own mailbox (alice's and bob's on NFS, carol's in the alternate
    spool), nothing anywhere else, none deferred or bounced, the queue
    empty.
    """
    world, result, _ = nfs_run
    got = gs.results(result.output)
    want = []
    for phase, _, ways in postfix.PHASES:
        for name in postfix.RECIPIENTS:
            for way in ways:
                want.append((str(postfix.spool_of(world, name) / name), postfix.subject(phase, way, name)))
    for name in postfix.RECIPIENTS:
        want.append((str(postfix.spool_of(world, name) / name), f"hlfs-command-{name}"))
    want.append((str(postfix.spool_of(world, "alice") / "alice"), "hlfs-root-append"))
    assert sorted(postfix.delivered_to(world)) == sorted(want), result.describe()
    for phase, _, ways in postfix.PHASES:
        for name in postfix.RECIPIENTS:
            for way in ways:
                key = f"{way}.{postfix.subject(phase, way, name)}"
                assert got.get(key, "").split()[:1] == ["0"], (key, result.describe())
    log = postfix.local_log(result)
    assert not [line for line in log if "status=bounced" in line or "status=deferred" in line], "\n".join(log)
    queued = [line.split(" ", 2) for line in result.output.splitlines() if line.startswith("QUEUE ")]
    assert queued == [], result.describe()
    # Root's dotlocks, made by hlfs as the recipient, are all gone.
    assert not list(world.homes.glob(f"*/{SUBDIR}/*.lock")) and not list(world.alt_dir.glob("*.lock"))


def test_root_delivers_on_squashed_homes(nfs_run):
    """
    Postfix opening mailboxes as root delivers on root-squashed homes:
    each message once, in a mailbox still the recipient's own.
    """
    world, result, _ = nfs_run
    log = "\n".join(postfix.local_log(result))
    assert root_opened(world), "no message was opened by root"
    for name, text in root_opened(world):
        assert postfix.mailbox_bytes(world, name).count(f"Subject: {text}\n".encode()) == 1, log
        st = (postfix.spool_of(world, name) / name).stat()
        assert st.st_uid == world.users[name].uid, (name, st)


def test_mail_owner_link_and_uids(nfs_run):
    """
    As in scenario 8: under the defaults local(8) opens as the recipient,
    in the root-opening states as root.
    """
    postfix.test_mail_owner_link_and_uids(nfs_run)


def test_root_path_and_squashed_append(nfs_run):
    """
    Root walking C{/var/mail/alice} reaches alice's mailbox on NFS, a
    regular file of hers; its own append there, which the server would
    refuse to root (squashed), is written by hlfs as alice, once.
    """
    world, result, _ = nfs_run
    got = gs.results(result.output)
    assert got["root-path"] == f"regular file {world.users['alice'].uid}", result.describe()
    assert got["root-append"] == "0", result.describe()
    assert postfix.mailbox_bytes(world, "alice").count(b"Subject: hlfs-root-append\n") == 1


def test_mailbox_command_hlfs_deliver(nfs_run):
    """
    As in scenario 8: C{hlfs deliver} as C{mailbox_command} writes over
    NFS as the recipient; every message parses and carries its sender.
    """
    postfix.test_mailbox_command_hlfs_deliver(nfs_run)


def test_concurrent_deliveries_across_two_clients(nfs_run):
    """
    12 agents deliver to dave at once, half through each NFS client,
    while a reader on each client takes the locks as mail readers do:
    every agent succeeds, every snapshot either reader took holds only
    whole messages, and the mailbox on the server has every message
    exactly once.  Only the dotlock, made over NFS, keeps the two clients
    apart: without NLM (C{nolock}) C{fcntl} locks are local to each
    client.
    """
    world, result, _ = nfs_run
    got = gs.results(result.output)
    ready = got["writers-ready"].split()
    assert ready[0] == str(WRITERS), result.describe()
    for n in range(WRITERS):
        assert got[f"writer.{n}"].split()[0] == str(EX_OK), (n, got[f"writer.{n}"], result.describe())
    for mount in ("homes", "nfs2"):
        status, *out = got[f"reader.{mount}"].split()
        assert status == "0" and int(out[-1]) >= 1, (mount, got[f"reader.{mount}"], result.describe())
    path = world.homes / "dave" / SUBDIR / "dave"
    assert len(mailbox.mbox(str(path))) == WRITERS
    with open(path, "rb") as f:
        messages = list(mbox.iter_mbox(f))
    assert sorted(m.content for m in messages) == sorted(bodies().values())
    assert sorted(m.sender for m in messages) == sorted(b"s%d@example.org" % n for n in range(WRITERS))
    assert sorted(os.listdir(path.parent)) == [".owner", "dave"]


def test_server_squashes_root(homes_server):
    """
    The server really squashes root: over NFS (libnfs's C{nfs-cat}, no
    guest), uid 0 cannot read alice's 0600 mailbox, alice can.
    """
    world, server = homes_server
    if shutil.which("nfs-cat") is None:
        pytest.skip("libnfs-utils' nfs-cat is missing (scripts/run-tests installs it)")
    mailbox_path = f"{world.homes}/alice/{SUBDIR}/alice"
    port, mountport = server.mount_options()

    def cat(uid):
        url = (f"nfs://127.0.0.1{mailbox_path}?version=3&nfsport={port}&mountport={mountport}"
               f"&uid={uid}&gid={uid}")
        return subprocess.run(["nfs-cat", url], capture_output=True, timeout=60)

    assert cat(world.users["alice"].uid).returncode == 0
    as_root = cat(0)
    assert as_root.returncode != 0, as_root


def test_server_registers_with_its_stand_in_only(homes_server):
    """
    The server registered its programs with its stand-in rpcbind, and
    none of its ports with the machine's (if one runs).
    """
    _, server = homes_server
    assert re.search(r"^rpcbind v[34] procedure 1$", server.log(), re.M), server.log()
    if shutil.which("rpcinfo") is None:
        return
    machine = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    ports = {line.split()[3] for line in machine.stdout.splitlines()[1:] if len(line.split()) >= 4}
    assert not ports & {str(server.nfs_port), str(server.mount_port)}, machine.stdout
