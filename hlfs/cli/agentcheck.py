"""
The delivery set-ups known to fail on an hlfs client, for C{hlfs check}.

A delivery agent that runs as root on the mailbox itself finds, in
root's view, C{/var/mail/NAME} a symbolic link to NAME's mailbox, and
refuses it as a security-minded agent must (docs/mta.md).  Each entry of
L{KNOWN_FAILURES} says how to recognise one such set-up from the files
of the system, and what to do instead.
"""

import os
import stat
from typing import NamedTuple

#: Where Debian installs procmail.
PROCMAIL = "usr/bin/procmail"
POSTFIX_MAIN_CF = "etc/postfix/main.cf"
SENDMAIL_CF = "etc/mail/sendmail.cf"

#: Local delivery agents that run as root and refuse a link.
ROOT_AGENTS = ("procmail", "mail.local")


class KnownFailure(NamedTuple):
    """
    @ivar found: C{found(root)}: what was found of the set-up under the
        directory C{root} (C{/} on a live system), or L{None}.
    @ivar advice: what fails, and what to do instead.
    """

    found: object
    advice: str


def _setuid_root(path):
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & stat.S_ISUID) and st.st_uid == 0


def postfix_setting(text, name):
    """
    The value of C{name} in main.cf text (continuation lines joined), or
    L{None}.
    """
    value = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line[:1].isspace():
            if value is not None:
                value += " " + line.strip()
            continue
        key, equals, rest = line.partition("=")
        if equals and key.strip() == name:
            value = rest.strip()
        elif value is not None and equals:
            break
    return value


def _read(root, path):
    try:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def setuid_procmail(root):
    """
    procmail installed setuid root, as Debian installs it.
    """
    path = os.path.join(root, PROCMAIL)
    if not _setuid_root(path):
        return None
    found = f"/{PROCMAIL} is setuid root"
    command = postfix_setting(_read(root, POSTFIX_MAIN_CF) or "", "mailbox_command")
    if command and os.path.basename(command.split()[0]) == "procmail":
        found += f", and Postfix's mailbox_command runs it ({command})"
    return found


def sendmail_local_mailer(root):
    """
    sendmail's local mailer (its C{Mlocal} line) running procmail or
    mail.local, which sendmail runs as root.
    """
    for line in (_read(root, SENDMAIL_CF) or "").splitlines():
        if line.startswith("Mlocal,"):
            for field in line[len("Mlocal,"):].split(","):
                key, _, value = field.strip().partition("=")
                if key == "P" and os.path.basename(value) in ROOT_AGENTS:
                    return f"sendmail's local mailer is {value}, run as root"
    return None


KNOWN_FAILURES = (
    KnownFailure(
        setuid_procmail,
        "as root, procmail takes /var/mail/NAME (a link in root's view) for a bogus mailbox "
        "and every delivery through it fails; drop the setuid bit (dpkg-statoverride --update "
        "--add root mail 2755 /usr/bin/procmail), or deliver with hlfs deliver",
    ),
    KnownFailure(
        sendmail_local_mailer,
        "procmail -d and mail.local run as root refuse /var/mail/NAME (a link in root's view); "
        "make the local mailer hlfs deliver (docs/deliver.md)",
    ),
)


def check_agents(root="/"):
    """
    @return: a warning line for each known failing set-up found.
    """
    warnings = []
    for failure in KNOWN_FAILURES:
        found = failure.found(root)
        if found:
            warnings.append(f"{found}: {failure.advice}")
    return warnings
