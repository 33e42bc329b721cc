"""
The reply cache: a repeated call is answered from memory only while its
answer is right.
"""

import socket
import time

import pytest
from twisted.internet.task import Clock

from hlfs.rpc.message import AUTH_ERROR, AUTH_SYS, AUTH_TOOWEAK, Credential, decode_call, encode_call
from hlfs.rpc.replycache import ReplyCache
from hlfs.xdr import pack_opaque
from tests.support.rpcsock import (
    MOUNT, NFS, call as rpc_call, cred, lookup3, mount_root, readlink3, status_pairs,
)


class Validity:
    generation = 0


def call(xid, uid=1001, args=b"\0\0\0\0"):
    return encode_call(xid, 100003, 3, 5, Credential(AUTH_SYS, uid, uid, (), b"h"), args)


def test_hit_miss_expiry_generation():
    clock, validity = Clock(), Validity()
    cache = ReplyCache(validity, clock, size=3)
    first = call(1)
    assert cache.lookup(first) is None
    cache.store(decode_call(first), b"BODY", until=10)
    # Another xid, same call: a hit, keyed by everything after the xid.
    key, reply = cache.lookup(call(2))
    assert key == (100003, 3, 5) and reply.endswith(b"BODY")
    # Another caller: a miss.
    assert cache.lookup(call(3, uid=1002)) is None
    clock.advance(10)
    assert cache.lookup(call(4)) is None
    cache.store(decode_call(call(5)), b"BODY", until=20)
    validity.generation += 1
    assert cache.lookup(call(6)) is None
    # Nothing already expired is stored, and the size is bounded.
    cache.store(decode_call(call(7)), b"X", until=clock.seconds())
    assert cache.lookup(call(7)) is None
    for uid in range(10):
        cache.store(decode_call(call(8, uid=uid)), b"X", until=100)
    # Full at the fourth, seventh and tenth: only the last one is left.
    assert len(cache.entries) == 1 and cache.lookup(call(9, uid=9)) is not None


@pytest.mark.root(reason="the home is checked as its user, so its mode matters")
def test_cached_replies_follow_the_home(make_server):
    """
    Through the real server with a 1-second cache interval: while alice's
    spool is unusable she gets the alternate spool; once it is usable
    again, the answer changes within the interval, never before the
    probe's result expires and never later.
    """
    srv = make_server("--insecure", "--cache-interval", "1")
    spool = srv.base / "home" / "alice" / ".mailspool"
    alice = cred(1001)
    root = mount_root(srv.port, alice)
    status, fh, _ = lookup3(srv.port, root, b"home", alice)
    home = f"{srv.base}/home/alice/.mailspool".encode()
    assert readlink3(srv.port, fh, alice) == (0, home)
    spool.chmod(0o500)  # alice cannot write there any more
    time.sleep(1.1)
    assert readlink3(srv.port, fh, alice) == (0, str(srv.alt).encode())
    before = reply_cache_hits(srv.port)
    for _ in range(20):  # answered from the cache meanwhile
        assert readlink3(srv.port, fh, alice) == (0, str(srv.alt).encode())
    assert reply_cache_hits(srv.port) == before + 20
    spool.chmod(0o700)
    time.sleep(1.1)
    assert readlink3(srv.port, fh, alice) == (0, home)
    assert "EACCES" in srv.logtext()



def reply_cache_hits(port):
    return int(status_pairs(port)["reply_cache_hits"])


def privileged_port():
    """
    A loopback UDP port below 1024 that is free now (binding it needs root).
    """
    for port in range(600, 1024):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free privileged UDP port on 127.0.0.1")


@pytest.mark.root(reason="the filling caller binds a privileged source port")
def test_a_cached_reply_is_refused_to_an_unprivileged_port(make_server):
    """
    Without --insecure, a privileged caller fills the reply cache for
    alice's READLINK and is answered from it; the very same call from an
    unprivileged port is refused with AUTH_TOOWEAK, not answered from the
    cache, over a real socket.
    """
    srv = make_server()
    source = privileged_port()
    alice = cred(1001)
    reply = rpc_call(srv.port, MOUNT, 3, 1, pack_opaque(b"/mail"), alice, source_port=source)
    assert reply.stat == 0 and reply.body.uint() == 0
    root = reply.body.opaque(64)
    reply = rpc_call(srv.port, NFS, 3, 3, pack_opaque(root) + pack_opaque(b"home"), alice, source_port=source)
    assert reply.stat == 0 and reply.body.uint() == 0
    fh = reply.body.opaque(64)
    home = f"{srv.base}/home/alice/.mailspool".encode()

    def readlink(**kw):
        reply = rpc_call(srv.port, NFS, 3, 5, pack_opaque(fh), alice, **kw)
        if reply.stat is None:
            return reply.reject
        assert reply.stat == 0 and reply.body.uint() == 0
        if reply.body.bool():
            reply.body.skip(84)
        return reply.body.opaque()

    assert readlink(source_port=source) == home
    before = reply_cache_hits(srv.port)
    assert readlink(source_port=source) == home
    assert reply_cache_hits(srv.port) == before + 1, "the privileged caller was not answered from the cache"
    assert readlink() == (AUTH_ERROR, AUTH_TOOWEAK)
    assert reply_cache_hits(srv.port) == before + 1
