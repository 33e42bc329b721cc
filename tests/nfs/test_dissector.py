"""
The wire format as a real dissector (Wireshark's tshark) reads it: a
capture of NFSv2, NFSv3 and MOUNT calls and replies over UDP and TCP must
decode with no malformed or unknown packets.
"""

import os
import shutil
import struct
import subprocess
import time

import pytest

from hlfs.xdr import pack_opaque
from tests.support.rpcsock import MOUNT, NFS, call, cred, lookup3, mount_root

pytestmark = [
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
    pytest.mark.root(reason="tshark captures on the loopback interface"),
]


def exercise(port, transport):
    alice = cred(1001)
    root = mount_root(port, alice, transport=transport)
    status, link, _ = lookup3(port, root, b"home", alice, transport)
    o = pack_opaque
    sattr3 = bytes(24)
    v3_calls = [
        (0, b""), (1, o(root)), (1, o(link)), (2, o(link) + sattr3 + bytes(4)),
        (3, o(root) + o(b"home")), (3, o(root) + o(b"nosuch")), (4, o(root) + struct.pack(">I", 63)),
        (5, o(link)), (5, o(root)), (6, o(link) + struct.pack(">QI", 0, 10)),
        (7, o(link) + struct.pack(">QII", 0, 1, 0) + o(b"x")),
        (8, o(root) + o(b"f") + bytes(4) + sattr3), (9, o(root) + o(b"d") + sattr3),
        (10, o(root) + o(b"s") + sattr3 + o(b"/t")), (11, o(root) + o(b"n") + struct.pack(">I", 7) + sattr3),
        (12, o(root) + o(b"home")), (13, o(root) + o(b"home")),
        (14, o(root) + o(b"a") + o(root) + o(b"b")), (15, o(link) + o(root) + o(b"l")),
        (16, o(root) + bytes(16) + struct.pack(">I", 4096)),
        (17, o(root) + bytes(16) + struct.pack(">II", 4096, 8192)),
        (18, o(root)), (19, o(root)), (20, o(root)), (21, o(link) + bytes(12)),
    ]
    for proc, args in v3_calls:
        assert call(port, NFS, 3, proc, args, alice, transport).stat == 0, proc
    root2 = mount_root(port, alice, vers=1, transport=transport)
    body = call(port, NFS, 2, 4, root2 + o(b"home"), alice, transport).body
    body.uint()
    link2 = body.fixed(32)
    sattr = bytes(32)
    v2_calls = [
        (0, b""), (1, root2), (2, link2 + sattr), (4, root2 + o(b"home")), (5, link2),
        (6, link2 + bytes(12)), (8, link2 + bytes(12) + o(b"x")), (9, root2 + o(b"f") + sattr),
        (10, root2 + o(b"x")), (11, root2 + o(b"a") + root2 + o(b"b")),
        (12, link2 + root2 + o(b"c")), (13, root2 + o(b"s") + o(b"/t") + sattr),
        (14, root2 + o(b"d") + sattr), (15, root2 + o(b"d")),
        (16, root2 + bytes(4) + struct.pack(">I", 4096)), (17, root2),
    ]
    for proc, args in v2_calls:
        assert call(port, NFS, 2, proc, args, alice, transport).stat == 0, proc
    for vers in (1, 3):
        for proc, args in [(0, b""), (2, b""), (3, o(b"/mail")), (4, b""), (5, b"")]:
            assert call(port, MOUNT, vers, proc, args, alice, transport).stat == 0
    return len(v3_calls) + len(v2_calls) + 12


def tshark_fields(pcap, port, display_filter, fields):
    out = subprocess.run(
        [
            "tshark", "-r", str(pcap), "-n",
            "-d", f"udp.port=={port},rpc", "-d", f"tcp.port=={port},rpc",
            "-Y", display_filter, "-T", "fields", "-E", "occurrence=f", *sum((["-e", f] for f in fields), []),
        ],
        capture_output=True, timeout=60, env={**os.environ, "HOME": str(pcap.parent)},
    )
    assert out.returncode == 0, out.stderr.decode()
    return [line.split("\t") for line in out.stdout.decode().splitlines()]


def test_capture_decodes_cleanly(server, tmp_path):
    pcap = tmp_path / "hlfs.pcap"
    os.chmod(tmp_path, 0o777)
    capture = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", f"port {server.port}", "-w", str(pcap), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 30
        while not pcap.exists() or pcap.stat().st_size == 0:
            assert capture.poll() is None, capture.stderr.read().decode()
            assert time.monotonic() < deadline, "tshark did not start capturing"
            time.sleep(0.1)
        time.sleep(0.5)
        calls = exercise(server.port, "udp") + exercise(server.port, "tcp")
        time.sleep(1)
    finally:
        capture.terminate()
        capture.wait(30)
    malformed = tshark_fields(pcap, server.port, "_ws.malformed || _ws.expert.severity >= error", ["frame.number", "_ws.col.Info"])
    assert malformed == []
    unknown = tshark_fields(pcap, server.port, "rpc && !nfs && !mount", ["frame.number", "_ws.col.Info"])
    assert unknown == []
    nfs = tshark_fields(pcap, server.port, "nfs", ["rpc.programversion", "rpc.msgtyp"])
    versions = {(v, t) for v, t in nfs}
    assert versions >= {("2", "0"), ("2", "1"), ("3", "0"), ("3", "1")}
    mount = tshark_fields(pcap, server.port, "mount", ["rpc.programversion"])
    assert {v for (v,) in mount} == {"1", "3"}
    rpc = tshark_fields(pcap, server.port, "rpc", ["rpc.msgtyp"])
    assert len(rpc) >= 2 * calls
