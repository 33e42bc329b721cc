"""
A world for attacking C{hlfs lostmail} as local users do: an alternate
spool (mode 1777), a state directory, users in a test password file, a
file only root may read, the attacker's script, and the installed
C{hlfs} command run as root as its timer runs it, resending through a
recording C{sendmail} stand-in (L{tests.support.mail.SENDMAIL}).

Attackers are real unprivileged processes: the system's C{python3} (the
test's virtual environment may not be readable by them) running
L{tests.support.lostmail_attacker} under C{setpriv}.

L{kernel_protections} sets the four C{fs.protected_*} sysctls, which are
global, and restores them whatever happens.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.mail import SENDMAIL, write_passwd

HLFS = str(Path(sys.executable).parent / "hlfs")
ATTACKER = Path(__file__).with_name("lostmail_attacker.py")

ALICE = (b"alice", 60001)
BOB = (b"bob", 60002)
CAROL = (b"carol", 60003)
MALLORY = (b"mallory", 60009)
USERS = (ALICE, BOB, CAROL, MALLORY)

#: A modification time an attacker gives a lock (the year 2099).
Y2099 = 4_070_908_800

#: What the file only root may read holds; no resent message may.
SECRET = b"ROOT-ONLY-SECRET 7f3a9c"

#: Debian's defaults, and every protection off.
PROTECTIONS = {
    "debian": {"protected_symlinks": 1, "protected_hardlinks": 1, "protected_regular": 2,
               "protected_fifos": 1},
    "off": {"protected_symlinks": 0, "protected_hardlinks": 0, "protected_regular": 0,
            "protected_fifos": 0},
}


def _sysctl(name):
    return Path("/proc/sys/fs") / name


@contextlib.contextmanager
def kernel_protections(values):
    """
    Set the C{fs.protected_*} sysctls to C{values} for the block, then put
    back what they were.
    """
    saved = {name: _sysctl(name).read_text() for name in values}
    try:
        for name, value in values.items():
            _sysctl(name).write_text(f"{value}\n")
        yield
    finally:
        for name, value in saved.items():
            _sysctl(name).write_text(value)


def mboxrd(sender, content):
    """
    One message as a delivery agent stores it.
    """
    return b"From " + sender + b" Wed Nov 18 11:06:40 2026\n" + content + b"\n"


def note(n, who=b"bob"):
    return b"Subject: note %d for %s\n\nBODY-%s-%d\n" % (n, who, who.upper(), n)


def python_for_users():
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


class AttackWorld:
    """
    Everything one attack needs, under a scratch directory every user may
    search.
    """

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="hlfs-lostmail-attack-", dir="/tmp"))
        self.base.chmod(0o755)
        self.alt = self.base / "alt_mail"
        self.alt.mkdir()
        self.alt.chmod(0o1777)
        self.state = self.base / "state"
        self.passwd = write_passwd(str(self.base), users=USERS)
        self.sm_dir = self.base / "sendmail"
        (self.sm_dir / "out").mkdir(parents=True)
        self.sendmail = self.sm_dir / "sendmail"
        self.sendmail.write_text(SENDMAIL.format(python=sys.executable, here=str(self.sm_dir)))
        self.sendmail.chmod(0o755)
        self.secret = self.base / "secret"
        self.secret.write_bytes(mboxrd(b"root@example.org", b"Subject: x\n\n" + SECRET + b"\n"))
        self.secret.chmod(0o600)
        self.script = self.base / "attacker.py"
        shutil.copy(ATTACKER, self.script)
        self.script.chmod(0o644)
        # A directory of the attacker's own on the spool's file system.
        self.mallory_dir = self.base / "mallory"
        self.mallory_dir.mkdir()
        os.chown(self.mallory_dir, MALLORY[1], MALLORY[1])

    def close(self):
        shutil.rmtree(self.base, ignore_errors=True)

    # -- the attacker

    def as_user(self, user, *args, timeout=60):
        return subprocess.run(self.user_command(user, *args), capture_output=True, text=True,
                              timeout=timeout)

    def popen_as(self, user, *args):
        return subprocess.Popen(self.user_command(user, *args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def user_command(self, user, *args):
        uid = user[1]
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                python_for_users(), str(self.script), *map(str, args)]

    # -- the spool

    def mailbox(self, user, messages, owner=None):
        """
        Write C{user}'s mailbox in the spool, owned by C{owner} (default:
        the user), as a delivery agent leaves it.
        """
        path = self.alt / os.fsdecode(user[0])
        # Without O_CREAT for a mailbox that exists: protected_regular=2
        # refuses even root that on another's file in a sticky directory.
        flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | (0 if path.exists() else os.O_CREAT)
        fd = os.open(path, flags, 0o600)
        with open(fd, "wb") as f:
            f.write(b"".join(mboxrd(b"sender@example.org", m) for m in messages))
        uid = user[1] if owner is None else owner
        os.chown(path, uid, uid)
        path.chmod(0o600)
        return path

    # -- the remailer

    def argv(self, *extra):
        return [HLFS, "lostmail", "--alt-dir", str(self.alt), "--state-dir", str(self.state),
                "--sendmail", str(self.sendmail), "--password-file", self.passwd,
                "--lock-timeout", "5", "--syslog-socket", "", *map(str, extra)]

    def run(self, *extra, timeout=90):
        return subprocess.run(self.argv(*extra), capture_output=True, timeout=timeout)

    def start(self, *extra):
        return subprocess.Popen(self.argv(*extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    # -- what went out

    def sent(self):
        """
        C{[(recipient, data)]} in the order sendmail was called.
        """
        out = self.sm_dir / "out"
        calls = []
        for name in sorted(os.listdir(out)):
            if name.endswith(".json"):
                record = json.loads((out / name).read_text())
                calls.append((record["argv"][-1], record["data"].encode("latin-1")))
        return calls

    def work_files(self):
        """
        The working copies in the state directory, of any spool.
        """
        if not self.state.exists():
            return []
        return [name for sub in os.listdir(self.state) for name in os.listdir(self.state / sub)
                if name.startswith(("W.", "P.", "C."))]

    def leaked(self):
        return [(to, data) for to, data in self.sent() if SECRET in data]

    def received(self, user):
        return [data for to, data in self.sent() if to == os.fsdecode(user[0])]


def opened_by(pid, path):
    """
    Whether process C{pid} has the file now named C{path} open.
    """
    want = os.stat(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False


def wait_for(predicate, timeout=30, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
