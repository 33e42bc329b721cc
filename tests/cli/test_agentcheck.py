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


def test_setuid_procmail(tmp_path):
    """
    If procmail is setuid root (Debian's 6755), then a warning, which names
    Postfix's mailbox_command when it runs procmail; a procmail without the
    setuid bit is fine.
    """
    root = str(tmp_path)
    path = install(root, agentcheck.PROCMAIL, mode=0o2755)
    assert agentcheck.check_agents(root) == []
    os.chmod(path, 0o6755)
    if os.stat(path).st_uid != 0:
        os.chown(path, 0, 0)
    warnings = agentcheck.check_agents(root)
    assert len(warnings) == 1 and warnings[0].startswith("/usr/bin/procmail is setuid root:"), warnings
    assert "dpkg-statoverride" in warnings[0]
    install(root, agentcheck.POSTFIX_MAIN_CF,
            "# mailbox_command = nothing\nmyhostname = x\nmailbox_command = procmail\n"
            "    -a \"$EXTENSION\"\nrelayhost =\n")
    warnings = agentcheck.check_agents(root)
    assert "Postfix's mailbox_command runs it (procmail -a \"$EXTENSION\")" in warnings[0], warnings


def test_postfix_setting():
    text = "a = 1\nb = two\n  three\n#b = no\nc=\n"
    assert agentcheck.postfix_setting(text, "b") == "two three"
    assert agentcheck.postfix_setting(text, "c") == ""
    assert agentcheck.postfix_setting(text, "d") is None


def test_sendmail_local_mailer(tmp_path):
    """
    If sendmail's local mailer is procmail or mail.local (run as root),
    then a warning; hlfs deliver is fine.
    """
    root = str(tmp_path)
    cf = "V10/Berkeley\nMlocal,\t\tP=/usr/lib/sm.bin/mail.local, F=lsDFMAw5:/|@qPSXfmnz9, S=EnvFromL\n"
    install(root, agentcheck.SENDMAIL_CF, cf)
    warnings = agentcheck.check_agents(root)
    assert warnings == [
        "sendmail's local mailer is /usr/lib/sm.bin/mail.local, run as root: "
        + agentcheck.KNOWN_FAILURES[1].advice
    ]
    install(root, agentcheck.SENDMAIL_CF, cf.replace("/usr/lib/sm.bin/mail.local", "/usr/bin/procmail"))
    assert "procmail, run as root" in agentcheck.check_agents(root)[0]
    install(root, agentcheck.SENDMAIL_CF, cf.replace("/usr/lib/sm.bin/mail.local", "/usr/local/bin/hlfs"))
    assert agentcheck.check_agents(root) == []
