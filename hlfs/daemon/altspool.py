"""
The alternate spool counted, and the mount looked at, on a timer: what
the daemon's metrics say about mail waiting and about its mount.

The spool is world-writable: anybody can fill it with names.  A count
reads at most L{MAX_ENTRIES} of them (C{scandir} reads the directory in
small blocks and stops there), one C{lstat} each, in a thread of its own,
never in the reactor; memory does not grow with the spool, and a million
names cost what ten thousand do, the count then saying it is incomplete.
One count runs at a time: a spool that hangs (a dead NFS server) holds
that thread and no other, and the count's time stamp stops moving.

A mailbox is what C{hlfs lostmail} resends: a non-empty regular file
whose name does not start with a dot or end in C{.lock}.  One that a
system account owns (uid under C{--uid-min}, root excepted) is that
account's mailbox for good, not mail waiting: it is counted apart.
"""

import os
import stat
import time
from dataclasses import dataclass

import threading

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

#: Names of the spool one count reads at most.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class SpoolCount:
    """
    @ivar mailboxes: non-empty mailboxes found, but not L{resident}'s.
    @ivar bytes: their sizes, summed.
    @ivar oldest: the modification time of the mailbox changed least
        recently, or L{None} without any.
    @ivar entries: names read.
    @ivar complete: whether every name was read (else the counts are
        lower bounds).
    @ivar at: when the count was made (seconds since the epoch).
    @ivar error: why the spool could not be read, or L{None}.
    @ivar resident: non-empty mailboxes whose owner's mailbox the spool is.
    """

    mailboxes: int = 0
    bytes: int = 0
    oldest: float | None = None
    entries: int = 0
    complete: bool = True
    at: float = 0.0
    error: str | None = None
    resident: int = 0


def is_mailbox_name(name):
    return not name.startswith(".") and not name.endswith(".lock")


def count_spool(path, max_entries=MAX_ENTRIES, now=time.time, resident=None):
    """
    Count the mailboxes in the spool at C{path}, reading at most
    C{max_entries} names.  Blocks: run it in a thread.

    @param resident: whether a mailbox's owner uid is an account whose
        mailbox the spool is (L{SpoolRules.system_account}); such
        mailboxes are counted apart.
    """
    mailboxes = size = entries = residents = 0
    oldest = None
    complete = True
    try:
        with os.scandir(path) as names:
            for entry in names:
                if entries >= max_entries:
                    complete = False
                    break
                entries += 1
                if not is_mailbox_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    continue
                if resident is not None and resident(st.st_uid):
                    residents += 1
                    continue
                mailboxes += 1
                size += st.st_size
                if oldest is None or st.st_mtime < oldest:
                    oldest = st.st_mtime
    except OSError as e:
        return SpoolCount(entries=entries, complete=False, at=now(), error=e.strerror)
    return SpoolCount(mailboxes, size, oldest, entries, complete, now(), resident=residents)


class SpoolWatch(Service):
    """
    Every C{interval} seconds, count the alternate spool in a thread of its
    own and, when given C{mount_present}, look whether the mount is there.

    @ivar last: the last L{SpoolCount}, or L{None} before the first.
    @ivar mount_present: what C{mount_present()} last said, or L{None}.
    """

    log = Logger()

    def __init__(self, reactor, alt_dir, interval, mount_present=None, max_entries=MAX_ENTRIES,
                 resident=None):
        self.reactor = reactor
        self.resident = resident
        self.alt_dir = alt_dir
        self.interval = interval
        self.look_at_mount = mount_present
        self.max_entries = max_entries
        self.last = None
        self.mount_present = None
        self._loop = None
        self._counting = False
        self._said = None

    def startService(self):
        Service.startService(self)
        self._loop = task.LoopingCall(self.look)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self):
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def look(self):
        """
        Count the spool (and look at the mount) in a thread; a Deferred
        fires once done, or L{None} while the last count still runs.
        """
        if self._counting:
            return None
        self._counting = True
        d = defer.Deferred()

        def run():
            try:
                result = self._look()
            except BaseException as e:  # reported through the Deferred
                self.reactor.callFromThread(d.errback, e)
            else:
                self.reactor.callFromThread(d.callback, result)

        # A daemon thread: a count stuck on a hung spool never holds up
        # the daemon's exit.
        threading.Thread(target=run, name="hlfs-spool-count", daemon=True).start()
        d.addCallback(self._looked)
        d.addErrback(lambda f: self.log.failure("counting the alternate spool failed", f))
        d.addBoth(lambda _: setattr(self, "_counting", False))
        return d

    def _look(self):
        present = self.look_at_mount() if self.look_at_mount is not None else None
        return count_spool(self.alt_dir, self.max_entries, resident=self.resident), present

    def _looked(self, result):
        count, present = result
        self.last = count
        if count.error is not None and count.error != self._said:
            self.log.warn("cannot count the alternate spool {path}: {error}",
                          path=self.alt_dir, error=count.error)
        elif not count.complete and count.error is None and self._said != "incomplete":
            self.log.warn(
                "the alternate spool {path} holds more than {n} names: the metrics count the "
                "first {n}", path=self.alt_dir, n=self.max_entries,
            )
        self._said = count.error or (None if count.complete else "incomplete")
        if present is not None:
            if self.mount_present and not present:
                self.log.error("the mount is gone from /proc/mounts: mail goes through the "
                               "fixed link to the alternate spool")
            self.mount_present = present
