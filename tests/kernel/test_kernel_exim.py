"""
Scenario 9: Debian's Exim 4.96, unchanged ("local delivery only", the
default C{mail_spool} appendfile transport), delivers through hlfs in the
guest.

Exim's packages conflict with Postfix's, so this guest gets its own
unpacked set (L{debcache}).  Mail goes in with Exim's C{sendmail} and over
SMTP to 127.0.0.1:25; then s-nail, as alice and then as bob, lists its
mailbox through the link and deletes one message.  The host finds each
message once in its recipient's own mailbox, carol's (home C{/}) in the
alternate spool, and nothing anywhere else.
"""

import re
import sys
from pathlib import Path

import pytest

import debcache
import guestscript as gs
import mta
from hlfsserver import HlfsServer
from world import SUBDIR, World

RECIPIENTS = ("alice", "bob", "carol")
WAYS = ("sendmail", "smtp")
SENDER = "sender@example.org"

#: Exim's main log lines for a final delivery result: delivered (=>) or
#: failed (**); a deferral (==) is retried.
RESULT_LINES = " (=>|\\*\\*) "


def subject(way, name):
    return f"hlfs-exim-{way}-{name}"



def scenario(world, probe, tree, port):
    users = [world.users[n] for n in RECIPIENTS]
    lines = [
        gs.preamble(probe),
        mta.install(tree),
        mta.accounts(users),
        mta.mail_link(),
        gs.mount("$P", "/mail", port, 3, gs.daemon_cache_options()),
        mta.exim_setup(),
    ]
    for name in RECIPIENTS:
        lines.append(mta.sendmail(SENDER, name, subject("sendmail", name)))
        lines.append(mta.smtp(SENDER, f"{name}@{mta.MAIL_HOST}", subject("smtp", name), sys.executable))
    lines.append(mta.wait_deliveries(
        len(RECIPIENTS) * len(WAYS), log="/var/log/exim4/mainlog", pattern=RESULT_LINES, queue="exim4 -bp",
    ))
    # The reader: s-nail as each user lists its mailbox through the link,
    # deletes the first message with its locking, and saves.
    for name in ("alice", "bob"):
        user = world.users[name]
        lines.append(
            f"printf 'headers\\ndelete 1\\nquit\\n' | as {user.uid} {user.gid} {user.gid}"
            f" env HOME=/tmp s-nail -# -f /var/mail/{name} > /tmp/snail-{name}.txt 2>&1; R snail.{name} $?"
        )
        lines.append(f"sed 's/^/SNAIL.{name} /' /tmp/snail-{name}.txt")
    lines.append("sed 's/^/LOG /' /var/log/exim4/mainlog")
    lines.append("[ -s /var/log/exim4/paniclog ] && sed 's/^/PANIC /' /var/log/exim4/paniclog")
    lines.append("true")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


@pytest.fixture(scope="module")
def exim_run(guest, probe, kernel_workdir, precompiled, exim_tree, measure):
    world = World(kernel_workdir / "exim").create()
    server = HlfsServer(world, kernel_workdir / "exim-server").start()
    try:
        result = guest.run(
            kernel_workdir / "exim-run", scenario(world, probe, exim_tree, server.port),
            shares=[world.base], timeout=600,
        )
    finally:
        server.stop()
    assert result.status == 0, result.describe() + server.log()
    measure(f"scenario 9 (Exim): {debcache.versions(exim_tree)}, boot and scenario {result.elapsed:.1f}s")
    return world, result


def test_exim_default_transport(exim_run):
    """
    Exim's Debian-default C{mail_spool} transport (appendfile, run as the
    recipient with group mail) puts every message, sent with sendmail or
    over SMTP, exactly once in its recipient's own mailbox on the host;
    nothing lands in root's spool or anywhere else.
    """
    world, result = exim_run
    log = [line[4:] for line in result.output.splitlines() if line.startswith("LOG ")]
    assert sum(" => " in line and "T=mail_spool" in line for line in log) == len(RECIPIENTS) * len(WAYS), (
        "\n".join(log) + result.describe())
    found = []
    for spool in [world.homes / n / SUBDIR for n in ("alice", "bob", "root")] + [world.alt_dir]:
        for path in sorted(spool.glob("*")):
            if path.is_file() and not path.name.startswith("."):
                for s in re.findall(rb"^Subject: (\S+)$", path.read_bytes(), re.M):
                    found.append((str(path), s.decode()))
    want = []
    for name in RECIPIENTS:
        user = world.users[name]
        spool = Path(f"{user.home}/{SUBDIR}") if user.usable else world.alt_dir
        want += [(str(spool / name), subject(way, name)) for way in WAYS]
    # s-nail deleted one of alice's and one of bob's two messages.
    kept = [(path, s) for path, s in want if "carol" in s]
    for name in ("alice", "bob"):
        mine = [(path, s) for path, s in found if path.endswith(f"/{name}")]
        assert len(mine) == 1 and mine[0] in want, (name, found, result.describe())
        kept += mine
    assert sorted(found) == sorted(kept), result.describe()


def test_reader_sees_only_its_own_mail(exim_run):
    """
    s-nail run as alice, then as bob, lists through C{/var/mail/NAME} only
    that user's two messages, and its delete (under its own locking) shows
    on the host: one message left in each mailbox (checked above).
    """
    world, result = exim_run
    got = gs.results(result.output)
    for name in ("alice", "bob"):
        assert got.get(f"snail.{name}") == "0", result.describe()
        listing = "\n".join(line for line in result.output.splitlines() if line.startswith(f"SNAIL.{name} "))
        subjects = set(re.findall(r"hlfs-exim-\w+-(\w+)", listing))
        assert subjects == {name}, listing
        assert all(subject(way, name)[:30] in listing for way in WAYS), listing
