"""
L{CheckerProcesses}: the processes that run home checks for
L{hlfs.homes.pool.ProbePool} (see L{hlfs.homes.checker} for why processes
and not threads).

Jobs go to one process, as many as are waiting in one write; checks
that wait rather than compute (NFS) spread over more.  A process answers
each job as soon as it is done, in order.  When the job a process is on
has taken longer than C{slow_after} (a slow or hung home), by the
process's own word, the jobs queued behind it go to another process: a
hung home holds one process, never the users behind it.  Such a process
still runs those jobs when it comes back; whichever answer comes first
is used.  One process is kept idle beyond those on a job (the spare,
started ahead, up to C{size} in all), so that a hung home finds one
ready; a job that no started process can take now goes to the caller's
fallback (the probe pool's threads), never waits for a process to start.
"""

import collections
import errno as errnos
import itertools
import os
import sys
import time

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from hlfs.homes.checker import PROGRESS_SIZE, FrameError, Progress, decode, encode
from hlfs.homes.probe import ProbeResult

log = Logger(namespace="hlfs.probe")

#: Jobs in one frame: a storm over a large table stays far below
#: L{hlfs.homes.checker.MAX_FRAME}.
FRAME_JOBS = 256

#: The longest (seconds) the jobs one process owes should take, at the
#: recent pace of checks, before the next job goes to another process.
DRAIN = 0.004


class _Job:
    __slots__ = ("job_id", "data", "answer", "owner", "spool", "lost", "sent", "sent_at",
                 "fallback")

    def __init__(self, job_id, data, answer, spool, sent, fallback):
        self.job_id = job_id
        self.data = data
        self.answer = answer  # called once with (ProbeResult, kept)
        self.sent = sent  # called with the time it is written to a process
        self.owner = None
        self.spool = spool
        self.lost = 0  # times its process ended before answering
        self.sent_at = None  # when it was written to its process (the clock's time)
        self.fallback = fallback  # runs it elsewhere when no process can now


class CheckerProcess(ProcessProtocol):
    """
    One home-check process, as its L{CheckerProcesses} sees it.

    @ivar owed: ids of the jobs it was given and has not answered, in the
        order it runs them.
    """

    def __init__(self, owner, number):
        self.owner = owner
        self.number = number
        self.owed = collections.OrderedDict()
        self.buffer = b""
        self.ended = False
        self.ready = False  # it said so: its first (empty) frame came
        self.progress = None  # its hlfs.homes.checker.Progress

    def in_job_for(self, now_ns):
        """
        Return the seconds it has been on its current job, 0 between jobs.
        """
        since = self.progress.since() if self.progress is not None else 0
        return (now_ns - since) / 1e9 if since else 0.0

    def childDataReceived(self, fd, data):
        try:
            frames, self.buffer = decode(self.buffer + data)
        except FrameError as e:
            self.buffer = b""
            log.error("home-check process {number}: {error}; ending it",
                      number=self.number, error=str(e))
            self.transport.signalProcess("KILL")
            return
        self.owner._answered(self, frames)

    def childConnectionLost(self, fd):
        if fd == 1:
            self.owner._ended(self)

    def processEnded(self, reason):
        self.owner._ended(self)


def _queued_behind(child):
    # Whether jobs of its own wait behind the one it is on.
    owned = 0
    for job in child.owed.values():
        if job.owner is child:
            owned += 1
            if owned > 1:
                return True
    return False


class CheckerProcesses:
    """
    At most C{size} home-check processes, started as jobs need them.

    @ivar started: how many processes were started in all.
    """

    def __init__(self, size, reactor, clock=None, slow_after=0.01, argv=None, spare=1):
        """
        @param slow_after: seconds after which a job counts as slow, and
            the jobs behind it go to another process.
        @param argv: the command of a process (tests); by default this
            Python running L{hlfs.homes.checker}.
        @param spare: processes kept started beyond those busy, so that a
            hung home finds one ready.
        """
        if size < 1:
            raise ValueError("home checks need at least one process")
        self.size = size
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.slow_after = slow_after
        self.spare = spare
        self.argv = argv or [sys.executable, "-m", "hlfs.homes.checker"]
        self.started = 0
        self.moved = 0  # jobs given to another process, behind a slow one
        self.pace = 0.0001  # seconds a check took lately (moving average)
        self.pace_cpu = 0.0001  # and of CPU
        self._children = []
        self._queue = collections.deque()  # _Jobs waiting for a process
        self._jobs = {}  # id -> _Job, until answered
        self._ids = itertools.count()
        self._flush_call = None
        self._recheck_call = None
        self._numbers = itertools.count()
        self._running = False

    # -- life cycle

    def start(self):
        """
        Start the spare processes.
        """
        self._running = True
        self._keep_spare()

    def stop(self):
        """
        End every process: idle ones at the end of their input, busy ones
        (a check stuck in a dead filesystem) with SIGKILL.  Jobs waiting
        are dropped.
        """
        self._running = False
        log.info("home checks: {started} processes started, {moved} jobs moved",
                 started=self.started, moved=self.moved)
        for call in (self._flush_call, self._recheck_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._recheck_call = None
        self._queue.clear()
        self._jobs.clear()
        for child in list(self._children):
            child.ended = True
            try:
                child.transport.closeStdin()
                if child.owed:
                    child.transport.signalProcess("KILL")
            except Exception:  # already gone
                pass
        self._children = []

    # -- what the pool sees

    def busy(self):
        """
        Return how many processes are on a job (in it, by their own word).
        """
        return sum(1 for c in self._children if c.owed and c.progress.since())

    def stuck_count(self, limit):
        """
        Return how many processes are on a job that was given to them
        C{limit} seconds ago or more (the clock's time).
        """
        return sum(1 for c in self._children if self._on_job_for(c) >= limit)

    def longest(self):
        """
        Return the seconds since the oldest job a process is on was given
        to it.
        """
        return max((self._on_job_for(c) for c in self._children), default=0.0)

    def _on_job_for(self, child):
        # The job a process is on is the first it owes; 0 between jobs.
        if not child.owed or not child.progress.since():
            return 0.0
        head = next(iter(child.owed.values()))
        return self.clock.seconds() - head.sent_at

    def processes(self):
        """
        Return how many processes are running.
        """
        return len(self._children)

    # -- jobs

    def can_take(self):
        """
        Return whether a started process could take a job now: one idle,
        or on a check that is not slow.
        """
        now_ns = time.monotonic_ns()
        for child in self._children:
            if child.ready and not child.ended and (
                    not child.owed or child.in_job_for(now_ns) < self.slow_after):
                return True
        return False

    def warm(self):
        """
        Start a spare process if none is idle or starting.
        """
        self._keep_spare()

    def submit(self, data, spool, answer, sent=None, fallback=None):
        """
        Run job C{data} (a L{hlfs.homes.probe.HomeProbe.job}) in a
        process; C{answer((result, kept))} is called in the reactor thread
        with what L{hlfs.homes.probe.HomeProbe.run_job} returned.
        C{answer} is not called after L{stop}.  C{sent}, if given, is
        called with the time the job is written to a process (again if it
        moves to another one).  C{fallback}, if given, is called instead
        when no started process can take the job (all slow, or still
        starting: a start takes a tenth of a second here, seconds on a
        slow machine); then C{answer} may still come, from a slow process
        the job was behind, and the caller takes whichever comes first.
        """
        if not self._running:
            return
        job = _Job(next(self._ids), data, answer, spool, sent, fallback)
        self._jobs[job.job_id] = job
        self._queue.append(job)
        self._flush_soon()

    def _flush_soon(self):
        # At the end of this reactor turn: its other jobs go in the same
        # write.
        if self._queue and self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self):
        self._flush_call = None
        if not self._queue:
            return
        now = self.clock.seconds()
        given = {}
        queue = self._queue
        while queue:
            child = self._quick_child()
            if child is None:
                break
            job = queue.popleft()
            job.owner = child
            child.owed[job.job_id] = job
            given.setdefault(child, []).append(job)
        if queue:
            self._elsewhere()
        for child, jobs in given.items():
            frames = []
            for at in range(0, len(jobs), FRAME_JOBS):
                frame = []
                for job in jobs[at:at + FRAME_JOBS]:
                    frame.append((job.job_id, *job.data))
                    job.sent_at = now
                    if job.sent is not None:
                        job.sent(now)
                frames.append(encode(frame))
            child.transport.writeToChild(0, b"".join(frames))
        self._schedule_recheck()
        self._keep_spare()

    def _quick_child(self):
        # The started process for the next job: the one on a quick job
        # that owes the fewest.  Checks that wait (NFS, a slow disk)
        # spread over more processes: past DRAIN of work owed at their
        # recent pace, the next goes to an idle one (the spare; a new
        # spare starts).  Checks that only want a CPU stay in one process:
        # on two CPUs, a second one took turns with the reactor, for a
        # higher p99 and fewer answers a second.  None: no started process
        # can take it now.
        best = idle = None
        now_ns = time.monotonic_ns()
        for child in self._children:
            if child.ended or not child.ready:
                continue
            if not child.owed:
                idle = idle or child
            elif child.in_job_for(now_ns) < self.slow_after and (
                    best is None or len(child.owed) < len(best.owed)):
                best = child
        if best is not None and (idle is None or (len(best.owed) + 1) * self.pace <= DRAIN
                                 or self.pace < 2 * self.pace_cpu):
            return best
        return idle

    def _elsewhere(self):
        # The jobs no started process can take now: their fallback (the
        # pool's threads), or, without one, a wait for a process.
        queue, self._queue = self._queue, collections.deque()
        for job in queue:
            if job.fallback is not None:
                job.owner = None
                if job.sent_at is None:
                    del self._jobs[job.job_id]  # no process will answer it
                job.fallback()
            else:
                self._queue.append(job)
        self._schedule_recheck()

    def _keep_spare(self):
        idle = sum(1 for c in self._children if not c.owed and not c.ended)
        try:
            while idle < self.spare and len(self._children) < self.size:
                self._spawn()
                idle += 1
        except OSError:
            # A spare is for later: meanwhile checks run in the pool's
            # threads, which meet the same errno and say so.
            pass

    def _spawn(self):
        child = CheckerProcess(self, next(self._numbers))
        # The mapping keeps a descriptor of its own: three a process in all,
        # with the two pipes.
        fd = os.memfd_create("hlfs-check-progress", os.MFD_CLOEXEC)  # OSError: the caller's
        try:
            os.ftruncate(fd, PROGRESS_SIZE)
            child.progress = Progress(fd)
            self.reactor.spawnProcess(
                child, self.argv[0], [*self.argv, "--progress", "3"], env=os.environ.copy(),
                childFDs={0: "w", 1: "r", 2: 2, 3: fd})
        finally:
            os.close(fd)
        self.started += 1
        self._children.append(child)
        return child

    def _schedule_recheck(self):
        # Only while jobs wait or queue behind one: a hung home alone,
        # with nothing behind it, wakes the reactor for nothing.
        if self._recheck_call is None and self._running and (
                self._queue or any(_queued_behind(c) for c in self._children)):
            # Real time, as the processes' own stamps are.
            self._recheck_call = self.reactor.callLater(self.slow_after, self._recheck)

    def _recheck(self):
        # Jobs behind a slow one go to another process.  Slow is what the
        # process itself says: a check answered but not read yet, in a busy
        # daemon, is not slow.
        self._recheck_call = None
        now = time.monotonic_ns()
        moved = []
        for child in self._children:
            if child.owed and child.in_job_for(now) >= self.slow_after:
                behind = list(child.owed.values())[1:]
                moved.extend(job for job in behind if job.owner is child)
        if moved:
            self.moved += len(moved)
            for job in moved:
                job.owner = None
            self._queue.extendleft(reversed(moved))
        if self._queue:
            self._flush()
        else:
            self._schedule_recheck()

    def _answered(self, child, frames):
        child.ready = True  # its first frame, empty, says so
        jobs = self._jobs
        owed = child.owed
        for answers in frames:
            for job_id, ok, errno, path, reason, kept, took, cpu in answers:
                if owed.pop(job_id, None) is None:
                    continue  # not this process's job: a confused process
                self.pace += (took / 1e9 - self.pace) * 0.05
                self.pace_cpu += (cpu / 1e9 - self.pace_cpu) * 0.05
                job = jobs.pop(job_id, None)
                if job is not None:
                    job.answer((ProbeResult(ok, errno, path, reason), kept))
        self._flush_soon()

    def _ended(self, child):
        if child.ended:
            return
        child.ended = True
        if child in self._children:
            self._children.remove(child)
        if not self._running:
            return
        owed = [job for job in child.owed.values() if job.owner is child]
        for job in child.owed.values():
            if job.owner is None:  # gone to the fallback: no answer to wait for
                self._jobs.pop(job.job_id, None)
        child.owed.clear()
        log.error("home-check process {number} ended with {count} checks unanswered",
                  number=child.number, count=len(owed))
        retry = []
        for job in owed:
            job.lost += 1
            if job.lost > 1:
                self._jobs.pop(job.job_id, None)
                job.answer((ProbeResult(False, errnos.EIO, job.spool,
                                        "the home-check process ended twice"), None))
            else:
                job.owner = None
                retry.append(job)
        self._queue.extendleft(reversed(retry))
        self._flush_soon()
