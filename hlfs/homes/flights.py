"""
Work in flight, by key, and the callers waiting for it, each until its
own deadline: what the home-check engine (L{hlfs.homes.engine}) and the
name service's threads (L{hlfs.homes.threads}) share.

A key (a uid, a lookup) has at most one L{Flight}: a caller that asks
while one is in flight waits for it instead of starting another.  Every
waiter's deadline sits in one heap under one timer of the clock: a timer
per waiting call (C{callLater}, then C{cancel}) cost more than the rest
of the hand-off in a storm.
"""

import heapq
import itertools
from typing import NamedTuple

from twisted.internet.defer import Deferred


class FlightInfo(NamedTuple):
    """
    Work in flight, as the operator console shows it.

    @ivar key: what it is for (a uid, a lookup).
    @ivar path: the path it works on, or what it asks for.
    @ivar age: seconds since it was asked for.
    @ivar running: seconds since it started running, or L{None} while it
        waits for a process or a thread.
    """

    key: object
    path: bytes
    age: float
    running: float | None


class Flight:
    """
    One piece of work, shared by every caller that asks for its key
    meanwhile.

    @ivar submitted: when it was asked for (the clock's time).
    @ivar started: when it started running, or L{None}.
    @ivar late: whether a caller was answered without it (its deadline
        passed first).
    @ivar finish: C{finish(flight, result)}, whose return value is every
        waiter's answer; L{None} once called.
    @ivar origin: whatever its submitter keeps with it for C{finish}.
    """

    __slots__ = ("key", "path", "submitted", "started", "waiters", "late", "finish", "job",
                 "home", "state", "process", "expiry", "origin")

    def __init__(self, key, path, submitted, finish, job=None, home=None):
        self.key = key
        self.path = path
        self.submitted = submitted
        self.started = None
        self.waiters = []
        self.late = False
        self.finish = finish
        self.job = job  # what runs: a record, or (function, args)
        self.home = home  # whose home it works in (one job per home at a time)
        self.state = None  # the engine's: queued, blocked, running
        self.process = None  # the process running it
        self.expiry = None  # its heap entry while it waits to start
        self.origin = None  # what its submitter keeps with it


class Flights:
    """
    The flights by key, and one deadline heap for their waiters.
    """

    def __init__(self, clock):
        self.clock = clock
        self._flights = {}
        # (when, sequence, waiter); a waiter is [Deferred or None once
        # answered, flight, fallback].
        self._deadlines = []
        self._sequence = itertools.count()
        self._call = None
        self._due = None

    def find(self, key):
        """
        Return the L{Flight} for C{key}, or L{None}.
        """
        return self._flights.get(key)

    def add(self, flight):
        """
        Put C{flight} in flight.

        @raise ValueError: if one for its key already is.
        """
        if flight.key in self._flights:
            raise ValueError(f"work for {flight.key!r} is already in flight")
        self._flights[flight.key] = flight

    def count(self):
        """
        Return how many flights there are (running or waiting to).
        """
        return len(self._flights)

    def __iter__(self):
        return iter(list(self._flights.values()))

    def wait(self, flight, timeout, fallback):
        """
        Return a Deferred that fires with C{flight}'s answer, or with
        C{fallback(flight)} if that takes longer than C{timeout} seconds.
        """
        d = Deferred()
        waiter = [d, flight, fallback]
        flight.waiters.append(waiter)
        self._push(self.clock.seconds() + timeout, waiter)
        return d

    def expire(self, flight, timeout, then):
        """
        Call C{then(flight)} in C{timeout} seconds, unless L{cancel_expiry}
        comes first: a job that has not started by its deadline.
        """
        entry = flight.expiry = [_EXPIRY, flight, then]
        self._push(self.clock.seconds() + timeout, entry)

    @staticmethod
    def cancel_expiry(flight):
        if flight.expiry is not None:
            flight.expiry[0] = None
            flight.expiry = None

    def _push(self, when, entry):
        heapq.heappush(self._deadlines, (when, next(self._sequence), entry))
        if self._due is None or when < self._due:
            self._schedule(when)

    def _schedule(self, when):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._due = when
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._expire)

    def _expire(self):
        self._call = self._due = None
        deadlines = self._deadlines
        now = self.clock.seconds()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2][0] is None):
            entry = heapq.heappop(deadlines)[2]
            d, flight, fallback = entry
            if d is None:
                continue
            entry[0] = None
            if d is _EXPIRY:
                flight.expiry = None
                fallback(flight)
                continue
            flight.waiters.remove(entry)
            d.callback(fallback(flight))
        if deadlines:
            self._schedule(deadlines[0][0])

    def finish(self, flight, result):
        """
        End C{flight}: its C{finish(flight, result)} is every waiter's
        answer.
        """
        if flight.finish is None:
            return
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        self.cancel_expiry(flight)
        finish, flight.finish = flight.finish, None
        answer = finish(flight, result)
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            d = waiter[0]
            waiter[0] = None  # answered: its deadline entry is void
            d.callback(answer)
        # Void entries leave the heap as they reach its top, a few per
        # answer: left for the timer, a storm's second of them (10,000)
        # went in one 20 ms turn, which every caller waited for.
        deadlines = self._deadlines
        while deadlines and deadlines[0][2][0] is None:
            heapq.heappop(deadlines)

    def drop(self, flight):
        """
        End C{flight} without a result: it never ran.  Its waiters get
        their fallbacks now.
        """
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        self.cancel_expiry(flight)
        flight.finish = None
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            d, _, fallback = waiter
            waiter[0] = None
            d.callback(fallback(flight))

    def stop(self):
        """
        Forget every flight and deadline; nobody is answered any more.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._due = None
        self._deadlines = []
        self._flights = {}

    def info(self):
        """
        Return a L{FlightInfo} for every flight.
        """
        now = self.clock.seconds()
        return [FlightInfo(f.key, f.path, now - f.submitted,
                           None if f.started is None else now - f.started)
                for f in self]


#: A heap entry that is a job's expiry, not a waiter.
_EXPIRY = object()
