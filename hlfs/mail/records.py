"""
The remailer's records of names and since when, kept in its private
state directory (L{hlfs.mail.statedir}): the names the name service said
do not exist (L{hlfs.mail.missing}) and the mailboxes whose lock was
found held (L{HeldLocks}).

A record is one file, a line C{NAME SECONDS} per name, replaced
atomically (temporary file, C{fsync}, C{rename}).  Every way a record can
be wrong errs towards the safe side, which each user of it states: a
lost, unreadable or garbled record, or a line for a time still to come,
only starts a name's time over.
"""

import math
import os

from hlfs.mail.maillog import show
from hlfs.mail.statedir import fsync_dir, read_small, write_atomically

#: More than any spool's worth of names; a bigger file is garbage.
MAX_BYTES = 1 << 22


def parse_record(data):
    """
    Return C{({name: seconds}, bad)}: the well-formed lines of a record
    and the number of lines that were not.
    """
    since, bad = {}, 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        fields = line.split()
        try:
            seconds = float(fields[1]) if len(fields) == 2 else math.nan
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0 or b"/" in fields[0]:
            bad += 1
            continue
        since[fields[0]] = min(seconds, since.get(fields[0], seconds))
    return since, bad


class TimeRecord:
    """
    One record file in the directory open as C{dir_fd}.

    @ivar since: C{{name: seconds}}, as loaded and changed.
    """

    def __init__(self, dir_fd, name, where, log, starts_over):
        """
        @param where: the record's path, for log lines.
        @param starts_over: what a bad record means, for log lines: a
            pair, for the whole record and for some of its lines
            ("every unknown user's wait starts over", "those users' wait
            starts over").
        """
        self.dir_fd = dir_fd
        self.name = name
        self.where = show(where)
        self.log = log
        self.starts_over, self.lines_start_over = starts_over
        self.since = {}
        self.changed = False

    def load(self):
        if self.dir_fd is None:
            return
        try:
            data = read_small(self.dir_fd, self.name, MAX_BYTES)
        except FileNotFoundError:
            return
        except OSError as e:
            self.log(f"{self.where}: cannot read: {e.strerror}; {self.starts_over}")
            self.changed = True
            return
        if data is None:
            self.log(f"{self.where}: not a record of ours; {self.starts_over}")
            self.changed = True
            return
        self.since, bad = parse_record(data)
        if bad:
            self.log(f"{self.where}: {bad} unreadable lines ignored; {self.lines_start_over}")
            self.changed = True

    def save(self, keep):
        """
        Write the record, keeping only the names in C{keep}.
        """
        for name in set(self.since) - set(keep):
            del self.since[name]
            self.changed = True
        if not self.changed or self.dir_fd is None:
            return
        data = b"".join(b"%s %.3f\n" % (name, t) for name, t in sorted(self.since.items()))
        try:
            if data:
                write_atomically(self.dir_fd, b"T." + self.name, self.name, data)
            else:
                os.unlink(self.name, dir_fd=self.dir_fd)
                fsync_dir(self.dir_fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log(f"{self.where}: cannot write: {e.strerror}; {self.starts_over} "
                     "at the next run")
        self.changed = False


class HeldLocks:
    """
    When a run of the remailer first found each mailbox's lock held, by
    the remailer's own clock: the record C{locks}.

    A lock's own times say nothing an attacker cannot choose: its mtime
    can be set to any value, its holder's pid can be any live process,
    and a process that keeps touching it keeps its change time fresh.  So
    a lock found held at runs spanning the stale period is broken,
    whatever it says (L{hlfs.mail.dotlock.DotLock}'s C{held_since}).  A
    run that gets the lock, or does not look at the mailbox, forgets it.
    A lost record only gives a lock one more stale period.
    """

    RECORD = b"locks"

    def __init__(self, dir_fd, where, now, log):
        self.now = now
        self._record = TimeRecord(dir_fd, self.RECORD, where, log,
                                  ("held locks are judged afresh",
                                   "those locks are judged afresh"))
        self._looked_at = set()

    def load(self):
        self._record.load()

    def since(self, name):
        """
        When a run first found C{name}'s lock held, or L{None}.
        """
        since = self._record.since.get(name)
        if since is not None and since > self.now():
            return None  # a time still to come: judged afresh
        return since

    def held(self, name, when):
        """
        This run found C{name}'s lock held at C{when}.
        """
        self._looked_at.add(name)
        if self.since(name) is None:
            self._record.since[name] = when
            self._record.changed = True

    def free(self, name):
        """
        This run took C{name}'s lock.
        """
        self._looked_at.add(name)
        if self._record.since.pop(name, None) is not None:
            self._record.changed = True

    def save(self):
        self._record.save(self._looked_at)
