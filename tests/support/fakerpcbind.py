"""
A stand-in rpcbind on a unix socket, for an NFS server started by the
tests in a mount namespace of its own.

nfs-ganesha refuses to start unless it can register its programs with
rpcbind, which it reaches through C{/run/rpcbind.sock}.  The machine's
rpcbind is shared with everything else on it (and need not run), so the
server gets this one instead: every SET and UNSET succeeds, every lookup
finds nothing, and nothing is kept.  The guest never asks a portmapper:
it mounts with explicit C{port=} and C{mountport=}.

    python fakerpcbind.py SOCKET_PATH
"""

import os
import socket
import struct
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from hlfs.rpc.message import Drop, Rejected, decode_call, success_header  # noqa: E402
from tests.support.rpcsock import recv_record  # noqa: E402

RPCBIND = 100000
#: Procedures answering a boolean (SET, UNSET); the rest answer "none".
BOOLEAN_PROCS = (1, 2)


def answer(record):
    """
    @return: the reply record to one call, or L{None} to drop it.
    """
    try:
        call = decode_call(record)
    except Drop:
        return None
    except Rejected as e:
        return e.reply
    if call.prog != RPCBIND or call.proc == 0:
        return success_header(call.xid)
    # What the server asked, for its test's log.
    print(f"rpcbind v{call.vers} procedure {call.proc}", flush=True)
    # SET/UNSET: TRUE.  GETPORT (v2): port 0; GETADDR (v3, v4): the empty
    # string; DUMP: an empty list; GETTIME: 0.  Each is one zero word.
    return success_header(call.xid) + struct.pack(">I", 1 if call.proc in BOOLEAN_PROCS else 0)


def serve_connection(conn):
    with conn:
        while True:
            record = recv_record(conn)
            if record is None:
                return
            reply = answer(record)
            if reply is not None:
                conn.sendall(struct.pack(">I", 0x80000000 | len(reply)) + reply)


def main(path):
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1])
