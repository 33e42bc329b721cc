"""
Scenario 8: Debian's Postfix, unchanged, delivers through hlfs in the
guest.

One guest runs every part, against two daemons on the host that share one
world:

  - C{defaults}: the daemon's defaults.  The mail owner C{postfix} is a
    system account (uid under UID_MIN), so its link is the sticky,
    world-writable alternate spool; local(8) sees that and delivers as the
    recipient.
  - C{lowered}: C{--uid-min} lowered under C{postfix}'s uid, so that
    C{postfix} gets a usable spool of its own (0700): local(8) then opens
    the mailbox as root, and the root rule takes it to the recipient's
    mailbox.  With Debian's C{mailbox_delivery_lock} (C{fcntl, dotlock})
    root's dotlock C{/var/mail/NAME.lock} is C{/mail/NAME.lock}, which hlfs
    makes as NAME next to NAME's mailbox (hlfs.core.locks):
      - C{lowered}: every message delivered, as root, exactly once;
      - C{held}: alice holds her own dotlock through her view, as a
        reader does: Postfix defers her mail; once she lets go, a flush
        delivers it, once;
      - C{transport}: C{mailbox_transport} = a second local(8) service
        (C{hlfslocal}), delivering the same way.

The guest mounts one daemon, then the other, on C{/mail}, read-write as
the daemon mounts itself.  Mail goes in with Postfix's C{sendmail} and
over SMTP to 127.0.0.1:25; then with C{mailbox_command} set to C{hlfs
deliver} as docs/deliver.md gives it.  The host checks every mailbox.
"""

import mailbox
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

import debcache
import guestscript as gs
import mta
from hlfsserver import HlfsServer, venv_bin
from world import SUBDIR, User, World

#: Recipients: two users with homes, one whose home is unusable (carol).
RECIPIENTS = ("alice", "bob", "carol")

#: (state, Postfix settings, ways in); every way sends one message to
#: each recipient.
PHASES = (
    ("defaults", (), ("sendmail", "smtp")),
    ("lowered", (), ("sendmail", "smtp")),
    ("transport", ("mailbox_transport=hlfslocal",), ("sendmail",)),
)

#: Which daemon each phase mounts.
DAEMON = {"defaults": "defaults", "lowered": "lowered", "transport": "lowered"}

#: The second local(8) service of the C{transport} phase.
HLFSLOCAL = "hlfslocal/unix=hlfslocal unix - n n - - local -v -o mailbox_transport="

#: Every delivery result of either local(8) service.
LOCAL_RESULT = "postfix/(local|hlfslocal)\\[.*status="

SENDER = "sender@example.org"
COMMAND_SENDER = "envelope@example.net"


def repo_package():
    return str(Path(__file__).resolve().parent.parent.parent / "hlfs")


def subject(phase, way, name):
    return f"hlfs-postfix-{phase}-{way}-{name}"



def make_world(base, more_users=()):
    """
    The scenario's world, with C{more_users} (L{User}s) beside the usual
    ones, and the mail owner.
    """
    world = World(base)
    world.users.update((user.name, user) for user in more_users)
    world.create()
    # The mail owner's home, on the host, with no spool: hlfs must never
    # make one there under the defaults.
    home = world.homes / "postfix"
    home.mkdir()
    os.chown(home, mta.POSTFIX_UID, mta.POSTFIX_UID)
    world.users["postfix"] = User("postfix", mta.POSTFIX_UID, mta.POSTFIX_UID, str(home))
    with open(world.password_file, "a") as f:
        f.write(f"postfix:x:{mta.POSTFIX_UID}:{mta.POSTFIX_UID}::{home}:/usr/sbin/nologin\n")
    return world


def held_lock(world, deliveries):
    """
    Shell lines for the C{held} case: alice takes her dotlock through her
    own view (C{/var/mail/alice.lock} is C{~alice/.mailspool/alice.lock}
    for her), exclusively as a reader does; a message for her is deferred
    by root's local(8), which finds the lock taken; she lets go, a flush
    delivers it.  Two more delivery results: the deferral, the delivery.
    """
    alice = world.users["alice"]
    as_alice = f"as {alice.uid} {alice.gid} {alice.gid}"
    held = subject("held", "sendmail", "alice")
    host_lock = f"{alice.home}/{SUBDIR}/alice.lock"
    return f"""\
{as_alice} sh -c 'set -C; : > /var/mail/alice.lock'; R held-take $?
R held-lock "$(stat -c '%u %F' {host_lock} 2>&1)"
{mta.sendmail(SENDER, "alice", held)}
{mta.wait_deliveries(deliveries + 1, pattern=LOCAL_RESULT)}
R held-while "$(grep -c '^Subject: {held}$' {alice.home}/{SUBDIR}/alice)"
R held-root-lookup "$(stat -c '%u %F' /var/mail/alice.lock 2>&1)"
{as_alice} rm /var/mail/alice.lock; R held-release $?
postqueue -f
{mta.wait_deliveries(deliveries + 2, pattern=LOCAL_RESULT)}
R held-after "$(grep -c '^Subject: {held}$' {alice.home}/{SUBDIR}/alice)"
R held-lock-after "$(ls {host_lock} 2>&1)"
"""


def scenario(world, probe, tree, ports, homes="", settings=(), after="", held=True):
    """
    The scenario's script.

    @param ports: the port of each daemon (L{DAEMON}'s values).
    @param homes: shell lines run before Postfix is set up (mounting the
        homes from elsewhere, say).
    @param settings: more C{postconf -e} arguments.
    @param after: shell lines run once Postfix has stopped.
    @param held: whether to run the C{held} case after the C{lowered}
        phase (its flush retries every deferred message).
    """
    python = sys.executable
    hlfs = venv_bin("hlfs")
    users = [world.users[n] for n in RECIPIENTS]
    as_postfix = f"as {mta.POSTFIX_UID} {mta.POSTFIX_UID} {mta.POSTFIX_UID}"
    lines = [
        gs.preamble(probe),
        mta.install(tree),
        mta.accounts(users),
        mta.mail_link(),
        homes,
        mta.postfix_setup(settings),
        mta.postfix_start(),
    ]
    deliveries = 0
    mounted = None
    for phase, settings, ways in PHASES:
        daemon = DAEMON[phase]
        if daemon != mounted:
            if mounted is not None:
                lines.append("umount /mail || exit 13")
            lines.append(gs.mount("$P", "/mail", ports[daemon], 3, gs.daemon_cache_options() + ("rw",)))
            mounted = daemon
        if phase == "transport":
            lines.append(f"postconf -M {shlex.quote(HLFSLOCAL)} && postconf -F 'hlfslocal/unix/chroot = n'")
        if settings:
            lines.append(f"postconf -e {' '.join(settings)} && postfix reload >/dev/null 2>&1")
        lines.append(f'R postfix-link.{phase} "$({as_postfix} readlink /mail/home 2>&1)"')
        lines.append(f'R postfix-spool-mode.{phase} "$({as_postfix} stat -L -c %a /var/mail 2>&1)"')
        for name in RECIPIENTS:
            for way in ways:
                if way == "sendmail":
                    lines.append(mta.sendmail(SENDER, name, subject(phase, way, name)))
                else:
                    lines.append(mta.smtp(SENDER, f"{name}@{mta.MAIL_HOST}", subject(phase, way, name), python))
                deliveries += 1
        lines.append(mta.wait_deliveries(deliveries, pattern=LOCAL_RESULT))
        if phase == "lowered" and held:
            lines.append(held_lock(world, deliveries))
            deliveries += 2
    lines.append("postconf -X mailbox_transport && postfix reload >/dev/null 2>&1")
    # Root's own path through the link: alice's real mailbox, a regular
    # file of hers (root sees real mailboxes).
    lines.append('R root-path "$(stat -L -c \'%F %u\' /var/mail/alice 2>&1)"')
    lines.append(
        "printf 'From root-append@example.org Tue Dec  1 00:00:00 2026\\nSubject: hlfs-root-append\\n\\n"
        "appended by root\\n\\n' >> /var/mail/alice; R root-append $?"
    )
    # mailbox_command = hlfs deliver, the line docs/deliver.md gives; it
    # runs as the recipient, who must reach the Python and the repository.
    lines.append(mta.searchable(os.path.realpath(sys.executable), hlfs, repo_package()))
    lines.append(f"postconf -e 'mailbox_command = {hlfs} deliver -f \"$SENDER\" \"$USER\"' && postfix reload >/dev/null 2>&1")
    for name in RECIPIENTS:
        lines.append(mta.sendmail(COMMAND_SENDER, name, f"hlfs-command-{name}"))
        deliveries += 1
    lines.append(mta.wait_deliveries(deliveries, timeout=300, pattern=LOCAL_RESULT))
    lines.append("postfix stop >/dev/null 2>&1")
    lines.append("grep -E 'postfix/(local|hlfslocal)' /var/log/postfix.log | sed 's/^/LOG /'")
    lines.append(after)
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def start_daemons(world, workdir):
    """
    Start the daemons of L{DAEMON}: the defaults, and C{--uid-min} lowered
    under the mail owner's uid.

    @return: the L{HlfsServer}s by name.
    """
    servers = {
        "defaults": HlfsServer(world, workdir / "postfix-defaults"),
        "lowered": HlfsServer(world, workdir / "postfix-lowered",
                              extra=["--uid-min", str(mta.POSTFIX_UID - 1)]),
    }
    started = []
    try:
        for server in servers.values():
            started.append(server.start())
    except Exception:
        for server in started:
            server.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def postfix_run(guest, probe, kernel_workdir, precompiled, postfix_tree, measure):
    world = make_world(kernel_workdir / "postfix")
    servers = start_daemons(world, kernel_workdir)
    try:
        ports = {state: s.port for state, s in servers.items()}
        result = guest.run(
            kernel_workdir / "postfix-run", scenario(world, probe, postfix_tree, ports),
            shares=[world.base], timeout=900,
        )
    finally:
        for server in servers.values():
            server.stop()
    logs = "".join(s.log() for s in servers.values())
    assert result.status == 0, result.describe() + logs
    measure(f"scenario 8 (Postfix): {debcache.versions(postfix_tree)}, boot and scenario {result.elapsed:.1f}s")
    return world, result, logs


def spool_of(world, name):
    user = world.users[name]
    return Path(f"{user.home}/{SUBDIR}") if user.usable else world.alt_dir


def mailbox_bytes(world, name):
    path = spool_of(world, name) / name
    return path.read_bytes() if path.exists() else b""


def local_log(result):
    return [line[4:] for line in result.output.splitlines() if line.startswith("LOG ")]


def delivered_to(world):
    """
    @return: every (mailbox file on the host, Subject) found in any spool:
        the users' own, root's, postfix's and the alternate spool.
    """
    found = []
    spools = [world.homes / name / SUBDIR for name in ("alice", "bob", "root", "postfix")] + [world.alt_dir]
    for spool in spools:
        for path in sorted(spool.glob("*")) if spool.exists() else []:
            if path.name.startswith(".") or not path.is_file():
                continue
            for subject_line in re.findall(rb"^Subject: (\S+)$", path.read_bytes(), re.M):
                found.append((str(path), subject_line.decode()))
    return found


def test_every_message_in_its_own_mailbox(postfix_run):
    """
    Postfix's default local delivery, Debian's default locking included,
    with sendmail and over SMTP: under the daemon's defaults (delivered as
    the recipient) and with the UID limit lowered (delivered as root,
    dotlocked through hlfs; also through C{mailbox_transport}), each
    message for alice and bob lands exactly once in that user's own
    C{.mailspool/NAME} on the host, carol's in the alternate spool, and
    nothing anywhere else (root's spool above all).  Every message is
    delivered; the one deferral is the held lock's.
    """
    world, result, _ = postfix_run
    got = gs.results(result.output)
    found = delivered_to(world)
    want = []
    for phase, _, ways in PHASES:
        for name in RECIPIENTS:
            for way in ways:
                want.append((str(spool_of(world, name) / name), subject(phase, way, name)))
    want.append((str(spool_of(world, "alice") / "alice"), subject("held", "sendmail", "alice")))
    want.append((str(spool_of(world, "alice") / "alice"), "hlfs-root-append"))
    for name in RECIPIENTS:
        want.append((str(spool_of(world, name) / name), f"hlfs-command-{name}"))
    assert sorted(found) == sorted(want), result.describe()
    for phase in ("defaults", "lowered"):
        for name in RECIPIENTS:
            for way in ("sendmail", "smtp"):
                key = f"{way}.{subject(phase, way, name)}"
                assert got.get(key, "").split()[:1] == ["0"], (key, result.describe())
    log = local_log(result)
    assert not [line for line in log if "status=bounced" in line], "\n".join(log)
    deferred = [line for line in log if "status=deferred" in line]
    assert len(deferred) == 1, "\n".join(log)
    assert "to=<alice@" in deferred[0], deferred
    assert "unable to create lock file /var/mail/alice.lock: File exists" in deferred[0], deferred
    sent = [line for line in log if "status=sent (delivered to mailbox)" in line]
    assert len(sent) == len(want) - 1 - len(RECIPIENTS), "\n".join(log)  # not the append, hlfs deliver
    transported = [line for line in sent if "relay=hlfslocal," in line]
    assert len(transported) == len(RECIPIENTS), "\n".join(log)


def test_held_lock_defers(postfix_run):
    """
    If alice holds her dotlock (made exclusively through her own view, as
    a reader does), then root's local(8) sees it at C{/var/mail/alice.lock}
    (the same file, alice's), cannot make it, and defers her mail: nothing
    lands while she holds it; after she lets go the mail is delivered,
    once, and no lock is left behind.
    """
    world, result, _ = postfix_run
    got = gs.results(result.output)
    alice = world.users["alice"]
    assert got["held-take"] == "0", result.describe()
    assert got["held-lock"] == f"{alice.uid} regular empty file", result.describe()
    assert got["held-root-lookup"] == f"{alice.uid} regular empty file", result.describe()
    assert got["held-while"] == "0", result.describe()
    assert got["held-release"] == "0", result.describe()
    assert got["held-after"] == "1", result.describe()
    assert "No such file" in got["held-lock-after"], result.describe()
    assert not list(world.homes.glob(f"*/{SUBDIR}/*.lock")) and not list(world.alt_dir.glob("*.lock"))


def test_mail_owner_link_and_uids(postfix_run):
    """
    Under the defaults the mail owner's link is the 1777 alternate spool
    and hlfs made no spool in its home; local(8) logs the recipient's uid
    as the one that opened the mailbox (C{spool_uid/gid}).  With the limit
    lowered, the mail owner has a 0700 spool of its own and local(8) opens
    as root, chowning to the recipient.
    """
    world, result, _ = postfix_run
    got = gs.results(result.output)
    assert got["postfix-link.defaults"] == str(world.alt_dir)
    assert got["postfix-spool-mode.defaults"] == "1777"
    assert got["postfix-link.lowered"] == f"{world.homes}/postfix/{SUBDIR}"
    assert got["postfix-spool-mode.lowered"] == "700"
    log = "\n".join(local_log(result))
    alice = world.users["alice"]
    # Postfix prints the "no chown" uid -1 as an unsigned uid_t.
    assert f"spool_uid/gid {alice.uid}/{alice.gid} chown_uid/gid 4294967295/4294967295" in log, log
    assert f"spool_uid/gid 0/0 chown_uid/gid {alice.uid}/{alice.gid}" in log, log
    # The second service logs as local(8) too: its pids are those of the
    # relay=hlfslocal deliveries.
    lines = local_log(result)
    pids = {re.search(r"local\[(\d+)\]", line).group(1) for line in lines if "relay=hlfslocal," in line}
    assert pids, log
    assert any(
        re.search(r"local\[(\d+)\]", line).group(1) in pids and "spool_uid/gid 0/0 chown_uid/gid" in line
        for line in lines if "spool_uid/gid" in line
    ), log


def test_root_path(postfix_run):
    """
    Root walking C{/var/mail/alice} reaches alice's mailbox, a regular
    file of hers (root sees real mailboxes), and appends there.
    """
    world, result, _ = postfix_run
    got = gs.results(result.output)
    assert got["root-path"] == f"regular file {world.users['alice'].uid}"
    assert got["root-append"] == "0"
    assert mailbox_bytes(world, "alice").count(b"Subject: hlfs-root-append\n") == 1


def test_mailbox_command_hlfs_deliver(postfix_run):
    """
    With C{mailbox_command} = C{hlfs deliver} as documented, every message
    of every mailbox parses with Python's C{mailbox}, has its Subject and
    no defects, and the From_ line of each carries its envelope sender.
    """
    world, result, _ = postfix_run
    for name in RECIPIENTS:
        path = spool_of(world, name) / name
        messages = list(mailbox.mbox(str(path)))
        subjects = [m["Subject"] for m in messages]
        assert subjects.count(f"hlfs-command-{name}") == 1, (name, subjects, result.describe())
        for message in messages:
            assert message["Subject"], (name, message.get_from())
            assert not message.defects, (name, message["Subject"], message.defects)
            sender = message.get_from().split()[0]
            if message["Subject"].startswith("hlfs-command-"):
                assert sender == COMMAND_SENDER, message.get_from()
            elif message["Subject"] != "hlfs-root-append":
                assert sender == SENDER, message.get_from()
