"""
A real hlfs server (twistd, as an administrator would run it) on loopback,
with a throwaway password file and homes.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.processes import stop_process

BIN = Path(sys.executable).parent


HLFS_GID = 4242

# Why a non-root run skips a test whose server would check homes.
VERIFY_NEEDS_ROOT = (
    "needs root: the server checks each home as its user (setfsuid), and this test's "
    "claims rest on those checks; without root it could only run with --no-verify"
)


USERS = [
    ("root", 0, "/root"),
    ("toor", 0, "/"),
    ("alice", 1001, "{base}/home/alice"),
    ("bob", 1002, "{base}/home/bob"),
    ("carol", 1003, "{base}/home/carol"),
    ("alias", 1001, "{base}/home/elsewhere"),
    ("slash", 1004, "/"),
    ("relative", 1005, "home/relative"),
]


def write_passwd(path, base, users=USERS):
    lines = [f"{n}:x:{u}:{u}::{h.format(base=base)}:/bin/sh" for n, u, h in users]
    path.write_text("\n".join(lines) + "\n")


class RunningServer:
    def __init__(self, base, args, env=None, bin=BIN, prefix=(), verify_optional=False):
        """
        @param prefix: a command twistd runs under (C{prlimit ... --}).
        @param verify_optional: whether the test proves its claims with or
            without home checks.  Not root, a server that would check homes
            (no C{--no-verify} in C{args}) then runs with C{--no-verify},
            and otherwise the test is skipped (L{VERIFY_NEEDS_ROOT}): never
            silently proving less.
        """
        self.bin = bin
        self.base = base
        self.prefix = list(prefix)
        self.passwd = base / "passwd"
        self.alt = base / "alt_mail"
        self.log = base / "hlfs.log"
        self.portfile = base / "port"
        self.env = env
        self.proc = None
        self.port = None
        self.portmap = [] if "--portmap" in args else ["--no-portmap"]
        self.args = [a for a in args if a != "--portmap"]
        if os.geteuid() != 0 and "--no-verify" not in self.args:
            # Checking a home as its user needs root.
            if not verify_optional:
                pytest.skip(VERIFY_NEEDS_ROOT)
            self.args.append("--no-verify")
        self.verify = "--no-verify" not in self.args

    def start(self, timeout=20):
        if self.portfile.exists():
            self.portfile.unlink()
        cmd = [
            *self.prefix, str(self.bin / "twistd"), "-n", "--pidfile=", f"--logfile={self.log}",
            "hlfs", "--no-mount", *self.portmap, "--password-file", str(self.passwd),
            "--alt-dir", str(self.alt), "--group", str(HLFS_GID),
            "--port-file", str(self.portfile), *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=self.base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self.env, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.portfile.exists() or not self.portfile.read_text().strip():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise AssertionError(f"twistd exited {self.proc.returncode}: {out}\n{self.logtext()}")
            if time.monotonic() > deadline:
                raise AssertionError("server did not start:\n" + self.logtext())
            time.sleep(0.05)
        self.port = int(self.portfile.read_text())
        return self

    def logtext(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        """
        SIGTERM, as an administrator stops the daemon; return its exit
        status (L{None} if it was never started).
        """
        status = stop_process(self.proc)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        return status


_BASES = []


def make_base(tmp_path_factory=None, name="hlfs"):
    """
    A directory with homes owned by their users (when root), reachable by
    them: the server checks each home as its user, so pytest's private
    temporary directory will not do.
    """
    base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    base.chmod(0o755)
    _BASES.append(base)
    for user, uid in (("alice", 1001), ("bob", 1002), ("carol", 1003)):
        home = base / "home" / user
        home.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(home, uid, uid)
    (base / "alt_mail").mkdir()
    (base / "alt_mail").chmod(0o1777)
    write_passwd(base / "passwd", base)
    return base
