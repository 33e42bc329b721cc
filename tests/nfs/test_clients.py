"""
Real clients nobody here wrote (libnfs's nfs-ls, rpcbind's rpcinfo) and
the project's own `hlfs resolve`, against a real `twistd hlfs`.
"""

import re
import shutil
import os
import subprocess

import pytest

from tests.support.server import BIN, HLFS_GID


def resolve(server, uid, gid=None, *extra):
    args = [str(BIN / "hlfs"), "resolve", "--uid", str(uid), "--server", f"127.0.0.1:{server.port}"]
    if gid is not None:
        args += ["--gid", str(gid)]
    out = subprocess.run(args + list(extra), capture_output=True, timeout=30)
    return out.returncode, out.stdout.decode().strip(), out.stderr.decode().strip()


@pytest.mark.parametrize("transport", [[], ["--tcp"]])
def test_table1_home_spool(server, transport):
    """
    If an ordinary user reads the link, then it points at that user's
    home spool directory (Table 1), over UDP and TCP alike.
    """
    for uid, user in [(1001, "alice"), (1002, "bob"), (1003, "carol")]:
        assert resolve(server, uid, None, *transport) == (0, f"{server.base}/home/{user}/.mailspool", "")


def test_table2_hlfs_gid(server):
    """
    If the caller's gid is HLFS_GID, then home is "." and a user's name
    resolves to that user's mailbox (Table 2), whatever the caller's uid.
    """
    assert resolve(server, 1002, HLFS_GID) == (0, ".", "")
    assert resolve(server, 1002, HLFS_GID, "--name", "alice") == (
        0, f"{server.base}/home/alice/.mailspool/alice", ""
    )
    assert resolve(server, 0, HLFS_GID, "--name", "bob")[1] == f"{server.base}/home/bob/.mailspool/bob"


@pytest.mark.verify_optional
def test_table2_unknown_name(server):
    """
    If a name is not a user, or the caller is not HLFS_GID, then the
    lookup fails with NOENT (status 2) and the command says so.
    """
    code, out, err = resolve(server, 1002, HLFS_GID, "--name", "nosuchuser")
    assert code == 1 and "status 2" in err and out == ""
    code, out, err = resolve(server, 1002, 1002, "--name", "alice")
    assert code == 1 and "status 2" in err


@pytest.mark.verify_optional
def test_table3_alternate_spool(server):
    """
    If the uid is unknown, or its home is / or relative, then the link
    points at the alternate spool (Table 3).
    """
    for uid in (4000, 1004, 1005):
        assert resolve(server, uid) == (0, str(server.alt), "")


def test_uid0_sees_every_mailbox(server):
    """
    If uid 0 reads the link, then it gets Table 2 (C{home -> .}), as an
    HLFS_GID caller does, whatever its gid; from a privileged port with
    another gid, a user's name is that user's real mailbox, a regular
    file, not a link (C{hlfs resolve} says so); and for a duplicated uid
    the first entry wins.
    """
    assert resolve(server, 0)[1] == "."
    assert "status 2" in resolve(server, 0, 0, "--name", "alice")[2]  # no mailbox yet
    mailbox = server.base / "home" / "alice" / ".mailspool" / "alice"
    mailbox.touch()
    os.chown(mailbox, 1001, 1001)
    status, out, err = resolve(server, 0, 0, "--name", "alice")
    assert (status, out) == (1, "") and "regular file" in err and err.count("\n") == 0
    assert resolve(server, 0, HLFS_GID, "--name", "root")[1] == "/root/.mailspool/root"
    assert resolve(server, 1001)[1] == f"{server.base}/home/alice/.mailspool"


def test_resolve_unreachable(tmp_path):
    """
    If nothing answers, then `hlfs resolve` says so in one line, exit 1.
    """
    out = subprocess.run(
        [str(BIN / "hlfs"), "resolve", "--uid", "1", "--server", "127.0.0.1:9", "--timeout", "0.5"],
        capture_output=True, timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.decode().count("\n") == 1 and "no reply" in out.stderr.decode()


needs_nfs_ls = pytest.mark.skipif(shutil.which("nfs-ls") is None, reason="libnfs-utils not installed")


def nfs_ls(server, uid, gid):
    url = (
        f"nfs://127.0.0.1/mail?version=3&nfsport={server.port}&mountport={server.port}"
        f"&uid={uid}&gid={gid}"
    )
    out = subprocess.run(["nfs-ls", url], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


@needs_nfs_ls
def test_nfs_ls_per_uid(server):
    """
    If libnfs mounts the export over NFSv3/TCP as two uids, then each sees
    the link owned by itself with the length of its own target.
    """
    for uid, user in [(1001, "alice"), (1002, "bob")]:
        listing = nfs_ls(server, uid, uid)
        target = f"{server.base}/home/{user}/.mailspool"
        (line,) = [l for l in listing.splitlines() if l.endswith(" home")]
        fields = line.split()
        assert fields[0] == "lrwxrwxrwx"
        assert int(fields[2]) == uid
        assert int(fields[4]) == len(target)
    hlfs_listing = nfs_ls(server, 1001, HLFS_GID)
    assert re.search(r"\s1 home$", hlfs_listing, re.M)


def rpcinfo(server, transport, prog, vers):
    address = f"127.0.0.1.{server.port >> 8}.{server.port & 255}"
    out = subprocess.run(
        ["rpcinfo", "-a", address, "-T", transport, str(prog), str(vers)],
        capture_output=True, timeout=30,
    )
    return out.returncode, (out.stdout + out.stderr).decode()


@pytest.mark.verify_optional
@pytest.mark.skipif(shutil.which("rpcinfo") is None, reason="rpcbind not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rpcinfo(server, transport):
    """
    If rpcinfo calls NULL of every program and version, then each answers;
    an unsupported version reports the supported range 2..3, and an
    unknown program is unavailable.
    """
    for prog, vers in [(100003, 2), (100003, 3), (100005, 1), (100005, 3)]:
        code, text = rpcinfo(server, transport, prog, vers)
        assert code == 0 and "ready and waiting" in text, text
    code, text = rpcinfo(server, transport, 100003, 4)
    assert code != 0 and "low version = 2, high version = 3" in text
    code, text = rpcinfo(server, transport, 100005, 2)
    assert code != 0 and "low version = 1, high version = 3" in text
    code, text = rpcinfo(server, transport, 100099, 1)
    assert code != 0 and "Program unavailable" in text
