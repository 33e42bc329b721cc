"""
Whose identity a job runs with: a user's uid, gid and supplementary
groups.

The daemon decides what it can without blocking (L{Credentials.plan}, in
the reactor thread): the groups of a local user, read from
C{/etc/passwd} and C{/etc/group} themselves, or those found before.  A
directory user's groups are asked for in the lookup threads before its
job (L{Credentials.lookup}, then L{Credentials.looked_up} in the
reactor), so that a hung directory holds no check process.  What is left
(the gid of the home, which needs a C{stat} that may hang) is settled in
the check process (L{settle}), which sends back what it found for the
daemon to keep (L{Credentials.keep}).

Nothing of Twisted here: the check processes import this module.
"""

import os

from hlfs.homes import nss
from hlfs.homes.records import Identity

#: The gid of a home that could not be looked at: never kept.
NOGROUP = 65534

#: L{Credentials.lookup}'s answer when the name service could not be asked.
UNANSWERED = "unanswered"


class Credentials:
    """
    The C{(uid, gid, groups)} a user's jobs run with, as far as known.

    With the name service (hlfs's default user source):

      - a user of C{/etc/passwd} (the same name and uid there) gets its
        primary group from there and its supplementary groups from
        C{/etc/group}, read from the files themselves: C{getgrouplist}
        would ask every group source, a hung directory included, and a
        local user's check must never wait for it;
      - any other user gets its groups from the name service, asked for
        in the lookup threads before its job (L{needs_lookup},
        L{lookup}, L{looked_up}).

    What was found is kept, a bounded number of users, until L{forget}
    (the resolver calls it when the user table is reloaded).  What was
    found before stands in for a user until the name service answers
    again (L{known_before}): a directory down after a reload delays no
    check whose groups were known.

    A user the name service does not know, or could not answer for (then
    nothing is kept: the next job asks again), and every user when
    C{nss} is false (hlfs's C{--password-file}), runs with the group of
    its home directory and no supplementary groups.

    Every method but L{lookup} runs in the reactor thread and never
    blocks.
    """

    def __init__(self, nss=True, max_cached=65536, files=None):
        """
        @param files: the L{hlfs.homes.nss.FilesAccounts} of local users, or
            L{None} to ask the name service for everyone (in the check
            process).
        """
        self.nss = nss
        self.max_cached = max_cached
        self.files = files
        self._cache = {}
        self._previous = {}  # what _cache held before the last forget
        self._unanswered = set()  # uids whose last lookup failed

    def forget(self):
        """
        Ask again for every user's groups, and read the local users'
        files again; until asked, a user's groups found before are used.
        """
        previous = self._previous
        previous.update(self._cache)
        self._previous = previous if len(previous) <= self.max_cached else self._cache
        self._cache = {}
        if self.files is not None:
            self.files.reload()

    def known_before(self, user):
        """
        Return whether C{user}'s groups were found before the last
        L{forget}: its job may use them while they are asked again.
        """
        return self._groups_before(user) is not None

    def _groups_before(self, user, home=None):
        # The groups found for user before the last forget, if any (and
        # found for this home, when one is given).
        kept = self._previous.get(user.uid)
        if kept is None or kept[0] != user.name or kept[2] is None:
            return None
        if home is not None and kept[1] not in (home, None):
            return None
        return kept[2]

    def _local(self, user):
        return self.files.credentials(user.name, user.uid) if self.files is not None else None

    def needs_lookup(self, user):
        """
        Return whether C{user}'s groups must be asked for in the lookup
        threads before its job: a user not in the files, whose groups
        are not known yet.
        """
        if not self.nss or self.files is None:
            return False
        kept = self._cache.get(user.uid)
        if kept is not None and kept[0] == user.name or user.uid in self._unanswered:
            return False
        return self._local(user) is None

    @staticmethod
    def lookup(user):
        """
        Ask the name service for C{user}'s groups (blocking: in a lookup
        thread).  Nothing is kept here: give the answer to L{looked_up}
        in the reactor thread.

        @return: C{(uid, gid, groups)}, L{None} if the name service does
            not know the user, or L{UNANSWERED}.
        """
        try:
            return _nss_credentials(user.name, user.uid)
        except OSError:
            return UNANSWERED

    def looked_up(self, user, found):
        """
        Keep what L{lookup} found for C{user}'s next jobs.
        """
        if found == UNANSWERED:
            self._unanswered.add(user.uid)
        else:
            self.keep(user, None, found)

    def keep(self, user, home, found):
        """
        Keep what was found for C{user}'s next jobs (bounded: the whole
        cache goes when full).
        """
        cache = self._cache
        if len(cache) >= self.max_cached:
            cache.clear()
        cache[user.uid] = (user.name, home, found)

    def plan(self, user, home):
        """
        Decide, without blocking, what C{user}'s job runs with; the check
        process settles the rest (L{settle}).

        @return: an L{Identity}.
        """
        kept = self._cache.get(user.uid)
        if kept is not None and kept[0] == user.name and kept[1] in (home, None):
            if kept[2] is not None:
                return _known(user, home, kept[2])
        elif self.nss:
            found = self._local(user)
            before = self._groups_before(user, home) if found is None else None
            if before is not None:
                # Not answered since the last reload: the groups found
                # before, and the next job asks again.
                self._unanswered.discard(user.uid)
                return _known(user, home, before)
            if found is None and user.uid in self._unanswered:
                # The name service did not answer: the home's group this
                # time, and ask again before the next job.
                self._unanswered.discard(user.uid)
                return Identity(user.uid, user.name, home, "home", NOGROUP, (), False)
            if found is None:
                return Identity(user.uid, user.name, home, "name-service", NOGROUP, (), True)
            self.keep(user, home, found)
            return _known(user, home, found)
        return Identity(user.uid, user.name, home, "home", NOGROUP, (), True)

    def finished(self, user, home, kept):
        """
        Keep the identity a job's process found for C{user} (from its
        answer's C{kept}), if any.
        """
        if kept is not None:
            self.keep(user, home, kept)


def _known(user, home, found):
    uid, gid, groups = found
    return Identity(uid, user.name, home, "known", gid, tuple(groups), False)


def settle(identity):
    """
    Return C{(credentials, kept)} for a job's L{Identity}, in the check
    process (blocking: it may ask the name service, and stats the home):
    the C{(uid, gid, groups)} to run with, and what to send back for the
    daemon to keep, or L{None}.
    """
    uid, home = identity.uid, identity.home
    if identity.groups_from == "known":
        return (uid, identity.gid, identity.groups), None
    keep = identity.keep
    if identity.groups_from == "name-service":
        try:
            found = _nss_credentials(identity.name, uid)
        except OSError:
            return _home_group(uid, home), None
        if found is not None:
            return found, found
    found = _home_group(uid, home)
    return found, found if keep and found[1] != NOGROUP else None


def _home_group(uid, home):
    try:
        return uid, os.stat(home).st_gid, ()
    except OSError:
        # The job will fail on the home anyway, with the real reason;
        # this is not kept.
        return uid, NOGROUP, ()


def _nss_credentials(name, uid):
    # Through ctypes: the lookups let go of the GIL while NSS waits.
    account = nss.account_by_name(name)
    if account is None or account.uid != uid:
        return None
    return uid, account.gid, nss.group_list(name, account.gid)
