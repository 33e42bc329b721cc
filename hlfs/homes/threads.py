"""
L{LookupThreads}: the threads that ask the name service for one user at
a time (C{getpwuid_r}, C{getpwnam_r}, C{getgrouplist}).  Those calls go
into libc and the NSS modules and may block for as long as a directory
does: they cannot run in the reactor thread, and they have no cheap way
into a check process.  A hung directory holds these threads, never a
home check.

At most C{size} threads, started as lookups need them; one lookup per
key in flight (callers that ask meanwhile share it, each until its own
deadline: L{hlfs.homes.flights}); at most C{max_flights} in flight,
running or waiting for a thread; and when every thread is stuck (on its
lookup for longer than C{stuck_after}), a new key is refused at once.
A thread stuck in a lookup is abandoned at L{stop}: it is a daemon
thread, and ends with its lookup.
"""

import collections
import threading

from twisted.logger import Logger
from twisted.python.failure import Failure

from hlfs.homes.flights import Flight, Flights

log = Logger(namespace="hlfs.users")


class LookupThreads:
    """
    The name service's threads, and the lookups in flight.

    @ivar started_count: lookups started.
    @ivar exhausted_count: lookups refused because every thread was stuck.
    """

    def __init__(self, size=4, reactor=None, clock=None, stuck_after=1.0, max_flights=64):
        if size < 1:
            raise ValueError("lookups need at least one thread")
        if reactor is None:
            from twisted.internet import reactor
        self.size = size
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.stuck_after = stuck_after
        self.max_flights = max_flights
        self.flights = Flights(self.clock)
        self.started_count = self.exhausted_count = 0
        self._jobs = collections.deque()
        self._wake = threading.Condition()
        self._threads = []
        self._idle = 0
        self._running = set()  # flights a thread is on: threads add and discard
        self._stopping = False

    def start(self):
        """
        Accept lookups (threads start as they need them).
        """
        self._stopping = False

    def stop(self):
        """
        Refuse new lookups, drop the waiting ones, end the idle threads;
        threads stuck in a lookup are abandoned.
        """
        with self._wake:
            self._stopping = True
            self._jobs.clear()
            self._wake.notify_all()
        self._threads = [t for t in self._threads if t.is_alive()]
        self.flights.stop()

    # -- lookups

    def find(self, key):
        return self.flights.find(key)

    def count(self):
        return self.flights.count()

    def submit(self, key, what, lookup, args, finish):
        """
        Start C{lookup(*args)} in a thread for C{key}, unless too many
        lookups are in flight or every thread is stuck.

        @param what: what it asks for, for logs and the console.
        @param finish: called in the reactor thread with the L{Flight}
            and C{lookup}'s result (L{None} if it raised, with a log
            line); what it returns is every waiter's answer.
        @return: the new L{Flight}, or L{None} when refused.
        """
        if self.flights.count() >= self.max_flights or self._stopping:
            return None
        if self._stuck() >= self.size:
            self.exhausted_count += 1
            return None
        flight = Flight(key, what, self.clock.seconds(), finish, (lookup, args))
        self.flights.add(flight)
        self.started_count += 1
        with self._wake:
            self._jobs.append(flight)
            if self._idle:
                self._wake.notify()
            elif len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name=f"hlfs-lookup-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
        return flight

    def wait(self, flight, timeout, fallback):
        return self.flights.wait(flight, timeout, fallback)

    def _stuck(self):
        now = self.clock.seconds()
        return sum(1 for f in list(self._running)
                   if f.started is not None and now - f.started >= self.stuck_after)

    def _work(self):
        # In a lookup thread.
        while True:
            with self._wake:
                while not self._jobs and not self._stopping:
                    self._idle += 1
                    self._wake.wait()
                    self._idle -= 1
                if self._stopping:
                    return
                flight = self._jobs.popleft()
            flight.started = self.clock.seconds()
            self._running.add(flight)
            lookup, args = flight.job
            try:
                result = lookup(*args)
            except BaseException:
                result = Failure()
            finally:
                self._running.discard(flight)
            self.reactor.callFromThread(self._finished, flight, result)
            flight = result = None

    def _finished(self, flight, result):
        if isinstance(result, Failure):
            log.failure("lookup of {what} raised", result, what=flight.path)
            result = None
        self.flights.finish(flight, result)

    # -- what the operator sees

    def in_flight(self):
        return self.flights.info()
