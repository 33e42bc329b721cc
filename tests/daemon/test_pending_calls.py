"""
Calls waiting for their answers, over a real socket against a real
C{twistd hlfs}: a TCP client pipelining thousands of LOOKUPs of a user
whose home hangs (a frozen FUSE mount) makes the daemon hold at most
C{--max-pending} of them, each with its record, however many it sends;
every one is answered once the deadline passes.
"""

import os
import shutil
import socket
import struct
import threading
import time

import pytest

from hlfs.rpc.message import decode_reply, encode_call
from hlfs.xdr import pack_opaque
from tests.support.filesystems import frozen_mount
from tests.support.rpcsock import NFS, cred, mount_root, recv_record, status_pairs

pytestmark = [
    pytest.mark.root(reason="the hung home is a FUSE mount, checked as its user"),
    pytest.mark.skipif(shutil.which("bindfs") is None, reason="bindfs (Debian package bindfs) is missing"),
]

HUNG = 3100
CALLS = 3000
PADDING = 16 * 1024  # bytes after the arguments, as a hostile client may send


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


def read_replies(s, answered):
    while len(answered) < CALLS:
        reply = decode_reply(recv_record(s))
        assert reply.body.uint() == 0
        answered.add(reply.xid)


def test_pipelined_calls_on_a_hung_home_are_bounded(make_server, tmp_path):
    """
    If a client pipelines 3,000 LOOKUPs (16 kB each) of a user whose home
    hangs, then while the home check waits for its deadline the daemon
    dispatches at most C{--max-pending} (256) plus a turn of them and its
    memory grows by a few megabytes, not the 48 MB sent; at the deadline
    every call is answered, with the alternate spool.
    """
    src = tmp_path / "src"
    mnt = tmp_path / "mnt"
    (src / "hung").mkdir(parents=True)
    os.chown(src / "hung", HUNG, HUNG)
    tmp_path.chmod(0o755)
    users = [("hung", HUNG, str(mnt / "hung"))]
    with frozen_mount(str(src), str(mnt)) as mount:
        server = make_server("--insecure", "--probe-deadline", "4", users=users)
        root = mount_root(server.port, cred(0))
        mount.freeze()
        args = pack_opaque(root) + pack_opaque(b"home") + bytes(PADDING)
        data = b"".join(
            struct.pack(">I", 0x80000000 | len(c)) + c
            for c in (encode_call(i, NFS, 3, 3, cred(HUNG), args) for i in range(CALLS))
        )
        time.sleep(0.3)
        before = rss(server.proc.pid)
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
            # As much as the daemon reads, without reading any reply.
            sent = 0
            s.settimeout(0.5)
            try:
                while sent < len(data):
                    sent += s.send(data[sent : sent + 2**20])
            except socket.timeout:
                pass
            time.sleep(1.0)
            grown = rss(server.proc.pid) - before
            dispatched = int(status_pairs(server.port).get("requests.nfs3.LOOKUP", 0))
            assert dispatched <= 256, (dispatched, grown)
            assert grown < 16 * 2**20, (grown, dispatched)
            # Then read the replies while sending the rest, as a client
            # does: every call is answered, with the alternate spool.
            s.settimeout(30)
            answered = set()
            reader = threading.Thread(target=read_replies, args=(s, answered), daemon=True)
            reader.start()
            s.sendall(data[sent:])
            reader.join(60)
        assert answered == set(range(CALLS))
        mount.thaw()
    assert "Traceback" not in server.logtext()
