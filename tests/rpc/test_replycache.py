"""
The reply cache: a repeated call is answered from memory only while its
answer is right.
"""

import time

import pytest
from twisted.internet.task import Clock

from hlfs.rpc.message import AUTH_SYS, Credential, decode_call, encode_call
from hlfs.rpc.replycache import ReplyCache
from tests.support.rpcsock import cred, lookup3, mount_root, readlink3


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
    assert len(cache.entries) <= 3


@pytest.mark.root
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
    for _ in range(20):  # answered from the cache meanwhile
        assert readlink3(srv.port, fh, alice) == (0, str(srv.alt).encode())
    spool.chmod(0o700)
    time.sleep(1.1)
    assert readlink3(srv.port, fh, alice) == (0, home)
    assert "EACCES" in srv.logtext()

