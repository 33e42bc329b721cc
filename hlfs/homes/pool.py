"""
L{ProbePool}: hlfs's own bounded pool of probe threads.  It never runs
two probes for the same key at once (later callers share the running
one), lets each caller wait at most a deadline, and refuses new work at
once when every thread is stuck, instead of queueing it behind them.

The daemon's service starts and stops the pool: L{ProbePool.start} when
the service starts, L{ProbePool.stop} when it stops (it does not wait for
probes stuck in a dead filesystem).
"""

import collections
import functools
import heapq
import itertools
import os
import sys
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hlfs.homes.workers import WorkerThreads

log = Logger(namespace="hlfs.probe")

#: The longest (seconds) a thread holding the GIL keeps a thread that
#: wants it waiting (Python's default: 5 ms).  A probe thread coming back
#: from each of its system calls needs the GIL while the reactor holds
#: it; with 5 ms each, a storm's probes advanced only when the reactor
#: happened to make a system call itself.
SWITCH_INTERVAL = 0.0005


class FlightInfo(NamedTuple):
    """
    A probe in flight, as the operator console shows it.

    @ivar key: what the probe is for (the uid).
    @ivar path: the path it checks.
    @ivar age: seconds since it was asked for.
    @ivar running: seconds since a thread took it up, or L{None} while
        it waits for a thread.
    """

    key: int
    path: bytes
    age: float
    running: float | None


class Flight:
    """
    One probe in flight, shared by every caller that asks for its key
    meanwhile.
    """

    __slots__ = ("key", "path", "submitted", "started", "waiters", "late", "finish")

    def __init__(self, key, path, submitted):
        self.key = key
        self.path = path
        self.submitted = submitted
        self.started = None  # set by the thread that runs it
        self.waiters = []
        self.late = False
        self.finish = None


class ProbePool:
    """
    hlfs's own bounded pool of probe threads.

    @ivar threads: how many probes may run at once.
    @ivar stuck_after: seconds after which a running probe counts as hung
        (L{None}: the deadline of the resolver using the pool).
    @ivar exhausted_log_interval: seconds between two "pool exhausted"
        log lines.
    @ivar started_count: probes started.
    @ivar exhausted_count: probes refused because every thread was stuck.
    """

    def __init__(self, threads=10, reactor=None, clock=None, stuck_after=None,
                 exhausted_log_interval=10.0, awake=1, slow_after=0.01, checkers=None):
        """
        @param threads: the pool's size (hlfs's C{--probe-threads}).
        @param awake: how many threads may be in a quick job at once (see
            L{WorkerThreads}).  One for home checks: on a local disk one
            thread checks a home in tens of microseconds, faster than the
            reactor answers, and a second one running Python between its
            system calls doubled the GIL hand-offs with the reactor (in a
            storm, 30 futex calls a probe instead of 13, 5 context
            switches a call instead of 1.7).  A check that takes longer
            than C{slow_after} stops counting, so slow homes still get
            threads of their own.
        @param slow_after: seconds after which a check counts as slow.  At
            2 ms (homes on NFS take a few ms a check), checks slowed by the
            machine's load or by strace crossed it and woke more threads:
            twice the futex calls a probe under strace.
        @param reactor: the reactor results are delivered to.
        @param clock: the clock ages and deadlines are measured by; the
            reactor by default.
        @param checkers: the L{hlfs.homes.checkers.CheckerProcesses} that
            run home checks (probes with a C{job} method), or L{None}:
            every probe runs in the threads.
        """
        if threads < 1:
            raise ValueError("a probe pool needs at least one thread")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.threads = threads
        self.stuck_after = stuck_after
        self.exhausted_log_interval = exhausted_log_interval
        self.started_count = 0
        self.exhausted_count = 0
        self._threadpool = WorkerThreads(threads, name="hlfs-probe", awake=awake,
                                         slow_after=slow_after)
        self.checkers = checkers
        self._flights = {}
        self._running = set()  # Flights a thread is running; threads add and discard
        self._results = collections.deque()  # (Flight, result) from the threads
        self._wake_pending = False
        self._recheck_call = None
        # Every waiter's deadline, (when, sequence, waiter), in one heap
        # under one reactor timer: a timer per waiting call (callLater,
        # then cancel) cost more than the rest of the hand-off in a storm.
        # Answered waiters stay in the heap until their time comes.
        self._deadlines = []
        self._deadline_seq = itertools.count()
        self._deadline_call = None
        self._deadline_at = None
        self._exhausted_logged = None
        self._exhausted_unlogged = 0

    # -- life cycle, for the daemon's service

    def start(self):
        """
        Start the threads.  The service calls this from C{startService}.
        It also shortens the process's GIL switch interval to
        L{SWITCH_INTERVAL}, if it is longer.
        """
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._threadpool.start()
        if self.checkers is not None:
            self.checkers.start()

    def stop(self):
        """
        Stop the threads: idle ones end at once, threads stuck in a
        probe are abandoned (they are daemon threads).  The service calls
        this from C{stopService}.
        """
        self._threadpool.stop()
        if self.checkers is not None:
            self.checkers.stop()
        if self._recheck_call is not None and self._recheck_call.active():
            self._recheck_call.cancel()
        self._recheck_call = None

    # -- what is in flight

    def find(self, key):
        """
        Return the L{Flight} for C{key}, or L{None}.
        """
        return self._flights.get(key)

    def count(self):
        """
        Return how many probes are in flight (running or waiting).
        """
        return len(self._flights)

    def busy(self):
        """
        Return how many threads (or home-check processes) are running a
        probe.
        """
        busy = len(self._running)
        return busy if self.checkers is None else busy + self.checkers.busy()

    def _stuck_after(self):
        return 1.0 if self.stuck_after is None else self.stuck_after

    def exhausted(self):
        """
        Return whether every thread is stuck in a probe that has run
        longer than L{stuck_after}.
        """
        limit = self._stuck_after()
        now = self.clock.seconds()
        stuck = sum(1 for f in list(self._running)
                    if f.started is not None and now - f.started >= limit)
        if self.checkers is not None:
            stuck += self.checkers.stuck_count(limit)
        return stuck >= self.threads

    def in_flight(self):
        """
        Return a L{FlightInfo} for every probe asked for and not finished.
        """
        now = self.clock.seconds()
        return [
            FlightInfo(
                f.key, f.path, now - f.submitted,
                None if f.started is None else now - f.started,
            )
            for f in list(self._flights.values())
        ]

    def hung(self):
        """
        Return the L{FlightInfo}s of the probes that have been running
        longer than L{stuck_after}.
        """
        limit = self._stuck_after()
        return [f for f in self.in_flight() if f.running is not None and f.running >= limit]

    # -- running probes

    def submit(self, key, path, probe, args, finish):
        """
        Start C{probe(*args)} in a thread for C{key}, unless every thread is
        stuck.

        @param path: what the probe checks, for logs and the console.
        @param finish: called in the reactor thread with the L{Flight}
            and the probe's result (L{None} if it raised) before any
            waiter is answered; what it returns is every waiter's answer.
        @return: the new L{Flight}, or L{None} when the pool is exhausted.
        @raise ValueError: if a probe for C{key} is already in flight.
        """
        if key in self._flights:
            raise ValueError(f"a probe for {key!r} is already in flight")
        if self.exhausted():
            self.exhausted_count += 1
            self._log_exhausted(path)
            return None
        flight = Flight(key, path, self.clock.seconds())
        self._flights[key] = flight
        self.started_count += 1
        flight.finish = finish
        job = getattr(probe, "job", None) if self.checkers is not None else None
        if job is not None and self.checkers.can_take():
            self.checkers.submit(
                job(*args), path, functools.partial(self._answered, flight, probe, args),
                functools.partial(self._sent, flight),
                functools.partial(self._in_thread, flight, probe, args))
        else:
            if job is not None:
                self.checkers.warm()
            self._in_thread(flight, probe, args)
        return flight

    def _in_thread(self, flight, probe, args):
        # Also the home-check processes' fallback: while none is started,
        # or every one is on a slow check, a check runs in a thread, as
        # before there were processes.
        if self._threadpool.submit(self._run, flight, probe, args):
            self._schedule_recheck()

    @staticmethod
    def _sent(flight, when):
        flight.started = when

    def _answered(self, flight, probe, args, answer):
        # A home-check process's answer, in the reactor thread.
        try:
            result = probe.finish_job(*args, answer)
        except Exception:
            result = Failure()
        self._finished(result, flight)

    def _schedule_recheck(self):
        if self._recheck_call is None:
            self._recheck_call = self.reactor.callLater(
                self._threadpool.slow_after, self._recheck)

    def _recheck(self):
        # Probes wait while the threads running are slow: one more thread.
        self._recheck_call = None
        if self._threadpool.recheck():
            self._schedule_recheck()

    def _run(self, flight, probe, args):
        # In a probe thread.  Results go back in batches: one wake-up of
        # the reactor for every result waiting, not one per result (what
        # deferToThreadPool would do), which matters in a probe storm.
        flight.started = self.clock.seconds()
        self._running.add(flight)
        try:
            result = probe(*args)
        except BaseException:
            result = Failure()
        finally:
            self._running.discard(flight)
        self._results.append((flight, result))
        if not self._wake_pending:
            self._wake_pending = True
            self.reactor.callFromThread(self._deliver)

    def _deliver(self):
        # Clear the flag before emptying the queue: a result appended
        # after this point schedules another delivery.
        self._wake_pending = False
        results = self._results
        while results:
            flight, result = results.popleft()
            self._finished(result, flight)

    def _finished(self, result, flight):
        if flight.finish is None:
            return  # answered already: a thread and a process both ran it
        if isinstance(result, Failure):
            log.failure("home probe for {key} raised", result, key=flight.key)
            result = None
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
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

    def wait(self, flight, timeout, fallback):
        """
        Return a Deferred that fires with C{flight}'s answer, or with
        C{fallback(flight)} if that takes longer than C{timeout} seconds.
        """
        d = Deferred()
        when = self.clock.seconds() + timeout
        waiter = [d, flight, fallback]
        flight.waiters.append(waiter)
        heapq.heappush(self._deadlines, (when, next(self._deadline_seq), waiter))
        if self._deadline_at is None or when < self._deadline_at:
            self._schedule_deadline(when)
        return d

    def _schedule_deadline(self, when):
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_at = when
        self._deadline_call = self.clock.callLater(
            max(0.0, when - self.clock.seconds()), self._expire)

    def _expire(self):
        self._deadline_call = self._deadline_at = None
        deadlines = self._deadlines
        now = self.clock.seconds()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2][0] is None):
            waiter = heapq.heappop(deadlines)[2]
            d, flight, fallback = waiter
            if d is None:
                continue
            waiter[0] = None
            flight.waiters.remove(waiter)
            d.callback(fallback(flight))
        if deadlines:
            self._schedule_deadline(deadlines[0][0])

    def _longest(self, now):
        longest = max((now - f.started for f in list(self._running) if f.started), default=0.0)
        if self.checkers is not None:
            longest = max(longest, self.checkers.longest())
        return longest

    def _log_exhausted(self, path):
        now = self.clock.seconds()
        last = self._exhausted_logged
        if last is not None and now - last < self.exhausted_log_interval:
            self._exhausted_unlogged += 1
            return
        log.error(
            "probe pool exhausted: all {threads} {workers} are stuck "
            "(longest for {longest:.1f} s); answering the alternate spool "
            "at once for {path} ({suppressed} more since the last report)",
            threads=self.threads,
            workers="probe threads" if self.checkers is None else "home checks allowed at once",
            longest=self._longest(now),
            path=os.fsdecode(path),
            suppressed=self._exhausted_unlogged,
        )
        self._exhausted_logged = now
        self._exhausted_unlogged = 0


class LookupPool(ProbePool):
    """
    The threads of the per-user lookups: a L{ProbePool} of their own (a
    hung directory holds these, never the home probes'), that also
    refuses a new key at once when C{max_flights} lookups are in flight,
    running or waiting for a thread.
    """

    def __init__(self, threads=4, reactor=None, clock=None, stuck_after=None, max_flights=64):
        # Two at once: a lookup waits on the directory, not on the disk.
        super().__init__(threads, reactor, clock, stuck_after, awake=2)
        self._threadpool.name = "hlfs-lookup"
        self.max_flights = max_flights

    def submit(self, key, path, probe, args, finish):
        if self.count() >= self.max_flights:
            return None
        return super().submit(key, path, probe, args, finish)
