"""
The remailer's record of the users the name service said do not exist.

A clean "no such user" is not proof that a user is gone.  sssd, while
its directory is unreachable (offline mode), answers "no such user" for
every user it has not cached, exactly as for a name that never existed:
C{getpwnam_r} returns 0 with no entry and C{errno} 0 in both cases, and
so does libnss_sss's own C{_nss_sss_getpwnam_r} (status
C{NSS_STATUS_NOTFOUND}, C{*errnop} 0).  A partial view of a directory
(a wrong search base, a replica catching up, a size limit) answers the
same way.  So C{hlfs lostmail} resends a mailbox to the postmaster only
once its owner's name has been reported missing at runs spanning
C{unknown-wait} seconds, with no positive answer between them.

The record is one file in the remailer's private working directory,
C{.lostmail/missing}: a line C{NAME SECONDS} per name, the time it was
first reported missing, replaced atomically (temporary file, C{fsync},
C{rename}).  Every way this record can be wrong errs towards keeping
mail: a lost, unreadable or garbled record, or a line for a time still
to come, only starts a user's wait over.
"""

import math
import os
import stat

RECORD = b"missing"
_TEMPORARY = b"T.missing"
#: More than any spool's worth of names; a bigger file is garbage.
_MAX_BYTES = 1 << 22


def fsync_dir(path):
    """
    Make a C{rename} in C{path} durable; best effort.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(directory, temporary, final, data):
    """
    Replace C{directory/final} by C{data}: a reader, or the next run
    after a crash, sees the old contents or the new, never a mixture.
    """
    tmp = os.path.join(directory, temporary)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(directory, final))
    fsync_dir(directory)


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


class MissingUsers:
    """
    The names reported missing, and since when, for one run.

    @ivar wait: seconds a name must stay missing before its mail may go
        to the postmaster.
    """

    def __init__(self, work_dir, wait, now, log):
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, RECORD)
        self.wait = wait
        self.now = now
        self.log = log
        self._since = {}
        self._looked_at = set()
        self._changed = False

    def load(self):
        """
        Read the record left by earlier runs, if any.
        """
        shown = os.fsdecode(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as e:
            self.log(f"{shown}: cannot read: {e.strerror}; every unknown user's wait starts over")
            self._changed = True
            return
        try:
            data = None
            if stat.S_ISREG(os.fstat(fd).st_mode):
                data = os.read(fd, _MAX_BYTES + 1)
        except OSError as e:
            self.log(f"{shown}: cannot read: {e.strerror}; every unknown user's wait starts over")
            self._changed = True
            return
        finally:
            os.close(fd)
        if data is None or len(data) > _MAX_BYTES:
            self.log(f"{shown}: not a record of ours; every unknown user's wait starts over")
            self._changed = True
            return
        self._since, bad = parse_record(data)
        if bad:
            self.log(f"{shown}: {bad} unreadable lines ignored; those users' wait starts over")
            self._changed = True

    def found(self, name):
        """
        The name service knows C{name}: forget it was ever missing.
        """
        self._looked_at.add(name)
        if self._since.pop(name, None) is not None:
            self._changed = True

    def unanswered(self, name):
        """
        The name service could not be asked about C{name}: its record,
        if any, stands as it is.
        """
        self._looked_at.add(name)

    def missing(self, name):
        """
        The name service says there is no C{name}: start its wait if it
        has none.

        @return: C{(since, until)}, when it was first reported missing and
            when its mail may go to the postmaster.
        """
        self._looked_at.add(name)
        now = self.now()
        since = self._since.get(name)
        if since is None or since > now:
            # A time still to come (a clock set back, or garbage) would
            # make the wait longer than asked, never shorter: start it now.
            since = self._since[name] = now
            self._changed = True
        return since, since + self.wait

    def save(self):
        """
        Write the record: the names looked at in this run and still
        missing.  A name whose mail is gone is dropped, so that new mail
        for it waits afresh.
        """
        for name in set(self._since) - self._looked_at:
            del self._since[name]
            self._changed = True
        if not self._changed:
            return
        data = b"".join(b"%s %.3f\n" % (name, t) for name, t in sorted(self._since.items()))
        try:
            if data:
                write_atomically(self.work_dir, _TEMPORARY, RECORD, data)
            else:
                os.unlink(self.path)
                fsync_dir(self.work_dir)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log(f"{os.fsdecode(self.path)}: cannot write: {e.strerror}; "
                     "unknown users' waits start over at the next run")
        self._changed = False
