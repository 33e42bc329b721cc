"""
The home check, as the user: L{HomeProbe} finds whether a user's spool
directory exists (or is created, 0700, owned by the user), is a real
directory owned by the user, and takes a new non-empty file, which is
then removed.  Nothing on the way follows a symbolic link the user could
have planted.

It runs in a home-check process (L{hlfs.homes.checker}), one job
(L{hlfs.homes.records.CheckHome}) at a time, with the user's filesystem
identity (L{hlfs.homes.creds}): any step may block for as long as the
home's filesystem does.  The daemon's L{hlfs.homes.checks.HomeChecks}
plans the job and keeps its result.
"""

import errno as errnos
import itertools
import os
import stat
from typing import NamedTuple

# Nothing of Twisted here: the home-check processes import this module,
# and start faster without it.
from hlfs.homes import creds
from hlfs.homes.credentials import settle
from hlfs.homes.records import CheckDone

PROBE_DATA = b"hlfs home probe: this file is removed at once\n"

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


class HomeProbe:
    """
    The check that a user's spool directory can take mail, in a
    home-check process.  Make one per process (after it is forked): the
    test files it writes are named for the host, the pid and a count.
    """

    def __init__(self):
        self._names = itertools.count()
        self._prefix = os.fsencode(".hlfs-probe.{}.{}.".format(
            os.uname().nodename.replace("/", "_"), os.getpid()
        ))

    def _unique_name(self):
        return b"%s%d" % (self._prefix, next(self._names))

    def run(self, job):
        """
        Run a L{CheckHome} job (blocking) and return its L{CheckDone}.
        """
        result, kept = self.check(job)
        return CheckDone(result.ok, result.errno, result.path, result.reason, kept)

    def check(self, job):
        """
        Return C{(result, kept)} for a L{CheckHome} job: the
        L{ProbeResult}, and the identity found for the daemon to keep, or
        L{None}.  This never raises.
        """
        spool, kept = job.spool, None
        try:
            (uid, gid, groups), kept = settle(job)
            home, subdir = split_spool(spool)
            result = creds.run_as(uid, gid, groups, self._check, uid, home, subdir, spool,
                                  job.fsync)
            return result, kept
        except OSError as e:
            return ProbeResult(False, e.errno or errnos.EIO, spool, e.strerror or str(e)), kept
        except Exception as e:  # a check must answer, whatever went wrong
            return ProbeResult(False, errnos.EIO, spool, f"probe error: {e!r}"), kept

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


