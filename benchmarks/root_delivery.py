"""
The cost of a delivery through root's view of real mailboxes against one
made as the recipient, on the wire, homes on a tmpfs:

  - root: the calls the Linux client makes for an agent running as root
    that appends one message to an existing mailbox (LOOKUP of NAME,
    GETATTR at open, WRITE of the message, GETATTR at close), each one a
    job of hlfs's home-check processes, the write made as the recipient
    and on disk (fdatasync) before it is answered;
  - recipient: the calls for the same delivery made as the recipient
    (LOOKUP and READLINK of C{home}, answered from hlfs's caches), then
    the append on the home's own filesystem (open, write, fdatasync,
    close), which hlfs never sees.

Both over one privileged TCP connection, as the Linux client holds one,
interleaved message by message; medians and 99th percentiles of the
wall time per delivery.

    .venv/bin/python benchmarks/root_delivery.py [--messages 500] [--size 4096]

Needs root (hlfs checks and writes homes as their users).
"""

import argparse
import os
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from hlfs.xdr import pack_opaque  # noqa: E402
from tests.support.filesystems import tmpfs  # noqa: E402
from tests.support.rpcsock import NFS, Connection, cred, mount_root  # noqa: E402
from tests.support.server import RunningServer, make_base  # noqa: E402

LOOKUP, GETATTR, READLINK, WRITE = 3, 1, 5, 7
ALICE = 1001


def call(conn, proc, args, credential):
    reply = conn.call(NFS, 3, proc, args, credential)
    body = reply.body
    status = body.uint()
    if status != 0:
        raise RuntimeError(f"procedure {proc}: status {status}")
    return body


def root_delivery(conn, root, message, offset):
    who = cred(0)
    body = call(conn, LOOKUP, pack_opaque(root) + pack_opaque(b"alice"), who)
    fh = body.opaque(64)
    call(conn, GETATTR, pack_opaque(fh), who)
    call(conn, WRITE, pack_opaque(fh) + struct.pack(">QII", offset, len(message), 0) + pack_opaque(message), who)
    call(conn, GETATTR, pack_opaque(fh), who)


def recipient_delivery(conn, root, message, path):
    who = cred(ALICE)
    body = call(conn, LOOKUP, pack_opaque(root) + pack_opaque(b"home"), who)
    call(conn, READLINK, pack_opaque(body.opaque(64)), who)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, message)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    base = make_base(name="root-delivery")
    home = base / "home" / "alice"
    with tmpfs(str(home), "256m"):
        os.chown(home, ALICE, ALICE)
        server = RunningServer(base, ["--insecure"]).start()
        try:
            conn = Connection(server.port)
            root = mount_root(server.port, cred(ALICE))
            # alice's home check makes her spool; her mailbox is there.
            call(conn, LOOKUP, pack_opaque(root) + pack_opaque(b"home"), cred(ALICE))
            spool = home / ".mailspool"
            box = spool / "alice"
            box.write_bytes(b"")
            os.chown(box, ALICE, ALICE)
            message = (b"From sender@example.org Sun Dec  6 12:00:00 2026\nSubject: x\n\n"
                       + b"x" * max(0, args.size - 62) + b"\n")
            as_root, as_recipient = [], []
            offset = 0
            for _ in range(args.messages):
                started = time.perf_counter()
                root_delivery(conn, root, message, offset)
                as_root.append(time.perf_counter() - started)
                offset += len(message)
                started = time.perf_counter()
                recipient_delivery(conn, root, message, box)
                as_recipient.append(time.perf_counter() - started)
                offset += len(message)
            assert box.stat().st_size == offset and box.stat().st_uid == ALICE
            conn.close()
        finally:
            server.stop()
    for label, values in (("through root's view", as_root), ("as the recipient", as_recipient)):
        print(f"{label:<22} p50 {statistics.median(values) * 1e3:.2f} ms  "
              f"p99 {percentile(values, 0.99) * 1e3:.2f} ms  ({args.messages} messages of "
              f"{len(message)} bytes)")
    print(f"ratio of medians: {statistics.median(as_root) / statistics.median(as_recipient):.1f}x")


if __name__ == "__main__":
    main()
