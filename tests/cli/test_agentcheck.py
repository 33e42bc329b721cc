"""
C{hlfs check}'s known failing delivery set-ups (hlfs.cli.agentcheck),
against a system's files made by the test under a directory of its own.
"""

import os

from hlfs.cli import agentcheck


def install(root, path, text="", mode=0o644):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    os.chmod(full, mode)
    return full


def test_nothing_installed(tmp_path):
    assert agentcheck.check_agents(str(tmp_path)) == []


def test_setuid_procmail_is_fine(tmp_path):
    """
    procmail installed setuid root (Debian's 6755), even as Postfix's
    mailbox_command, is no longer a known failure: root sees real
    mailboxes.
    """
    root = str(tmp_path)
    path = install(root, "usr/bin/procmail", mode=0o6755)
    if os.stat(path).st_uid != 0:
        os.chown(path, 0, 0)
    install(root, "etc/postfix/main.cf", 'mailbox_command = procmail -a "$EXTENSION"\n')
    assert agentcheck.check_agents(root) == []


def test_sendmail_local_mailer(tmp_path):
    """
    If sendmail's local mailer is mail.local (run as root), then a
    warning; procmail (C{procmail -d}, run as root) and hlfs deliver are
    fine.
    """
    root = str(tmp_path)
    cf = "V10/Berkeley\nMlocal,\t\tP=/usr/lib/sm.bin/mail.local, F=lsDFMAw5:/|@qPSXfmnz9, S=EnvFromL\n"
    install(root, agentcheck.SENDMAIL_CF, cf)
    warnings = agentcheck.check_agents(root)
    assert warnings == [
        "sendmail's local mailer is /usr/lib/sm.bin/mail.local, run as root: "
        + agentcheck.KNOWN_FAILURES[0].advice
    ]
    install(root, agentcheck.SENDMAIL_CF, cf.replace("/usr/lib/sm.bin/mail.local", "/usr/bin/procmail"))
    assert agentcheck.check_agents(root) == []
    install(root, agentcheck.SENDMAIL_CF, cf.replace("/usr/lib/sm.bin/mail.local", "/usr/local/bin/hlfs"))
    assert agentcheck.check_agents(root) == []
