"""
Root's writers at the edges, for scenario 12 (L{test_kernel_agents}):
a home that fills while root's agent writes, and a dotlock held on one
side of hlfs while the other side tries to take it.

  - B{A full home}: erin's home is a small tmpfs on the host, filled but
    for L{FREE} bytes, so hlfs's home check (a small file) still passes
    and her mail is not sent to the alternate spool; each agent that
    runs as root on her mailbox (C{procmail -d}, procmail setuid as
    Postfix runs it, both C{mail.local}s, and Postfix itself) is handed
    a message larger than what is left.  Its first pages land, then
    the home answers ENOSPC; the agent must see it, fail as it fails on
    a full local disk, and take back what it wrote.  The C{mail.local}s
    write through root's view, where hlfs writes as erin and answers
    NOSPC (at the C{write()} itself: hlfs's mount is synchronous);
    procmail looks at the mailbox as root, then switches to the
    recipient and writes through her own view.  The same agents
    then run, in the same guest, on a local tmpfs at C{/var/mail} filled
    the same way: the reference each one is held to.
  - B{A reader's lock}: alice takes her dotlock through her own view
    (C{mutt_dotlock}, as mutt does) while a root agent delivers to her
    through root's view: the agent is refused the lock, waits, and
    writes nothing until she lets go; then it delivers once.
  - B{Root's lock}: root takes alice's dotlock with procmail's
    C{lockfile} through root's view (hlfs makes the real lock, as
    alice); alice's own tools (C{mutt_dotlock}, C{lockfile}) are then
    refused it, until root removes it.
"""

import contextlib
import os
import shlex
from pathlib import Path

import agents
from tests.support.filesystems import fill, tmpfs
from world import SUBDIR, User

#: The user whose home fills.
FULL = "erin"

#: What is left in her home: room for hlfs's home check and a few pages
#: of mail, not for a whole message.
FREE = 16384

#: Lines of the long message (about 100 KiB).
LONG_LINES = 1000

#: erin's mailbox before: one whole message, which must stay as it is.
BEFORE = (
    b"From sender@example.org  Sat Dec  5 12:00:00 2026\n"
    b"From: sender@example.org\nTo: erin\nSubject: hlfs-agents-full-before\n\n"
    b"the message erin already has\n\n"
)

#: The root agents tried on the full home, each with its command.
FULL_AGENTS = (
    ("procmail-d", f"{agents.PROCMAIL} -d {FULL}"),
    # As Postfix's local(8) runs its mailbox_command: as the recipient,
    # procmail's setuid bit making it root.
    ("procmail-setuid", f'"$P" as {{uid}} {{uid}} {{uid}} env HOME={{home}} LOGNAME={FULL} USER={FULL}'
                        f' {agents.PROCMAIL} -a ""'),
    ("opensmtpd-mail.local", f"{agents.OPENSMTPD_MAIL_LOCAL} -f {{sender}} {FULL}"),
    ("sendmail-mail.local", f"{agents.SENDMAIL_MAIL_LOCAL} -f {{sender}} {FULL}"),
)

#: The root agents that wait for a reader's lock, with their commands.
HELD_AGENTS = (
    ("procmail-d", f"{agents.PROCMAIL} -d {{name}}"),
    ("opensmtpd-mail.local", f"{agents.OPENSMTPD_MAIL_LOCAL} -f {{sender}} {{name}}"),
)

MUTT_DOTLOCK = "/usr/bin/mutt_dotlock"
LOCKFILE = "/usr/bin/lockfile"


def full_user(base):
    return User(FULL, 5006, 5006, str(Path(base) / "home" / FULL))


@contextlib.contextmanager
def full_home(world):
    """
    Mount a small tmpfs as erin's home (on the host, where hlfs writes
    it), with her spool and mailbox, filled to all but L{FREE} bytes;
    unmounted after the block.
    """
    user = world.users[FULL]
    home = Path(user.home)
    with tmpfs(str(home), "1m"):
        spool = home / SUBDIR
        spool.mkdir()
        (spool / ".owner").write_text(f"{FULL}\n")
        (spool / FULL).write_bytes(BEFORE)
        for path, mode in ((home, 0o755), (spool, 0o755), (spool / ".owner", 0o644), (spool / FULL, 0o600)):
            os.chown(path, user.uid, user.gid)
            os.chmod(path, mode)
        filler = fill(str(home))
        os.truncate(filler, os.path.getsize(filler) - FREE)
        yield spool


def long_message(path, sender, recipient, subject):
    """
    Shell lines writing a message of about 100 KiB.
    """
    header = f"From: {sender}\nTo: {recipient}\nSubject: {subject}\n\n"
    line = "a line of a long message, longer than what is left in the recipient's home, to the end"
    return f"{{ printf %s {shlex.quote(header)}; yes {shlex.quote(line)} | head -n {LONG_LINES}; }} > {path}\n"


def mailbox_state(tag, path):
    """
    Shell lines recording a mailbox's checksum (C{cksum}: CRC and size),
    read as root, and whether its dotlock exists.
    """
    return (
        f'R {tag}.sum "$(cksum < {path} 2>&1)"\n'
        f'R {tag}.lock "$([ -e {path}.lock ] && echo left || echo none)"\n'
    )


def full_runs(prefix, user, sender, subject):
    """
    Shell lines running each of L{FULL_AGENTS} on erin's mailbox with a
    long message, recording its status, its output, its trace and the
    mailbox after it.
    """
    lines = [mailbox_state(f"{prefix}.before", f"/var/mail/{FULL}")]
    for agent, command in FULL_AGENTS:
        tag = f"{prefix}.{agent}"
        lines.append(long_message(f"/tmp/msg.{tag}", sender, FULL, subject(f"{prefix}-{agent}", FULL)))
        lines.append(agents.run_as_root(
            tag, command.format(uid=user.uid, home=user.home, sender=sender), f"/tmp/msg.{tag}"))
        lines.append(mailbox_state(tag, f"/var/mail/{FULL}"))
    return lines


def local_reference(user, sender, subject):
    """
    Shell lines making C{/var/mail} a local tmpfs with erin's mailbox as
    it was, filled the same way, and running the same agents there: what
    each does on a full disk without hlfs.  (Last in a scenario:
    C{/var/mail} is no longer the link.)
    """
    setup = f"""\
rm -f /var/mail && mkdir /var/mail
mount -t tmpfs -o size=256k,mode=1777 tmpfs /var/mail || {{ echo "TMPFS FAILED"; exit 16; }}
printf %s {shlex.quote(BEFORE.decode())} > /var/mail/{FULL}
chown {user.uid}:{user.gid} /var/mail/{FULL} && chmod 600 /var/mail/{FULL}
dd if=/dev/zero of=/var/mail/.filler bs=4k 2>/dev/null; truncate -s -{FREE} /var/mail/.filler
"""
    return [setup, *full_runs("full-local", user, sender, subject), "umount /var/mail\n"]


def _trace_has(tag, pattern):
    return f"grep -hsE {shlex.quote(pattern)} /tmp/strace/{tag}.* | wc -l"


def reader_holds(agent, command, user, sender, subject):
    """
    Shell lines in which C{user} holds her dotlock through her own view
    while C{command} (a root agent) delivers to her: recorded are
    whether the agent was refused the lock, whether it was still
    waiting and her mailbox untouched after, then its status once she
    let go.
    """
    tag = f"held.{agent}"
    name = user.name
    me = f'"$P" as {user.uid} {user.gid} {user.gid}'
    refused = rf"{name}\.lock.*= -1 EEXIST"
    return f"""\
{agents.write_message(f"/tmp/msg.{tag}", sender, name, subject(f"held-{agent}", name))}\
{me} {MUTT_DOTLOCK} /var/mail/{name}; R {tag}.take $?
before=$({me} cat /var/mail/{name} | cksum)
{agents.traced(tag, command.format(name=name, sender=sender))} < /tmp/msg.{tag} > /tmp/out.{tag} 2>&1 &
pid=$!
n=0
while [ "$({_trace_has(tag, refused)})" -lt 1 ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n + 1)); done
sleep 3
R {tag}.refused $({_trace_has(tag, refused)})
R {tag}.waiting $(kill -0 $pid 2>/dev/null && echo yes || echo no)
R {tag}.untouched $([ "$({me} cat /var/mail/{name} | cksum)" = "$before" ] && echo yes || echo no)
released=$(up)
{me} {MUTT_DOTLOCK} -u /var/mail/{name}; R {tag}.release $?
wait $pid
R {tag} $? "$(tr "\\n" " " < /tmp/out.{tag})"
R {tag}.after-release $(awk -v a="$(up)" -v b="$released" 'BEGIN {{ printf "%.1f", a - b }}')
{agents.trace_lines(tag)}"""


def root_holds(user):
    """
    Shell lines in which root takes C{user}'s dotlock with procmail's
    C{lockfile} through root's view; her own C{mutt_dotlock} and
    C{lockfile}, each trying once, are refused it; root removes it and
    her C{mutt_dotlock} takes it.
    """
    tag = "rootlock"
    name = user.name
    me = f'"$P" as {user.uid} {user.gid} {user.gid}'
    return f"""\
{agents.traced(tag, f"{LOCKFILE} -r0 /var/mail/{name}.lock")} > /tmp/out.{tag} 2>&1; R {tag}.take $?
R {tag}.seen "$({me} stat -c '%u %F' /var/mail/{name}.lock 2>&1)"
{me} {MUTT_DOTLOCK} -r 0 /var/mail/{name} > /tmp/out.{tag}.mutt 2>&1; R {tag}.mutt-dotlock $?
{me} {LOCKFILE} -r0 /var/mail/{name}.lock > /tmp/out.{tag}.lockfile 2>&1; R {tag}.lockfile $?
R {tag}.still "$([ -e /var/mail/{name}.lock ] && echo held || echo gone)"
rm /var/mail/{name}.lock; R {tag}.release $?
{me} {MUTT_DOTLOCK} -r 0 /var/mail/{name}; R {tag}.mutt-dotlock-after $?
{me} {MUTT_DOTLOCK} -u /var/mail/{name}; R {tag}.mutt-dotlock-unlock $?
R {tag}.gone "$([ -e /var/mail/{name}.lock ] && echo left || echo none)"
{agents.trace_lines(tag)}"""
