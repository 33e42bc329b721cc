"""
L{hlfs.homes.pool.ProbePool}'s deadlines: every waiter's deadline sits
in one heap under one timer, so a waiter with a shorter budget that
comes later must still get its fallback on time, and a waiter answered
before its deadline must never get one.  Real probe threads, on a test
clock (L{task.Clock}) driven in the reactor thread.
"""

import threading

from twisted.internet import task

from hlfs.homes.pool import ProbePool
from tests.support.probes import wait_for


def _start(rt):
    clock = task.Clock()
    pool = ProbePool(threads=4, reactor=rt.reactor, clock=clock)
    pool.start()
    return clock, pool


def _finish(flight, result):
    return ("probed", flight.key, result)


def _fallback(flight):
    return ("fallback", flight.key)


def test_a_later_shorter_deadline_expires_first(rt):
    clock, pool = _start(rt)
    gate = threading.Event()
    got = []
    try:
        def begin():
            a = pool.submit(1, b"/a", gate.wait, (30,), _finish)
            b = pool.submit(2, b"/b", gate.wait, (30,), _finish)
            pool.wait(a, 1.0, _fallback).addCallback(got.append)
            pool.wait(b, 0.3, _fallback).addCallback(got.append)

        rt.call(begin)
        rt.call(clock.advance, 0.35)
        assert got == [("fallback", 2)]
        rt.call(clock.advance, 0.5)
        assert got == [("fallback", 2)]
        rt.call(clock.advance, 0.2)
        assert got == [("fallback", 2), ("fallback", 1)]
    finally:
        gate.set()
        rt.call(pool.stop)


def test_an_answered_waiter_gets_no_fallback(rt):
    clock, pool = _start(rt)
    got = []
    try:
        def begin():
            flight = pool.submit(7, b"/h", lambda: "ok", (), _finish)
            pool.wait(flight, 1.0, _fallback).addCallback(got.append)

        rt.call(begin)
        wait_for(lambda: rt.call(lambda: len(got)) == 1)
        rt.call(clock.advance, 2.0)
        assert got == [("probed", 7, "ok")]
        assert rt.call(lambda: pool._deadlines) == []
    finally:
        rt.call(pool.stop)


def test_waiters_of_one_flight_each_keep_their_own_deadline(rt):
    clock, pool = _start(rt)
    gate = threading.Event()
    got = []
    try:
        def begin():
            flight = pool.submit(3, b"/c", gate.wait, (30,), _finish)
            pool.wait(flight, 0.5, _fallback).addCallback(lambda r: got.append(("first", r)))
            clock.advance(0.2)
            pool.wait(flight, 0.5, _fallback).addCallback(lambda r: got.append(("second", r)))

        rt.call(begin)
        rt.call(clock.advance, 0.35)
        assert got == [("first", ("fallback", 3))]
        gate.set()
        wait_for(lambda: rt.call(lambda: len(got)) == 2)
        assert got[1] == ("second", ("probed", 3, True))
        rt.call(clock.advance, 1.0)
        assert len(got) == 2
    finally:
        gate.set()
        rt.call(pool.stop)
