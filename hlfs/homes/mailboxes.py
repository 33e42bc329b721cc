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
  - The write data waiting for a process is bounded, for each user's
    mailbox and in all (L{MailboxFiles.max_pending_per_user},
    L{MailboxFiles.max_pending}): past it a write is told at once to come
    back, and nothing more is held.  Its caller answered, a job still
    waiting for a process is dropped at the same deadline, and one
    running (at most one per process) holds its data until it ends.
"""

import errno as errnos

from twisted.logger import Logger
from zope.interface import implementer

from hlfs.core.locks import TRYLATER, LockFailed
from hlfs.core.mailfiles import MAX_GAP, FileStat, IMailboxFiles
from hlfs.homes.records import MailboxFile
from hlfs.homes.userjobs import UserJobs

log = Logger(namespace="hlfs.mailboxes")


@implementer(IMailboxFiles)
class MailboxFiles(UserJobs):
    """
    Users' real mailboxes, for root's view (L{hlfs.core.mailfiles}).

    @ivar max_pending: the most bytes of write data held for jobs whose
        callers were not answered yet.
    @ivar max_pending_per_user: the same for the writes to one user's
        mailbox: a hung home holds no more, and never another user's
        writes.
    @ivar pending: those bytes now; C{pending_by_user}, by user's name.
    @ivar counts: jobs done, by operation; C{"busy"}: writes refused at
        once for L{max_pending}.
    @ivar written: bytes written.
    """

    kind = "mailbox"

    def __init__(self, resolver, max_pending=1 << 22, max_pending_per_user=1 << 18):
        UserJobs.__init__(self, resolver, log)
        self.max_pending = max_pending
        self.max_pending_per_user = max_pending_per_user
        self.pending = 0
        self.pending_by_user = {}
        self.written = 0
        self.counts = dict.fromkeys(_VALUES, 0)
        self.counts["busy"] = 0

    def stat(self, name, path):
        return self._run(name, "stat", path)

    def create(self, name, path, mode):
        return self._run(name, "create", path, mode=mode)

    def read(self, name, path, offset, count):
        return self._run(name, "read", path, offset=offset, count=count)

    def write(self, name, path, offset, data):
        held = len(data)
        mine = self.pending_by_user.get(name, 0)
        if mine + held > self.max_pending_per_user or self.pending + held > self.max_pending:
            self.counts["busy"] += 1
            raise LockFailed(errnos.EAGAIN, TRYLATER)
        d = self._run(name, "write", path, offset=offset, data=data)
        self.pending += held
        self.pending_by_user[name] = mine + held

        def answered(result):
            self.pending -= held
            left = self.pending_by_user[name] - held
            if left:
                self.pending_by_user[name] = left
            else:
                del self.pending_by_user[name]
            return result

        return d.addBoth(answered)

    def truncate(self, name, path, size):
        return self._run(name, "truncate", path, size=size)

    def sync(self, name, path):
        return self._run(name, "sync", path)

    def _run(self, name, op, path, offset=0, count=0, mode=0, size=0, data=b""):
        return self._submit(name, path, lambda identity: MailboxFile(
            **identity, op=op, path=path, alt_dir=self.resolver.rules.alt_dir, offset=offset,
            count=count, mode=mode, size=size, data=data, gap=MAX_GAP))

    def _succeeded(self, flight, done):
        job = flight.job
        self.counts[job.op] += 1
        if job.op == "write":
            self.written += len(job.data)
        return _VALUES[job.op](done)


def _stat(done):
    return FileStat(*done.stat)


#: What each operation answers, from its L{MailboxDone}.
_VALUES = {
    "stat": lambda done: None if done.stat is None else _stat(done),
    "create": _stat,
    "read": lambda done: (_stat(done), done.data),
    "write": _stat,
    "truncate": _stat,
    "sync": _stat,
}
