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
"""

import collections
import sys
import threading


class WorkerThreads:
    """
    At most C{size} daemon threads running jobs from one queue, in the
    order they were submitted.

    A thread stuck in a job (a hung filesystem) holds its place: the
    bound counts it.  L{stop} does not wait for such a thread.

    @ivar threads: the threads started, stuck ones included.
    """

    def __init__(self, size, name="worker"):
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size = size
        self.name = name
        self.threads = []
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
            self.threads = [t for t in self.threads if t.is_alive()]

    def pending(self):
        """
        Return how many jobs wait for a thread.
        """
        return len(self._jobs)

    def submit(self, job, *args):
        """
        Run C{job(*args)} in a thread: an idle one, a new one if the
        bound allows, else the first to finish its job.  C{job} must not
        raise (a raising job is logged by C{threading} and its thread
        goes on).  After L{stop}, jobs are dropped.
        """
        wake = spawn = None
        with self._lock:
            if self._stopping:
                return
            self._jobs.append((job, args))
            if self._idle:
                wake = self._idle.pop()
            elif len(self.threads) < self.size:
                spawn = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self.threads)}", daemon=True,
                )
                self.threads.append(spawn)
        if wake is not None:
            wake.release()
        elif spawn is not None:
            spawn.start()

    def _work(self):
        wake = threading.Lock()
        wake.acquire()
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                if self._stopping:
                    return
                if jobs:
                    job, args = jobs.popleft()
                else:
                    job = None
                    self._idle.append(wake)
            if job is None:
                wake.acquire()  # until submit or stop releases it
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
        for wake in idle:
            wake.release()
        for thread in list(self.threads):
            if thread.ident is not None:
                thread.join(timeout)
            timeout = 0.01

