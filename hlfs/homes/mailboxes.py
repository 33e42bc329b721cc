"""
L{MailboxFiles}: the L{hlfs.core.mailfiles.IMailboxFiles} that serves
root's view of users' real mailboxes as the users themselves: each call
is a job (L{hlfs.homes.records.MailboxFile}) for the home-check
processes, within the check deadline, never in the reactor thread nor
in a thread of the daemon.  What the job does in the process, and why
it is safe, is L{hlfs.homes.mailboxio}.

  - A mailbox job is one of its user's jobs: it waits while that user's
    home check, lock job or another mailbox job runs.  So the writes to
    one mailbox are one stream, in the order they came, and a hung home
    holds one process and its own user's calls, nobody else's.
  - Past the deadline the caller is told to come back (NFSv3 JUKEBOX):
    the job may still finish; a write done then is done again, at the
    same offset, when the client sends it again.
  - The write data waiting for a process is bounded
    (L{MailboxFiles.max_pending}): past it a write is told at once to
    come back, and nothing more is held.
"""

import errno as errnos
import itertools
import os

from twisted.logger import Logger
from zope.interface import implementer

from hlfs.core.locks import TRYLATER, LockFailed
from hlfs.core.mailfiles import MAX_GAP, FileStat, IMailboxFiles
from hlfs.homes.records import MailboxFile

log = Logger(namespace="hlfs.mailboxes")


@implementer(IMailboxFiles)
class MailboxFiles:
    """
    Users' real mailboxes, for root's view (L{hlfs.core.mailfiles}).

    @ivar resolver: the L{hlfs.homes.resolver.HomeResolver} whose users,
        credentials, engine and deadline are used.
    @ivar max_pending: the most bytes of write data held for jobs not
        answered yet.
    @ivar pending: those bytes now.
    @ivar counts: jobs answered, by operation; C{"late"}: jobs whose
        caller was told to come back; C{"busy"}: writes refused at once
        for L{max_pending}.
    @ivar written: bytes written.
    """

    def __init__(self, resolver, max_pending=1 << 20):
        self.resolver = resolver
        self.max_pending = max_pending
        self.pending = 0
        self.written = 0
        self.counts = dict.fromkeys(
            ("stat", "create", "read", "write", "truncate", "sync", "late", "busy"), 0)
        self._keys = itertools.count()

    def stat(self, name, path):
        return self._run(name, "stat", path, lambda done: None if done.stat is None else _stat(done))

    def create(self, name, path, mode):
        return self._run(name, "create", path, _stat, mode=mode)

    def read(self, name, path, offset, count):
        return self._run(name, "read", path, lambda done: (_stat(done), done.data),
                         offset=offset, count=count)

    def write(self, name, path, offset, data):
        if self.pending + len(data) > self.max_pending:
            self.counts["busy"] += 1
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        return self._run(name, "write", path, _stat, offset=offset, data=data)

    def truncate(self, name, path, size):
        return self._run(name, "truncate", path, _stat, size=size)

    def sync(self, name, path):
        return self._run(name, "sync", path, _stat)

    def _run(self, name, op, path, value, offset=0, count=0, mode=0, size=0, data=b""):
        resolver = self.resolver
        user = resolver.user_named(name)
        if user is None:
            raise LockFailed(errnos.ENOENT)
        home = user.home.rstrip(b"/") or b"/"
        identity = resolver.credentials.plan(user, home)
        job = MailboxFile(**identity._asdict(), op=op, path=path, alt_dir=resolver.rules.alt_dir,
                          offset=offset, count=count, mode=mode, size=size, data=data, gap=MAX_GAP)

        def finished(flight, done):
            return self._finished(flight, done, value)

        engine = resolver.engine
        flight = engine.submit(("mailbox", name, next(self._keys)), path, job, finished,
                               home=user.uid)
        if flight is None:
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        held = len(data)
        self.pending += held
        d = engine.wait(flight, resolver.deadline, self._too_late)

        def answered(result):
            self.pending -= held
            return _answer(result)

        return d.addCallback(answered)

    def _too_late(self, flight):
        flight.late = True
        self.counts["late"] += 1
        log.warn(
            "mailbox {path} ({op}) not done within {deadline} s; the caller is told to try again",
            path=os.fsdecode(flight.path), op=flight.job.op, deadline=self.resolver.deadline,
        )
        return False, None

    def _finished(self, flight, done, value):
        job = flight.job
        if done is None:
            return False, errnos.EIO
        self.resolver.credentials.finished(job, job.home, done.kept)
        if not done.ok:
            return False, done.errno
        self.counts[job.op] += 1
        if job.op == "write":
            self.written += len(job.data)
        return True, value(done)


def _stat(done):
    return FileStat(*done.stat)


def _answer(result):
    ok, value = result
    if ok:
        return value
    if value is None:
        raise LockFailed(errnos.EAGAIN, TRYLATER)
    raise LockFailed(value)
