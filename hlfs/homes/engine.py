"""
L{CheckEngine}: the one engine that runs the daemon's jobs in homes, a
home check or root's lock-file operation, in its C{size} check processes
(L{hlfs.homes.processes}), never in a thread of the daemon.

  - The processes start with the service, before it serves
    (L{CheckEngine.start}); one that ends is replaced.
  - A process runs one job at a time.  A job goes to an idle process at
    once, or waits in a bounded queue until a process is free, at most
    until its deadline: a job that has not started by then is dropped,
    and its callers have had their fallback.  Nothing is moved to
    another process, nothing runs twice.
  - One job per home at a time: a job for a home whose job is running
    waits for it.  So a hung home holds one process, whatever its user's
    callers ask for.
  - A process on a job for longer than the deadline is I{stuck}.  When
    all C{size} are, the engine is exhausted: a new job is refused at
    once (its caller gets the alternate spool, or is told to try again),
    with a log line at most every ten seconds.
  - One job per key (a uid) in flight: callers that ask meanwhile wait
    for the same job, each until its own deadline (L{hlfs.homes.flights}).

The bound on what any caller can make the daemon hold is C{size}
processes and C{queue_limit} queued jobs.
"""

import collections
import os

from twisted.internet import defer
from twisted.logger import Logger

from hlfs.homes.flights import Flight, Flights
from hlfs.homes.processes import CheckProcesses
from hlfs.homes.records import encode

log = Logger(namespace="hlfs.probe")


class CheckEngine:
    """
    Jobs for the check processes, with deadlines, a bounded queue and one
    job per home and per key.

    @ivar size: the processes, and the most jobs running at once.
    @ivar stuck_after: seconds after which a running job is stuck (the
        callers' deadline).
    @ivar started_count: jobs started in a process.
    @ivar exhausted_count: jobs refused because every process was stuck.
    @ivar queue_full_count: jobs refused because the queue was full.
    @ivar expired_count: jobs dropped from the queue at their deadline.
    @ivar lost_count: jobs whose process ended before answering.
    """

    def __init__(self, size, reactor, clock=None, stuck_after=1.0, queue_limit=None,
                 exhausted_log_interval=10.0, argv=None):
        """
        @param reactor: the reactor the processes run under.
        @param clock: the clock of deadlines and ages; the reactor by
            default.
        @param queue_limit: the most jobs waiting for a process
            (default: 128 per process).
        @param argv: the forker's command (tests); by default this Python
            running L{hlfs.homes.checker}.
        """
        self.size = size
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.stuck_after = stuck_after
        self.queue_limit = queue_limit if queue_limit is not None else 128 * size
        self.exhausted_log_interval = exhausted_log_interval
        self.flights = Flights(self.clock)
        self.processes = CheckProcesses(size, reactor, self, argv)
        self.started_count = self.exhausted_count = self.queue_full_count = 0
        self.expired_count = self.lost_count = 0
        self._idle = []  # processes without a job, the last one free last
        self._queue = collections.deque()  # flights waiting for a process
        self._waiting = 0  # flights queued or blocked, not dropped
        self._homes = {}  # home -> its running flight
        self._blocked = {}  # home -> flights waiting for that home's job
        self._ready = None
        self._last_start = float("-inf")  # when the newest job started
        self._exhausted_logged = None
        self._exhausted_unlogged = 0

    # -- life cycle

    def start(self):
        """
        Start the processes.

        @return: a Deferred firing once all C{size} have started.
        """
        self._ready = defer.Deferred()
        self.processes.start()
        return self._ready

    def stop(self):
        """
        End the processes (stuck ones with SIGKILL) and drop every job:
        nobody is answered any more.
        """
        if self._ready is not None:
            ready, self._ready = self._ready, None
            ready.cancel()
        self.processes.stop()
        self.flights.stop()
        self._idle = []
        self._queue.clear()
        self._waiting = 0
        self._homes.clear()
        self._blocked.clear()

    # -- jobs

    def find(self, key):
        """
        Return the L{Flight} of the job for C{key} in flight, or L{None}.
        """
        return self.flights.find(key)

    def submit(self, key, path, job, finish, home=None):
        """
        Run C{job} (a record of L{hlfs.homes.records}) for C{key} in a
        check process, unless the engine is exhausted or its queue full.

        @param path: what the job works on, for logs and the console.
        @param finish: called in the reactor thread with the L{Flight}
            and the job's answer record (L{None} if its process ended
            before answering); what it returns is every waiter's answer.
            It is not called for a job dropped at its deadline before it
            started, nor after L{stop}.
        @param home: whose home the job works in: one job per home runs at
            a time.
        @return: the new L{Flight}, or L{None} when refused.
        @raise ValueError: if a job for C{key} is already in flight.
        """
        if self.flights.find(key) is not None:
            raise ValueError(f"a job for {key!r} is already in flight")
        idle = self._idle
        home_busy = home is not None and home in self._homes
        if not idle or home_busy:
            if not idle and self.exhausted():
                self.exhausted_count += 1
                self._log_exhausted(path)
                return None
            if self._waiting >= self.queue_limit:
                self.queue_full_count += 1
                return None
        flight = Flight(key, path, self.clock.seconds(), finish, job, home)
        self.flights.add(flight)
        if home_busy:
            flight.state = "blocked"
            self._blocked.setdefault(home, collections.deque()).append(flight)
        elif idle:
            self._start(flight, idle.pop())
            return flight
        else:
            flight.state = "queued"
            self._queue.append(flight)
        self._waiting += 1
        self.flights.expire(flight, self.stuck_after, self._expired)
        return flight

    def wait(self, flight, timeout, fallback):
        """
        Return a Deferred that fires with C{flight}'s answer, or with
        C{fallback(flight)} if that takes longer than C{timeout} seconds.
        """
        return self.flights.wait(flight, timeout, fallback)

    def _start(self, flight, process):
        flight.state = "running"
        flight.process = process
        flight.started = self._last_start = self.clock.seconds()
        process.flight = flight
        if flight.home is not None:
            self._homes[flight.home] = flight
        self.flights.cancel_expiry(flight)
        self.started_count += 1
        process.send(encode(flight.job))

    def _expired(self, flight):
        # Its deadline came before a process was free: dropped.
        if flight.state == "blocked":
            self._blocked[flight.home].remove(flight)
            if not self._blocked[flight.home]:
                del self._blocked[flight.home]
        elif flight.state != "queued":
            return
        self._waiting -= 1
        flight.state = "dropped"
        self.expired_count += 1
        self.flights.drop(flight)

    def _done(self, flight, answer):
        flight.state = "done"
        flight.process = None
        home = flight.home
        if home is not None and self._homes.get(home) is flight:
            del self._homes[home]
            blocked = self._blocked.get(home)
            if blocked:
                # Its turn now, ahead of the queue: it has waited longest.
                waiting = blocked.popleft()
                if not blocked:
                    del self._blocked[home]
                waiting.state = "queued"
                self._queue.appendleft(waiting)
        self.flights.finish(flight, answer)

    def _next(self, process):
        queue = self._queue
        while queue:
            flight = queue.popleft()
            if flight.state == "queued":
                self._waiting -= 1
                self._start(flight, process)
                return
        self._idle.append(process)

    # -- the processes' news (from CheckProcesses)

    def ready(self, process):
        """
        C{process} has started: idle, or on the next job queued.
        """
        if self._ready is not None and len(self.processes.alive) >= self.size:
            ready, self._ready = self._ready, None
            # Out of this process's connection: what starts then is not
            # logged as the process's doing.
            self.reactor.callLater(0, ready.callback, self)
        self._next(process)

    def answered(self, process, answer):
        """
        C{process} answered the job it was on.
        """
        flight, process.flight = process.flight, None
        if flight is None:
            log.error("home-check process {pid} answered with no job: ending it", pid=process.pid)
            process.kill()
            return
        if type(answer) is not flight.job.answer:
            log.error("home-check process {pid} answered a {kind} record with a {other} record: "
                      "{answer}", pid=process.pid, kind=flight.job.kind, other=answer.kind,
                      answer=answer)
            answer = None
        self._done(flight, answer)
        self._next(process)

    def ended(self, process):
        """
        C{process} ended: its job, if any, is answered L{None}.
        """
        if process in self._idle:
            self._idle.remove(process)
        flight, process.flight = process.flight, None
        log.error("home-check process {pid} ended{job}", pid=process.pid,
                  job="" if flight is None else
                  f" in the middle of a job for {os.fsdecode(flight.path)}; that job fails")
        if flight is not None:
            self.lost_count += 1
            self._done(flight, None)

    # -- what the operator sees

    def count(self):
        """
        Return how many jobs are in flight (running, or waiting to).
        """
        return self.flights.count()

    def queued(self):
        """
        Return how many jobs wait for a process.
        """
        return self._waiting

    def busy(self):
        """
        Return how many processes are on a job.
        """
        return sum(1 for p in self.processes.alive if p.flight is not None)

    def stuck(self):
        """
        Return how many processes have been on their job for at least
        C{stuck_after} seconds.
        """
        now = self.clock.seconds()
        limit = self.stuck_after
        return sum(1 for p in self.processes.alive
                   if p.flight is not None and now - p.flight.started >= limit)

    def exhausted(self):
        """
        Return whether all C{size} processes are stuck.
        """
        # Then the newest job started is stuck too: were it done, its
        # process would be idle, or on a newer job.  In a storm, where a
        # job starts every fraction of a millisecond, that one clock read
        # decides, not a count of every process on every call.
        if self.clock.seconds() - self._last_start < self.stuck_after:
            return False
        return self.stuck() >= self.size

    def in_flight(self):
        """
        Return a L{hlfs.homes.flights.FlightInfo} for every job in flight.
        """
        return self.flights.info()

    def hung(self):
        """
        Return the L{hlfs.homes.flights.FlightInfo}s of the jobs running
        longer than C{stuck_after}.
        """
        limit = self.stuck_after
        return [f for f in self.in_flight() if f.running is not None and f.running >= limit]

    def _longest(self):
        now = self.clock.seconds()
        return max((now - p.flight.started for p in self.processes.alive
                    if p.flight is not None), default=0.0)

    def _log_exhausted(self, path):
        now = self.clock.seconds()
        last = self._exhausted_logged
        if last is not None and now - last < self.exhausted_log_interval:
            self._exhausted_unlogged += 1
            return
        log.error(
            "home checks exhausted: all {size} home-check processes are stuck (longest for "
            "{longest:.1f} s); answering the alternate spool at once for {path} ({suppressed} "
            "more since the last report)",
            size=self.size, longest=self._longest(), path=os.fsdecode(path),
            suppressed=self._exhausted_unlogged,
        )
        self._exhausted_logged = now
        self._exhausted_unlogged = 0
