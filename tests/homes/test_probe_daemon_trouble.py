"""
Home checks that fail for the daemon's own want of resources (EMFILE,
ENFILE, ENOMEM, EAGAIN, EINTR) say nothing about the home: the caller
gets the alternate spool, which is safe, and the home is checked again
after the retry interval instead of the whole cache interval.

The failing probe here is a stand-in that answers as the real probe does
when its open(2) meets the errno, then hands over to the real probe: the
daemon's descriptor limit cannot be lowered inside the test process
without breaking its reactor.  tests/daemon/test_attacks.py forces a real
EMFILE in a real daemon with prlimit.
"""

import errno
import os

import pytest
from twisted.internet import task

from hlfs.core.resolver import SpoolRules
from hlfs.homes.cache import DAEMON_ERRNOS, ProbingResolver
from hlfs.homes.pool import ProbePool
from hlfs.homes.probe import HomeProbe, ProbeResult
from tests.support.probes import LogCapture, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="probes take other users' identities"),
    pytest.mark.timeout(60),
]

CACHE_INTERVAL = 300
RETRY = 5


class FailingFirst:
    """
    The real probe, except that the first C{failures} checks fail with
    C{errno} as the real one reports an OSError.
    """

    def __init__(self, code, failures=1):
        self.code = code
        self.failures = failures
        self.real = HomeProbe()
        self.calls = 0

    def __call__(self, user, spool):
        self.calls += 1
        if self.calls <= self.failures:
            return ProbeResult(False, self.code, spool, os.strerror(self.code))
        return self.real(user, spool)


@pytest.fixture
def make(rt, homes):
    pools = []

    def make(probe):
        clock = task.Clock()
        pool = ProbePool(threads=2, reactor=rt.reactor, clock=clock)
        resolver = ProbingResolver(
            homes.table(), SpoolRules(b".mailspool", os.fsencode(homes.alt)), clock, pool,
            cache_interval=CACHE_INTERVAL, deadline=5.0, probe=probe, retry_interval=RETRY,
        )
        pool.start()
        pools.append(pool)
        return resolver, clock

    yield make
    for pool in pools:
        rt.call(pool.stop)


@pytest.mark.parametrize("code", sorted(DAEMON_ERRNOS), ids=errno.errorcode.get)
def test_the_daemons_trouble_is_retried_soon(rt, homes, make, code):
    """
    If a check fails with one of the daemon's own errnos, then the caller
    gets the alternate spool, the log says it is hlfs's trouble, and a
    check made after the retry interval (not the cache interval) gives
    the home.
    """
    uid = homes.add("alice")
    probe = FailingFirst(code)
    resolver, clock = make(probe)
    with LogCapture() as logs:
        first = rt.call(resolver.resolve, uid)
    assert first.target == os.fsencode(homes.alt)
    assert logs.matching("alice", "hlfs itself is short of resources", errno.errorcode[code])
    assert not logs.matching("unusable")
    assert resolver.stats.daemon_errors == 1 and resolver.stats.failures == 0
    # Within the retry interval the failure is kept: no new check.
    rt.call(clock.advance, RETRY - 1)
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    assert probe.calls == 1
    rt.call(clock.advance, 1.5)
    assert rt.call(resolver.resolve, uid).target == homes.spool("alice")
    assert probe.calls == 2


def test_a_homes_own_failure_is_kept_for_the_cache_interval(rt, homes, make):
    """
    If a check fails for the home's own sake (EACCES here), then it is
    kept for the whole cache interval, as before.
    """
    uid = homes.add("alice")
    probe = FailingFirst(errno.EACCES)
    resolver, clock = make(probe)
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    rt.call(clock.advance, RETRY * 2)
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    assert probe.calls == 1
    assert resolver.stats.failures == 1 and resolver.stats.daemon_errors == 0


def test_the_daemons_trouble_is_logged_once_per_interval(rt, homes, make):
    """
    If many checks meet EMFILE at once, then one line is logged at once and
    one more with their count at the end of the interval, not one each.
    """
    uids = [homes.add(f"user{n}") for n in range(20)]
    resolver, clock = make(FailingFirst(errno.EMFILE, failures=len(uids)))
    with LogCapture() as logs:
        for uid in uids:
            rt.call(resolver.resolve, uid)
        assert len(logs.matching("short of resources")) == 1
        rt.call(clock.advance, 61)
        wait_for(lambda: len(logs.matching("short of resources")) == 2)
    assert logs.matching("19 more in the last 60 s")
    assert resolver.stats.daemon_errors == len(uids)
