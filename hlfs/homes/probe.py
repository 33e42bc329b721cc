"""
The blocking home check: L{HomeProbe} runs in a pool thread with the
user's filesystem identity (L{hlfs.homes.creds}) and finds whether the
spool directory exists (or is created, 0700, owned by the user), is a
real directory owned by the user, and takes a new non-empty file, which
is then removed.  Nothing on the way follows a symbolic link the user
could have planted.

L{hlfs.homes.pool} runs it with a deadline; L{hlfs.homes.cache} keeps
its results.
"""

import errno as errnos
import itertools
import os
import socket
import stat
from typing import NamedTuple

# Nothing of Twisted here: the home-check processes import this module,
# and start faster without it.
from hlfs.homes import creds, nss

PROBE_DATA = b"hlfs home probe: this file is removed at once\n"
NOGROUP = 65534

_OPEN_SUBDIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def errno_name(number):
    """
    Return the symbolic name of an errno value (C{ENOSPC}), or C{E<n>}.
    """
    return errnos.errorcode.get(number, f"E{number}")


def split_spool(spool):
    """
    Return C{(home, subdir)} of a spool path C{~user/<subdir>}.
    """
    home, _, subdir = spool.rpartition(b"/")
    return home or b"/", subdir


class ProbeResult(NamedTuple):
    """
    What a probe found.

    @ivar ok: whether mail can be delivered into the spool directory.
    @ivar errno: the error number of the failure, 0 on success.
    @ivar path: the path the failure is about (the spool directory on
        success).
    @ivar reason: a short explanation of the failure, C{""} on success.
    """

    ok: bool
    errno: int
    path: bytes
    reason: str

    def describe(self):
        """
        Return the failure as C{PATH: ENAME (reason)}.
        """
        return f"{os.fsdecode(self.path)}: {errno_name(self.errno)} ({self.reason})"


class Credentials:
    """
    The C{(uid, gid, groups)} a probe for a user runs with.

    With the name service (hlfs's default user source):

      - a user of C{/etc/passwd} (the same name and uid there) gets its
        primary group from there and its supplementary groups from
        C{/etc/group}, read from the files themselves: C{getgrouplist}
        would ask every group source, a hung directory included, and a
        local user's check must never wait for it;
      - any other user gets its primary and supplementary groups from
        the name service.  The resolver asks for them first, in its
        lookup threads and within the deadline (L{needs_lookup},
        L{lookup}), so that a hung directory holds no probe thread:
        probes then only read what was found.

    Lookups are kept, a bounded number of them, until L{forget} (the
    resolver calls it when the user table is reloaded).  What was found
    before stands in for a user until the name service answers again
    (L{known_before}): a directory down after a reload delays no check
    whose groups were known.

    A user the name service does not know, or could not answer for (then
    nothing is kept: the next probe asks again), and every user when
    C{nss} is false (hlfs's C{--password-file}), runs with the group of
    its home directory and no supplementary groups.

    Calls may block (a hung home): they happen in probe threads.
    """

    def __init__(self, nss=True, max_cached=65536, files=None):
        """
        @param files: the L{hlfs.homes.nss.FilesAccounts} of local users, or
            L{None} to ask the name service for everyone.
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
        L{forget}: its probe may use them while they are asked again.
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
        Return whether a probe for C{user} would ask the name service:
        a user not in the files, whose groups are not known yet.
        """
        if not self.nss or self.files is None:
            return False
        kept = self._cache.get(user.uid)
        if kept is not None and kept[0] == user.name or user.uid in self._unanswered:
            return False
        return self._local(user) is None

    def lookup(self, user):
        """
        Ask the name service for C{user}'s groups and keep them for the
        next probe (blocking: in a lookup thread).
        """
        try:
            found = _nss_credentials(user.name, user.uid)
        except OSError:
            self._unanswered.add(user.uid)
            return True
        self.keep(user, None, found)
        return True

    def keep(self, user, home, found):
        """
        Keep what was found for C{user}'s next probes (bounded: the whole
        cache goes when full).
        """
        cache = self._cache
        if len(cache) >= self.max_cached:
            cache.clear()
        cache[user.uid] = (user.name, home, found)

    def __call__(self, user, home):
        """
        Return C{(uid, gid, groups)} for C{user}'s probe, asking what
        L{plan} leaves open (blocking: in a probe thread).
        """
        plan = self.plan(user, home)
        if plan[0] == KNOWN:
            return plan[1]
        found, keep = settle(plan, user.name, user.uid, home)
        if keep:
            self.keep(user, home, found)
        return found

    def plan(self, user, home):
        """
        Decide, without blocking, what C{user}'s probe runs with: the
        reactor thread calls this, and L{settle} does the rest where
        blocking is allowed.

        @return: C{(KNOWN, (uid, gid, groups))}, C{(HOME_GROUP, keep)}:
            the group of the home, kept (L{keep}) if C{keep} and found,
            or C{(ASK, None)}: ask the name service, then as
            C{(HOME_GROUP, True)} if it does not know the user, and
            C{(HOME_GROUP, False)} if it could not be asked.
        """
        kept = self._cache.get(user.uid)
        if kept is not None and kept[0] == user.name and kept[1] in (home, None):
            if kept[2] is not None:
                return KNOWN, kept[2]
        elif self.nss:
            found = self._local(user)
            before = self._groups_before(user, home) if found is None else None
            if before is not None:
                # Not answered since the last reload: the groups found
                # before, and the next check asks again.
                self._unanswered.discard(user.uid)
                return KNOWN, before
            if found is None and user.uid in self._unanswered:
                # The name service did not answer: the home's group this
                # time, and ask again before the next probe.
                self._unanswered.discard(user.uid)
                return HOME_GROUP, False
            if found is None:
                return ASK, None
            self.keep(user, home, found)
            return KNOWN, found
        return HOME_GROUP, True


#: What L{Credentials.plan} leaves to L{settle}.
KNOWN, HOME_GROUP, ASK = 0, 1, 2


def settle(plan, name, uid, home):
    """
    Return C{(credentials, keep)}: what a L{Credentials.plan} that is not
    L{KNOWN} comes to (blocking: it may ask the name service, and stats
    the home), and whether to L{Credentials.keep} it.
    """
    kind, keep = plan
    if kind == ASK:
        try:
            found = _nss_credentials(name, uid)
        except OSError:
            return _home_group(uid, home), False
        if found is not None:
            return found, True
        keep = True
    found = _home_group(uid, home)
    return found, keep and found[1] != NOGROUP


def _home_group(uid, home):
    try:
        return uid, os.stat(home).st_gid, ()
    except OSError:
        # The probe will fail on the home anyway, with the real reason;
        # the caller does not keep this.
        return uid, NOGROUP, ()


def _nss_credentials(name, uid):
    # Through ctypes: the lookups let go of the GIL while NSS waits.
    account = nss.account_by_name(name)
    if account is None or account.uid != uid:
        return None
    return uid, account.gid, nss.group_list(name, account.gid)


class HomeProbe:
    """
    The blocking check that a user's spool directory can take mail.

    Call it in a pool thread, never in the reactor thread: any step may
    block for as long as the home's filesystem does.

    @ivar fsync: also fsync the test file (a home whose server reports
        errors only at write-back).
    """

    def __init__(self, fsync=False, credentials=None):
        """
        @param credentials: a L{Credentials}; by default, from NSS.
        """
        self.fsync = fsync
        self.credentials = credentials if credentials is not None else Credentials()
        self._names = itertools.count()
        self._prefix = os.fsencode(".hlfs-probe.{}.{}.".format(
            socket.gethostname().replace("/", "_"), os.getpid()
        ))

    def forget(self):
        """
        Forget what is known about users (the table was reloaded).
        """
        self.credentials.forget()

    def _unique_name(self):
        return b"%s%d" % (self._prefix, next(self._names))

    def __call__(self, user, spool):
        """
        Probe C{spool} (C{~user/<subdir>}, as given by
        L{hlfs.core.resolver.SpoolRules.spool_of}) as C{user}.

        @return: a L{ProbeResult}; this never raises.
        """
        return self.finish_job(user, spool, self.run_job(self.job(user, spool)))

    def job(self, user, spool):
        """
        Return the check of C{spool} as C{user} as plain data, for
        L{run_job} in a checker process (L{hlfs.homes.checkers}): what
        L{Credentials.plan} knows, without blocking.
        """
        home, subdir = split_spool(spool)
        kind, value = self.credentials.plan(user, home)
        return user.uid, user.name, home, subdir, spool, kind, value, self.fsync

    def run_job(self, job):
        """
        Run a L{job} (blocking) and return C{(result, kept)}: the
        L{ProbeResult}, and the credentials to L{Credentials.keep}, or
        L{None}.
        """
        uid, name, home, subdir, spool, kind, value, fsync = job
        kept = None
        try:
            if kind == KNOWN:
                found = value
            else:
                found, keep = settle((kind, value), name, uid, home)
                kept = found if keep else None
            uid, gid, groups = found
            result = creds.run_as(uid, gid, groups, self._check, uid, home, subdir, spool, fsync)
            return result, kept
        except OSError as e:
            return ProbeResult(False, e.errno or errnos.EIO, spool, e.strerror or str(e)), kept
        except Exception as e:  # a probe must answer, whatever went wrong
            return ProbeResult(False, errnos.EIO, spool, f"probe error: {e!r}"), kept

    def finish_job(self, user, spool, answer):
        """
        Keep what the L{run_job} of C{job(user, spool)} found, in the
        reactor thread, and return its L{ProbeResult}.
        """
        result, kept = answer
        if kept is not None:
            self.credentials.keep(user, split_spool(spool)[0], kept)
        return result

    def _check(self, uid, home, subdir, spool, fsync):
        # Only the last component is the user's to change (the home's
        # parent is not): O_NOFOLLOW on it is all it takes.
        spool_fd = self._open_spool(home, spool)
        if isinstance(spool_fd, ProbeResult):
            return spool_fd
        try:
            owner = os.fstat(spool_fd).st_uid
            if owner != uid:
                return ProbeResult(False, errnos.EPERM, spool, f"owned by uid {owner}, not {uid}")
            return self._write_file(spool_fd, spool, fsync)
        finally:
            os.close(spool_fd)

    def _open_spool(self, home, spool):
        """
        Open the spool directory (creating it when missing) without
        following a symbolic link; return the descriptor or a failed
        L{ProbeResult}.
        """
        for attempt in (1, 2):
            try:
                return os.open(spool, _OPEN_SUBDIR)
            except FileNotFoundError as e:
                if attempt == 2:
                    return ProbeResult(False, e.errno, spool, e.strerror)
                try:
                    # Made with the thread's fsuid, so owned by the user;
                    # the umask can only narrow 0700.  mkdir never follows
                    # a link in the last component.
                    os.mkdir(spool, 0o700)
                except FileExistsError:
                    pass  # made meanwhile: open it on the next turn
                except OSError as e:
                    if e.errno in (errnos.ENOENT, errnos.ENOTDIR):
                        return self._home_failure(home, e)
                    return ProbeResult(False, e.errno, spool, f"cannot create: {e.strerror}")
            except OSError as e:
                if e.errno in (errnos.ENOTDIR, errnos.ELOOP):
                    return self._not_a_directory(home, spool, e)
                return ProbeResult(False, e.errno, spool, e.strerror)
        raise AssertionError("unreachable")

    def _home_failure(self, home, error):
        """
        The spool directory cannot be made: say what is wrong with the
        home itself.
        """
        try:
            mode = os.stat(home).st_mode
        except OSError as e:
            return ProbeResult(False, e.errno, home, e.strerror)
        if not stat.S_ISDIR(mode):
            return ProbeResult(False, errnos.ENOTDIR, home, "the home is not a directory")
        return ProbeResult(False, error.errno, home, error.strerror)

    def _not_a_directory(self, home, spool, error):
        try:
            mode = os.lstat(spool).st_mode
        except NotADirectoryError:
            return self._home_failure(home, error)
        except OSError as e:
            return ProbeResult(False, e.errno, spool, e.strerror)
        if stat.S_ISLNK(mode):
            reason = "is a symbolic link, not a directory; not followed"
        else:
            reason = "is not a directory"
        return ProbeResult(False, error.errno, spool, reason)

    def _write_file(self, spool_fd, spool, fsync):
        name = self._unique_name()
        try:
            fd = os.open(name, _CREATE, 0o600, dir_fd=spool_fd)
        except OSError as e:
            return ProbeResult(False, e.errno, spool + b"/" + name,
                               f"cannot create a file: {e.strerror}")
        path = spool + b"/" + name
        failure = None
        try:
            try:
                data = PROBE_DATA
                while data:
                    data = data[os.write(fd, data) :]
                if fsync:
                    os.fsync(fd)
            except OSError as e:
                failure = ProbeResult(False, e.errno, path, f"cannot write: {e.strerror}")
            finally:
                try:
                    # NFS reports a full disk or quota at close.
                    os.close(fd)
                except OSError as e:
                    failure = failure or ProbeResult(
                        False, e.errno, path, f"cannot write: {e.strerror}"
                    )
        finally:
            try:
                os.unlink(name, dir_fd=spool_fd)
            except OSError as e:
                failure = failure or ProbeResult(False, e.errno, path, f"cannot remove: {e.strerror}")
        return failure or ProbeResult(True, 0, spool, "")


