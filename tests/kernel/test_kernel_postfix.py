"""
Scenario 7: Debian's Postfix, unchanged, delivers through hlfs in the
guest; s-nail reads the mailboxes.

One guest runs every part, against two daemons on the host that share one
world:

  - C{defaults}: the daemon's defaults.  The mail owner C{postfix} is a
    system account (below UID_MIN), so its link is the sticky,
    world-writable alternate spool; local(8) sees that and delivers as the
    recipient.
  - C{lowered}: C{--uid-min} lowered under C{postfix}'s uid, so that
    C{postfix} gets a usable spool of its own (0700): local(8) then opens
    the mailbox as root, and the root rule must take it to the recipient's
    spool.

The guest mounts one, then the other, on C{/mail}.  Mail goes in with
Postfix's C{sendmail} and over SMTP to 127.0.0.1:25; then with
C{mailbox_command} set to C{hlfs deliver}; then s-nail, as alice and then
as bob, lists and deletes.  The host checks every mailbox.
"""

import mailbox
import os
import re
import sys
from pathlib import Path

import pytest

import debcache
import guestscript as gs
import mta
from hlfsserver import HlfsServer, plugin_help, venv_bin
from world import SUBDIR, User, World

#: Recipients: two users with homes, one whose home is unusable.
RECIPIENTS = ("alice", "bob", "carol")

#: (state, way in): every combination sends one message to each recipient.
ROUTES = tuple((state, way) for state in ("defaults", "lowered") for way in ("sendmail", "smtp"))

SENDER = "sender@example.org"
COMMAND_SENDER = "envelope@example.net"


def subject(state, way, name):
    return f"hlfs-postfix-{state}-{way}-{name}"


@pytest.fixture(scope="module")
def postfix_tree():
    try:
        return debcache.fetch_set("postfix", log=lambda line: sys.stderr.write(line + "\n"))
    except debcache.PackageFetchError as e:
        pytest.fail(f"Postfix and s-nail packages could not be fetched: {e}")


def make_world(base):
    world = World(base)
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


def scenario(world, probe, tree, ports):
    python = sys.executable
    hlfs = venv_bin("hlfs")
    users = [world.users[n] for n in ("alice", "bob", "carol")]
    lines = [
        gs.preamble(probe),
        mta.install(tree),
        mta.accounts(users),
        mta.mail_link(),
        mta.postfix_setup(),
        mta.postfix_start(),
    ]
    for state in ("defaults", "lowered"):
        lines.append(gs.mount("$P", "/mail", ports[state], 3, gs.daemon_cache_options()))
        lines.append(f'R postfix-link.{state} "$(as {mta.POSTFIX_UID} {mta.POSTFIX_UID} {mta.POSTFIX_UID} readlink /mail/home 2>&1)"')
        lines.append(f'R postfix-spool-mode.{state} "$(as {mta.POSTFIX_UID} {mta.POSTFIX_UID} {mta.POSTFIX_UID} stat -L -c %a /var/mail 2>&1)"')
        for name in RECIPIENTS:
            lines.append(mta.sendmail(SENDER, name, subject(state, "sendmail", name)))
            lines.append(mta.smtp(SENDER, f"{name}@{mta.MAIL_HOST}", subject(state, "smtp", name), python))
        lines.append(mta.wait_queue_empty())
        if state == "defaults":
            lines.append("umount /mail || exit 13")
    # Root's own path through the link (the lowered daemon is mounted).
    lines.append('R root-path "$(readlink -f /var/mail/alice 2>&1)"')
    lines.append("printf 'From root-append@example.org Thu Jan  1 00:00:00 2026\\nSubject: hlfs-root-append\\n\\nappended by root\\n\\n' >> /var/mail/alice; R root-append $?")
    # mailbox_command = hlfs deliver, the line docs/deliver.md gives.
    lines.append(f"postconf -e 'mailbox_command = {hlfs} deliver -f \"$SENDER\" \"$USER\"' && postfix reload >/dev/null 2>&1")
    for name in RECIPIENTS:
        lines.append(mta.sendmail(COMMAND_SENDER, name, f"hlfs-command-{name}"))
    lines.append(mta.wait_queue_empty(timeout=300))
    lines.append("postfix stop >/dev/null 2>&1")
    lines.append("sed 's/^/LOG /' /var/log/postfix.log")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


@pytest.fixture(scope="module")
def postfix_run(guest, probe, kernel_workdir, precompiled, postfix_tree):
    if plugin_help() is None:
        pytest.skip("the hlfs twistd plugin cannot run here (twistd hlfs --help fails)")
    world = make_world(kernel_workdir / "postfix")
    servers = {
        "defaults": HlfsServer(world, kernel_workdir / "postfix-defaults"),
        "lowered": HlfsServer(world, kernel_workdir / "postfix-lowered"),
    }
    for server in servers.values():
        server.start()
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
    return world, result, logs


def mailbox_text(world, name):
    user = world.users[name]
    spool = Path(f"{user.home}/{SUBDIR}") if user.usable else world.alt_dir
    path = spool / name
    return path.read_text(errors="replace") if path.exists() else ""


def test_postfix_prototype(postfix_run):
    world, result, logs = postfix_run
    print(result.output)
    for owner in ("alice", "bob", "carol", "root", "postfix"):
        for spool in (world.homes / owner / SUBDIR, world.alt_dir):
            for f in spool.glob("*") if spool.exists() else []:
                print("FILE", f, f.stat().st_size)
    assert False, result.describe()
