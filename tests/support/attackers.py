"""
Hostile clients of an hlfs daemon, run by the attack tests as an
unprivileged user (setpriv), standard library only:

    python3 attackers.py KIND PORT SECONDS [COUNT]

Each attack is bounded in count and time, talks to 127.0.0.1 only, stops by
itself and prints one JSON line of what it did.
"""

import errno
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import time

HOST = "127.0.0.1"
LAST = 0x80000000
STATUS_PROGRAM = 0x20004846


def call(xid, prog, vers, proc, cred=b"\0\0\0\0\0\0\0\0", args=b""):
    return struct.pack(">6I", xid, 0, 2, prog, vers, proc) + cred + b"\0\0\0\0\0\0\0\0" + args


def auth_sys(uid, gids=(0,), machine=b"attacker"):
    pad = b"\0" * (-len(machine) % 4)
    body = (
        struct.pack(">II", 0, len(machine)) + machine + pad
        + struct.pack(">III", uid, uid, len(gids)) + b"".join(struct.pack(">I", g) for g in gids)
    )
    return struct.pack(">II", 1, len(body)) + body


def connect(timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((HOST, PORT))
    except OSError:
        s.close()
        raise
    return s


def closed_by_server(s):
    """
    Whether the server has closed C{s} (EOF or reset), without blocking.
    """
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def idle(seconds, count):
    """
    Open C{count} connections, a hundred at a time, and hold them, sending
    nothing.
    """
    sockets, failed = [], 0
    deadline = time.monotonic() + seconds
    while len(sockets) + failed < count and time.monotonic() < deadline - 1:
        batch = []
        for _ in range(min(100, count - len(sockets) - failed)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((HOST, PORT))
            batch.append(s)
        poller = select.poll()
        for s in batch:
            poller.register(s, select.POLLOUT)
        poller.poll(1000)
        for s in batch:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _connected(s):
                sockets.append(s)
            else:
                failed += 1
                s.close()
    time.sleep(max(0.0, deadline - time.monotonic()))
    closed = sum(closed_by_server(s) for s in sockets)
    for s in sockets:
        s.close()
    return {"opened": len(sockets), "failed": failed, "closed_by_server": closed}


def _connected(s):
    try:
        s.getpeername()
        return True
    except OSError:
        return False


def slowloris(seconds, count):
    """
    Announce a 60,000-byte fragment on C{count} connections, then send one
    byte every 3 seconds on each still open.
    """
    sockets = []
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline - 3:
            break
        try:
            s = connect()
            s.sendall(struct.pack(">I", LAST | 60000))
            sockets.append(s)
        except OSError:
            pass
    opened = len(sockets)
    while time.monotonic() < deadline:
        time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
        alive = []
        for s in sockets:
            if closed_by_server(s):
                s.close()
                continue
            try:
                s.send(b"x", socket.MSG_DONTWAIT)
                alive.append(s)
            except OSError:
                s.close()
        sockets = alive
    still_open = sum(not closed_by_server(s) for s in sockets)
    for s in sockets:
        s.close()
    return {"opened": opened, "still_open": still_open}


def _flood(seconds, chunk):
    """
    Send C{chunk} over and over on one connection, a new one each time the
    server closes it, for C{seconds}.
    """
    sent = connections = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            s = connect()
        except OSError:
            time.sleep(0.01)
            continue
        connections += 1
        s.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    sent += s.send(chunk)
                except socket.timeout:
                    pass
        except OSError:
            pass
        finally:
            s.close()
    return sent, connections


def fragments(seconds, count):
    """
    Zero-length non-last fragments for half the time, then zero-length
    last fragments (empty records).
    """
    nonlast, nonlast_connections = _flood(seconds / 2, b"\0\0\0\0" * 16384)
    last, last_connections = _flood(seconds / 2, struct.pack(">I", LAST) * 16384)
    return {
        "nonlast_bytes": nonlast, "nonlast_connections": nonlast_connections,
        "last_bytes": last, "last_connections": last_connections,
    }


def pipeline(seconds, count):
    """
    On C{count} connections, pipeline STATUS calls (a small call, a large
    reply) and never read a reply.
    """
    record = b"".join(
        struct.pack(">I", LAST | 40) + call(xid, STATUS_PROGRAM, 1, 1) for xid in range(1000)
    )
    sockets = []
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline - 1:
            break
        try:
            s = connect()
            s.setblocking(False)
            sockets.append(s)
        except OSError:
            pass
    sent = 0
    while sockets and time.monotonic() < deadline:
        _, writable, _ = select.select([], sockets, [], 0.2)
        for s in writable:
            try:
                sent += s.send(record)
            except BlockingIOError:
                pass
            except OSError:
                sockets.remove(s)
                s.close()
    still_open = sum(not closed_by_server(s) for s in sockets)
    for s in sockets:
        s.close()
    return {"connections": count, "sent_bytes": sent, "still_open": still_open}


def _mutations(rng):
    """
    Datagrams: random bytes, and valid calls truncated, with huge lengths,
    17+ gids, 255+ byte machine names, every auth flavour, unknown
    programs, versions and procedures.
    """
    fh = bytes(rng.getrandbits(8) for _ in range(32))
    lookup_args = struct.pack(">I", 32) + fh + struct.pack(">I", 4) + b"home"
    templates = [
        call(1, 100003, 3, 3, auth_sys(1001), lookup_args),
        call(1, 100003, 3, 5, auth_sys(1001), lookup_args[:36]),
        call(1, 100005, 3, 1, auth_sys(0), struct.pack(">I", 5) + b"/mail\0\0\0"),
        call(1, STATUS_PROGRAM, 1, 1),
        call(1, 100003, 2, 4, auth_sys(1002), bytes(32) + struct.pack(">I", 4) + b"home"),
    ]
    while True:
        kind = rng.randrange(9)
        base = bytearray(rng.choice(templates))
        base[0:4] = struct.pack(">I", rng.getrandbits(32))
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        elif kind == 1:
            yield bytes(base[: rng.randrange(0, len(base))])
        elif kind == 2:
            at = rng.randrange(0, len(base) - 3) & ~3
            base[at : at + 4] = struct.pack(">I", rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 401)))
            yield bytes(base)
        elif kind == 3:
            gids = tuple(range(rng.randrange(17, 300)))
            yield call(1, 100003, 3, 3, auth_sys(1001, gids), lookup_args)
        elif kind == 4:
            machine = b"m" * rng.randrange(255, 1000)
            yield call(1, 100003, 3, 3, auth_sys(1001, machine=machine), lookup_args)
        elif kind == 5:
            flavor = rng.choice((0, 1, 2, 3, 4, 5, 6, 390003, 0xFFFFFFFF, rng.getrandbits(32)))
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 500)))
            cred = struct.pack(">II", flavor, len(body)) + body + b"\0" * (-len(body) % 4)
            yield call(1, 100003, 3, 3, cred, lookup_args)
        elif kind == 6:
            yield call(1, rng.getrandbits(32), rng.randrange(0, 10), rng.randrange(0, 30))
        elif kind == 7:
            yield call(1, rng.choice((100003, 100005, STATUS_PROGRAM)), rng.getrandbits(32),
                       rng.getrandbits(32), auth_sys(1001), lookup_args)
        else:
            for _ in range(rng.randrange(1, 8)):
                at = rng.randrange(0, len(base))
                base[at] = rng.getrandbits(8)
            yield bytes(base)


def fuzz(seconds, count):
    """
    C{count} random and mutated datagrams, paced over C{seconds}.
    """
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent = dropped = 0
    started = time.monotonic()
    for i, datagram in enumerate(_mutations(rng)):
        if i >= count:
            break
        if i % 500 == 0:
            ahead = started + seconds * i / count - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
        try:
            s.sendto(datagram, (HOST, PORT))
            sent += 1
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENOBUFS):
                raise
            dropped += 1
    return {"sent": sent, "not_sent": dropped}


ATTACKS = {f.__name__: f for f in (idle, slowloris, fragments, pipeline, fuzz)}

if __name__ == "__main__":
    kind, PORT, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert os.getuid() != 0 and os.geteuid() != 0, "attackers run unprivileged"
    print(json.dumps(dict(ATTACKS[kind](seconds, count), kind=kind, uid=os.getuid())), flush=True)
