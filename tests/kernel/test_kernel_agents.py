"""
Scenario 12: every other delivery agent and reader Debian ships, unchanged,
through C{/var/mail -> /mail/home} on the daemon's own mount, in one boot.

  - Postfix with Debian's C{mailbox_command = procmail -a "$EXTENSION"}
    and procmail installed setuid root, as Debian installs it;
  - C{procmail -d NAME} run as root, as sendmail's C{local_procmail} does;
  - Dovecot with Debian's C{mail_location}: C{dovecot-lda -d} run as root,
    LMTP with two recipients in one transaction, IMAP and POP3 readers
    (POP3 deleting a message, which rewrites the mailbox);
  - mutt with its setgid C{mutt_dotlock}, deleting a message;
  - OpenSMTPD with the C{mbox} action: its root process first opens
    C{/var/mail/NAME} with C{O_CREAT|O_EXCL} and delivers only on EEXIST,
    then runs its C{mail.local} as the recipient;
  - OpenSMTPD's and sendmail's C{mail.local} run as root.

dora's home cannot take mail (its C{.mailspool} is a file): her mail goes
to the alternate spool.  (The world's carol, whose home is C{/}, would not
do for Dovecot: her C{~/mail} would be hlfs's own C{/mail}.)

OpenSMTPD and sendmail conflict with Postfix: their trees are copied over
the guest's root once Postfix has stopped.  The agents that run as root
on the mailbox itself (procmail setuid or C{-d}, both C{mail.local}s)
find, in root's view of real mailboxes, a regular file of the recipient's,
which hlfs writes as the recipient; procmail's unique file linked to the
lock is one of root's scratch files.  The scenario records how each fared
(exit status, message, and the C{strace -f} lines of its failing calls on
the spool).  sendmail's C{mail.local} alone cannot deliver: it C{lstat}s
the mailbox as root and opens it as the recipient, and the two are one
file seen through two mounts (L{SENDMAIL_MAIL_LOCAL}); its delivery is a
strict expected failure, deferred (EX_TEMPFAIL), never misdelivered.
Everything else is asserted: each message once in the right mailbox (the
alternate spool's for dora, whose home cannot take mail), no lock file
left anywhere, every mailbox parsing.
"""

import re
from pathlib import Path

import pytest

import guestscript as gs
from agents_scenario import (
    ROOT_AGENTS, ROOT_RECIPIENTS, SENDMAIL_MAIL_LOCAL, expected, make_world, scenario, subject,
)
from hlfsserver import HlfsServer
from tests.support.mail import parse_mbox
from world import SUBDIR

@pytest.fixture(scope="module")
def trees(package_sets):
    return package_sets("postfix", "agents", "opensmtpd", "sendmail")


@pytest.fixture(scope="module")
def agents_run(guest, probe, kernel_workdir, precompiled, trees, measure):
    world = make_world(kernel_workdir / "agents")
    server = HlfsServer(world, kernel_workdir / "agents-server").start()
    try:
        result = guest.run(
            kernel_workdir / "agents-run", scenario(world, probe, trees, server.port),
            shares=[world.base], timeout=1200,
        )
    finally:
        server.stop()
    assert result.status == 0, result.describe() + server.log()
    measure(f"scenario 12 (agents): boot and scenario {result.elapsed:.1f}s")
    for agent in ROOT_AGENTS:
        for line in failure_record(result, agent):
            measure(f"scenario 12, {line}")
    return world, result


def spool_of(world, name):
    user = world.users[name]
    return Path(f"{user.home}/{SUBDIR}") if user.usable else world.alt_dir


def spools(world):
    return [world.homes / name / SUBDIR for name in ("alice", "bob", "root")] + [world.alt_dir]


def dora_spool(world):
    """
    dora's C{.mailspool}, a file hlfs must leave as it is.
    """
    return (world.homes / "dora" / SUBDIR).read_text()


def found_subjects(world):
    """
    @return: every (mailbox file, Subject) in any spool.
    """
    found = []
    for spool in spools(world):
        for path in sorted(spool.glob("*")) if spool.exists() else []:
            if path.name.startswith(".") or not path.is_file():
                continue
            for line in re.findall(rb"^Subject: (\S+)$", path.read_bytes(), re.M):
                found.append((str(path), line.decode()))
    return found


def trace(result, tag):
    return [line.split(" ", 1)[1] for line in result.output.splitlines() if line.startswith(f"STRACE.{tag} ")]


def failure_record(result, agent):
    """
    How a root agent fared for each recipient: exit status, message and
    the failing calls of its trace (for Postfix's procmail, its log).
    """
    got = gs.results(result.output)
    lines = []
    if agent == "postfix-procmail":
        log = [line[12:] for line in result.output.splitlines() if line.startswith("LOG.postfix ")]
        lines += [f"{agent}: {line}" for line in log if "status=" in line]
        traces = trace(result, agent)
    else:
        traces = []
        for name in ROOT_RECIPIENTS:
            lines.append(f"{agent} {name}: exit {got.get(f'{agent}.{name}', '?')}")
            traces += trace(result, f"{agent}.{name}")
    lines += [f"{agent} strace: {line}" for line in traces if "= -1 " in line]
    return lines


def test_each_message_once_in_its_mailbox(agents_run):
    """
    Each message of the agents that work lands exactly once in its
    recipient's own mailbox, dora's in the alternate spool; the messages
    mutt and POP3 deleted are gone; nothing of the root agents' is
    anywhere else than in its recipient's mailbox.
    """
    world, result = agents_run
    found = found_subjects(world)
    want = sorted((str(spool_of(world, name) / name), text) for name, text in expected())
    root_subjects = {subject(agent, name): name for agent in ROOT_AGENTS for name in ROOT_RECIPIENTS}
    working = sorted(item for item in found if item[1] not in root_subjects)
    assert working == want, result.describe()
    for path, text in found:
        if text in root_subjects:
            assert path == str(spool_of(world, root_subjects[text]) / root_subjects[text]), (path, text)


def test_no_lock_left_and_every_mailbox_parses(agents_run):
    """
    No lock file, and no hidden C{.nfs} file, is left in any spool, even
    after the root agents failed (OpenSMTPD's C{mail.local} removes its
    lock while it holds it open: the client's silly rename); every
    mailbox parses, each message with its Subject and no defects (as its
    readers parse it: L{parse_mbox}).
    """
    world, result = agents_run
    for spool in spools(world):
        leftovers = [p.name for p in spool.glob("*") if p.name.endswith(".lock") or p.name.startswith(".nfs")]
        assert leftovers == [], (spool, leftovers, result.describe())
    for name in ("alice", "bob", "dora"):
        path = spool_of(world, name) / name
        for message in parse_mbox(path.read_bytes()):
            assert message["Subject"] and not message.defects, (name, message.items())
    assert gs.results(result.output)["root-listing"].split() == [".", "..", "home"]
    assert dora_spool(world) == "not a directory\n"


def test_opensmtpd_mbox_delivers(agents_run):
    """
    OpenSMTPD's C{mbox} action delivers every message: its root process's
    C{open(/var/mail/NAME, O_RDONLY|O_CREAT|O_EXCL)} gets EEXIST (hlfs's
    CREATE of an existing name), and its C{mail.local}, run as the
    recipient, appends.  The client's dentry cache is dropped first, so
    each open reaches hlfs as a CREATE, as after a boot.
    """
    world, result = agents_run
    log = [line for line in result.output.splitlines() if line.startswith("LOG.opensmtpd ")]
    delivered = [line for line in log if "mda delivery" in line]
    assert len(delivered) == 3 and all("result=Ok" in line for line in delivered), "\n".join(log)
    opens = [line for line in trace(result, "opensmtpd") if "O_RDONLY|O_CREAT|O_EXCL" in line]
    assert len(opens) >= 3 and all("= -1 EEXIST" in line for line in opens), "\n".join(opens)
    # The client asked hlfs: a CREATE per delivery, not a cached dentry.
    assert gs.op_delta(result.output, "opensmtpd-before", "opensmtpd-after").get("CREATE", 0) >= 3


def test_dovecot(agents_run):
    """
    Dovecot with Debian's C{mail_location}: C{dovecot-lda -d} as root and
    LMTP (two recipients in one transaction) deliver; IMAP lists alice's
    mailbox; POP3 deletes bob's first message.
    """
    world, result = agents_run
    got = gs.results(result.output)
    assert got["dovecot-location"] == "mail_location = mbox:~/mail:INBOX=/var/mail/%u"
    for name, text in (("alice", subject("lda", "alice")), ("dora", subject("lda", "dora"))):
        assert got[f"lda.{text}"].split()[0] == "0", (name, got[f"lda.{text}"], result.describe())
    assert got[f"lmtp.{subject('lmtp-pair')}"] == "0 250 250", result.describe()
    assert got[f"lmtp.{subject('lmtp', 'dora')}"] == "0 250", result.describe()
    status, *listed = got["imap.alice"].split()
    assert status == "0" and subject("lda", "alice") in listed and subject("lmtp-pair") in listed, got["imap.alice"]
    assert got["pop3.bob"] == "0 2", result.describe()


def test_mutt(agents_run):
    """
    mutt's C{mutt_dotlock} takes and releases alice's dotlock through her
    view; mutt deletes a message and saves the mailbox.
    """
    world, result = agents_run
    got = gs.results(result.output)
    assert (got["mutt-dotlock.alice.lock"], got["mutt-dotlock.alice.unlock"]) == ("0", "0"), result.describe()
    assert got["mutt-dotlock.alice.held"] == "/var/mail/alice.lock", result.describe()
    assert got["mutt.alice"] == "0", result.describe()
    assert subject("mutt-delete", "alice").encode() not in (spool_of(world, "alice") / "alice").read_bytes()


def delivered_once(world, agent, name):
    path = spool_of(world, name) / name
    return path.read_bytes().count(f"Subject: {subject(agent, name)}\n".encode()) == 1


def test_postfix_with_setuid_procmail(agents_run):
    """
    Debian's Postfix with procmail setuid root as its C{mailbox_command}
    delivers every message.
    """
    world, result = agents_run
    record = "\n".join(failure_record(result, "postfix-procmail"))
    for name in ROOT_RECIPIENTS:
        assert delivered_once(world, "postfix-procmail", name), record


@pytest.mark.parametrize("agent", [
    *ROOT_AGENTS[1:3],
    pytest.param(ROOT_AGENTS[3], marks=pytest.mark.xfail(strict=True, reason=SENDMAIL_MAIL_LOCAL)),
])
def test_agent_as_root(agents_run, agent):
    """
    C{procmail -d NAME} and both C{mail.local}s, run as root, deliver.
    """
    world, result = agents_run
    got = gs.results(result.output)
    record = "\n".join(failure_record(result, agent))
    for name in ROOT_RECIPIENTS:
        assert got[f"{agent}.{name}"].split()[0] == "0", record
        assert delivered_once(world, agent, name), record
