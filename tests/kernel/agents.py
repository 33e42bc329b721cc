"""
Shell pieces that set up and drive the other delivery agents and readers
Debian ships, in the guest, from the unpacked package trees of
L{debcache}: procmail, Dovecot (LDA, LMTP, IMAP, POP3), mutt, OpenSMTPD
and its C{mail.local}, and sendmail's C{mail.local}; and C{strace -f}
around them, so that a scenario can show which system calls fail.

As in L{mta}, what a package's maintainer scripts would do is done by
hand, and everything else is the package's default.
"""

import shlex

from mta import MAIL_HOST, message

#: Accounts of the agents, below the default UID_MIN, as Debian makes
#: them (fixed ids: the host's hlfs sees the same numbers).
ACCOUNTS = (
    ("dovecot", 904, "/usr/lib/dovecot"),
    ("dovenull", 905, "/nonexistent"),
    ("opensmtpd", 906, "/var/lib/opensmtpd/empty"),
    ("opensmtpq", 907, "/var/lib/opensmtpd/empty"),
)

#: Where the agents are once their trees are copied over the guest's root.
PROCMAIL = "/usr/bin/procmail"
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
OPENSMTPD_MAIL_LOCAL = "/usr/libexec/opensmtpd/mail.local"
SENDMAIL_MAIL_LOCAL = "/usr/libexec/sendmail/mail.local"

#: The system calls C{strace} shows: every call on a path, those on a
#: descriptor that decide or change what a file is, and those that write
#: it and report whether it is written (a full home answers at C{write},
#: C{fsync} or C{close}).
TRACED = "%file,%fstat,fchown,fchmod,fcntl,flock,ftruncate,write,fsync,fdatasync,close"

#: Which of the traced lines a scenario keeps: those about the spool, a
#: mailbox or a lock.
TRACE_FILTER = r"/var/mail|/var/spool/mail|/mail/|\.mailspool|alt_mail|\.lock|\.nfs"

#: Dovecot's password for every user (a static passdb: the guest has no
#: shadow entries).
PASSWORD = "hlfs-secret"


def accounts():
    """
    Shell lines adding the agents' own accounts.
    """
    users = "\n".join(f"{name}:x:{uid}:{uid}::{home}:/usr/sbin/nologin" for name, uid, home in ACCOUNTS)
    groups = "\n".join(f"{name}:x:{uid}:" for name, uid, _ in ACCOUNTS)
    return (
        f"cat >> /etc/passwd <<'EOF'\n{users}\nEOF\n"
        f"cat >> /etc/group <<'EOF'\n{groups}\nEOF\n"
    )


def _strace(tag):
    # One file per process (-ff): no call is cut in two by another's.
    return f"strace -ff -qq -y -s 96 -e trace={TRACED} -e signal=none -o /tmp/strace/{tag}"


def traced(tag, command):
    """
    C{command} run under C{strace -f}, its trace in C{/tmp/strace/TAG.PID}.
    """
    return f"mkdir -p /tmp/strace; {_strace(tag)} {command}"


def trace_attach(tag, pid):
    """
    Shell lines attaching C{strace -f} to the process C{pid} (a shell
    word) for what it and its new children do; C{trace_stop} ends it.
    """
    return (
        f"mkdir -p /tmp/strace; {_strace(tag)} -p {pid} &\n"
        f"echo $! > /tmp/tracer.{tag}\n"
        "sleep 2\n"
    )


def trace_stop(tag):
    return f"kill $(cat /tmp/tracer.{tag}) 2>/dev/null; wait $(cat /tmp/tracer.{tag}) 2>/dev/null\n"


def trace_lines(tag, limit=400):
    """
    Shell lines printing the kept lines of C{TAG}'s traces as
    C{STRACE.TAG PID LINE}.
    """
    return (
        f"for f in /tmp/strace/{tag}.*; do\n"
        f"    grep -E {shlex.quote(TRACE_FILTER)} \"$f\" | sed \"s/^/STRACE.{tag} ${{f##*.}} /\"\n"
        f"done 2>/dev/null | head -{limit}\n"
    )


def run_as_root(tag, command, stdin):
    """
    Shell lines running C{command} as root under strace, C{stdin} on its
    input, and printing C{R TAG STATUS OUTPUT} and its trace.
    """
    return (
        traced(tag, command) + f" < {stdin} > /tmp/out.{tag} 2>&1\n"
        f'R {tag} $? "$(tr "\\n" " " < /tmp/out.{tag})"\n' + trace_lines(tag)
    )


def write_message(path, sender, recipient, subject):
    """
    Shell lines writing a message, as an MTA hands it to its agent.
    """
    return f"printf %s {shlex.quote(message(sender, recipient, subject))} > {path}\n"


def dovecot_setup(python):
    """
    Shell lines configuring Dovecot with Debian's C{mail_location} (read
    from the package's own C{10-mail.conf}), IMAP, POP3 and LMTP on
    127.0.0.1 without TLS, and a static password; then starting it.
    """
    return f"""\
mkdir -p /etc/dovecot /run/dovecot /var/lib/dovecot
location=$(grep '^mail_location' /usr/share/dovecot/conf.d/10-mail.conf)
R dovecot-location "$location"
cat > /etc/dovecot/dovecot.conf <<EOF
protocols = imap pop3 lmtp
listen = 127.0.0.1
base_dir = /run/dovecot
log_path = /var/log/dovecot.log
ssl = no
mmap_disable = yes
disable_plaintext_auth = no
auth_mechanisms = plain
$location
mail_privileged_group = mail
first_valid_uid = 1000
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = passwd
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = 24
  }}
}}
protocol lda {{
  postmaster_address = postmaster@{MAIL_HOST}
}}
protocol lmtp {{
  postmaster_address = postmaster@{MAIL_HOST}
}}
EOF
dovecot -c /etc/dovecot/dovecot.conf || {{ echo "DOVECOT START FAILED"; cat /var/log/dovecot.log; exit 14; }}
n=0
while [ $n -lt 300 ] && ! {python} -c 'import socket; socket.create_connection(("127.0.0.1", 24), 1)' 2>/dev/null; do
    sleep 0.2; n=$((n + 1))
done
"""


def lmtp(python, sender, recipients, subject):
    """
    Shell lines sending one message to C{recipients} in one LMTP
    transaction; C{R lmtp.SUBJECT} gets each recipient's reply code.
    """
    code = (
        "import smtplib,sys\n"
        "s = smtplib.LMTP('127.0.0.1', 24, timeout=120)\n"
        "s.ehlo()\n"
        "s.mail(sys.argv[1])\n"
        "rcpts = sys.argv[2].split(',')\n"
        "for r in rcpts: s.rcpt(r)\n"
        "s.putcmd('data')\n"
        "s.getreply()\n"
        "s.send(sys.argv[3].replace('\\n', '\\r\\n').encode() + b'\\r\\n.\\r\\n')\n"
        "print(' '.join(str(s.getreply()[0]) for _ in rcpts))\n"
        "s.quit()\n"
    )
    text = message(sender, ", ".join(recipients), subject)
    return (
        f"{python} -c {shlex.quote(code)} {sender} {','.join(recipients)} {shlex.quote(text)}"
        f" > /tmp/lmtp.out 2>&1; R lmtp.{subject} $? $(tail -1 /tmp/lmtp.out)\n"
    )


def imap_subjects(python, user, tag):
    """
    Shell lines listing the Subjects of C{user}'s INBOX over IMAP:
    C{R TAG STATUS SUBJECT...}.
    """
    code = (
        "import imaplib,sys,email\n"
        "m = imaplib.IMAP4('127.0.0.1', 143, timeout=120)\n"
        f"m.login(sys.argv[1], '{PASSWORD}')\n"
        "m.select('INBOX')\n"
        "_, data = m.search(None, 'ALL')\n"
        "out = []\n"
        "for n in data[0].split():\n"
        "    _, msg = m.fetch(n, '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n"
        "    out.append(email.message_from_bytes(msg[0][1])['Subject'])\n"
        "m.logout()\n"
        "print(' '.join(out))\n"
    )
    return f"{python} -c {shlex.quote(code)} {user} > /tmp/{tag}.out 2>&1; R {tag} $? $(tail -1 /tmp/{tag}.out)\n"


def pop3_delete_first(python, user, tag):
    """
    Shell lines deleting C{user}'s first message over POP3 (Dovecot then
    rewrites the mailbox under its locks): C{R TAG STATUS COUNT-BEFORE}.
    """
    code = (
        "import poplib,sys\n"
        "p = poplib.POP3('127.0.0.1', 110, timeout=120)\n"
        "p.user(sys.argv[1])\n"
        f"p.pass_('{PASSWORD}')\n"
        "count = p.stat()[0]\n"
        "p.dele(1)\n"
        "p.quit()\n"
        "print(count)\n"
    )
    return f"{python} -c {shlex.quote(code)} {user} > /tmp/{tag}.out 2>&1; R {tag} $? $(tail -1 /tmp/{tag}.out)\n"


def mutt_delete(user, subject, tag):
    """
    Shell lines running mutt as C{user} (a L{world.User}) on its mailbox
    through the link, in a pseudo-terminal (C{script}), deleting the
    messages with C{subject} and saving, which takes mutt's dotlock with
    the setgid C{mutt_dotlock}: C{R TAG STATUS}.
    """
    push = f"<delete-pattern>~s {subject}<enter><sync-mailbox><quit>"
    mutt = (
        f"mutt -n -F /dev/null -f /var/mail/{user.name} -e 'set quit=yes delete=yes move=no"
        f" mbox_type=mbox folder=/tmp' -e {shlex.quote('push ' + shlex.quote(push))}"
    )
    return (
        f'timeout 300 "$P" as {user.uid} {user.gid} {user.gid} env HOME={user.home} TERM=vt100'
        f" script -qec {shlex.quote(mutt)} /dev/null > /tmp/{tag}.out 2>&1 < /dev/null; R {tag} $?\n"
    )


def mutt_dotlock(user, tag):
    """
    Shell lines taking and releasing C{user}'s dotlock with
    C{mutt_dotlock} as C{user}: C{R TAG.lock STATUS}, C{R TAG.unlock STATUS}.
    """
    run = f"as {user.uid} {user.gid} {user.gid} /usr/bin/mutt_dotlock"
    return (
        f"{run} /var/mail/{user.name}; R {tag}.lock $?\n"
        f'R {tag}.held "$(ls /var/mail/{user.name}.lock 2>&1)"\n'
        f"{run} -u /var/mail/{user.name}; R {tag}.unlock $?\n"
    )


def opensmtpd_setup():
    """
    Shell lines configuring OpenSMTPD with its C{mbox} action (as
    upstream's default smtpd.conf has it; Debian's has C{maildir}) for
    local mail, listening on 127.0.0.1, logging to a file; C{smtpctl}
    setgid C{opensmtpq}, as Debian's postinst makes it.
    """
    return f"""\
mkdir -p /var/lib/opensmtpd/empty
mkdir -p -m 711 /var/spool/smtpd
chgrp opensmtpq /usr/sbin/smtpctl && chmod 2755 /usr/sbin/smtpctl
echo {MAIL_HOST} > /etc/mailname
cat > /etc/smtpd.conf <<'EOF'
table aliases file:/etc/aliases
listen on 127.0.0.1
action "local" mbox alias <aliases>
match from local for local action "local"
EOF
smtpd -n -f /etc/smtpd.conf || {{ echo "SMTPD CONFIG FAILED"; exit 15; }}
"""


def opensmtpd_start(tag):
    """
    Shell lines starting OpenSMTPD in the foreground (its log on
    standard error), waiting for its socket, then attaching C{strace -f}
    to its parent process, which runs the delivery agents.
    """
    return (
        "smtpd -d -f /etc/smtpd.conf > /var/log/smtpd.log 2>&1 &\n"
        "echo $! > /tmp/smtpd.pid\n"
        "n=0\n"
        "while [ $n -lt 600 ] && [ ! -S /var/run/smtpd.sock ]; do sleep 0.2; n=$((n + 1)); done\n"
        + trace_attach(tag, "$(cat /tmp/smtpd.pid)")
    )


def opensmtpd_stop(tag):
    """
    Shell lines detaching the trace and stopping OpenSMTPD.
    """
    return trace_stop(tag) + "kill $(cat /tmp/smtpd.pid); wait $(cat /tmp/smtpd.pid)\n"
