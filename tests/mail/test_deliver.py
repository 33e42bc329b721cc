"""
Tests for C{hlfs deliver}: real processes delivering as throwaway users
(uids 60001.. from a private password file) into real directories and
tmpfs mounts.
"""

import fcntl
import mailbox
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from hlfs.mail import mbox
from hlfs.mail.deliver import WRITE_BATCH, DeliveryFailure, append_message
from tests.support.mail import (
    ALICE, BOB, LOCKING_READER, hlfs_command, make_dir, message, needs_root, run_hlfs, syslog_listener,
    write_passwd,
)
from tests.support.filesystems import fill, tmpfs

pytestmark = needs_root

EX_NOUSER = 67
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_USAGE = 64


@pytest.fixture
def setup(world):
    """
    A world-writable spool (like /var/mail or the alternate spool) and a
    password file with alice, bob and carol.
    """
    spool = make_dir(os.path.join(world, "spool"), 0o1777)
    passwd = write_passwd(world)
    return world, spool, passwd


def deliver(spool, passwd, *recipients, sender="sender@example.org", input=b"", extra=()):
    return run_hlfs(
        "deliver", "--spool", spool, "--password-file", passwd, "-f", sender,
        *extra, *recipients, input=input,
    )


def read_messages(path):
    with open(path, "rb") as f:
        return list(mbox.iter_mbox(f))


def test_delivers_mboxrd_as_recipient(setup):
    """
    One message lands once, with a From_ line naming the envelope sender,
    From-quoting that reads back byte for byte, and a new mailbox that is
    mode 0600 and owned by the recipient.
    """
    _, spool, passwd = setup
    body = (
        b"Subject: quoting\n\nFrom the start\n>From quoted\n>>From twice\n"
        b"From\n8-bit \xe9\xff bytes\n. lone dot\n"
    )
    result = deliver(spool, passwd, "alice", input=body)
    assert result.returncode == 0, result.stderr
    path = os.path.join(spool, "alice")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ALICE[1], ALICE[1], 0o600)
    raw = open(path, "rb").read()
    assert raw.startswith(b"From sender@example.org ")
    assert b"\n>From the start\n>>From quoted\n>>>From twice\nFrom\n" in raw
    assert raw.endswith(b". lone dot\n\n")
    [msg] = read_messages(path)
    assert msg.content == body and msg.sender == b"sender@example.org"
    # And Python's own mbox reader agrees on the message boundaries.
    [parsed] = mailbox.mbox(path)
    assert parsed["Subject"] == "quoting"
    line = result.stderr.decode()
    assert f"alice: {path}: {len(raw)} bytes: delivered" in line


def test_result_lines_reach_syslog(setup):
    """
    Each recipient's result line also goes to syslog, facility mail,
    sent by the child that did the delivery.
    """
    world, spool, passwd = setup
    socket_path = os.path.join(world, "log")
    with syslog_listener(socket_path) as received:
        result = deliver(spool, passwd, "alice", "nosuchuser", input=message(1),
                         extra=["--syslog-socket", socket_path])
        assert result.returncode == EX_NOUSER
        records = received()
    assert len(records) == 2
    text = b"\n".join(records).decode()
    path = os.path.join(spool, "alice")
    assert "<22>" in text and "hlfs-deliver[" in text
    assert f"alice: {path}: " in text and " bytes: delivered" in text
    assert "<20>" in text and "nosuchuser: no such user" in text


def test_message_without_final_newline_and_null_sender(setup):
    _, spool, passwd = setup
    assert deliver(spool, passwd, "alice", sender="", input=b"Subject: a\n\nno newline").returncode == 0
    assert deliver(spool, passwd, "alice", sender="<>", input=b"Subject: b\n\nsecond\n").returncode == 0
    messages = read_messages(os.path.join(spool, "alice"))
    assert [m.content for m in messages] == [b"Subject: a\n\nno newline\n", b"Subject: b\n\nsecond\n"]
    assert all(m.from_line.startswith(b"From MAILER-DAEMON ") for m in messages)


def test_appends_after_a_mailbox_missing_its_blank_line(setup):
    """
    A mailbox whose last message lost its ending still gets a separate
    new message.
    """
    _, spool, passwd = setup
    path = os.path.join(spool, "alice")
    with open(path, "wb") as f:
        f.write(b"From old Mon Nov 23 00:00:00 2026\nSubject: old\n\ncut off")
    os.chown(path, ALICE[1], ALICE[1])
    os.chmod(path, 0o600)
    assert deliver(spool, passwd, "alice", input=message(1)).returncode == 0
    messages = read_messages(path)
    assert [m.content for m in messages] == [b"Subject: old\n\ncut off\n", message(1)]


def test_several_recipients_get_identical_bytes(setup):
    _, spool, passwd = setup
    result = deliver(spool, passwd, "alice", "bob", input=message(7))
    assert result.returncode == 0, result.stderr
    alice = read_messages(os.path.join(spool, "alice"))
    bob = read_messages(os.path.join(spool, "bob"))
    assert [m.content for m in alice] == [m.content for m in bob] == [message(7)]
    assert os.stat(os.path.join(spool, "bob")).st_uid == BOB[1]


def test_unknown_user_is_ex_nouser_and_others_still_get_it(setup):
    _, spool, passwd = setup
    result = deliver(spool, passwd, "nosuchuser", "alice", input=message(1))
    assert result.returncode == EX_NOUSER
    assert b"nosuchuser: no such user" in result.stderr
    assert [m.content for m in read_messages(os.path.join(spool, "alice"))] == [message(1)]
    assert not os.path.exists(os.path.join(spool, "nosuchuser"))


def test_recipient_names_are_escaped_in_log_lines(setup):
    """
    An MTA hands the agent whatever recipient it was given: a name with a
    terminal escape sequence or a line break reaches the log (and the
    bounce) escaped, as one line.
    """
    _, spool, passwd = setup
    result = deliver(spool, passwd, "--", "\x1b]0;owned\x07x", "a/b\nforged: delivered",
                     input=message(1))
    assert result.returncode == EX_NOUSER
    assert result.stderr.splitlines() == [
        b"hlfs deliver: \\x1b]0;owned\\x07x: no such user",
        b"hlfs deliver: a/b\\x0aforged: delivered: not a valid user name",
    ]


@pytest.mark.parametrize("name", ["../etc", ".hidden", "-rf", "a/b", "x.lock"])
def test_names_that_are_not_user_names(setup, name):
    _, spool, passwd = setup
    result = deliver(spool, passwd, "--", name, input=message(1))
    assert result.returncode == EX_NOUSER
    assert b"not a valid user name" in result.stderr
    assert os.listdir(spool) == []


def test_usage_errors(setup):
    _, spool, passwd = setup
    result = run_hlfs("deliver", "--spool", spool)
    assert result.returncode == EX_USAGE
    assert b"Traceback" not in result.stderr and b"usage:" in result.stderr
    result = run_hlfs("deliver", "--lock-timeout", "soon", "alice")
    assert result.returncode == EX_USAGE


def _fork_as(uid, argv, stdin_data, stderr_path):
    """
    Run C{hlfs deliver} in a forked child running as C{uid} (the Python
    binary itself may not be executable by the throwaway users).
    """
    from hlfs.cli import deliver as deliver_module

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write_end)
            os.dup2(read_end, 0)
            fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT, 0o666)
            os.dup2(fd, 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sys.stdin = open(0, "r", closefd=False)
            code = deliver_module.main(argv)
        except BaseException:
            code = 99
        os._exit(code)
    os.close(read_end)
    os.write(write_end, stdin_data)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), open(stderr_path, "rb").read()


def test_running_as_the_recipient_needs_no_switch(setup):
    """
    Under Postfix's mailbox_command the agent already runs as the
    recipient: it delivers without switching.
    """
    world, spool, passwd = setup
    code, err = _fork_as(
        ALICE[1], ["--spool", spool, "--password-file", passwd, "alice"],
        message(1), os.path.join(world, "err"),
    )
    assert code == 0, err
    assert [m.content for m in read_messages(os.path.join(spool, "alice"))] == [message(1)]


def test_running_as_another_user_is_refused(setup):
    world, spool, passwd = setup
    code, err = _fork_as(
        BOB[1], ["--spool", spool, "--password-file", passwd, "alice"],
        message(1), os.path.join(world, "err"),
    )
    assert code == EX_NOPERM
    assert b"neither root nor the recipient; refused" in err
    assert os.listdir(spool) == []


def test_concurrent_deliveries_and_a_locking_reader(setup):
    """
    Many agents deliver to one mailbox at once while a reader takes the
    locks the way mail readers do and checks every snapshot: each
    snapshot holds only whole messages, and at the end every message is
    there exactly once.
    """
    world, spool, passwd = setup
    path = os.path.join(spool, "alice")
    count = 12
    stop = os.path.join(world, "stop")
    reader = subprocess.Popen([sys.executable, LOCKING_READER, path, stop], stdout=subprocess.PIPE)
    bodies = {n: message(n, body=b"line of text\n" * (50 * n)) for n in range(count)}
    procs = [
        subprocess.Popen(
            hlfs_command("deliver", "--spool", spool, "--password-file", passwd,
                         "-f", f"s{n}@example.org", "alice"),
            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for n in range(count)
    ]
    for n, proc in enumerate(procs):
        proc.stdin.write(bodies[n])
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        proc.stderr.close()
    open(stop, "w").close()
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    assert int(out) >= 1
    parsed = list(mailbox.mbox(path))
    assert len(parsed) == count
    messages = read_messages(path)
    assert sorted(m.content for m in messages) == sorted(bodies.values())
    assert sorted(m.sender for m in messages) == sorted(b"s%d@example.org" % n for n in range(count))
    assert sorted(os.listdir(spool)) == ["alice"]


def test_full_file_system_leaves_mailbox_unchanged(world):
    """
    A write that hits a full disk is undone: exit 75, mailbox unchanged
    byte for byte.
    """
    passwd = write_passwd(world)
    spool = os.path.join(world, "full")
    with tmpfs(spool, "256k"):
        os.chmod(spool, 0o1777)
        path = os.path.join(spool, "alice")
        assert run_hlfs("deliver", "--spool", spool, "--password-file", passwd, "alice",
                        input=message(1)).returncode == 0
        filler = fill(spool)
        # Leave some room, less than the message needs, so the write
        # really starts and must be undone.
        with open(filler, "r+b") as f:
            f.truncate(os.path.getsize(filler) - 16384)
        before = open(path, "rb").read()
        result = run_hlfs("deliver", "--spool", spool, "--password-file", passwd, "alice",
                          input=message(2, body=b"x" * 100000 + b"\n"))
        assert result.returncode == EX_TEMPFAIL, result.stderr
        assert b"No space left on device" in result.stderr
        assert open(path, "rb").read() == before
        assert sorted(os.listdir(spool)) == ["alice", "filler"]
        # A mailbox created by a failed delivery does not stay behind.
        result = run_hlfs("deliver", "--spool", spool, "--password-file", passwd, "bob",
                          input=message(3, body=b"x" * 100000 + b"\n"))
        assert result.returncode == EX_TEMPFAIL, result.stderr
        assert b"No space left on device" in result.stderr
        assert sorted(os.listdir(spool)) == ["alice", "filler"]


def _deliver_while(path, meanwhile):
    """
    Append one message of exactly L{WRITE_BATCH} bytes to the
    mailbox C{path} with L{append_message}, calling C{meanwhile}
    once that batch is on disk, before the size is checked: another
    writer, ignoring the locks, acting between the two.

    @return: the L{DeliveryFailure}, or None.
    """
    def chunks():
        yield b"x" * (WRITE_BATCH - 1) + b"\n"
        meanwhile()

    fd = os.open(path, os.O_RDWR)
    try:
        append_message(fd, chunks())
    except DeliveryFailure as e:
        return e
    finally:
        os.close(fd)


def test_another_writers_mail_appended_meanwhile_is_kept(tmp_path):
    """
    If the mailbox grew by more than this delivery wrote (a writer that
    ignored the locks appended meanwhile, or this client's idea of the
    size was stale), nothing is truncated: the other writer's message
    stays, and the delivery is deferred.  (It used to truncate back to
    its start, erasing the other writer's mail with its own.)
    """
    path = tmp_path / "alice"
    before = b"From a@example.org  Sat Dec  5 12:00:00 2026\nSubject: before\n\nbody\n\n"
    theirs = b"From b@example.org  Sat Dec  5 12:00:01 2026\nSubject: theirs\n\nbody\n\n"
    path.write_bytes(before)

    def other_writer():
        with open(path, "ab") as f:
            f.write(theirs)

    failure = _deliver_while(path, other_writer)
    data = path.read_bytes()
    assert data.startswith(before) and data.endswith(theirs)
    assert len(data) == len(before) + WRITE_BATCH + len(theirs)
    assert failure is not None and failure.code == EX_TEMPFAIL
    assert "left as it is" in str(failure)


def test_a_mailbox_that_shrank_meanwhile_is_not_padded(tmp_path):
    """
    If the mailbox shrank meanwhile (a reader that ignored the locks
    rewrote it), it is not truncated "back" to the old size, which would
    pad it out with NUL bytes.
    """
    path = tmp_path / "alice"
    path.write_bytes(b"From a@example.org  Sat Dec  5 12:00:00 2026\nSubject: before\n\nbody\n\n")

    def rewriting_reader():
        os.truncate(path, 0)

    failure = _deliver_while(path, rewriting_reader)
    assert failure is not None and failure.code == EX_TEMPFAIL
    assert b"\0" not in path.read_bytes()


def test_lock_held_by_live_process_times_out(setup):
    _, spool, passwd = setup
    path = os.path.join(spool, "alice")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom hlfs.mail.dotlock import DotLock\n"
         "lock = DotLock(sys.argv[1]); lock.acquire()\n"
         "print('locked', flush=True); sys.stdin.read(); lock.release()",
         path + ".lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        started = time.monotonic()
        result = deliver(spool, passwd, "alice", input=message(1), extra=["--lock-timeout", "1"])
        waited = time.monotonic() - started
        assert result.returncode == EX_TEMPFAIL
        assert b"still held after 1s" in result.stderr
        assert waited >= 1
        assert not os.path.exists(path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert os.listdir(spool) == []


def _old_lock(spool, owner):
    lock = os.path.join(spool, "alice.lock")
    with open(lock, "wb") as f:
        f.write(b"4242 far-away-host\n")
    os.chown(lock, owner, owner)
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    return lock


def test_recipient_that_takes_too_long_is_killed_and_deferred(setup):
    """
    A child stuck for longer than --timeout (a hung home server; here a
    lock that is not released) is killed, and the mail deferred.
    """
    _, spool, passwd = setup
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom hlfs.mail.dotlock import DotLock\n"
         "lock = DotLock(sys.argv[1]); lock.acquire()\n"
         "print('locked', flush=True); sys.stdin.read(); lock.release()",
         os.path.join(spool, "alice.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        result = deliver(spool, passwd, "alice", input=message(1),
                         extra=["--lock-timeout", "60", "--timeout", "1"])
        assert result.returncode == EX_TEMPFAIL
        assert b"alice: " in result.stderr
        assert b"0 bytes: failed (75): delivery did not finish in 1s" in result.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert not os.path.exists(os.path.join(spool, "alice"))


def test_stale_lock_is_broken_and_logged(setup):
    _, spool, passwd = setup
    _old_lock(spool, ALICE[1])
    result = deliver(spool, passwd, "alice", input=message(1),
                     extra=["--stale-after", "600", "--lock-timeout", "10"])
    assert result.returncode == 0, result.stderr
    assert b"broke stale lock" in result.stderr and b"older than 600s" in result.stderr
    assert [m.content for m in read_messages(os.path.join(spool, "alice"))] == [message(1)]
    assert sorted(os.listdir(spool)) == ["alice"]


def test_stale_lock_the_recipient_cannot_remove(setup):
    """
    In a sticky spool, a stale lock left by another user cannot be broken
    by the recipient: one clear line, then a temporary failure.
    """
    _, spool, passwd = setup
    lock = _old_lock(spool, BOB[1])
    result = deliver(spool, passwd, "alice", input=message(1),
                     extra=["--stale-after", "600", "--lock-timeout", "1"])
    assert result.returncode == EX_TEMPFAIL
    assert result.stderr.count(b"cannot be removed: Operation not permitted") == 1
    assert os.path.exists(lock)
    assert sorted(os.listdir(spool)) == ["alice.lock"]


def test_lock_taken_over_while_held_is_not_removed(setup):
    """
    While the agent holds the dotlock (and waits for the fcntl lock we
    hold), another party replaces the dotlock; the agent must leave the
    replacement in place when it finishes.
    """
    _, spool, passwd = setup
    path = os.path.join(spool, "alice")
    lock = path + ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchown(fd, ALICE[1], ALICE[1])
    fcntl.lockf(fd, fcntl.LOCK_EX)
    proc = subprocess.Popen(
        hlfs_command("deliver", "--spool", spool, "--password-file", passwd,
                     "--lock-timeout", "30", "alice"),
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdin.write(message(1))
    proc.stdin.close()
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(lock):
            assert time.monotonic() < deadline, "agent never took the dotlock"
            time.sleep(0.01)
        os.unlink(lock)
        with open(lock, "wb") as f:
            f.write(b"1 usurper\n")
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read()
    assert b"taken over by another process; left in place" in err
    assert open(lock, "rb").read() == b"1 usurper\n"
    assert [m.content for m in read_messages(path)] == [message(1)]


def _victim(world):
    victim = os.path.join(world, "victim")
    with open(victim, "wb") as f:
        f.write(b"precious\n")
    os.chown(victim, BOB[1], BOB[1])
    os.chmod(victim, 0o666)
    return victim


def _assert_refused(result, spool, expected_entries, why):
    assert result.returncode in (EX_TEMPFAIL, EX_NOPERM), result.stderr
    assert why in result.stderr
    assert b"0 bytes: failed" in result.stderr
    assert b"Traceback" not in result.stderr
    assert sorted(os.listdir(spool)) == expected_entries


def test_mailbox_symlink_is_refused(setup):
    world, spool, passwd = setup
    victim = _victim(world)
    os.symlink(victim, os.path.join(spool, "alice"))
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"symbolic link; refused")
    assert open(victim, "rb").read() == b"precious\n"


def test_dangling_mailbox_symlink_is_refused(setup):
    world, spool, passwd = setup
    target = os.path.join(world, "created-elsewhere")
    os.symlink(target, os.path.join(spool, "alice"))
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"symbolic link; refused")
    assert not os.path.exists(target)


def test_mailbox_fifo_is_refused_without_hanging(setup):
    _, spool, passwd = setup
    fifo = os.path.join(spool, "alice")
    os.mkfifo(fifo)
    os.chown(fifo, BOB[1], BOB[1])
    os.chmod(fifo, 0o666)
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"not a regular file")


def test_mailbox_directory_is_refused(setup):
    _, spool, passwd = setup
    make_dir(os.path.join(spool, "alice"), 0o777, ALICE[1])
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"not a regular file; refused")
    assert os.listdir(os.path.join(spool, "alice")) == []


def test_mailbox_hard_link_to_another_users_file_is_refused(setup):
    world, spool, passwd = setup
    victim = _victim(world)
    os.link(victim, os.path.join(spool, "alice"))
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"2 hard links; refused")
    assert open(victim, "rb").read() == b"precious\n"


def test_mailbox_owned_by_another_user_is_refused(setup):
    _, spool, passwd = setup
    path = os.path.join(spool, "alice")
    with open(path, "wb") as f:
        f.write(b"planted\n")
    os.chown(path, BOB[1], BOB[1])
    os.chmod(path, 0o666)
    result = deliver(spool, passwd, "alice", input=message(1))
    _assert_refused(result, spool, ["alice"], b"owned by uid 60002, not the recipient")
    assert open(path, "rb").read() == b"planted\n"


def test_unreachable_spool_is_a_temporary_failure(setup):
    world, _, passwd = setup
    result = deliver(os.path.join(world, "nonexistent"), passwd, "alice", input=message(1))
    assert result.returncode == EX_TEMPFAIL
    assert b"spool directory unreachable" in result.stderr


def test_spool_the_recipient_cannot_write(setup):
    """
    A home the recipient cannot write (a root-squashed or misowned
    .mailspool) defers the mail rather than losing it.
    """
    world, _, passwd = setup
    spool = make_dir(os.path.join(world, "rootonly"), 0o755)
    result = deliver(spool, passwd, "alice", input=message(1))
    assert result.returncode == EX_TEMPFAIL
    assert b"cannot create a lock file" in result.stderr
    assert os.listdir(spool) == []


def test_end_to_end_through_home_link(world):
    """
    The hlfs path, with the link resolution done by symbolic links as hlfs
    would answer them: the spool resolves to the home's .mailspool and
    the message lands there; when the home is full the agent defers, hlfs
    points the spool at the alternate spool, mail lands there, and after
    space is freed the remailer (running this very agent as its
    "sendmail") puts it in the home.  The same path through a real hlfs
    mount is exercised by the kernel client tests.
    """
    passwd = write_passwd(world)
    home = os.path.join(world, "home", "alice")
    alt = make_dir(os.path.join(world, "alt_mail"), 0o1777)
    spool = os.path.join(world, "spool")
    with tmpfs(home, "256k"):
        os.chown(home, ALICE[1], ALICE[1])
        mailspool = make_dir(os.path.join(home, ".mailspool"), 0o700, ALICE[1])
        os.symlink(mailspool, spool)
        args = ("deliver", "--spool", spool, "--password-file", passwd)
        assert run_hlfs(*args, "alice", input=message(1)).returncode == 0
        assert [m.content for m in read_messages(os.path.join(mailspool, "alice"))] == [message(1)]

        filler = fill(home)
        before = open(os.path.join(mailspool, "alice"), "rb").read()
        result = run_hlfs(*args, "alice", input=message(2, body=b"y" * 50000 + b"\n"))
        assert result.returncode == EX_TEMPFAIL
        assert open(os.path.join(mailspool, "alice"), "rb").read() == before

        # hlfs's disk-space probe fails, so `home` now points at the
        # alternate spool.
        os.unlink(spool)
        os.symlink(alt, spool)
        result = run_hlfs(*args, "-f", "sender2@example.org", "alice",
                          input=message(2, body=b"y" * 50000 + b"\n"))
        assert result.returncode == 0, result.stderr
        assert [m.content for m in read_messages(os.path.join(alt, "alice"))] == [
            message(2, body=b"y" * 50000 + b"\n")
        ]

        # Space is freed and the probe succeeds again.
        os.unlink(filler)
        os.unlink(spool)
        os.symlink(mailspool, spool)
        sendmail = os.path.join(world, "sendmail")
        with open(sendmail, "w") as f:
            f.write(
                "#!/bin/sh\n"
                "# sendmail -oi -f SENDER -- USER\n"
                f"exec {sys.executable} -m hlfs.cli deliver --spool {spool} "
                f"--password-file {passwd} -f \"$3\" \"$5\"\n"
            )
        os.chmod(sendmail, 0o755)
        result = run_hlfs("lostmail", "--alt-dir", alt, "--sendmail", sendmail,
                          "--state-dir", os.path.join(world, "state"),
                          "--password-file", passwd)
        assert result.returncode == 0, result.stderr
        home_messages = read_messages(os.path.join(mailspool, "alice"))
        assert len(home_messages) == 2
        assert home_messages[0].content == message(1)
        header, _, rest = home_messages[1].content.partition(b"\n")
        assert header.startswith(b"X-Hlfs-Redelivered: from alternate spool")
        assert rest == message(2, body=b"y" * 50000 + b"\n")
        assert home_messages[1].sender == b"sender2@example.org"
        assert os.path.getsize(os.path.join(alt, "alice")) == 0


# -- mail as MTAs hand it: the documented invocation lines of docs/deliver.md

ENVELOPE_MESSAGE = (
    b"Return-Path: <bounce@example.org>\nSubject: handed over\n\n"
    b"From the body, quoted\nlast line\n"
)

FROM_LINE = re.compile(rb"From (\S+) [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n")


def stored(path):
    """
    @return: C{(sender, rest)} of a mailbox holding one message: the
        From_ line's sender and every byte after that line.
    """
    raw = open(path, "rb").read()
    match = FROM_LINE.match(raw)
    assert match, raw[:120]
    return match.group(1), raw[match.end():]


def expected(message):
    return message.replace(b"\nFrom the body", b"\n>From the body") + b"\n"


def test_postfix_mailbox_command(setup):
    """
    If Postfix's local(8) runs the documented C{mailbox_command} (through
    C{/bin/sh}, with C{$SENDER} and C{$USER} set, the input starting with
    Postfix's own C{From sender  date} line), then the mailbox holds one
    From_ line with the envelope sender and the message byte for byte:
    Postfix's line is replaced, not quoted into the message.
    """
    _, spool, passwd = setup
    command = (
        " ".join(hlfs_command("deliver")) + f" --spool {spool} --password-file {passwd}"
        ' -f "$SENDER" "$USER"'
    )
    postfix_line = b"From bounce@example.org  Tue Dec  1 23:59:59 2026\n"
    result = subprocess.run(
        ["/bin/sh", "-c", command], input=postfix_line + ENVELOPE_MESSAGE, capture_output=True,
        env=dict(os.environ, SENDER="bounce@example.org", USER="alice"), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    path = os.path.join(spool, "alice")
    assert stored(path) == (b"bounce@example.org", expected(ENVELOPE_MESSAGE))
    [parsed] = mailbox.mbox(path)
    assert parsed["Subject"] == "handed over" and not parsed.defects


def test_exim_pipe_transport(setup):
    """
    If Exim's pipe transport runs the documented command (no shell; its
    default C{message_prefix} is a From_ line), then the mailbox holds the
    message byte for byte; for the null sender the From_ line says
    MAILER-DAEMON.
    """
    _, spool, passwd = setup
    for name, sender in (("alice", "bounce@example.org"), ("bob", "")):
        exim_line = b"From %s Tue Dec  1 23:59:59 2026\n" % (sender.encode() or b"MAILER-DAEMON")
        result = deliver(spool, passwd, name, sender=sender, input=exim_line + ENVELOPE_MESSAGE)
        assert result.returncode == 0, result.stderr
        assert stored(os.path.join(spool, name)) == (
            sender.encode() or b"MAILER-DAEMON", expected(ENVELOPE_MESSAGE))


def test_sendmail_local_mailer(setup):
    """
    If sendmail runs the documented local mailer (C{hlfs deliver -f $f $u},
    without the C{U} flag, so no From_ line), then the message is stored
    byte for byte under a From_ line of C{-f}'s sender.
    """
    _, spool, passwd = setup
    result = deliver(spool, passwd, "alice", sender="bounce@example.org", input=ENVELOPE_MESSAGE)
    assert result.returncode == 0, result.stderr
    assert stored(os.path.join(spool, "alice")) == (b"bounce@example.org", expected(ENVELOPE_MESSAGE))


def test_envelope_line_sender_and_f_option(setup):
    """
    If the input starts with a From_ line, then its sender is used when
    C{-f} is absent, and C{-f} wins when given; the line never reaches the
    mailbox.  A first line starting C{From} without the space is a header
    line like any other.
    """
    _, spool, passwd = setup
    line = b"From envelope@example.net Tue Dec  1 23:59:59 2026\n"
    no_f = run_hlfs("deliver", "--spool", spool, "--password-file", passwd, "alice",
                    input=line + ENVELOPE_MESSAGE)
    assert no_f.returncode == 0, no_f.stderr
    assert stored(os.path.join(spool, "alice")) == (b"envelope@example.net", expected(ENVELOPE_MESSAGE))
    with_f = deliver(spool, passwd, "bob", sender="option@example.com", input=line + ENVELOPE_MESSAGE)
    assert with_f.returncode == 0, with_f.stderr
    assert stored(os.path.join(spool, "bob")) == (b"option@example.com", expected(ENVELOPE_MESSAGE))
    header = b"From: someone@example.org\nSubject: x\n\nbody\n"
    plain = run_hlfs("deliver", "--spool", spool, "--password-file", passwd, "carol", input=header)
    assert plain.returncode == 0, plain.stderr
    assert stored(os.path.join(spool, "carol")) == (b"MAILER-DAEMON", header + b"\n")


def test_read_envelope_edges():
    """
    The envelope line is found whatever the chunking of the input, and a
    line too long to be one, or input that ends inside it, is message data.
    """
    import io

    assert mbox.read_envelope(io.BytesIO(b"From a@b  date\r\nrest")) == (b"a@b", b"rest")
    assert mbox.read_envelope(io.BytesIO(b"From MAILER-DAEMON x\n")) == (b"", b"")
    assert mbox.read_envelope(io.BytesIO(b"Fro")) == (None, b"Fro")
    assert mbox.read_envelope(io.BytesIO(b"Subject: x\n")) == (None, b"S")
    assert mbox.read_envelope(io.BytesIO(b"From no newline")) == (None, b"From no newline")
    long = b"From " + b"x" * 10000 + b"\n"
    sender, head = mbox.read_envelope(io.BytesIO(long))
    assert sender is None and long.startswith(head)
