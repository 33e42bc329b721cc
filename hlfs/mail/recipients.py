"""
Who gets the mail of a mailbox in the alternate spool: its user, the
postmaster, or nobody yet.

The user, when the name service knows the mailbox's name.  Nobody yet,
with a log line, when the name service could not be asked, or when it
says there is no such user but that answer has not yet held for
C{unknown-wait} (L{hlfs.mail.missing}: sssd offline answers "no such
user" for every user it has not cached).  The postmaster once it has,
unless the mailbox's owner uid is a user the name service knows (root
included): the two answers then disagree, and the mail is left for an
administrator.
"""

import time

from hlfs.homes.nss import NameServiceUnavailable
from hlfs.mail.maillog import show


def utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class Recipients:
    """
    The recipient decisions of one run, each logged once.

    @ivar problems: the number of logged answers an administrator should
        look at (the name service could not be asked, or contradicted
        itself).
    """

    def __init__(self, options, users, by_uid, missing, log):
        self.options = options
        self.users = users
        self.by_uid = by_uid if by_uid is not None else users.by_uid
        self.missing = missing
        self.now = missing.now
        self.log = log
        self.problems = 0
        self._kept = {}
        self._owners = {}

    def recipient_for(self, name, uid, what="its mail stays for the next run"):
        """
        Return the address to resend C{name}'s mail to: the user when the
        name service knows it; the postmaster once the name has been
        missing for C{unknown-wait} and the mail's owner C{uid} is no
        known user either; else L{None}, logged: the mail waits (the name
        service could not be asked, or the wait is not over).
        """
        user = self.user(name, what)
        if user is False:
            return None
        if user is not None:
            return name
        if not self.goes_to_postmaster(name, uid, what):
            return None
        return self.options.postmaster.encode("utf-8", "surrogateescape")

    def goes_to_postmaster(self, name, uid, what):
        """
        Whether the mail of a name said not to exist, owned by C{uid}, may
        go to the postmaster now.
        """
        if not self._orphaned(name, uid, what):
            return False
        return self._wait_over(name)

    def user(self, name, what):
        # The user's entry, None for no such user, False (logged) when the
        # name service could not be asked.
        try:
            user = self.users.by_name(name)
        except NameServiceUnavailable as e:
            self.missing.unanswered(name)
            self.log(f"{show(name)}: the name service could not be asked ({e.strerror}); {what}")
            self.problems += 1
            return False
        if user is not None:
            self.missing.found(name)
        return user

    def _wait_over(self, name):
        # Logged once a run, however many of its files are looked at.
        if name not in self._kept:
            since, until = self.missing.missing(name)
            over = self._kept[name] = self.now() >= until
            if not over:
                kept = "would be kept" if self.options.dry_run else "is kept"
                self.log(
                    f"{show(name)}: no such user according to the name service; its mail "
                    f"{kept} until {utc(until)}, then goes to {self.options.postmaster} "
                    f"(missing since {utc(since)}; unknown-wait {self.options.unknown_wait:g} s)"
                )
        return self._kept[name]

    def _orphaned(self, name, uid, what):
        # A mailbox written by a delivery agent belongs to its user: if
        # the name service knows its owner uid, the name's "no such user"
        # is contradicted, and the mail is not the postmaster's.  (It does
        # not tell sssd offline apart: sssd answers "no such user" for an
        # uncached uid as well.)
        if (name, uid) not in self._owners:
            shown = show(name)
            try:
                owner = self.by_uid(uid)
            except NameServiceUnavailable as e:
                self.log(f"{shown}: no such user, and the name service could not be asked about "
                         f"its owner uid {uid} ({e.strerror}); {what}")
                owner = False
            else:
                if owner is not None:
                    self.log(f"{shown}: no such user, but its mail belongs to uid {uid} "
                             f"({show(owner.name)}); not resent to "
                             f"{self.options.postmaster}, skipped")
            if owner is not None:
                self.problems += 1
            self._owners[name, uid] = owner is None
        return self._owners[name, uid]
