"""
L{UserJobs}: what root's lock files (L{hlfs.homes.locks}) and root's
mailbox files (L{hlfs.homes.mailboxes}) share: a job run as user NAME in
a home-check process, planned without blocking, one of NAME's jobs
(it waits while another job for NAME's home runs), answered within the
check deadline or else "try again" (L{hlfs.core.locks.TRYLATER}), its
failure an L{hlfs.core.locks.LockFailed} with the errno the process met.
"""

import errno as errnos
import itertools
import os

from hlfs.core.locks import TRYLATER, LockFailed


class UserJobs:
    """
    Jobs of one kind for the home-check processes, each run as a user.

    @ivar resolver: the L{hlfs.homes.resolver.HomeResolver} whose users,
        credentials, engine and deadline are used.
    @ivar late: jobs whose caller was told to try again.
    """

    #: The first part of every job's key, and what the log calls a job.
    kind = None
    #: The log line of a job that missed its deadline.
    late_line = "{kind} {path} ({op}) not done within {deadline} s; the caller is told to try again"

    def __init__(self, resolver, log):
        self.resolver = resolver
        self.log = log
        self.late = 0
        self._keys = itertools.count()

    def _submit(self, name, path, make_job):
        """
        Run the job C{make_job(identity fields)} as user C{name}.

        @return: a Deferred firing with what L{_succeeded} makes of its
            answer, or failing with L{LockFailed}.
        @raise LockFailed: for a user nobody knows (ENOENT), or at once
            when the engine takes no job (TRYLATER).
        """
        resolver = self.resolver
        user = resolver.user_named(name)
        if user is None:
            raise LockFailed(errnos.ENOENT)
        home = user.home.rstrip(b"/") or b"/"
        job = make_job(resolver.credentials.plan(user, home)._asdict())
        engine = resolver.engine
        flight = engine.submit((self.kind, name, next(self._keys)), path, job, self._finished,
                               home=user.uid)
        if flight is None:
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        return engine.wait(flight, resolver.deadline, self._too_late).addCallback(_answer)

    def _too_late(self, flight):
        flight.late = True
        self.late += 1
        self.log.warn(self.late_line, kind=self.kind, path=os.fsdecode(flight.path), op=flight.job.op,
                      deadline=self.resolver.deadline)
        return False, None

    def _finished(self, flight, done):
        job = flight.job
        if done is None:
            return False, errnos.EIO
        self.resolver.credentials.finished(job, job.home, done.kept)
        if not done.ok:
            return False, done.errno
        return True, self._succeeded(flight, done)

    def _succeeded(self, flight, done):
        """
        Return the value of a job that succeeded with the answer C{done}.
        """
        raise NotImplementedError


def _answer(result):
    ok, value = result
    if ok:
        return value
    if value is None:
        raise LockFailed(errnos.EAGAIN, TRYLATER)
    raise LockFailed(value)
