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

The record is one file in the remailer's state directory (per
alternate spool, L{hlfs.mail.statedir}), C{missing}: a line C{NAME
SECONDS} per name, the time it was first reported missing
(L{hlfs.mail.records}).  Every way this record can be wrong errs towards
keeping mail: a lost, unreadable or garbled record, or a line for a
time still to come, only starts a user's wait over.
"""

from hlfs.mail.records import TimeRecord, parse_record

RECORD = b"missing"


class MissingUsers:
    """
    The names reported missing, and since when, for one run.

    @ivar wait: seconds a name must stay missing before its mail may go
        to the postmaster.
    """

    def __init__(self, dir_fd, where, wait, now, log):
        """
        @param dir_fd: the state directory's descriptor, L{None} when
            there is none yet (a dry run): nothing is read or written.
        @param where: the record's path, for log lines.
        """
        self.wait = wait
        self.now = now
        self.log = log
        self._record = TimeRecord(dir_fd, RECORD, where, log,
                                  ("every unknown user's wait starts over",
                                   "those users' wait starts over"))
        self._since = self._record.since
        self._looked_at = set()

    def load(self):
        """
        Read the record left by earlier runs, if any.
        """
        self._record.load()
        self._since = self._record.since

    def merge(self, data):
        """
        Add the names of an earlier version's record C{data} (C{bytes}),
        keeping the earlier time of a name in both.
        """
        since, _ = parse_record(data)
        for name, seconds in since.items():
            if seconds < self._since.get(name, seconds + 1):
                self._since[name] = seconds
                self._record.changed = True

    def found(self, name):
        """
        The name service knows C{name}: forget it was ever missing.
        """
        self._looked_at.add(name)
        if self._since.pop(name, None) is not None:
            self._record.changed = True

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
            self._record.changed = True
        return since, since + self.wait

    def save(self):
        """
        Write the record: the names looked at in this run and still
        missing.  A name whose mail is gone is dropped, so that new mail
        for it waits afresh.
        """
        self._record.save(self._looked_at)
