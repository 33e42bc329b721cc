"""
MOUNT as a hostile client drives it, over real sockets against a real
C{twistd hlfs}: the paths MNT accepts, what the mount list keeps, and a
DUMP reply that every client can take, over UDP as over TCP.
"""

import socket
import struct
import time

import pytest

from hlfs.rpc.message import AUTH_SYS, Credential, decode_reply, encode_call
from hlfs.xdr import pack_opaque
from tests.support.rpcsock import MOUNT, call, recv_record, status_pairs, udp_exchange

MNT, DUMP, UMNT, UMNTALL = 1, 2, 3, 4
OK, NOENT = 0, 2
#: UDPMSGSIZE: what glibc's and libtirpc's UDP clients (showmount) receive.
UDPMSGSIZE = 8800


def machine(name):
    return Credential(AUTH_SYS, 0, 0, (), name)


def mnt(port, path, credential, vers=3):
    return call(port, MOUNT, vers, MNT, pack_opaque(path), credential).body.uint()


def dump_entries(body):
    entries = []
    while body.bool():
        entries.append((body.opaque(), body.opaque()))
    assert body.remaining() == 0
    return entries


def dump(port, transport="udp"):
    return dump_entries(call(port, MOUNT, 3, DUMP, b"", machine(b"asker"), transport).body)


@pytest.mark.verify_optional
def test_mnt_accepts_the_export_however_written(make_server):
    """
    If a client mounts the export with repeated or trailing slashes or
    C{.} components (as knfsd's mountd, which resolves the path with
    realpath(3), accepts), then MNT succeeds and the mount list holds one
    entry for it, with the export's own path; C{..}, relative paths and
    other paths are refused with NOENT and listed nowhere.
    """
    server = make_server("--insecure")
    client = machine(b"forms")
    for path in (b"/mail", b"/mail/", b"/mail" + b"/" * 1000, b"//mail", b"/./mail/.", b"///mail//.//"):
        assert mnt(server.port, path, client) == OK, path
        assert mnt(server.port, path, client, vers=1) == OK, path
    for path in (b"/mail/..", b"/mail/../mail", b"/x/../mail", b"mail", b"./mail", b"/mailx",
                 b"/mail/home", b"", b"/", b"/mail\0"):
        assert mnt(server.port, path, machine(b"refused")) == NOENT, path
    assert dump(server.port) == [(b"forms", b"/mail")]
    # UMNT of the export, however written, takes the machine off the list.
    call(server.port, MOUNT, 3, UMNT, pack_opaque(b"//mail///"), client)
    assert dump(server.port) == []


@pytest.mark.verify_optional
def test_mount_list_bounded_and_dump_fits_a_datagram(make_server):
    """
    If root on a client mounts from two thousand machine names, each
    path 1,000 slashes long, then the list keeps a bounded number of
    machines, and DUMP answers over UDP in one datagram a UDP client can
    take (the most recent mounts first, the export's path each time), and
    over TCP the same list.
    """
    server = make_server("--insecure")
    names = [b"%04d-" % i + b"m" * 250 for i in range(2000)]
    path = b"/mail" + b"/" * 1000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i, name in enumerate(names):
            s.sendto(encode_call(i, MOUNT, 3, MNT, machine(name), pack_opaque(path)), ("127.0.0.1", server.port))
            reply = decode_reply(s.recv(65536))
            assert reply.xid == i and reply.body.uint() == OK
    raw = udp_exchange(server.port, encode_call(77, MOUNT, 3, DUMP, machine(b"asker"), b""), timeout=5)
    assert raw is not None, "no DUMP reply over UDP"
    assert len(raw) <= UDPMSGSIZE
    reply = decode_reply(raw)
    entries = dump_entries(reply.body)
    assert len(entries) >= 20
    assert [host for host, _ in entries] == names[::-1][: len(entries)]
    assert {p for _, p in entries} == {b"/mail"}
    assert dump(server.port, "tcp") == entries
    assert "Traceback" not in server.logtext()


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


@pytest.mark.verify_optional
def test_unread_dump_calls_hold_little(make_server):
    """
    If the mount list is full of long entries and a TCP client sends
    hundreds of DUMP calls and never reads a reply, then the connection
    stops being read within a turn: the daemon answers a few dozen of
    them, holds a few hundred kilobytes for it, not tens of megabytes,
    and closes the connection at the stall timeout.
    """
    server = make_server("--insecure", "--stall-timeout", "3")
    path = b"/mail" + b"/" * 1000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i in range(1100):
            name = b"%04d-" % i + b"m" * 250
            s.sendto(encode_call(i, MOUNT, 3, MNT, machine(name), pack_opaque(path)), ("127.0.0.1", server.port))
            assert decode_reply(s.recv(65536)).xid == i
    time.sleep(0.5)
    before = rss(server.proc.pid)
    calls = b"".join(
        struct.pack(">I", 0x80000000 | len(c)) + c
        for c in (encode_call(1000 + i, MOUNT, 3, DUMP, machine(b"reader"), b"") for i in range(640))
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    with sock:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(calls)
        time.sleep(1.0)
        grown = rss(server.proc.pid) - before
        answered = int(status_pairs(server.port).get("requests.mount3.DUMP", 0))
        print(f"answered {answered} of 640 unread DUMP calls, RSS grew {grown} bytes")
        assert grown < 8 * 2**20, (grown, answered)
        assert answered <= 48, answered
        time.sleep(3.5)
        # Closed (reset) for its unread replies.
        replies = 0
        with pytest.raises(ConnectionResetError):
            while recv_record(sock) is not None:
                replies += 1
        assert replies <= answered
    assert status_pairs(server.port)["refused.stall_timeout"] == "1"
