"""
The script of scenario 12 (L{test_kernel_agents}): every other delivery
agent and reader Debian ships, in one guest, the world it runs in, and
the reading of what it printed.
"""

import os
import re
import sys
from pathlib import Path

import agents
import guestscript as gs
import mta
import rootwrites
from world import SUBDIR, User, World

SENDER = "sender@example.org"

#: Messages each agent delivers, by recipient, as (tag, recipients).
WORKING = (
    ("lda", ("alice", "dora")),
    ("lmtp-pair", ("alice", "bob")),
    ("lmtp", ("dora",)),
    ("opensmtpd", ("alice", "bob", "dora")),
)

#: The agents that need root to see real mailboxes, each with its
#: recipients.
ROOT_AGENTS = ("postfix-procmail", "procmail-d", "opensmtpd-mail.local", "sendmail-mail.local")
ROOT_RECIPIENTS = ("alice", "dora")

#: Why sendmail's mail.local, run as root, still cannot deliver.
SENDMAIL_MAIL_LOCAL = (
    "sendmail's mail.local lstat()s /var/mail/NAME as root (root's view: hlfs's regular file), then "
    "setreuid()s to the recipient and opens it (the recipient's view: its home's file) and demands "
    "the same st_dev and st_ino: one file seen through two mounts, never equal; it exits EX_TEMPFAIL "
    "(\"fstat: file changed after open\"), and the message stays queued"
)


#: The user whose dotlock is fought over (L{rootwrites.reader_holds},
#: L{rootwrites.root_holds}).
LOCKED = "alice"


def subject(tag, name=None):
    return f"hlfs-agents-{tag}" + (f"-{name}" if name else "")


def expected():
    """
    @return: (recipient, Subject) of every message that must be in a
        mailbox at the end.
    """
    found = []
    for tag, names in WORKING:
        if len(names) > 1 and tag.endswith("pair"):
            found += [(name, subject(tag)) for name in names]
        else:
            found += [(name, subject(tag, name)) for name in names]
    found += [(LOCKED, subject(f"held-{agent}", LOCKED)) for agent, _ in rootwrites.HELD_AGENTS]
    return found + [(rootwrites.FULL, "hlfs-agents-full-before")]


def postfix_part(world):
    """
    Postfix delivering through Debian's setuid procmail; C{procmail -d} as
    root.
    """
    lines = [
        mta.postfix_setup(('mailbox_command=procmail -a "$EXTENSION"',)),
        mta.postfix_start(),
        f'R procmail-mode "$(stat -c "%a %U %G" {agents.PROCMAIL})"',
        agents.trace_attach("postfix-procmail", "$(head -1 /var/spool/postfix/pid/master.pid)"),
    ]
    for name in ROOT_RECIPIENTS:
        lines.append(mta.sendmail(SENDER, name, subject("postfix-procmail", name)))
    full = subject("full-postfix-procmail", rootwrites.FULL)
    lines += [
        rootwrites.long_message("/tmp/msg.full-postfix", SENDER, rootwrites.FULL, full),
        f"/usr/sbin/sendmail -f {SENDER} {rootwrites.FULL} < /tmp/msg.full-postfix; R sendmail.{full} $?\n",
        mta.wait_deliveries(len(ROOT_RECIPIENTS) + 1, pattern="postfix/local\\[.*status="),
        agents.trace_stop("postfix-procmail"),
        "postfix stop >/dev/null 2>&1",
        "grep -E 'postfix/local\\[.*status=' /var/log/postfix.log | sed 's/^/LOG.postfix /'",
        agents.trace_lines("postfix-procmail"),
    ]
    return lines + as_root("procmail-d", f"{agents.PROCMAIL} -d {{name}}")


def dovecot_part(world, python):
    """
    Dovecot: LDA as root, LMTP, IMAP, POP3; mutt.
    """
    lines = [agents.dovecot_setup(python)]
    lda = [(name, subject("lda", name)) for name in ("alice", "dora")]
    lda += [("alice", subject("mutt-delete", "alice")), ("bob", subject("pop3-delete", "bob"))]
    for name, text in lda:
        tag = f"lda.{text}"
        lines.append(agents.write_message(f"/tmp/msg.{tag}", SENDER, name, text))
        lines.append(f"{agents.DOVECOT_LDA} -d {name} -f {SENDER} < /tmp/msg.{tag} > /tmp/out.{tag} 2>&1;"
                     f' R {tag} $? "$(tr "\\n" " " < /tmp/out.{tag})"')
    lines.append(agents.lmtp(python, SENDER, ["alice", "bob"], subject("lmtp-pair")))
    lines.append(agents.lmtp(python, SENDER, ["dora"], subject("lmtp", "dora")))
    lines.append(agents.imap_subjects(python, "alice", "imap.alice"))
    lines.append(agents.pop3_delete_first(python, "bob", "pop3.bob"))
    alice = world.users["alice"]
    lines.append(agents.mutt_dotlock(alice, "mutt-dotlock.alice"))
    lines.append(agents.mutt_delete(alice, subject("mutt-delete", "alice"), "mutt.alice"))
    lines.append("doveadm stop >/dev/null 2>&1 || true")
    lines.append("sed 's/^/LOG.dovecot /' /var/log/dovecot.log")
    return lines


def opensmtpd_part(tree):
    """
    OpenSMTPD's mbox delivery; its mail.local as root.
    """
    lines = [mta.install(tree), agents.opensmtpd_setup(), agents.opensmtpd_start("opensmtpd")]
    # As after a boot: no name of /mail in the client's dentry cache, so
    # that the exclusive open goes to the server as a CREATE.
    lines += ["sync; echo 2 > /proc/sys/vm/drop_caches", gs.mountstats("opensmtpd-before", "/mail")]
    for name in ("alice", "bob", "dora"):
        lines.append(mta.sendmail(SENDER, name, subject("opensmtpd", name)))
    lines += [
        mta.wait_deliveries(3, log="/var/log/smtpd.log", pattern="mda delivery.*result=",
                            queue="timeout 60 smtpctl show queue"),
        gs.mountstats("opensmtpd-after", "/mail"),
        agents.opensmtpd_stop("opensmtpd"),
        "sed 's/^/LOG.opensmtpd /' /var/log/smtpd.log",
        agents.trace_lines("opensmtpd"),
    ]
    return lines + as_root("opensmtpd-mail.local", f"{agents.OPENSMTPD_MAIL_LOCAL} -f {SENDER} {{name}}")


def sendmail_part(tree):
    """
    sendmail's mail.local as root.
    """
    return [mta.install(tree)] + as_root("sendmail-mail.local", f"{agents.SENDMAIL_MAIL_LOCAL} -f {SENDER} {{name}}")


def edges_part(world):
    """
    Root's agents on a full home, and a dotlock held on either side
    (L{rootwrites}); then the same agents on a full local disk.
    """
    erin, locked = world.users[rootwrites.FULL], world.users[LOCKED]
    lines = rootwrites.full_runs("full", erin, SENDER, subject)
    for agent, command in rootwrites.HELD_AGENTS:
        lines.append(rootwrites.reader_holds(agent, command, locked, SENDER, subject))
    return lines + [rootwrites.root_holds(locked)]


def as_root(agent, command):
    """
    Shell lines running C{command} (C{{name}} the recipient) as root for
    each of L{ROOT_RECIPIENTS}, a message on its input.
    """
    lines = []
    for name in ROOT_RECIPIENTS:
        tag = f"{agent}.{name}"
        lines.append(agents.write_message(f"/tmp/msg.{tag}", SENDER, name, subject(agent, name)))
        lines.append(agents.run_as_root(tag, command.format(name=name), f"/tmp/msg.{tag}"))
    return lines


def make_world(base):
    """
    The world, with dora, whose home's spool is a file: hlfs finds her
    home unusable and gives her the alternate spool.
    """
    world = World(base)
    world.users["dora"] = dora = User("dora", 5005, 5005, str(Path(base) / "home" / "dora"), usable=False)
    # erin's home is made by rootwrites.full_home, a tmpfs over this.
    world.users[rootwrites.FULL] = rootwrites.full_user(base)
    world.create()
    home = Path(dora.home)
    home.mkdir()
    (home / SUBDIR).write_text("not a directory\n")
    for path in (home, home / SUBDIR):
        os.chown(path, dora.uid, dora.gid)
    return world


def scenario(world, probe, trees, port):
    python = sys.executable
    users = [world.users[n] for n in ("alice", "bob", "dora", rootwrites.FULL)]
    lines = [
        gs.preamble(probe),
        mta.install(trees["postfix"]),
        mta.install(trees["agents"]),
        mta.accounts(users),
        agents.accounts(),
        mta.mail_link(),
        gs.mount("$P", "/mail", port, 3, gs.daemon_cache_options() + ("rw",)),
        *postfix_part(world),
        *dovecot_part(world, python),
        *opensmtpd_part(trees["opensmtpd"]),
        *sendmail_part(trees["sendmail"]),
        *edges_part(world),
        'R root-listing "$(ls -a /var/mail/ | tr "\\n" " ")"',
        *rootwrites.local_reference(world.users[rootwrites.FULL], SENDER, subject),
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


# What the scenario printed, for its tests and the measurements.


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


#: The traces of a whole MTA and its delivery agents, one for every
#: recipient: Postfix running setuid procmail, OpenSMTPD's mbox action.
WHOLE_TRACES = ("postfix-procmail", "opensmtpd")

#: Which traced calls are about the mailbox or its dotlock.
MAILBOX_CALL = re.compile(
    r"^\d+ (lstat|stat|newfstatat|statx|access|open|openat|creat|link|linkat|rename|renameat2?|unlink|unlinkat|"
    r"chown|fchown|chmod|fchmod|fstat|write|fsync|fdatasync|ftruncate|fcntl|flock|close)\(")


def trace_record(result, agent, limit=80):
    """
    The traced calls of a root agent (failing or not) on each recipient's
    mailbox, its dotlock and its unique lock files, with their results,
    as they can be quoted: C{AGENT NAME strace: PID CALL = RESULT}.  Of
    an MTA's trace (L{WHOLE_TRACES}), the processes that touched that
    recipient's mailbox.
    """
    lines = []
    for name in ROOT_RECIPIENTS:
        tag = agent if agent in WHOLE_TRACES else f"{agent}.{name}"
        mailbox = re.compile(rf"(/mail/|\.mailspool/|alt_mail/){name}\b")
        about = re.compile(rf"(/mail/|\.mailspool/|alt_mail/)({name}\b|_)")
        traced = [line for line in trace(result, tag) if MAILBOX_CALL.match(line)]
        pids = {line.split(" ", 1)[0] for line in traced if mailbox.search(line)}
        kept = [line for line in traced if line.split(" ", 1)[0] in pids and about.search(line)]
        lines += [f"{agent} {name} strace: {line}" for line in kept[:limit]]
        if len(kept) > limit:
            lines.append(f"{agent} {name} strace: ({len(kept) - limit} more)")
    return lines


def edges_record(result):
    """
    How root's agents fared on erin's full home and on a full local disk,
    and around a held dotlock: each result line, for the measurements.
    """
    got = gs.results(result.output)
    prefixes = ("full.", "full-local.", "held.", "rootlock")
    return [f"{key}: {value}" for key, value in got.items() if key.startswith(prefixes)]
