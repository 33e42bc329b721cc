"""
L{hlfs.homes.flights}: work in flight by key, its waiters each with a
deadline, every deadline in one heap under one timer of the clock.  Pure:
a L{task.Clock} and flights finished by hand, no thread, no process.
"""

from twisted.internet import task

from hlfs.homes.flights import Flight, Flights


def _flights():
    clock = task.Clock()
    return clock, Flights(clock)


def _flight(flights, key, finish=lambda flight, result: ("done", flight.key, result)):
    flight = Flight(key, b"/%d" % key, flights.clock.seconds(), finish)
    flights.add(flight)
    return flight


def _fallback(flight):
    return ("fallback", flight.key)


def test_a_later_shorter_deadline_expires_first():
    clock, flights = _flights()
    got = []
    a, b = _flight(flights, 1), _flight(flights, 2)
    flights.wait(a, 1.0, _fallback).addCallback(got.append)
    flights.wait(b, 0.3, _fallback).addCallback(got.append)
    clock.advance(0.35)
    assert got == [("fallback", 2)]
    clock.advance(0.5)
    assert got == [("fallback", 2)]
    clock.advance(0.2)
    assert got == [("fallback", 2), ("fallback", 1)]
    assert clock.getDelayedCalls() == []


def test_an_answered_waiter_gets_no_fallback():
    clock, flights = _flights()
    got = []
    flight = _flight(flights, 7)
    flights.wait(flight, 1.0, _fallback).addCallback(got.append)
    flights.finish(flight, "ok")
    clock.advance(2.0)
    assert got == [("done", 7, "ok")]
    assert flights._deadlines == [] and flights.find(7) is None and flights.count() == 0


def test_waiters_of_one_flight_each_keep_their_own_deadline():
    clock, flights = _flights()
    got = []
    flight = _flight(flights, 3)
    flights.wait(flight, 0.5, _fallback).addCallback(lambda r: got.append(("first", r)))
    clock.advance(0.2)
    flights.wait(flight, 0.5, _fallback).addCallback(lambda r: got.append(("second", r)))
    clock.advance(0.35)
    assert got == [("first", ("fallback", 3))]
    flights.finish(flight, True)
    assert got[1] == ("second", ("done", 3, True))
    clock.advance(1.0)
    assert len(got) == 2


def test_one_flight_per_key():
    _, flights = _flights()
    _flight(flights, 1)
    try:
        _flight(flights, 1)
    except ValueError as e:
        assert "already in flight" in str(e)
    else:
        raise AssertionError("a second flight for one key")


def test_an_expiry_fires_unless_cancelled_and_a_dropped_flight_answers_its_fallbacks():
    """
    A flight's expiry (a job not started by its deadline) fires at its
    time; cancelled first, never.  Dropping a flight gives its waiters
    their fallbacks at once and never calls its finish.
    """
    clock, flights = _flights()
    expired, got = [], []
    kept = _flight(flights, 1, finish=lambda f, r: got.append("finished"))
    flights.expire(kept, 1.0, expired.append)
    flights.cancel_expiry(kept)
    dropped = _flight(flights, 2, finish=lambda f, r: got.append("finished"))
    flights.wait(dropped, 5.0, _fallback).addCallback(got.append)
    flights.expire(dropped, 1.0, lambda f: (expired.append(f), flights.drop(f)))
    clock.advance(1.0)
    assert expired == [dropped] and got == [("fallback", 2)]
    assert flights.find(2) is None and flights.find(1) is kept
    clock.advance(5.0)
    assert got == [("fallback", 2)]
    assert clock.getDelayedCalls() == []
