"""
L{SpoolLocks}: the L{hlfs.core.locks.ISpoolLocks} that makes, removes
and looks at users' lock files as the users themselves: each operation
is a job (L{hlfs.homes.records.LockFile}) for the home-check processes,
within the check deadline, never in the reactor thread nor in a thread
of the daemon.  What the job does in the process, and why it is safe, is
L{hlfs.homes.lockfiles}.

A lock job is one of its user's jobs: while that user's home check (or
another lock job) runs, it waits, so a hung home holds one process.  A
lock made after its caller was answered (the deadline passed, the caller
was told to come back) is removed again at once: nobody holds it.  In
the alternate spool, another user's file in the place of NAME's lock is
removed by the check process as root, and logged here.
"""

import os

from twisted.logger import Logger
from zope.interface import implementer

from hlfs.core.locks import ISpoolLocks, LockFailed, LockStat
from hlfs.homes.records import LockFile
from hlfs.homes.userjobs import UserJobs

log = Logger(namespace="hlfs.locks")


@implementer(ISpoolLocks)
class SpoolLocks(UserJobs):
    """
    Lock files in users' spools, for root's view (L{hlfs.core.locks}).

    @ivar resolver: the L{hlfs.homes.resolver.HomeResolver} whose users,
        credentials, engine and deadline are used.
    """

    kind = "lock"
    late_line = "lock file {path} not done within {deadline} s; the caller is told to try again"

    def __init__(self, resolver):
        UserJobs.__init__(self, resolver, log)
        self.made = self.removed = 0

    def stat(self, name, path):
        return self._run(name, "stat", path)

    def create(self, name, path, mode):
        return self._run(name, "create", path, mode)

    def remove(self, name, path):
        return self._run(name, "remove", path)

    def _run(self, name, op, path, mode=0):
        return self._submit(name, path, lambda identity: LockFile(
            **identity, op=op, path=path, mode=mode, alt_dir=self.resolver.rules.alt_dir))

    def _succeeded(self, flight, done):
        job = flight.job
        name = job.name
        if done.squatter is not None:
            log.warn(
                "removed {path}, owned by uid {owner}: another user's file in the place "
                "of {name}'s lock in the alternate spool",
                path=os.fsdecode(job.path), owner=done.squatter, name=os.fsdecode(name),
            )
        if job.op == "create":
            self.made += 1
            if flight.late:
                # Its caller was told to try again: nobody holds this lock.
                log.warn("lock {path} made after its deadline; removing it",
                         path=os.fsdecode(job.path))
                try:
                    self._run(name, "remove", job.path).addErrback(lambda f: None)
                except LockFailed:
                    log.error("cannot remove the late lock {path}", path=os.fsdecode(job.path))
        elif job.op == "remove":
            self.removed += 1
        return None if done.stat is None else LockStat(*done.stat)
