"""
C{hlfs lostmail} and the accounts whose mailbox the alternate spool is.

The daemon gives a system account (uid under C{--uid-min}, root
excepted), and a user whose home is C{/} or relative, the alternate spool
for good (the paper's Table 3; L{hlfs.core.resolver.SpoolRules}).  Mail
for them lands there and stays there: resent, the MTA would deliver it
straight back, and the next run would resend it again, every run.  So
the remailer leaves those mailboxes where they are, by the daemon's own
rule and with the same C{uid-min}: no resend, no line about them, no
failure; one count in the run's summary and in its figures.

The real command runs as root over a real spool, with users from a test
password file and the recording C{sendmail} of the remailer tests.
"""

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mail.test_lostmail import Env
from tests.support.mail import ALICE, BOB, CAROL, make_dir, message, needs_root, write_passwd

pytestmark = needs_root

#: System accounts as Debian makes them: uids under UID_MIN, homes that
#: exist (www-data's is /var/www), and one whose home is a directory
#: nobody may write.
WWW = (b"www-data", 33)
DAEMON = (b"daemon", 1)
#: Login accounts whose homes cannot take a spool: the daemon gives them
#: the alternate spool for good as well.
SLASH = (b"slash", 60004)
RELATIVE = (b"relative", 60005)
ROOT = (b"root", 0)

USERS = (ROOT, ALICE, BOB, CAROL, WWW, DAEMON, SLASH, RELATIVE)


class Spool(Env):
    """
    The remailer tests' spool, with system accounts and homes the daemon
    never uses in its password file.
    """

    def __init__(self, root):
        Env.__init__(self, root)
        self.passwd = write_passwd(root, USERS, homes={
            b"root": b"/root", b"www-data": b"/var/www", b"daemon": b"/usr/sbin",
            b"slash": b"/", b"relative": b"home/relative",
        })

    def messages(self, user, count=1, owner=None):
        name, uid = user
        return self.mailbox(name, [(b"sender@example.org", message(n)) for n in range(count)],
                            owner=uid if owner is None else owner)

    def recipients(self):
        return [argv[-1] for argv, _ in self.sent()]


@pytest.fixture
def spool(world):
    return Spool(world)


def snapshot(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return st.st_ino, st.st_uid, f.read()


def test_their_mail_stays_where_it_is_at_every_run(spool):
    """
    Mail of system accounts (one with a real home) and of users whose
    home is C{/} or relative is neither resent nor reported, run after
    run, and the run succeeds; alice's lost mail is resent as ever.
    """
    resident = [spool.messages(user, 2) for user in (WWW, DAEMON, SLASH, RELATIVE)]
    before = [snapshot(path) for path in resident]
    spool.messages(ALICE)
    for run in (1, 2):
        result = spool.run("--syslog-socket", "")
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        assert result.stdout.splitlines()[-1] == (
            b"left in the alternate spool, their owners' mailbox by hlfs's rules: 4 "
            b"(system accounts, uid under uid-min 1000: 2; home /: 1; relative home: 1)")
        assert b"www-data" not in result.stdout and b"daemon" not in result.stdout
        assert spool.recipients() == ["alice"]
        assert [snapshot(path) for path in resident] == before
    assert spool.work_entries() == []


def test_the_limit_is_the_daemons_uid_min(spool):
    """
    C{--uid-min} (and C{uid-min} in the configuration file) moves the
    limit as the daemon's option does: at 30, www-data (33) is a login
    account whose mail is resent, daemon (1) still a system account; at
    0, no account is.  A limit that is no uid is a usage error.
    """
    spool.messages(WWW)
    spool.messages(DAEMON)
    result = spool.run("--uid-min", "30", "--syslog-socket", "")
    assert result.returncode == 0, result.stderr
    assert spool.recipients() == ["www-data"]
    assert result.stdout.splitlines()[-1] == (
        b"left in the alternate spool, their owners' mailbox by hlfs's rules: 1 "
        b"(system accounts, uid under uid-min 30: 1)")
    config = os.path.join(spool.root, "lostmail.conf")
    with open(config, "w") as f:
        f.write("[lostmail]\nuid-min = 0\n")
    result = spool.run("--config", config, "--syslog-socket", "")
    assert result.returncode == 0, result.stderr
    assert sorted(spool.recipients()) == ["daemon", "www-data"]
    for bad in ("-1", "many", "4294967296"):
        result = spool.run("--uid-min", bad)
        assert result.returncode == 64, bad
        assert b"uid-min" in result.stderr and b"Traceback" not in result.stderr


def test_what_stays_an_administrators_business(spool):
    """
    Root is no system account: its own mailbox, owned by root, is
    reported as before (it could be a hard link to a file of root's) and
    never resent.  A system account's mailbox that another user owns is
    reported as possibly forged.  A system account's mailbox over
    C{--max-size} is its own, not a problem.
    """
    root_box = spool.messages(ROOT)
    forged = spool.messages(DAEMON, owner=BOB[1])
    big = spool.mailbox(WWW[0], [(b"x@example.org", message(1, body=b"z" * 5000))], owner=WWW[1])
    result = spool.run("--max-size", "4000", "--syslog-socket", "")
    err = result.stderr.decode()
    assert result.returncode == 1
    assert spool.sent() == []
    assert err.splitlines() == [
        "hlfs lostmail: daemon: owned by uid 60002, not by daemon (uid 1); skipped, it may be "
        "forged",
        "hlfs lostmail: root: owned by root, so never resent (it could be a hard link to a file "
        "of root's); left for an administrator",
    ]
    assert all(os.path.getsize(path) > 0 for path in (root_box, forged, big))


def test_dry_run_and_figures_count_them_apart(spool):
    """
    A dry run says it would leave them; the figures for Prometheus count
    them apart from the mailboxes left to resend, so "mail waiting" means
    mail that should reach a home.
    """
    spool.messages(WWW, 3)
    spool.messages(SLASH)
    spool.messages(ALICE, 2)
    spool.refuse(b"END-OF-MESSAGE-1")
    dry = spool.run("--dry-run", "--syslog-socket", "")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count(b"would resend") == 2
    assert dry.stdout.splitlines()[-1] == (
        b"left in the alternate spool, their owners' mailbox by hlfs's rules: 2 "
        b"(system accounts, uid under uid-min 1000: 1; home /: 1)")
    metrics = make_dir(os.path.join(spool.root, "node-exporter"), 0o755)
    textfile = os.path.join(metrics, "hlfs_lostmail.prom")
    result = spool.run("--syslog-socket", "", "--textfile", textfile)
    assert result.returncode == 1  # alice's second message is refused
    with open(textfile) as f:
        figures = {s.name: s.value for family in text_string_to_metric_families(f.read())
                   for s in family.samples}
    assert figures["hlfs_lostmail_mailboxes_left"] == 1  # alice's working copy
    assert figures["hlfs_lostmail_mailboxes_resident"] == 2
    assert figures["hlfs_lostmail_problems"] == 1
