"""
Shared pieces of the mail tool tests: throwaway users in a private
password file, world-searchable scratch directories (the delivery child
runs as those users, so pytest's private tmp_path will not do), tmpfs
mounts, and running the real C{hlfs} command.
"""

import contextlib
import email
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

# Numeric ids no real account uses; they exist only in our password file.
ALICE = (b"alice", 60001)
BOB = (b"bob", 60002)
CAROL = (b"carol", 60003)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switches to throwaway users and mounts tmpfs: needs root"
)

#: The locking reader script of the concurrent-delivery tests.
LOCKING_READER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locking_reader.py")


def hlfs_command(*args):
    return [sys.executable, "-m", "hlfs.cli", *args]


def run_hlfs(*args, input=b"", env=None, timeout=60):
    """
    Run C{hlfs ARGS} as a real process.
    """
    return subprocess.run(
        hlfs_command(*args),
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        timeout=timeout,
    )


@contextlib.contextmanager
def scratch_dir():
    """
    A scratch directory every user can search (mode 0755).
    """
    path = tempfile.mkdtemp(prefix="hlfs-mail-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_passwd(directory, users=(ALICE, BOB, CAROL), homes=None):
    """
    Write a password file for C{users}; each gets gid = uid.
    """
    homes = homes or {}
    path = os.path.join(directory, "passwd")
    with open(path, "wb") as f:
        for name, uid in users:
            home = homes.get(name, os.fsencode(os.path.join(directory, "home", os.fsdecode(name))))
            f.write(b"%s:x:%d:%d::%s:/bin/sh\n" % (name, uid, uid, home))
    return path


def make_dir(path, mode, uid=0):
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def message(n, body=b""):
    """
    A small distinct test message.
    """
    return (
        b"From: sender%d@example.org\n"
        b"To: alice@example.org\n"
        b"Subject: test message %d\n"
        b"Message-Id: <msg-%d@example.org>\n"
        b"\n"
        b"%sEND-OF-MESSAGE-%d\n" % (n, n, n, body, n)
    )


@contextlib.contextmanager
def syslog_listener(path):
    """
    Listen on a Unix datagram socket as syslogd does; yield a function
    returning the records received so far.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    records = []

    def received():
        while True:
            try:
                records.append(sock.recv(65536))
            except BlockingIOError:
                return list(records)

    try:
        yield received
    finally:
        sock.close()
        os.unlink(path)


# A recording sendmail(8) for the remailer tests: format with python=
# and here= (its directory, holding out/ for the records).
SENDMAIL = """\
#!{python}
# A sendmail(8) stand-in: records argv and stdin, one JSON file per call.
# It refuses (exit 75) a message containing the bytes in the file
# "refuse" of its directory, if that file exists.
import json, os, sys, time
here = {here!r}
data = sys.stdin.buffer.read()
refuse = os.path.join(here, "refuse")
if os.path.exists(refuse):
    marker = open(refuse, "rb").read()
    if marker and marker in data:
        sys.stderr.write("450 mailbox busy, try later\\n")
        sys.exit(75)
name = "%020d.%d.json" % (time.time_ns(), os.getpid())
with open(os.path.join(here, "out", name + ".tmp"), "w") as f:
    json.dump({{"argv": sys.argv[1:], "data": data.decode("latin-1")}}, f)
os.rename(os.path.join(here, "out", name + ".tmp"), os.path.join(here, "out", name))
"""


def parse_mbox(data):
    """
    Split a mailbox as its readers do: at C{From } lines, except that a
    message with a C{Content-Length} header (Dovecot writes them, and
    leaves C{From } lines in bodies unquoted) takes exactly that many
    bytes of body.

    @return: the messages, as L{email.message.Message}s.
    @raise ValueError: for a mailbox that does not parse.
    """
    messages = []
    rest = data
    while rest:
        if not rest.startswith(b"From "):
            raise ValueError(f"no From_ line at {len(data) - len(rest)}: {rest[:60]!r}")
        end = rest.find(b"\n\n")
        head = rest[: end + 1] if end >= 0 else rest
        body_start = end + 2 if end >= 0 else len(rest)
        headers = email.message_from_bytes(head.split(b"\n", 1)[1])
        length = headers["Content-Length"]
        if length is not None:
            body_end = body_start + int(length)
            if rest[body_end:body_end + 1] not in (b"\n", b""):
                raise ValueError(f"Content-Length {length} does not end at a line")
            next_start = body_end + 1
        else:
            found = re.search(rb"\n\nFrom ", rest[body_start - 1:])
            body_end = next_start = body_start - 1 + found.start() + 2 if found else len(rest)
        messages.append(email.message_from_bytes(rest[:body_end].split(b"\n", 1)[1]))
        rest = rest[next_start:].lstrip(b"\n")
    return messages
