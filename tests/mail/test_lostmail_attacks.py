"""
Local users against C{hlfs lostmail}, the root-run remailer: nothing root
can read may reach a user, no user's file may hang or wedge a run, and no
user's mail may be held longer than the stale period.

Each attack is made by a real unprivileged user (C{setpriv}, the
system's C{python3} running L{tests.support.lostmail_attacker}) against
the installed C{hlfs} command of this environment, run as root as its
timer runs it, with users from a test password file.  The remailer
resends through a C{sendmail} stand-in that records its argv and input:
what is attacked here is the spool, not the local delivery behind it
(the SMTP side meets a real Postfix in L{tests.mail.test_smtp_smuggling}).

Each attack runs twice: with Debian's protections
(C{fs.protected_symlinks=1}, C{protected_hardlinks=1},
C{protected_regular=2}, C{protected_fifos=1}) and with all four at 0;
the sysctls are global, so L{kernel_protections} restores them.  Where
the kernel's protections refuse an attack's first step (a hard link to
someone else's file), the test says so and checks the outcome anyway.

Races are made deterministic as an attacker would make them: by holding
the mailbox's C{fcntl} lock while the remailer waits for it, or, for the
steps no lock covers, at the remailer's own checkpoints
(L{tests.support.lostmail_at}).  In every attack, bob's mailbox waits in
the spool too, to show that the run goes on for everyone else.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.lostmail_world import (
    BOB, MALLORY, PROTECTIONS, SECRET, AttackWorld, Y2099, kernel_protections, mboxrd, note,
    opened_by, stop, wait_for,
)
from tests.support.mail import needs_root

pytestmark = [needs_root]

HERE = Path(__file__).resolve().parent
AT_STEP = HERE.parent / "support" / "lostmail_at.py"
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


@pytest.fixture(params=sorted(PROTECTIONS))
def protections(request):
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run attackers unprivileged")
    with kernel_protections(PROTECTIONS[request.param]):
        yield request.param


@pytest.fixture
def world(protections):
    w = AttackWorld()
    w.protections = protections
    w.mailbox(BOB, [note(1)])
    try:
        yield w
    finally:
        w.close()


def lines(result):
    return result.stderr.decode("utf-8", "replace").splitlines()


def assert_bob_served(world):
    """
    bob's mail went to bob, and nothing of root's went anywhere.
    """
    assert [d.split(b"\n", 1)[1] for d in world.received(BOB)][:1] == [note(1)]
    assert world.leaked() == []


def swap_while_waiting(world, kind, target=""):
    """
    mallory holds the fcntl lock of her own mailbox until the remailer,
    run as root, has it open and waits for the lock; then she puts
    C{kind} in its place and lets go.

    @return: the remailer's result.
    """
    path = world.mailbox(MALLORY, [note(1, b"mallory")])
    holder = world.popen_as(MALLORY, "hold", path)
    run = None
    try:
        assert holder.stdout.readline() == "held\n", holder.stderr.read()
        run = world.start()
        wait_for(lambda: opened_by(run.pid, path), what="the remailer to open the mailbox")
        time.sleep(0.3)  # it is in its lock wait now
        holder.stdin.write(f"swap {kind} {target}\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "done\n", holder.stderr.read()
        out, err = run.communicate(timeout=60)
        return subprocess.CompletedProcess(run.args, run.returncode, out, err)
    finally:
        stop(holder)
        if run is not None:
            stop(run)


def test_swap_to_a_symlink_to_a_root_only_file(world):
    """
    Issue 24, attack 1: the lock-held swap to a symbolic link to a file
    only root may read.  The remailer copies only through the descriptor
    it checked and proves the name is still that file before emptying it:
    the secret is never read, let alone mailed; mallory's own message is
    left (her mailbox is no longer at its name); bob's mail goes out.
    """
    result = swap_while_waiting(world, "symlink", world.secret)
    assert world.leaked() == []
    assert world.received(MALLORY) == []
    assert result.returncode == 1, result.stderr
    assert any(line.endswith("mallory: changed while it was being taken (replaced, or written "
                             "without its locks); left for the next run") for line in lines(result))
    assert_bob_served(world)
    again = world.run()
    assert world.leaked() == [] and b"mallory: symbolic link; not followed" in again.stderr


def test_swap_to_a_fifo_neither_hangs_nor_stops_others(world):
    """
    Issue 24, attack 2: the same swap to a FIFO.  Nothing blocks on it:
    the run ends, bob's mail goes out, and the next run too says what it
    found instead of "another run is in progress".
    """
    result = swap_while_waiting(world, "fifo")
    assert result.returncode == 1, result.stderr
    assert_bob_served(world)
    world.mailbox(BOB, [note(2)])
    again = world.run(timeout=60)
    assert b"in progress" not in again.stdout
    assert b"mallory: not a regular file; skipped" in again.stderr
    assert [d.split(b"\n", 1)[1] for d in world.received(BOB)] == [note(1), note(2)]


def test_swap_to_a_directory_wedges_nothing(world):
    """
    Issue 24, attack 3: the same swap to a directory.  Every later run
    still resends everyone else's mail.
    """
    result = swap_while_waiting(world, "dir")
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr
    assert_bob_served(world)
    for n in (2, 3):
        world.mailbox(BOB, [note(n)])
        again = world.run()
        assert again.returncode == 1 and b"mallory: not a regular file; skipped" in again.stderr
    assert [d.split(b"\n", 1)[1] for d in world.received(BOB)] == [note(1), note(2), note(3)]


def test_a_planted_working_directory_stops_nothing(world):
    """
    Issue 24, attack 4: a C{.lostmail} made by a user before root's first
    run.  The remailer's working files are in root's state directory; the
    planted one is not used, not read, left as it is, with one line.
    """
    planted = world.alt / ".lostmail"
    assert world.as_user(MALLORY, "lock", planted, "dir").returncode == 0
    os.chmod(planted, 0o777)
    result = world.run()
    assert_bob_served(world)
    assert result.returncode == 0, result.stderr
    assert sum(".lostmail" in line for line in lines(result)) == 1
    assert sorted(os.listdir(planted)) == ["keep"]


def test_a_forged_lock_of_another_user_is_broken_at_once(world):
    """
    Issue 24, attack 4: mallory plants bob.lock with its mtime in 2099,
    naming a live process.  A lock of bob's mailbox may belong to bob or
    root only: hers is broken at once, and bob's mail goes out.
    """
    lock = world.alt / "bob.lock"
    planted = world.as_user(MALLORY, "lock", lock, "file", Y2099, 1, socket.gethostname())
    assert planted.returncode == 0, planted.stderr
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert_bob_served(world)
    assert any("broke stale lock" in line and "owned by uid 60009" in line
               for line in lines(result))


@pytest.mark.parametrize("kind", ["dir", "fifo", "symlink"])
def test_a_planted_lock_that_is_no_file_is_broken(world, kind):
    """
    A bob.lock that is a (full) directory, a FIFO or a symbolic link,
    planted by mallory, holds bob's mail no longer than a forged file.
    """
    planted = world.as_user(MALLORY, "lock", world.alt / "bob.lock", kind)
    assert planted.returncode == 0, planted.stderr
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert_bob_served(world)


def test_a_live_holder_cannot_keep_a_lock_past_the_stale_period(world):
    """
    Issue 24, attack 4, by the lock's rightful owner: bob.lock belongs to
    bob, says 2099, names a live process, and is touched every 0.1 s, so
    nothing in it looks stale.  The remailer records when a run first
    found it held; once that is longer ago than --stale-after, it breaks
    it.
    """
    lock = world.alt / "bob.lock"
    planted = world.as_user(BOB, "lock", lock, "file", Y2099, 1, socket.gethostname())
    assert planted.returncode == 0, planted.stderr
    freshener = world.popen_as(BOB, "freshen", lock, 60)
    try:
        assert freshener.stdout.readline() == "freshening\n"
        first = world.run("--stale-after", "2", "--lock-timeout", "1")
        assert first.returncode == 1
        assert world.received(BOB) == []
        time.sleep(2.5)
        second = world.run("--stale-after", "2", "--lock-timeout", "1")
        assert second.returncode == 0, second.stderr
        assert_bob_served(world)
        assert any("broke stale lock" in line and "found held for" in line
                   for line in lines(second))
    finally:
        stop(freshener)


def test_a_hard_link_to_a_root_only_file_replaced_by_rename(world):
    """
    Issue 24, attack 5: mallory hard-links a file only root may read as
    her mailbox; root then replaces the original by rename, as passwd(1)
    does, which leaves a root-owned file with one link under her name.
    A root-owned file is never resent to anyone.
    """
    linked = world.as_user(MALLORY, "link", world.secret, world.alt / "mallory")
    if world.protections == "debian":
        assert linked.stdout == "EPERM\n"  # protected_hardlinks refuses the first step
    else:
        assert linked.stdout == "linked\n", linked.stderr
        fresh = world.base / "secret.new"
        fresh.write_bytes(b"the new version\n")
        fresh.chmod(0o600)
        os.rename(fresh, world.secret)
        assert os.stat(world.alt / "mallory").st_nlink == 1
    result = world.run()
    assert world.leaked() == [] and world.received(MALLORY) == []
    assert_bob_served(world)
    if world.protections == "off":
        assert result.returncode == 1
        assert any(line.endswith("mallory: owned by root, so never resent (it could be a hard "
                                 "link to a file of root's); left for an administrator")
                   for line in lines(result))
        assert SECRET in (world.alt / "mallory").read_bytes()


def test_a_hard_link_cannot_hold_a_mailbox_hostage(world):
    """
    Issue 24, attack 5: mallory hard-links bob's mailbox where bob cannot
    remove the link.  bob's mail still goes to bob, and only the spool's
    name for it is removed: what the other name holds is left as it was.
    """
    hostage = world.mallory_dir / "hostage"
    linked = world.as_user(MALLORY, "link", world.alt / "bob", hostage)
    if world.protections == "debian":
        assert linked.stdout == "EPERM\n"
    else:
        assert linked.stdout == "linked\n", linked.stderr
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert_bob_served(world)
    assert world.received(MALLORY) == []
    if world.protections == "off":
        assert not (world.alt / "bob").exists()
        assert hostage.read_bytes() == mboxrd(b"sender@example.org", note(1))
        assert os.stat(hostage).st_uid == BOB[1]


ESCAPES = [b"\x1b]0;owned\x07x@example.org", b"\x1b[2J\x1b[1;1Hy@example.org",
           b"\xc2\x9b31mz@example.org", b"w\rhlfs@example.org"]


@pytest.mark.parametrize("mode", ["--dry-run", "run"])
def test_escape_sequences_in_senders_never_reach_a_terminal(world, mode):
    """
    Issue 24, attack 6: envelope senders with terminal escape sequences.
    What the remailer prints, in a dry run or a real one, holds no
    control character but the line ends.
    """
    path = world.alt / "mallory"
    world.as_user(MALLORY, "write", path, b"".join(
        mboxrd(sender, note(n, b"mallory")) for n, sender in enumerate(ESCAPES)).hex())
    result = world.run(*([mode] if mode != "run" else []))
    printed = result.stdout + result.stderr
    assert CONTROL.search(printed) is None, printed
    assert printed.count(b"\\x1b") >= 2
    if mode == "run":
        assert len(world.received(MALLORY)) == len(ESCAPES)


def test_a_name_that_is_no_user_name(world):
    """
    Issue 24, attack 6: a file named C{x+y}.  It is no user name (glibc
    and nslcd refuse it, so the name service is not even asked): one line
    says so; nothing says the name service could not be asked.
    """
    world.as_user(MALLORY, "write", world.alt / "x+y", mboxrd(b"a@b", note(1, b"x")).hex())
    result = world.run()
    assert result.returncode == 1
    assert [line for line in lines(result) if "x+y" in line] == [
        "hlfs lostmail: x+y: not a user name; skipped"]
    assert b"could not be asked" not in result.stderr
    assert_bob_served(world)


def test_names_with_line_breaks_forge_no_log_line(world):
    """
    A file whose name holds a line break and a forged log line costs one
    escaped line.
    """
    name = "bob\nhlfs lostmail: bob: resent 1 bytes from <a@b> to bob"
    world.as_user(MALLORY, "write", world.alt / name, b"x\n".hex())
    result = world.run()
    about = [line for line in lines(result) if "resent" in line]
    assert len(about) == 1 and about[0].endswith("not a user name; skipped")
    assert not any(line.startswith("hlfs lostmail: bob: resent") for line in lines(result))
    assert_bob_served(world)


def test_many_files_cost_bounded_log_lines(world):
    """
    Thousands of planted files (no user names, other users' names,
    names of no user) end in a run of bounded length with at most a
    hundred lines about them and one that sums up the rest.
    """
    made = world.as_user(MALLORY, "junk", world.alt, 3000, "x+", "alice", "ghost", timeout=120)
    assert made.returncode == 0, made.stderr
    world.as_user(MALLORY, "write", world.alt / "alice", b"x\n".hex())
    start = time.monotonic()
    result = world.run()
    assert time.monotonic() - start < 60
    assert result.returncode == 1
    assert len(lines(result)) <= 102, lines(result)[:5]
    assert lines(result)[-1].endswith("more lines about single mailboxes not logged (at most "
                                      "100 a run)")
    assert_bob_served(world)


def test_a_sparse_file_over_the_limit_is_skipped_quickly(world):
    """
    A 3 GiB sparse file as mallory's mailbox: skipped on its size, with
    one line, before anything is read.
    """
    path = world.alt / "mallory"
    world.as_user(MALLORY, "write", path, b"From a@b Mon Nov 23 01:00:00 2026\n".hex())
    with open(path, "r+b") as f:
        f.truncate(3 << 30)
    start = time.monotonic()
    result = world.run()
    assert time.monotonic() - start < 20
    assert b"mallory: 3221225472 bytes, over the 1073741824-byte limit" in result.stderr
    assert_bob_served(world)
    assert world.work_files() == []


def at_step(world, step, *command):
    """
    Run the remailer (the real command, in a process of its own) and at
    its checkpoint C{step} (bob's mailbox is the first taken, mallory's
    the second), run C{command} as mallory and wait for it.
    """
    argv = [sys.executable, str(AT_STEP), "--run", step, *world.user_command(MALLORY, *command),
            "--", *world.argv()[2:]]
    return subprocess.run(argv, capture_output=True, timeout=90,
                          cwd=str(HERE.parent.parent))


def test_a_file_that_grows_while_copied_is_left_whole(world):
    """
    mallory appends to her own mailbox, ignoring its locks, right after
    the remailer copied it: the remailer sees the size change, keeps
    nothing of its copy and empties nothing; the next run resends both
    messages.
    """
    path = world.alt / "mallory"
    world.as_user(MALLORY, "write", path, mboxrd(b"a@b", note(1, b"mallory")).hex())
    result = at_step(world, "copied:2", "write", path, mboxrd(b"a@b", note(2, b"mallory")).hex())
    assert result.returncode == 1, result.stderr
    assert b"mallory: changed while it was being taken" in result.stderr
    assert world.received(MALLORY) == []
    assert path.read_bytes().count(b"BODY-MALLORY-") == 2
    world.run()
    assert [d.split(b"\n", 1)[1] for d in world.received(MALLORY)] == [
        note(1, b"mallory"), note(2, b"mallory")]


def test_a_file_replaced_between_copy_and_emptying(world):
    """
    mallory renames another file of hers over her mailbox right after the
    remailer copied it: the name is no longer the file copied, so the
    copy is dropped and nothing is emptied; her new file goes out at the
    next run.
    """
    path = world.alt / "mallory"
    world.as_user(MALLORY, "write", path, mboxrd(b"a@b", note(1, b"mallory")).hex())
    result = at_step(world, "copied:2", "replace", path, mboxrd(b"a@b", note(3, b"mallory")).hex())
    assert result.returncode == 1, result.stderr
    assert world.received(MALLORY) == []
    world.run()
    assert [d.split(b"\n", 1)[1] for d in world.received(MALLORY)] == [note(3, b"mallory")]


def test_a_state_directory_others_may_change_is_refused(world):
    """
    A state directory that is a link to mallory's directory, or lies in a
    directory mallory may write, or is hers: each run refuses it with one
    line, exit status 78, and reads or writes nothing there.
    """
    mine = world.mallory_dir / "state"
    mine.mkdir()
    os.chown(mine, MALLORY[1], MALLORY[1])
    os.chmod(world.mallory_dir, 0o777)
    link = world.base / "linked-state"
    link.symlink_to(mine)
    for state, why in [(link, "is a symbolic link"),
                       (mine, "may be changed by others"),
                       (world.mallory_dir / "new", "may be changed by others")]:
        result = world.run("--state-dir", state)
        assert result.returncode == 78, result.stderr
        assert len(lines(result)) == 1 and why in result.stderr.decode()
        assert os.listdir(mine) == [] and not (world.mallory_dir / "new").exists()
        assert world.sent() == []
    shared = world.base / "shared-state"
    shared.mkdir(mode=0o755)
    result = world.run("--state-dir", shared)
    assert result.returncode == 78 and b"is not private" in result.stderr
    assert os.listdir(shared) == []


def test_a_swap_after_a_crash_between_copy_and_emptying(world):
    """
    The remailer dies right after copying mallory's mailbox; she then
    puts a link to a file only root may read in its place.  The next run
    settles the interrupted take without following the link: her copied
    message goes to her, the file of root's to nobody.
    """
    path = world.alt / "mallory"
    world.as_user(MALLORY, "write", path, mboxrd(b"a@b", note(1, b"mallory")).hex())
    killed = subprocess.run([sys.executable, str(AT_STEP), "--kill", "copied:2", "--",
                             *world.argv()[2:]], capture_output=True, timeout=90)
    assert killed.returncode == -9, killed.stderr
    swapped = world.as_user(MALLORY, "swap", path, "symlink", world.secret)
    assert swapped.stdout == "swapped\n", swapped.stderr
    result = world.run()
    assert world.leaked() == []
    assert [d.split(b"\n", 1)[1] for d in world.received(MALLORY)] == [note(1, b"mallory")]
    assert b"mallory: symbolic link; not followed, skipped" in result.stderr
    assert_bob_served(world)
