"""
C{hlfs demo}: run the main job on embedded defaults, unprivileged.

Makes a throwaway password file and homes under a temporary directory,
starts C{twistd hlfs} on an ephemeral loopback port without mounting, and
shows through NFS calls on the wire (C{hlfs resolve}, and libnfs's
C{nfs-ls} where installed) that each caller sees its own C{home}.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HLFS_GID = 4242
USERS = [("alice", 2001), ("bob", 2002), ("carol", 2003)]
SYSTEM_UID = 120


def _hlfs(*args):
    # This Python's hlfs, whatever its commands are called and wherever
    # they are (Debian's twistd is twistd3): twistd runs in process.
    return [sys.executable, "-m", "hlfs.cli", *args]


def main(argv, prog="hlfs demo"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="hlfs-demo-"))
    server = None
    try:
        server = _start(base)
        return _show(prog, args, base, server)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def _start(base):
    """
    Make the demonstration's users and homes under C{base} and start its
    server; return the server process.
    """
    root = os.geteuid() == 0
    lines = []
    for name, uid in USERS:
        (base / "home" / name).mkdir(parents=True)
        if root:
            os.chown(base / "home" / name, uid, uid)
        lines.append(f"{name}:x:{uid}:{uid}::{base}/home/{name}:/bin/sh")
    # Homes are checked as their users: they must be able to reach them.
    base.chmod(0o755)
    # Checking a home as its user takes root; without it, do as hlfsd -n.
    verify = [] if root else ["--no-verify"]
    lines.append("nohome:x:2004:2004::/:/bin/sh")
    # A home whose spool is unusable: a plain file stands where the spool
    # directory should be.
    (base / "home" / "dave").mkdir()
    (base / "home" / "dave" / ".mailspool").write_text("not a directory\n")
    if root:
        os.chown(base / "home" / "dave", 2005, 2005)
    lines.append(f"dave:x:2005:2005::{base}/home/dave:/bin/sh")
    # A system account (uid under UID_MIN), as an MTA's mail owner is.
    (base / "home" / "mailer").mkdir()
    if root:
        os.chown(base / "home" / "mailer", SYSTEM_UID, SYSTEM_UID)
    lines.append(f"mailer:x:{SYSTEM_UID}:{SYSTEM_UID}::{base}/home/mailer:/usr/sbin/nologin")
    (base / "passwd").write_text("\n".join(lines) + "\n")
    (base / "alt_mail").mkdir()
    portfile = base / "port"
    return subprocess.Popen(
        _hlfs(
            "twistd", "-n", "--pidfile=", f"--logfile={base}/hlfs.log",
            "hlfs", "--no-mount", "--no-portmap", "--insecure", "--port", "0", "--port-file", str(portfile),
            "--password-file", str(base / "passwd"), "--alt-dir", str(base / "alt_mail"),
            "--group", str(HLFS_GID), "--uid-min", "1000", *verify,
        ),
        cwd=base, stdin=subprocess.DEVNULL,
    )


def _show(prog, args, base, server):
    """
    Wait for the server, then ask it over NFS what each caller's link is.
    """
    portfile = base / "port"
    deadline = time.monotonic() + 30
    while not (portfile.exists() and portfile.read_text().strip()):
        if server.poll() is not None or time.monotonic() > deadline:
            print(f"{prog}: the server did not start; see {base}/hlfs.log", file=sys.stderr)
            return 1
        time.sleep(0.05)
    port = int(portfile.read_text())
    root = os.geteuid() == 0
    print(f"hlfs is serving on 127.0.0.1 port {port} (UDP and TCP); homes under {base}/home")
    if root:
        print("Each home is checked as its user (a test file written to ~/.mailspool).\n")
    else:
        print("Not root: homes are not checked as their users (as with hlfsd -n).\n")
    print("What `home` resolves to, asked over NFSv3 (MOUNT, LOOKUP, READLINK) by `hlfs resolve`:\n")
    cases = [(f"uid {uid} ({name})", "home", ["--uid", str(uid)]) for name, uid in USERS]
    cases += [
        ("uid 2004 (home is /)", "home", ["--uid", "2004"]),
        ("uid 2005 (spool is a file)", "home", ["--uid", "2005"]),
        ("uid 9999 (no such user)", "home", ["--uid", "9999"]),
        (f"uid {SYSTEM_UID} (system account)", "home", ["--uid", str(SYSTEM_UID)]),
        ("uid 0 (root)", "home", ["--uid", "0"]),
        ("uid 0 (root), gid HLFS_GID", "alice", ["--uid", "0", "--gid", str(HLFS_GID), "--name", "alice"]),
        ("uid 2001, gid HLFS_GID", "home", ["--uid", "2001", "--gid", str(HLFS_GID)]),
        ("uid 2001, gid HLFS_GID", "bob", ["--uid", "2001", "--gid", str(HLFS_GID), "--name", "bob"]),
    ]
    for label, link, extra in cases:
        out = subprocess.run(
            _hlfs("resolve", "--server", f"127.0.0.1:{port}", *extra),
            capture_output=True, text=True, timeout=30,
        )
        value = out.stdout.strip() or out.stderr.strip()
        print(f"  {label:<28} {link} -> {value}")
    print("\n  (root with another gid, from a privileged port as the Linux client calls, finds in\n"
          "  NAME not a link but NAME's real mailbox, a regular file hlfs reads and writes as NAME)")
    if shutil.which("nfs-ls"):
        print("\nThe same export listed by libnfs's nfs-ls as two uids (owner and length differ):\n")
        for name, uid in USERS[:2]:
            url = f"nfs://127.0.0.1/mail?version=3&nfsport={port}&mountport={port}&uid={uid}&gid={uid}"
            out = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=30)
            for line in (out.stdout or out.stderr).splitlines():
                print(f"  as {name}: {line}")
    else:
        print("\n(install libnfs-utils to see the listing through nfs-ls as well)")
    if args.keep:
        print(f"\nThe server's log: {base}/hlfs.log")
    else:
        print("\n(`hlfs demo --keep` keeps the temporary directory and the server's log)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
