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
left anywhere, every mailbox parsing.  Each root agent's traced calls on
the mailbox and its dotlock, successful or not, go into the
measurements.

Root's writers at the edges (L{rootwrites}): erin's home fills while
each root agent writes (it must meet ENOSPC, fail as on a full local
disk, and leave her mailbox as it was); alice's dotlock, held through
her own view, holds off root's agents, and root's, taken with
procmail's C{lockfile}, holds off her own tools.
"""

import re
from pathlib import Path

import pytest

import guestscript as gs
import rootwrites
from agents_scenario import (
    LOCKED, ROOT_AGENTS, ROOT_RECIPIENTS, SENDMAIL_MAIL_LOCAL, edges_record, expected, failure_record,
    make_world, scenario, subject, trace, trace_record,
)
from hlfsserver import HlfsServer
from tests.support.mail import parse_mbox
from world import SUBDIR

@pytest.fixture(scope="module")
def trees(package_sets):
    return package_sets("postfix", "agents", "opensmtpd", "sendmail")


@pytest.fixture(scope="module")
def agents_world(kernel_workdir):
    """
    The scenario's world, erin's home a full tmpfs (L{rootwrites.full_home})
    until the module's tests are done.
    """
    world = make_world(kernel_workdir / "agents")
    with rootwrites.full_home(world):
        yield world


@pytest.fixture(scope="module")
def agents_run(agents_world, guest, probe, kernel_workdir, precompiled, trees, measure):
    world = agents_world
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
    for line in edges_record(result):
        measure(f"scenario 12, {line}")
    for agent in (*ROOT_AGENTS, "opensmtpd"):
        for line in trace_record(result, agent):
            measure(f"scenario 12, {line}")
    return world, result


def spool_of(world, name):
    user = world.users[name]
    return Path(f"{user.home}/{SUBDIR}") if user.usable else world.alt_dir


def spools(world):
    names = ("alice", "bob", "root", rootwrites.FULL)
    return [world.homes / name / SUBDIR for name in names] + [world.alt_dir]


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
    for name in ("alice", "bob", "dora", rootwrites.FULL):
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


def full_names():
    return [agent for agent, _ in rootwrites.FULL_AGENTS]


@pytest.mark.parametrize("agent", full_names())
def test_full_home_fails_as_on_a_full_disk(agents_run, agent):
    """
    On erin's full home, each root agent is refused by hlfs as by a full
    local disk: its trace shows ENOSPC on her mailbox (but for sendmail's
    C{mail.local}, which fails before writing: L{SENDMAIL_MAIL_LOCAL}),
    it exits with the status it gives on a local tmpfs filled the same
    way in the same guest (procmail EX_CANTCREAT, OpenSMTPD's
    C{mail.local} EX_OSERR, sendmail's EX_TEMPFAIL: the agents' own
    choices), and it takes back what it wrote: her mailbox is as it was
    after each try, and no dotlock is left.
    """
    world, result = agents_run
    got = gs.results(result.output)
    record = "\n".join(edges_record(result))
    status, local = got[f"full.{agent}"].split()[0], got[f"full-local.{agent}"].split()[0]
    assert local != "0" and status == local, record
    for prefix in ("full", "full-local"):
        assert got[f"{prefix}.{agent}.sum"] == got[f"{prefix}.before.sum"], record
        assert got[f"{prefix}.{agent}.lock"] == "none", record
    if agent != "sendmail-mail.local":
        assert "No space left" in got[f"full.{agent}"], record
        # On her mailbox: through root's view (/mail/erin) for the
        # mail.locals; procmail writes as the recipient, through her own.
        mailbox = re.compile(rf"(/mail/|\.mailspool/){rootwrites.FULL}>")
        nospc = [line for line in trace(result, f"full.{agent}") if "= -1 ENOSPC" in line]
        assert nospc and all(mailbox.search(line) for line in nospc), record


def test_full_home_nothing_half_written(agents_run):
    """
    After every agent's try, Postfix's among them, erin's mailbox on the
    host is byte for byte what it was, her spool holds nothing new, and
    Postfix did not count her message delivered.
    """
    world, result = agents_run
    spool = world.homes / rootwrites.FULL / SUBDIR
    assert (spool / rootwrites.FULL).read_bytes() == rootwrites.BEFORE
    assert sorted(p.name for p in spool.iterdir()) == [".owner", rootwrites.FULL]
    log = [line for line in result.output.splitlines() if line.startswith("LOG.postfix ")]
    erin = [line for line in log if f"to=<{rootwrites.FULL}@" in line]
    assert len(erin) == 1 and "status=sent" not in erin[0], "\n".join(log)


@pytest.mark.parametrize("agent", [agent for agent, _ in rootwrites.HELD_AGENTS])
def test_reader_lock_holds_off_root_agent(agents_run, agent):
    """
    While alice holds her dotlock through her own view (C{mutt_dotlock}),
    a root agent delivering to her through root's view is refused the
    lock (EEXIST in its trace), keeps waiting and leaves her mailbox
    untouched; once she lets go it delivers, exactly once.
    """
    world, result = agents_run
    got = gs.results(result.output)
    tag = f"held.{agent}"
    record = "\n".join(edges_record(result))
    assert got[f"{tag}.take"] == "0", record
    assert int(got[f"{tag}.refused"]) >= 1, record
    assert (got[f"{tag}.waiting"], got[f"{tag}.untouched"]) == ("yes", "yes"), record
    assert got[f"{tag}.release"] == "0" and got[tag].split()[0] == "0", record
    assert delivered_once(world, f"held-{agent}", LOCKED), record


def test_root_lock_holds_off_reader(agents_run):
    """
    While root holds alice's dotlock, taken with procmail's C{lockfile}
    through root's view (hlfs makes the real lock, as alice), alice's
    own C{mutt_dotlock} and C{lockfile} are refused it (each trying
    once) and leave it in place; once root removes it, hers takes it.
    """
    world, result = agents_run
    got = gs.results(result.output)
    record = "\n".join(edges_record(result))
    assert got["rootlock.take"] == "0", record
    assert got["rootlock.seen"].startswith(f"{world.users[LOCKED].uid} "), record
    assert got["rootlock.mutt-dotlock"] == "3", record  # DL_EX_EXIST
    assert got["rootlock.lockfile"] == "73", record  # EX_CANTCREAT: "giving up"
    assert got["rootlock.still"] == "held", record
    assert got["rootlock.release"] == "0", record
    assert (got["rootlock.mutt-dotlock-after"], got["rootlock.mutt-dotlock-unlock"]) == ("0", "0"), record
    assert got["rootlock.gone"] == "none", record
