"""
The delivery set-ups known to fail on an hlfs client, for C{hlfs check}.

A delivery agent running as root finds, in root's view, C{/var/mail/NAME}
as NAME's real mailbox, a regular file of NAME's that hlfs writes as NAME:
procmail (setuid, or C{-d} as root), OpenSMTPD's C{mail.local} and Postfix
deliver.  sendmail's C{mail.local} alone still cannot (docs/mta.md).  Each
entry of L{KNOWN_FAILURES} says how to recognise such a set-up from the
files of the system, and what to do instead.
"""

import os
from typing import NamedTuple

SENDMAIL_CF = "etc/mail/sendmail.cf"

#: Local delivery agents that run as root and cannot deliver through hlfs.
ROOT_AGENTS = ("mail.local",)


class KnownFailure(NamedTuple):
    """
    @ivar found: C{found(root)}: what was found of the set-up under the
        directory C{root} (C{/} on a live system), or L{None}.
    @ivar advice: what fails, and what to do instead.
    """

    found: object
    advice: str


def _read(root, path):
    try:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def sendmail_local_mailer(root):
    """
    sendmail's local mailer (its C{Mlocal} line) running C{mail.local},
    which sendmail runs as root.
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
        sendmail_local_mailer,
        "sendmail's mail.local lstat()s /var/mail/NAME as root and opens it as NAME, and those "
        "are one file seen through two mounts, so it defers every message (\"fstat: file "
        "changed after open\"); use procmail as the local mailer (FEATURE(local_procmail)) or "
        "hlfs deliver (docs/deliver.md)",
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
