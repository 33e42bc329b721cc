"""
Blocking RPC calls over real sockets, for tests: no reactor in the test
process, so what is tested is the server's bytes on the wire.
"""

import errno
import itertools
import os
import random
import socket
import struct

from hlfs.nfs import status as status_program
from hlfs.rpc.message import AUTH_SYS, NO_CREDENTIAL, Credential, decode_reply, encode_call
from hlfs.xdr import pack_opaque

_xids = itertools.count(int.from_bytes(os.urandom(3), "big"))

NFS = 100003
MOUNT = 100005


def cred(uid, gid=None, machine=b"testhost"):
    gid = uid if gid is None else gid
    return Credential(AUTH_SYS, uid, gid, (gid,), machine)


def udp_exchange(port, data, timeout=5.0, source_port=0, host="127.0.0.1"):
    """
    Send one datagram and return the reply datagram, or L{None} on timeout.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", source_port))
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(65536)
        except socket.timeout:
            return None


def recv_record(s):
    """
    Read one record-marked record from a stream socket; L{None} at EOF.
    """
    chunks = []
    while True:
        header = _recv_exact(s, 4)
        if header is None:
            return None
        (mark,) = struct.unpack(">I", header)
        body = _recv_exact(s, mark & 0x7FFFFFFF)
        if body is None:
            return None
        chunks.append(body)
        if mark & 0x80000000:
            return b"".join(chunks)


def _recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def privileged_socket(kind):
    """
    A socket bound to a free privileged port of loopback (the tests run
    as root), as the Linux client's are.
    """
    for _ in range(200):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", random.randint(600, 1023)))
            return s
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free privileged port")


class Connection:
    """
    One TCP connection from a privileged port of loopback, as the Linux
    client holds one per server, for many calls with any credential.
    """

    def __init__(self, port, timeout=10.0):
        self.socket = privileged_socket(socket.SOCK_STREAM)
        self.socket.settimeout(timeout)
        self.socket.connect(("127.0.0.1", port))

    def call(self, prog, vers, proc, args, credential):
        """
        @return: the decoded L{hlfs.rpc.message.Reply}.
        """
        xid = next(_xids) & 0xFFFFFFFF
        data = encode_call(xid, prog, vers, proc, credential, args)
        self.socket.sendall(struct.pack(">I", 0x80000000 | len(data)) + data)
        raw = recv_record(self.socket)
        assert raw is not None, f"connection closed before the reply to {prog}/{vers}/{proc}"
        reply = decode_reply(raw)
        assert reply.xid == xid
        return reply

    def close(self):
        self.socket.close()


def tcp_connect(port, timeout=5.0, source_port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", source_port))
    s.connect(("127.0.0.1", port))
    return s


def tcp_exchange(port, data, timeout=5.0):
    with tcp_connect(port, timeout) as s:
        s.sendall(struct.pack(">I", 0x80000000 | len(data)) + data)
        return recv_record(s)


def call(port, prog, vers, proc, args=b"", credential=None, transport="udp", **kw):
    """
    Make one call and return the decoded L{hlfs.rpc.message.Reply}.
    """
    xid = next(_xids) & 0xFFFFFFFF
    data = encode_call(xid, prog, vers, proc, credential or NO_CREDENTIAL, args)
    exchange = udp_exchange if transport == "udp" else tcp_exchange
    raw = exchange(port, data, **kw)
    assert raw is not None, f"no reply to {prog}/{vers}/{proc}"
    reply = decode_reply(raw)
    assert reply.xid == xid
    return reply


def mount_root(port, credential, export=b"/mail", vers=3, transport="udp"):
    reply = call(port, MOUNT, vers, 1, pack_opaque(export), credential, transport)
    assert reply.stat == 0
    status = reply.body.uint()
    assert status == 0, f"MNT status {status}"
    return reply.body.opaque(64) if vers == 3 else reply.body.fixed(32)


def lookup3(port, dirfh, name, credential, transport="udp"):
    """
    Return (status, fh or None, body) for an NFSv3 LOOKUP.
    """
    reply = call(port, NFS, 3, 3, pack_opaque(dirfh) + pack_opaque(name), credential, transport)
    assert reply.stat == 0
    status = reply.body.uint()
    fh = reply.body.opaque(64) if status == 0 else None
    return status, fh, reply.body


def readlink3(port, fh, credential, transport="udp"):
    """
    Return (status, target or None).
    """
    reply = call(port, NFS, 3, 5, pack_opaque(fh), credential, transport)
    assert reply.stat == 0
    status = reply.body.uint()
    if reply.body.bool():
        reply.body.skip(84)
    return status, (reply.body.opaque() if status == 0 else None)


def status_pairs(port):
    """
    The daemon's status program's name/value pairs (what C{hlfs status}
    prints), as strings.
    """
    reply = call(port, status_program.PROGRAM, status_program.VERSION, 1)
    return dict(status_program.decode_pairs(reply.body))
