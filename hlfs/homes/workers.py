"""
L{WorkerThreads}: the threads under L{hlfs.homes.pool.ProbePool}, a
bounded set of daemon threads taking jobs from one queue.

Twisted's C{ThreadPool} hands every job to a thread through its own
coordinator and a C{queue.Queue}: a condition variable notified, and a
thread woken, per job, even when every thread is busy and would have
taken the next job on its own.  In a probe storm those wake-ups were a
fifth of the reactor's time.  Here a thread that finishes a job takes
the next one from the queue itself; the reactor wakes a thread only when
one is idle, and starts one (up to the bound) only when none is.

And it wakes one only when fewer than C{awake} threads are in a job
that started less than C{slow_after} seconds ago: on a fast disk one
thread keeps up with any storm (the probe pool's choice; the lookup
pool's is two), and every further thread running Python
code is one more contender for the GIL, which the reactor thread then
waits for at each of its system calls (a probe makes a dozen, each
letting go of the GIL).  A job that takes longer (a slow or hung home)
stops counting, so the other jobs get another thread: L{recheck}, which
the caller runs after C{slow_after} while jobs wait.
"""

import collections
import sys
import threading
import time


class WorkerThreads:
    """
    At most C{size} daemon threads running jobs from one queue, in the
    order they were submitted.

    A thread stuck in a job (a hung filesystem) holds its place: the
    bound counts it.  L{stop} does not wait for such a thread.

    @ivar threads: the threads started, stuck ones included.
    """

    def __init__(self, size, name="worker", awake=2, slow_after=0.01):
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size = size
        self.name = name
        self.awake = max(1, min(awake, size))
        self.slow_after = slow_after
        self.threads = []
        self._slots = []  # per thread, [when its job started], [None] between jobs
        self._waking = 0  # threads woken or started that have not taken a job yet
        self._jobs = collections.deque()
        self._idle = []  # one held Lock per idle thread: released to wake it
        self._lock = threading.Lock()
        self._stopping = False

    def start(self):
        """
        Accept jobs (threads start as jobs need them).
        """
        with self._lock:
            self._stopping = False
            alive = [(t, slot) for t, slot in zip(self.threads, self._slots) if t.is_alive()]
            self.threads = [t for t, _ in alive]
            self._slots = [slot for _, slot in alive]

    def pending(self):
        """
        Return how many jobs wait for a thread.
        """
        return len(self._jobs)

    def submit(self, job, *args):
        """
        Run C{job(*args)} in a thread: the first busy one to finish its
        job, or an idle or new one (up to the bound) while fewer than
        C{awake} threads are in a recent job.  C{job} must not raise (a
        raising job is logged by C{threading} and its thread goes on).
        After L{stop}, jobs are dropped.

        @return: whether the job waits with no thread on its way: then
            call L{recheck} after C{slow_after} seconds.
        """
        with self._lock:
            if self._stopping:
                return False
            self._jobs.append((job, args))
            return self._wake_locked()

    def recheck(self):
        """
        Wake another thread if jobs wait and the busy ones have been in
        their jobs for longer than C{slow_after}.

        @return: whether jobs still wait with no thread on its way.
        """
        with self._lock:
            if self._stopping or not self._jobs:
                return False
            return self._wake_locked()

    def _wake_locked(self):
        now = time.monotonic()
        limit = self.slow_after
        coming = self._waking
        for (since,) in self._slots:
            if since is not None and now - since < limit:
                coming += 1
        while coming < self.awake and self._waking < len(self._jobs):
            if self._idle:
                self._idle.pop().release()
            elif len(self.threads) < self.size:
                slot = [None]
                thread = threading.Thread(
                    target=self._work, args=(slot,), name=f"{self.name}-{len(self.threads)}",
                    daemon=True,
                )
                self.threads.append(thread)
                self._slots.append(slot)
                thread.start()
            else:
                break
            self._waking += 1
            coming += 1
        return len(self._jobs) > self._waking

    def _work(self, slot):
        wake = threading.Lock()
        wake.acquire()
        jobs = self._jobs
        lock = self._lock
        woken = True
        while True:
            with lock:
                if woken:
                    self._waking -= 1
                    woken = False
                if self._stopping:
                    slot[0] = None
                    return
                if jobs:
                    job, args = jobs.popleft()
                    slot[0] = time.monotonic()
                else:
                    job = None
                    slot[0] = None
                    self._idle.append(wake)
            if job is None:
                wake.acquire()  # until submit, recheck or stop releases it
                woken = True
                continue
            try:
                job(*args)
            except BaseException:
                # The caller's job reports its own failures; this one did
                # not: say so, keep the thread.
                threading.excepthook(
                    threading.ExceptHookArgs((*sys.exc_info(), threading.current_thread())))
            job = args = None

    def stop(self, timeout=0.5):
        """
        Refuse new jobs, drop the queued ones, end the idle threads and
        wait a little (C{timeout} for the first, then 10 ms each) for the
        busy ones; threads stuck in a job are abandoned (they are daemon
        threads and end with their job).
        """
        with self._lock:
            self._stopping = True
            self._jobs.clear()
            idle, self._idle = self._idle, []
            self._waking += len(idle)
        for wake in idle:
            wake.release()
        for thread in list(self.threads):
            if thread.ident is not None:
                thread.join(timeout)
            timeout = 0.01

