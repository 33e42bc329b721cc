"""
L{hlfs.homes.threads.LookupThreads}: the name service's threads, real
threads answering through the real reactor; their stuck time on a test
clock.
"""

import threading

from twisted.internet import task

from hlfs.homes.threads import LookupThreads
from tests.support.probes import LogCapture, wait_for


def _threads(rt, size=2, **kwargs):
    clock = task.Clock()
    threads = LookupThreads(size, rt.reactor, clock=clock, stuck_after=1.0, **kwargs)
    rt.call(threads.start)
    return clock, threads


def test_lookups_run_in_threads_one_per_key_and_answer_in_the_reactor(rt):
    clock, threads = _threads(rt)
    seen, got = [], []
    try:
        def lookup(value):
            seen.append(threading.get_native_id())
            return value * 2

        def begin():
            flight = threads.submit("a", b"a", lookup, (21,), lambda f, r: ("found", r))
            threads.wait(flight, 5.0, lambda f: "late").addCallback(got.append)
            assert threads.find("a") is flight
            threads.wait(flight, 5.0, lambda f: "late").addCallback(got.append)

        rt.call(begin)
        wait_for(lambda: len(got) == 2)
        assert got == [("found", 42)] * 2 and len(seen) == 1
        assert seen[0] != rt.tid and threads.started_count == 1
    finally:
        rt.call(threads.stop)


def test_stuck_threads_hold_their_place_and_then_new_keys_are_refused(rt):
    """
    Lookups stuck (a hung directory) keep their threads; once every
    thread is stuck, a new key is refused at once; a lookup that raises
    answers None with a log line.  Stop does not wait for stuck threads.
    """
    clock, threads = _threads(rt, size=2)
    release = threading.Event()
    got = []
    try:
        for key in ("x", "y"):
            rt.call(threads.submit, key, key.encode(), release.wait, (30,), lambda f, r: r)
        wait_for(lambda: len(threads._running) == 2)
        assert rt.call(threads.submit, "z", b"z", lambda: 1, (), lambda f, r: r) is not None
        rt.call(clock.advance, 1.0)
        assert rt.call(threads.submit, "w", b"w", lambda: 1, (), lambda f, r: r) is None
        assert threads.exhausted_count == 1
        release.set()
        wait_for(lambda: rt.call(threads.count) == 0)

        def boom():
            raise RuntimeError("the directory library broke")

        def ask():
            flight = threads.submit("b", b"b", boom, (), lambda f, r: ("got", r))
            threads.wait(flight, 5.0, lambda f: "late").addCallback(got.append)

        with LogCapture("hlfs.users") as logs:
            rt.call(ask)
            wait_for(lambda: got)
        assert got == [("got", None)] and logs.matching("lookup of b'b' raised")
    finally:
        release.set()
        rt.call(threads.stop)


def test_no_more_lookups_in_flight_than_the_bound(rt):
    clock, threads = _threads(rt, size=1, max_flights=3)
    release = threading.Event()
    try:
        flights = [rt.call(threads.submit, n, b"n", release.wait, (30,), lambda f, r: r)
                   for n in range(5)]
        assert [f is not None for f in flights] == [True, True, True, False, False]
    finally:
        release.set()
        wait_for(lambda: rt.call(threads.count) == 0)
        rt.call(threads.stop)
