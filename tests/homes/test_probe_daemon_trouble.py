"""
Home checks that fail for the daemon's own want of resources (EMFILE,
ENFILE, ENOMEM, EAGAIN, EINTR) say nothing about the home: the caller
gets the alternate spool, which is safe, and the home is checked again
after the retry interval instead of the whole cache interval.

The failing check is a stand-in check process (L{STANDIN}, mode
C{marker}): a home holding a marker file fails its next check with the
marker's errno, as the real check reports the OSError it meets, and the
next check is the real one.  Such errnos cannot be made to happen to one
check on demand; tests/daemon/test_attacks.py forces a real EMFILE in a
real daemon with prlimit.
"""

import errno
import os

import pytest
from twisted.internet import task

from hlfs.core.resolver import SpoolRules
from hlfs.homes.checks import DAEMON_ERRNOS
from hlfs.homes.resolver import HomeResolver
from tests.support.checks import STANDIN, started_engine, stop_engine
from tests.support.probes import LogCapture, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="checks take other users' identities"),
    pytest.mark.timeout(60),
]

CACHE_INTERVAL = 300
RETRY = 5


def fail_next_check(homes, name, code):
    """
    Make user C{name}'s next check fail with C{code}.
    """
    home = os.fsdecode(homes.spool(name)).rpartition("/")[0]
    with open(os.path.join(home, ".hlfs-test-errno"), "w") as f:
        f.write(str(code))


def checks(resolver):
    return resolver.engine.started_count


@pytest.fixture
def make(rt, homes, monkeypatch):
    monkeypatch.setenv("HLFS_STANDIN", "marker")
    engines = []

    def make():
        clock = task.Clock()
        engine = started_engine(rt, 2, clock=clock, stuck_after=5.0, argv=STANDIN)
        engines.append(engine)
        resolver = HomeResolver(
            homes.table(), SpoolRules(b".mailspool", os.fsencode(homes.alt)), clock, engine,
            cache_interval=CACHE_INTERVAL, deadline=5.0, retry_interval=RETRY,
        )
        return resolver, clock

    yield make
    for engine in engines:
        stop_engine(rt, engine)


@pytest.mark.parametrize("code", sorted(DAEMON_ERRNOS), ids=errno.errorcode.get)
def test_the_daemons_trouble_is_retried_soon(rt, homes, make, code):
    """
    If a check fails with one of the daemon's own errnos, then the caller
    gets the alternate spool, the log says it is hlfs's trouble, and a
    check made after the retry interval (not the cache interval) gives
    the home.
    """
    uid = homes.add("alice")
    fail_next_check(homes, "alice", code)
    resolver, clock = make()
    with LogCapture() as logs:
        first = rt.call(resolver.resolve, uid)
    assert first.target == os.fsencode(homes.alt)
    assert logs.matching("alice", "hlfs itself is short of resources", errno.errorcode[code])
    assert not logs.matching("unusable")
    assert resolver.stats.daemon_errors == 1 and resolver.stats.failures == 0
    # Within the retry interval the failure is kept: no new check.
    rt.call(clock.advance, RETRY - 1)
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    assert checks(resolver) == 1
    rt.call(clock.advance, 1.5)
    assert rt.call(resolver.resolve, uid).target == homes.spool("alice")
    assert checks(resolver) == 2


def test_a_homes_own_failure_is_kept_for_the_cache_interval(rt, homes, make):
    """
    If a check fails for the home's own sake (EACCES here), then it is
    kept for the whole cache interval, as before.
    """
    uid = homes.add("alice")
    fail_next_check(homes, "alice", errno.EACCES)
    resolver, clock = make()
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    rt.call(clock.advance, RETRY * 2)
    assert rt.call(resolver.resolve, uid).target == os.fsencode(homes.alt)
    assert checks(resolver) == 1
    assert resolver.stats.failures == 1 and resolver.stats.daemon_errors == 0


def test_the_daemons_trouble_is_logged_once_per_interval(rt, homes, make):
    """
    If many checks meet EMFILE at once, then one line is logged at once and
    one more with their count at the end of the interval, not one each.
    """
    uids = [homes.add(f"user{n}") for n in range(20)]
    for n in range(len(uids)):
        fail_next_check(homes, f"user{n}", errno.EMFILE)
    resolver, clock = make()
    with LogCapture() as logs:
        for uid in uids:
            rt.call(resolver.resolve, uid)
        assert len(logs.matching("short of resources")) == 1
        rt.call(clock.advance, 61)
        wait_for(lambda: len(logs.matching("short of resources")) == 2)
    assert logs.matching("19 more in the last 60 s")
    assert resolver.stats.daemon_errors == len(uids)
