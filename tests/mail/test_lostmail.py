"""
Tests for C{hlfs lostmail}: the remailer runs as a real process against
a real alternate spool, resending through a C{sendmail}-compatible
executable written by the test (it records its argv and stdin) or a real
SMTP server (aiosmtpd) on the loopback interface.
"""

import configparser
import io
import json
import os
import socket
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlfs.cli import lostmail as lostmail_cli
from hlfs.mail import mbox
from hlfs.mail.lostmail import DEFAULTS
from hlfs.mail.statedir import spool_key
from tests.support.mail import (
    ALICE, BOB, SENDMAIL, hlfs_command, make_dir, message, needs_root, run_hlfs, syslog_listener,
    write_passwd,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



class Env:
    """
    A spool, a password file and a recording sendmail in one place.
    """

    def __init__(self, root):
        self.root = root
        self.alt = make_dir(os.path.join(root, "alt_mail"), 0o1777)
        self.state = os.path.join(root, "state")
        self.work = os.path.join(self.state, os.fsdecode(spool_key(os.fsencode(self.alt))))
        self.passwd = write_passwd(root)
        self.sm_dir = make_dir(os.path.join(root, "sendmail"), 0o755)
        os.mkdir(os.path.join(self.sm_dir, "out"))
        self.sendmail = os.path.join(self.sm_dir, "sendmail")
        with open(self.sendmail, "w") as f:
            f.write(SENDMAIL.format(python=sys.executable, here=self.sm_dir))
        os.chmod(self.sendmail, 0o755)

    def args(self, *extra):
        return ["lostmail", "--alt-dir", self.alt, "--state-dir", self.state,
                "--sendmail", self.sendmail, "--password-file", self.passwd,
                "--lock-timeout", "5", *extra]

    def run(self, *extra, env=None):
        return run_hlfs(*self.args(*extra), env=env)

    def sent(self):
        """
        Return C{[(argv, data)]} in the order sendmail was called.
        """
        out = os.path.join(self.sm_dir, "out")
        calls = []
        for name in sorted(os.listdir(out)):
            if name.endswith(".json"):
                with open(os.path.join(out, name)) as f:
                    record = json.load(f)
                calls.append((record["argv"], record["data"].encode("latin-1")))
        return calls

    def refuse(self, marker):
        with open(os.path.join(self.sm_dir, "refuse"), "wb") as f:
            f.write(marker)

    def mailbox(self, user=b"alice", messages=(), owner=None, raw=None):
        """
        Write a mailbox of C{(sender, content)} messages as delivery
        agents write them, owned by its user (by uid 60099, no user's, for
        a name that is no user).
        """
        path = os.path.join(self.alt, os.fsdecode(user))
        with open(path, "wb") as f:
            if raw is not None:
                f.write(raw)
            for sender, content in messages:
                f.write(mboxrd(sender, content))
        uid = owner if owner is not None else {b"alice": ALICE[1], b"bob": BOB[1]}.get(user, 60099)
        os.chown(path, uid, uid)
        os.chmod(path, 0o600)
        return path

    def work_entries(self):
        """
        The entries of this spool's work area in the state directory.
        """
        return sorted(os.listdir(self.work)) if os.path.isdir(self.work) else []


def emptied(path):
    """
    Whether a mailbox was taken: a taken mailbox is emptied, not removed
    (a delivery agent waiting for its lock then appends to it).
    """
    return not os.path.exists(path) or os.path.getsize(path) == 0


@pytest.fixture
def env(world):
    return Env(world)


def strip_header(data):
    """
    Split off and check the one header the remailer adds.
    """
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"X-Hlfs-Redelivered: from alternate spool ")
    return rest


TRICKY = [
    (b"one@example.org", message(1)),
    (b"two@example.org", b"Subject: quoting\n\nFrom here\n>From there\n>>From afar\n\n\nFrom \n"),
    (b"three@example.org", b"Subject: 8bit\n\n\xe9t\xe9 \xff\x00 bytes\r\n.\n..dots\n"),
    (b"", b"Subject: bounce\n\nfrom the null sender\n"),
    (b"five@example.org", message(5, body=b"long line " * 2000 + b"\n")),
]


def mboxrd(sender, content):
    """
    One message as a delivery agent stores it (mboxrd), written here by
    hand rather than by L{hlfs.mail.mbox}, the code under test: the
    C{From_} line, each line starting with C{>*From } quoted with one more
    C{>}, a newline ending the last line, then a blank line.
    """
    quoted = re.sub(rb"(?m)^(>*From )", rb">\1", content)
    if not quoted.endswith(b"\n"):
        quoted += b"\n"
    return b"From " + (sender or b"MAILER-DAEMON") + b" Wed Nov 18 11:06:40 2026\n" + quoted + b"\n"


def test_the_fixture_writer_quotes_as_mboxrd():
    """
    The hand-written fixture encoder gives exactly these bytes.
    """
    assert mboxrd(b"two@example.org", TRICKY[1][1]) == (
        b"From two@example.org Wed Nov 18 11:06:40 2026\n"
        b"Subject: quoting\n\n>From here\n>>From there\n>>>From afar\n\n\n>From \n\n"
    )
    assert mboxrd(b"", b"no newline") == b"From MAILER-DAEMON Wed Nov 18 11:06:40 2026\nno newline\n\n"


@needs_root
def test_every_message_resent_once_through_sendmail(env):
    env.mailbox(messages=TRICKY)
    result = env.run()
    assert result.returncode == 0, result.stderr
    calls = env.sent()
    assert len(calls) == len(TRICKY)
    for (argv, data), (sender, content) in zip(calls, TRICKY):
        assert argv == ["-oi", "-f", sender.decode() or "<>", "--", "alice"]
        assert strip_header(data) == content
    assert emptied(os.path.join(env.alt, "alice"))
    assert env.work_entries() == []
    out = result.stdout.decode()
    assert "alice: 5 found, 5 resent, 0 failed" in out
    assert "total: 5 found, 5 resent, 0 failed" in out


class SMTPRecorder:
    """
    aiosmtpd handler: records envelopes, refuses messages containing a
    marker while C{refusing} is set.
    """

    def __init__(self):
        self.received = []
        self.refusing = None

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        if self.refusing and self.refusing in content:
            return "451 4.3.0 try again later"
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), content))
        return "250 2.0.0 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    handler = SMTPRecorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, f"127.0.0.1:{port}"
    finally:
        controller.stop()


@needs_root
def test_every_message_resent_once_through_smtp(env, smtp):
    handler, address = smtp
    # SMTP cannot carry lines over 998 bytes (RFC 5321 4.5.3.1.6).
    messages = TRICKY[:-1] + [(b"five@example.org", message(5, body=b"line\n" * 2000))]
    env.mailbox(messages=messages)
    result = env.run("--smtp", address, "--domain", "example.org")
    assert result.returncode == 0, result.stderr
    assert len(handler.received) == len(messages)
    for (mail_from, rcpts, content), (sender, original) in zip(handler.received, messages):
        assert mail_from == (sender.decode() or "<>")  # aiosmtpd shows MAIL FROM:<> so
        assert rcpts == ["alice@example.org"]
        # SMTP carries CRLF line ends; the local form is LF.
        local = content.replace(b"\r\n", b"\n")
        assert strip_header(local) == original.replace(b"\r\n", b"\n")
    assert env.sent() == []


@needs_root
def test_smtp_refusal_half_way_leaves_the_rest(env, smtp):
    """
    The server refuses the third message: the first two are delivered,
    the rest stays in the working file, and the next run delivers exactly
    the rest.
    """
    handler, address = smtp
    messages = [(b"s%d@example.org" % n, message(n)) for n in range(1, 6)]
    env.mailbox(messages=messages)
    handler.refusing = b"END-OF-MESSAGE-3"
    first = env.run("--smtp", address)
    assert first.returncode == 1
    assert b"not accepted" in first.stderr and b"451" in first.stderr
    assert b"alice: 5 found, 2 resent, 1 failed" in first.stdout
    assert [strip_header(c.replace(b"\r\n", b"\n")) for _, _, c in handler.received] == [
        message(1), message(2)
    ]
    assert len([e for e in env.work_entries() if e.startswith("W.")]) == 1
    handler.refusing = None
    second = env.run("--smtp", address)
    assert second.returncode == 0, second.stderr
    assert [strip_header(c.replace(b"\r\n", b"\n")) for _, _, c in handler.received] == [
        m for _, m in messages
    ]
    assert env.work_entries() == []


@needs_root
def test_sendmail_refusal_half_way_leaves_the_rest(env):
    messages = [(b"s%d@example.org" % n, message(n)) for n in range(1, 5)]
    env.mailbox(messages=messages)
    env.refuse(b"END-OF-MESSAGE-2")
    first = env.run()
    assert first.returncode == 1
    assert b"exited with status 75: 450 mailbox busy" in first.stderr
    assert [strip_header(d) for _, d in env.sent()] == [message(1)]
    os.unlink(os.path.join(env.sm_dir, "refuse"))
    # New mail arrived meanwhile; it comes after the leftovers.
    env.mailbox(messages=[(b"late@example.org", message(9))])
    second = env.run()
    assert second.returncode == 0, second.stderr
    assert [strip_header(d) for _, d in env.sent()] == [m for _, m in messages] + [message(9)]


@needs_root
def test_unreachable_smtp_server_keeps_everything(env):
    env.mailbox(messages=[(b"a@example.org", message(1))])
    result = env.run("--smtp", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert b"Connection refused" in result.stderr
    assert len(env.work_entries()) == 1


CRASH_POINTS = ["locked:1", "copied:1", "truncated:1", "released:1", "sent:1", "sent:3",
                "rewritten:1", "rewritten:3"]


@needs_root
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_any_step_loses_nothing(env, point):
    """
    Kill the remailer at each step; the next run delivers everything at
    least once, and a duplicate happens only for a kill between the
    MTA's acceptance and the working file's update.
    """
    messages = [(b"s%d@example.org" % n, message(n)) for n in range(1, 5)]
    env.mailbox(messages=messages)
    env.mailbox(b"bob", messages=[(b"b@example.org", message(10))])
    killer = os.path.join(REPO, "tests", "support", "lostmail_at.py")
    crashed = subprocess.run([sys.executable, killer, "--kill", point, "--", *env.args()[1:]],
                             capture_output=True, timeout=60)
    assert crashed.returncode == -9, crashed.stderr
    again = env.run()
    assert again.returncode == 0, again.stderr
    delivered = [strip_header(d) for _, d in env.sent()]
    expected = [message(10)] + [m for _, m in messages]
    assert set(delivered) == set(expected)
    duplicates = len(delivered) - len(expected)
    if point.startswith("sent"):
        assert duplicates == 1
    else:
        assert duplicates == 0
    assert emptied(os.path.join(env.alt, "alice"))
    assert env.work_entries() == []
    # A kill while holding the lock may leave it (the mailbox was already
    # taken, so nobody needed it since); the next delivery breaks it at
    # once because its holder is gone, and cleans up after it.  Taken
    # mailboxes stay, empty.
    delivery = run_hlfs("deliver", "--spool", env.alt, "--password-file", env.passwd,
                        "--lock-timeout", "5", "alice", input=message(20))
    assert delivery.returncode == 0, delivery.stderr
    assert sorted(os.listdir(env.alt)) == ["alice", "bob"]
    assert os.path.getsize(os.path.join(env.alt, "bob")) == 0


@needs_root
def test_delivery_while_the_remailer_runs(env):
    """
    Agents keep delivering to the alternate spool while the remailer
    runs again and again: every message is resent exactly once.
    """
    count = 12
    stop = threading.Event()
    runs = []

    deliveries = []  # (start, end) of each delivery, monotonic

    def remail():
        while not stop.is_set():
            start = time.monotonic()
            code = env.run().returncode
            runs.append((start, time.monotonic(), code))

    remailer = threading.Thread(target=remail)
    remailer.start()
    try:
        for n in range(count):
            start = time.monotonic()
            proc = subprocess.run(
                hlfs_command("deliver", "--spool", env.alt, "--password-file", env.passwd,
                             "-f", f"s{n}@example.org", "alice"),
                input=message(n), stderr=subprocess.PIPE, timeout=60,
            )
            deliveries.append((start, time.monotonic()))
            assert proc.returncode == 0, proc.stderr
    finally:
        stop.set()
        remailer.join(timeout=120)
    final = env.run()
    assert final.returncode == 0
    assert runs and {code for _, _, code in runs} == {0}
    # The point of the test: remailer runs and deliveries were under way
    # at the same time, by this process's clock around both processes.
    overlapping = [
        (r, d) for r in runs for d in deliveries if r[0] < d[1] and d[0] < r[1]
    ]
    assert overlapping, (runs, deliveries)
    delivered = [strip_header(d) for _, d in env.sent()]
    assert sorted(delivered) == sorted(message(n) for n in range(count))
    senders = sorted(argv[2] for argv, _ in env.sent())
    assert senders == sorted(f"s{n}@example.org" for n in range(count))


@needs_root
def test_overlapping_runs_do_not_resend_twice(env):
    """
    While one run holds the working directory, a second one does nothing.
    """
    import fcntl

    assert env.run().returncode == 0  # makes the state directory
    env.mailbox(messages=TRICKY[:2])
    fd = os.open(env.work, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = env.run()
        assert result.returncode == 0
        assert b"another hlfs lostmail run is in progress" in result.stdout
        assert env.sent() == [] and not emptied(os.path.join(env.alt, "alice"))
    finally:
        os.close(fd)
    assert env.run().returncode == 0
    assert len(env.sent()) == 2


@needs_root
def test_unknown_user_goes_to_postmaster(env):
    env.mailbox(b"gone", messages=[(b"x@example.org", message(1))])
    result = env.run("--postmaster", "root", "--unknown-wait", "0")
    assert result.returncode == 0, result.stderr
    [(argv, data)] = env.sent()
    assert argv == ["-oi", "-f", "x@example.org", "--", "root"]
    assert b"gone" in data.partition(b"\n")[0]
    assert strip_header(data) == message(1)
    assert b"gone: no such user; resending to root" in result.stderr


#: When the first run of the waiting tests sees a name missing.
T0 = 1_800_000_000.0
DAY = 86400.0


def utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class RunAt:
    """
    The real command in this process (to hand it a clock), resending
    through the recording sendmail: C{run(t)} runs it at time C{t}.
    """

    def __init__(self, env, capfd):
        self.env = env
        self.capfd = capfd

    def __call__(self, t, *extra):
        self.capfd.readouterr()
        argv = self.env.args("--postmaster", "root", "--syslog-socket", "", *extra)[1:]
        status = lostmail_cli.main(argv, now=lambda: t)
        out, err = self.capfd.readouterr()
        assert "Traceback" not in err
        return status, err

    def record(self):
        path = os.path.join(self.env.work, "missing")
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return f.read()


@pytest.fixture
def run_at(env, capfd):
    return RunAt(env, capfd)


def kept_line(name, since, wait=DAY):
    return (f"{name}: no such user according to the name service; its mail is kept until "
            f"{utc(since + wait)}, then goes to root (missing since {utc(since)}; "
            f"unknown-wait {wait:g} s)")


@needs_root
def test_unknown_user_is_kept_until_the_wait_is_over(env, run_at):
    """
    If the name service says a mailbox's user does not exist, then its
    mail stays in the spool, with one line naming the user and until
    when, at every run before C{unknown-wait} has passed since the first
    run that saw it missing; then it goes to the postmaster, and the
    record of the name goes with its mail.
    """
    path = env.mailbox(b"gone", messages=[(b"x@example.org", message(1))])
    status, err = run_at(T0)
    assert status == 0
    assert err.count("gone:") == 1 and kept_line("gone", T0) in err
    assert env.sent() == [] and os.path.exists(path)
    assert run_at.record() == b"gone %.3f\n" % T0
    status, err = run_at(T0 + DAY - 1)
    assert (status, env.sent()) == (0, [])
    assert kept_line("gone", T0) in err
    status, err = run_at(T0 + DAY)
    assert status == 0
    assert f"gone: no such user; resending to root (missing since {utc(T0)})" in err
    [(argv, data)] = env.sent()
    assert argv[-1] == "root" and strip_header(data) == message(1)
    assert emptied(path)
    assert run_at(T0 + DAY + 1)[0] == 0
    assert run_at.record() is None


@needs_root
def test_a_positive_answer_starts_the_wait_over(env, run_at):
    """
    If a name reported missing is found at a later run, then its record
    is cleared: missing again afterwards, its mail waits a full
    C{unknown-wait} from then, even though the first report is older.
    """
    env.mailbox(b"dave", messages=[(b"x@example.org", message(1))], owner=60004)
    assert run_at(T0)[0] == 0
    # dave appears; his mail is refused for now, so it stays.
    write_passwd(env.root, users=(ALICE, BOB, (b"dave", 60004)))
    env.refuse(b"END-OF-MESSAGE-1")
    assert run_at(T0 + 3600)[0] == 1
    assert env.sent() == []
    assert run_at.record() is None
    # dave is gone again (or the directory is offline) a day after the
    # first report: his mail is not the postmaster's yet.
    write_passwd(env.root, users=(ALICE, BOB))
    os.unlink(os.path.join(env.sm_dir, "refuse"))
    status, err = run_at(T0 + DAY + 60)
    assert (status, env.sent()) == (0, [])
    assert kept_line("dave", T0 + DAY + 60) in err
    assert len(env.work_entries()) == 2  # the record and the working file
    status, err = run_at(T0 + 2 * DAY + 60)
    assert [argv[-1] for argv, _ in env.sent()] == ["root"]


@needs_root
def test_garbage_in_the_record_only_starts_waits_over(env, run_at):
    """
    If the record is garbled (bad lines, times to come, bytes of any
    kind), then the run goes on with one line about it, no mail goes to
    the postmaster early, and a clean record replaces it; if the record
    cannot be read or written at all, the mail still waits.
    """
    env.mailbox(b"gone", messages=[(b"x@example.org", message(1))])
    env.mailbox(b"lost", messages=[(b"x@example.org", message(2))])
    make_dir(env.state, 0o700)
    work = make_dir(env.work, 0o700)
    record = os.path.join(work, "missing")
    with open(record, "wb") as f:
        f.write(b"gone 1e12\nlost nan\nlost\n\xff\x00 12 13\n%s\ngone -5\n" % (b"x" * 5000))
    status, err = run_at(T0)
    assert (status, env.sent()) == (0, [])
    assert "missing: 5 unreadable lines ignored; those users' wait starts over" in err
    assert kept_line("gone", T0) in err and kept_line("lost", T0) in err
    assert run_at.record() == b"gone %.3f\nlost %.3f\n" % (T0, T0)
    os.unlink(record)
    os.mkdir(record)
    status, err = run_at(T0 + 2 * DAY)
    assert (status, env.sent()) == (0, [])
    assert "missing: not a record of ours" in err and "missing: cannot write" in err
    assert kept_line("gone", T0 + 2 * DAY) in err
    os.rmdir(record)
    with open(record, "wb") as f:
        f.write(os.urandom(3000))
    assert run_at(T0 + 3 * DAY)[0] == 0
    assert env.sent() == []


@needs_root
def test_a_mailbox_whose_owner_uid_is_a_user_is_not_the_postmasters(env, run_at):
    """
    If a name is missing but its mailbox belongs to a uid the name
    service knows, then the two answers disagree: the mail is skipped
    with a line, never resent to the postmaster; a mailbox whose owner
    uid is no user either goes once the wait is over.
    """
    env.mailbox(b"gone", messages=[(b"x@example.org", message(1))], owner=ALICE[1])
    env.mailbox(b"lost", messages=[(b"x@example.org", message(2))], owner=60099)
    status, err = run_at(T0, "--unknown-wait", "0")
    assert status == 1
    assert "gone: no such user, but its mail belongs to uid 60001 (alice); not resent to " \
           "root, skipped" in err
    [(argv, data)] = env.sent()
    assert argv[-1] == "root" and strip_header(data) == message(2)
    assert os.path.exists(os.path.join(env.alt, "gone"))


@needs_root
def test_dry_run_reports_the_wait_and_records_nothing(env, run_at):
    env.mailbox(b"gone", messages=[(b"x@example.org", message(1))])
    status, err = run_at(T0, "--dry-run")
    assert status == 0
    assert "gone: no such user according to the name service; its mail would be kept until " \
           f"{utc(T0 + DAY)}" in err
    assert env.work_entries() == [] and env.sent() == []


@needs_root
def test_hostile_spool_entries(env):
    """
    Names that are not user names, symbolic links (even to a valid
    mailbox), special files, hard links, forged owners and oversized
    files are skipped with a clear line and never followed.
    """
    outside = os.path.join(env.root, "outside")
    with open(outside, "wb") as f:
        f.write(mboxrd(b"x@y", message(1)))
    before = open(outside, "rb").read()
    os.symlink(outside, os.path.join(env.alt, "alice"))
    os.symlink("/etc/shadow", os.path.join(env.alt, "carol"))
    with open(os.path.join(env.alt, "bad name"), "wb") as f:
        f.write(before)
    os.mkfifo(os.path.join(env.alt, "fifo"))
    forged = env.mailbox(b"bob", messages=[(b"x@example.org", message(2))], owner=ALICE[1])
    big = env.mailbox(b"daemon", messages=[(b"x@example.org", message(3, body=b"z" * 5000))])
    os.link(outside, os.path.join(env.alt, "linked"))
    result = env.run("--max-size", "4000")
    err = result.stderr.decode()
    assert result.returncode == 1
    assert env.sent() == []
    assert "alice: symbolic link; not followed, skipped" in err
    assert "carol: symbolic link; not followed, skipped" in err
    assert "bad name: not a user name; skipped" in err
    assert "fifo: not a regular file; skipped" in err
    assert "bob: owned by uid 60001, not by bob (uid 60002); skipped" in err
    assert "daemon: 5" in err and "limit; skipped" in err
    assert "linked: owned by root, so never resent" in err
    assert "Traceback" not in err
    assert open(outside, "rb").read() == before
    assert os.path.exists(forged) and os.path.exists(big)
    assert env.work_entries() == []


@needs_root
def test_problems_reach_syslog(env):
    os.symlink("/etc/passwd", os.path.join(env.alt, "alice"))
    socket_path = os.path.join(env.root, "log")
    with syslog_listener(socket_path) as received:
        result = env.run("--syslog-socket", socket_path)
        records = received()
    assert result.returncode == 1
    assert len(records) == 1
    assert records[0].startswith(b"<20>")
    assert b"hlfs-lostmail[" in records[0]
    assert records[0].endswith(b"alice: symbolic link; not followed, skipped")


@needs_root
def test_a_planted_working_directory_of_old_is_left_alone(env):
    """
    A C{.lostmail} in the spool that root did not make (here a link to a
    directory anyone may write) is neither used nor read: one line says
    so, and the run resends the mail as usual.
    """
    elsewhere = make_dir(os.path.join(env.root, "elsewhere"), 0o777)
    os.symlink(elsewhere, os.path.join(env.alt, ".lostmail"))
    env.mailbox(messages=[(b"x@example.org", message(1))])
    result = env.run()
    assert result.returncode == 0, result.stderr
    assert b".lostmail: a symbolic link, not the working directory of an earlier version; " \
           b"left alone" in result.stderr
    assert os.listdir(elsewhere) == []
    assert len(env.sent()) == 1 and os.path.islink(os.path.join(env.alt, ".lostmail"))


@needs_root
def test_malformed_mailbox_loses_nothing(env):
    """
    Data before the first From_ line and an unquoted From in a paragraph
    are kept: the former goes out with the null sender.
    """
    raw = (
        b"garbage without a From_ line\n\n"
        b"From a@example.org Mon Nov 23 01:00:00 2026\n"
        b"Subject: one\n\nparagraph\nFrom careless writer\ncontinues\n\n"
        b"From b@example.org Mon Nov 23 01:00:01 2026\n"
        b"Subject: two\n\nlast message without blank line"
    )
    env.mailbox(raw=raw)
    result = env.run()
    assert result.returncode == 0, result.stderr
    calls = env.sent()
    assert [argv[2] for argv, _ in calls] == ["<>", "a@example.org", "b@example.org"]
    assert [strip_header(d) for _, d in calls] == [
        b"garbage without a From_ line\n",
        b"Subject: one\n\nparagraph\nFrom careless writer\ncontinues\n",
        b"Subject: two\n\nlast message without blank line",
    ]
    assert b"malformed mailbox" in result.stderr


@needs_root
def test_unsafe_envelope_sender_becomes_null(env):
    env.mailbox(raw=b"From -oQ/tmp Mon Nov 23 01:00:00 2026\nSubject: x\n\nbody\n\n")
    result = env.run()
    assert result.returncode == 0, result.stderr
    [(argv, _)] = env.sent()
    assert argv == ["-oi", "-f", "<>", "--", "alice"]
    assert b"unusable envelope sender" in result.stderr


@needs_root
def test_dry_run_changes_nothing(env):
    path = env.mailbox(messages=TRICKY[:2])
    before = open(path, "rb").read()
    result = env.run("--dry-run")
    assert result.returncode == 0
    assert result.stdout.count(b"alice: would resend") == 2
    assert b"total: 2 found, 0 resent, 0 failed" in result.stdout
    assert open(path, "rb").read() == before
    assert env.sent() == [] and env.work_entries() == []


@needs_root
def test_missing_sendmail_keeps_the_mail(env):
    env.mailbox(messages=TRICKY[:1])
    result = run_hlfs("lostmail", "--alt-dir", env.alt, "--state-dir", env.state,
                      "--sendmail", "/nonexistent/sendmail", "--password-file", env.passwd)
    assert result.returncode == 1
    assert b"cannot run /nonexistent/sendmail" in result.stderr
    assert len(env.work_entries()) == 1


@needs_root
def test_python_dash_m_and_config_file(env):
    config = os.path.join(env.root, "lostmail.conf")
    with open(config, "w") as f:
        f.write(
            "[lostmail]\n"
            f"alt-dir = {env.alt}\n"
            f"state-dir = {env.state}\n"
            f"sendmail = {env.sendmail}\n"
            f"password-file = {env.passwd}\n"
            "postmaster = root\n"
            "dry-run = no\n"
        )
    env.mailbox(messages=TRICKY[:1])
    result = subprocess.run([sys.executable, "-m", "hlfs.cli", "lostmail", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(env.sent()) == 1


def test_missing_alternate_spool(tmp_path):
    result = run_hlfs("lostmail", "--alt-dir", str(tmp_path / "none"), "--syslog-socket", "")
    assert result.returncode == 1
    assert f"alternate spool {tmp_path / 'none'}: No such file or directory".encode() in result.stderr


def test_configuration_errors_are_usage_errors(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[lostmail]\nsendmial = /usr/sbin/sendmail\n")
    for args, why in [
        (["--config", str(bad)], b"unknown key 'sendmial'"),
        (["--config", str(tmp_path / "missing")], b"cannot read"),
        (["--smtp", "localhost"], b"expected HOST:PORT"),
        (["--max-size", "big"], b"invalid int value"),
        (["--unknown-wait", "-1"], b"unknown-wait: expected seconds >= 0"),
        (["--unknown-wait", "nan"], b"unknown-wait: expected seconds >= 0"),
    ]:
        result = run_hlfs("lostmail", *args)
        assert result.returncode == 64, args
        assert why in result.stderr and b"Traceback" not in result.stderr


def test_sample_configuration_is_valid():
    """
    The shipped etc/lostmail.conf names only known keys, with the
    documented defaults.
    """
    parser = configparser.ConfigParser(interpolation=None)
    with open(os.path.join(REPO, "etc", "lostmail.conf")) as f:
        parser.read_file(f)
    keys = dict(parser.items("lostmail"))
    assert set(keys) <= set(DEFAULTS)
    assert keys["alt-dir"] == DEFAULTS["alt-dir"]
    assert keys["state-dir"] == DEFAULTS["state-dir"]
    assert keys["sendmail"] == DEFAULTS["sendmail"]
    for name in ("hlfs-lostmail.service", "hlfs-lostmail.timer", "hlfs-lostmail.cron"):
        assert os.path.exists(os.path.join(REPO, "etc", name))


lines = st.lists(
    st.one_of(
        st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"") + b"\n"),
        st.sampled_from([b"From x\n", b">From y\n", b">>From \n", b"\n", b"From\n", b"\r\n"]),
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"", b"a@b", b"x<y>"]), lines), max_size=5))
def test_mbox_round_trip(messages):
    """
    Whatever the content, writing messages with the agent's writer and
    splitting them with the remailer's reader gives them back.
    """
    out = io.BytesIO()
    for sender, content_lines in messages:
        for chunk in mbox.message_chunks(mbox.from_line(sender, 0), iter(content_lines)):
            out.write(chunk)
    parsed = list(mbox.iter_mbox(io.BytesIO(out.getvalue())))
    assert [m.content for m in parsed] == [b"".join(c) for _, c in messages]
    assert all(m.from_line is not None for m in parsed)
    # Offsets let a later run resume at any message.
    for m in parsed:
        resumed = next(mbox.iter_mbox(io.BytesIO(out.getvalue()), m.start))
        assert resumed == m


def test_an_error_on_a_descriptor_is_one_log_line(env, capfd):
    """
    If the run fails on a file known by its descriptor (an C{OSError}
    whose filename is an int), then the command logs one line with the
    error and exits 1, without a traceback; the mail stays.
    """
    env.mailbox(messages=[(b"s@example.org", message(1))])

    def fail(step, count):
        raise OSError(5, "Input/output error", 7)

    capfd.readouterr()
    argv = env.args("--syslog-socket", "")[1:]
    status = lostmail_cli.main(argv, checkpoint=fail)
    out, err = capfd.readouterr()
    assert status == 1
    assert "Traceback" not in err
    assert err.strip().endswith("Input/output error")
    assert env.sent() == []


def old_working_dir(env):
    """
    The working directory an earlier version kept in the spool.
    """
    return make_dir(os.path.join(env.alt, ".lostmail"), 0o700)


def old_working_file(old, name, uid, messages, offset=None):
    path = os.path.join(old, name)
    with open(path, "wb") as f:
        f.write(b"".join(mboxrd(s, m) for s, m in messages))
    os.chown(path, uid, uid)
    if offset is not None:
        with open(os.path.join(old, "S." + name[2:]), "wb") as f:
            f.write(b"%d\n" % offset)
    return path


@needs_root
def test_an_earlier_versions_working_directory_is_moved(env, run_at):
    """
    If the spool holds the working directory of an earlier version (root's,
    mode 0700), then its working files move to the state directory with
    how far they were resent, its record of missing users is merged, a
    root-owned file stays there with one line, and the rest is resent
    once: nothing twice, nothing lost.
    """
    old = old_working_dir(env)
    messages = [(b"s%d@example.org" % n, message(n)) for n in range(1, 4)]
    first = len(mboxrd(*messages[0]))
    old_working_file(old, "W.00000000000000000001.123.alice", ALICE[1], messages, first)
    old_working_file(old, "W.00000000000000000002.124.bob", 0, [(b"r@example.org", message(7))])
    with open(os.path.join(old, "missing"), "wb") as f:
        f.write(b"gone %.3f\n" % (T0 - 2 * DAY))
    with open(os.path.join(old, "T.missing"), "wb") as f:
        f.write(b"half-written")
    env.mailbox(b"gone", messages=[(b"x@example.org", message(9))])
    status, err = run_at(T0)
    assert status == 1
    assert "1 working files of an earlier version moved to " in err
    assert "W.00000000000000000002.124.bob: owned by root; not moved, left for an " \
           "administrator" in err
    assert "1 entries of an earlier version not moved; left there" in err
    resent = [(argv[-1], strip_header(d)) for argv, d in env.sent()]
    assert sorted(resent) == [("alice", message(2)), ("alice", message(3)), ("root", message(9))]
    assert sorted(os.listdir(old)) == ["W.00000000000000000002.124.bob"]
    os.unlink(os.path.join(old, "W.00000000000000000002.124.bob"))
    assert run_at(T0 + 1)[0] == 0
    assert not os.path.exists(old) and len(env.sent()) == 3


@needs_root
def test_a_move_cut_short_by_a_crash_sends_nothing_twice(env, run_at):
    """
    If a run died after copying an earlier version's working file but
    before removing it, then the next run finds its copy under the same
    key and only removes the old file.
    """
    old = old_working_dir(env)
    messages = [(b"s%d@example.org" % n, message(n)) for n in range(1, 3)]
    old_working_file(old, "W.00000000000000000001.123.alice", ALICE[1], messages)
    make_dir(env.state, 0o700)
    work = make_dir(env.work, 0o700)
    copy = os.path.join(work, "W.00000000000000000001.123.%d.alice" % ALICE[1])
    shutil.copy(os.path.join(old, "W.00000000000000000001.123.alice"), copy)
    with open(os.path.join(work, "S.00000000000000000001.123.%d.alice" % ALICE[1]), "wb") as f:
        f.write(b"%d\n" % len(mboxrd(*messages[0])))  # the first was resent already
    status, err = run_at(T0)
    assert status == 0, err
    assert [strip_header(d) for _, d in env.sent()] == [message(2)]
    assert not os.path.exists(old)


@needs_root
def test_the_counts_of_a_run(env):
    """
    After a run, L{Remailer} says how many mailboxes it took, how many
    messages went out, how many problems it logged, and how many
    mailboxes are left in the spool and in the work area (what a
    metrics exporter reports).
    """
    from hlfs.core.users import UserTable
    from hlfs.mail.lostmail import Remailer
    from hlfs.mail.transports import SendmailTransport

    env.mailbox(messages=[(b"a@example.org", message(1))])
    env.mailbox(b"bob", messages=[(b"b@example.org", message(2)), (b"c@example.org", message(3))])
    env.mailbox(b"carol", messages=[(b"x@example.org", message(4))], owner=ALICE[1])
    env.refuse(b"END-OF-MESSAGE-3")
    options = lostmail_cli.resolve_options(
        lostmail_cli.build_parser("hlfs lostmail").parse_args(env.args()[1:]))
    logged, printed = [], []
    remailer = Remailer(options, UserTable.from_passwd_file(env.passwd),
                        SendmailTransport(env.sendmail, 60), logged.append, printed.append)
    assert remailer.run() == 1
    assert (remailer.taken, remailer.sent, remailer.problems) == (2, 2, 1)
    assert (remailer.left_in_spool, remailer.left_in_work, remailer.left) == (1, 1, 2)
    assert remailer.tally.failed() == 1


def test_spool_keys_are_systemd_escape_paths(tmp_path):
    """
    Each alternate spool's state lives in a subdirectory named as
    C{systemd-escape --path} names its path.
    """
    paths = ["/var/alt_mail", "/srv/mail-alt/", "/a/.b/c d/é", "/", "/x//y/../z"]
    expected = ["var-alt_mail", "srv-mail\\x2dalt", "a-.b-c\\x20d-\\xc3\\xa9", "-", "x-z"]
    assert [spool_key(os.fsencode(p)).decode() for p in paths] == expected
    tool = shutil.which("systemd-escape")
    if tool is not None:
        # systemd-escape refuses a path that is not normalized.
        for path, key in zip(paths[:-1], expected):
            out = subprocess.run([tool, "--path", path], capture_output=True, text=True)
            assert out.stdout.strip() == key
