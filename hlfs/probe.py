"""
Hang-safe home probes: a caller always gets a usable link within a
deadline, whatever the home filesystems do.

Three parts, from the bottom up:

  - L{HomeProbe}: the blocking check, run in a pool thread with the
    user's filesystem identity (L{hlfs.creds}): the spool directory exists
    (or is created, 0700, owned by the user), is a real directory owned
    by the user, and takes a new non-empty file, which is then removed.
    Nothing on the way follows a symbolic link the user could have
    planted.
  - L{ProbePool}: hlfs's own bounded thread pool.  It never runs two
    probes for the same key at once (later callers share the running
    one), lets each caller wait at most a deadline, and refuses new work
    at once when every thread is stuck, instead of queueing it behind
    them.
  - L{ProbingResolver}: the L{hlfs.resolver.ILinkResolver} that answers
    from a per-uid cache and probes on a miss.  Its per-user state is
    three flat arrays indexed by the user table's positions (17 bytes a
    user), remapped in a thread when the table is reloaded.

The daemon's service starts and stops the pool: L{ProbePool.start} when
the service starts, L{ProbePool.stop} when it stops (it does not wait for
probes stuck in a dead filesystem).
"""

import collections
import errno as errnos
import itertools
import os
import re
import socket
import stat
import threading
from array import array
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from hlfs import creds
from hlfs.resolver import ChangeClock, ILinkResolver, Resolution

log = Logger(namespace="hlfs.probe")

PROBE_DATA = b"hlfs home probe: this file is removed at once\n"
NOGROUP = 65534

_OPEN_SUBDIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def errno_name(number):
    """
    Return the symbolic name of an errno value (C{ENOSPC}), or C{E<n>}.
    """
    return errnos.errorcode.get(number, f"E{number}")


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

    With the name service (hlfs's default user source), a user NSS knows
    under the same name and uid gets its primary group and supplementary
    groups from NSS.  Those lookups can cost a fraction of a millisecond
    (or a network round trip), so they are kept, a bounded number of them,
    until L{forget} (the resolver calls it when the user table is
    reloaded).

    A user NSS does not know, and every user when C{nss} is false (hlfs's
    C{--password-file}), runs with the group of its home directory and no
    supplementary groups: the user table holds no groups.

    Calls may block (NSS, a hung home): they happen in probe threads.
    """

    def __init__(self, nss=True, max_cached=65536):
        self.nss = nss
        self.max_cached = max_cached
        self._cache = {}

    def forget(self):
        """
        Drop every kept lookup.
        """
        self._cache = {}

    def __call__(self, user, home):
        cache = self._cache
        kept = cache.get(user.uid)
        if kept is not None and kept[0] == user.name and kept[1] == home:
            return kept[2]
        found = self._from_nss(user) if self.nss else None
        if found is None:
            try:
                found = user.uid, os.stat(home).st_gid, ()
            except OSError:
                # The probe will fail on the home anyway, with the real
                # reason; do not keep this.
                return user.uid, NOGROUP, ()
        if len(cache) >= self.max_cached:
            cache.clear()
        cache[user.uid] = (user.name, home, found)
        return found

    def _from_nss(self, user):
        # Through ctypes: the lookups let go of the GIL while NSS waits.
        try:
            ids = creds.user_ids(user.name)
        except OSError:
            return None
        if ids is None or ids[0] != user.uid:
            return None
        gid = ids[1]
        return user.uid, gid, creds.group_list(user.name, gid)


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
        self._prefix = ".hlfs-probe.{}.{}.".format(
            socket.gethostname().replace("/", "_"), os.getpid()
        )

    def forget(self):
        """
        Forget what is known about users (the table was reloaded).
        """
        self.credentials.forget()

    def _unique_name(self):
        return os.fsencode(f"{self._prefix}{next(self._names)}")

    def __call__(self, user, spool):
        """
        Probe C{spool} (C{~user/<subdir>}, as given by
        L{hlfs.resolver.SpoolRules.spool_of}) as C{user}.

        @return: a L{ProbeResult}; this never raises.
        """
        home, _, subdir = spool.rpartition(b"/")
        home = home or b"/"
        try:
            uid, gid, groups = self.credentials(user, home)
            with creds.as_user(uid, gid, groups):
                return self._check(uid, home, subdir, spool)
        except OSError as e:
            return ProbeResult(False, e.errno or errnos.EIO, spool, e.strerror or str(e))
        except Exception as e:  # a probe must answer, whatever went wrong
            return ProbeResult(False, errnos.EIO, spool, f"probe error: {e!r}")

    def _check(self, uid, home, subdir, spool):
        # Only the last component is the user's to change (the home's
        # parent is not): O_NOFOLLOW on it is all it takes.
        spool_fd = self._open_spool(home, spool)
        if isinstance(spool_fd, ProbeResult):
            return spool_fd
        try:
            owner = os.fstat(spool_fd).st_uid
            if owner != uid:
                return ProbeResult(False, errnos.EPERM, spool, f"owned by uid {owner}, not {uid}")
            return self._write_file(spool_fd, spool)
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

    def _write_file(self, spool_fd, spool):
        name = self._unique_name()
        path = spool + b"/" + name
        try:
            fd = os.open(name, _CREATE, 0o600, dir_fd=spool_fd)
        except OSError as e:
            return ProbeResult(False, e.errno, path, f"cannot create a file: {e.strerror}")
        failure = None
        try:
            try:
                data = PROBE_DATA
                while data:
                    data = data[os.write(fd, data) :]
                if self.fsync:
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


class FlightInfo(NamedTuple):
    """
    A probe in flight, as the operator console shows it.

    @ivar key: what the probe is for (the uid).
    @ivar path: the path it checks.
    @ivar age: seconds since it was asked for.
    @ivar running: seconds since a thread took it up, or L{None} while
        it waits for a thread.
    """

    key: int
    path: bytes
    age: float
    running: float | None


class Flight:
    """
    One probe in flight, shared by every caller that asks for its key
    meanwhile.
    """

    __slots__ = ("key", "path", "submitted", "started", "waiters", "late", "finish")

    def __init__(self, key, path, submitted):
        self.key = key
        self.path = path
        self.submitted = submitted
        self.started = None  # set by the thread that runs it
        self.waiters = []
        self.late = False
        self.finish = None


class _ProbeThreadPool(ThreadPool):
    """
    A thread pool whose threads do not keep the process alive, and whose
    L{stop} does not wait forever for a thread stuck in a dead
    filesystem.
    """

    def threadFactory(self, *args, **kwargs):
        return threading.Thread(*args, daemon=True, **kwargs)

    def stop(self, timeout=0.5):
        self.joined = True
        self.started = False
        self._team.quit()
        for thread in self.threads:
            thread.join(timeout)
            timeout = 0.01


class ProbePool:
    """
    hlfs's own bounded pool of probe threads.

    @ivar threads: how many probes may run at once.
    @ivar stuck_after: seconds after which a running probe counts as hung
        (L{None}: the deadline of the resolver using the pool).
    @ivar exhausted_log_interval: seconds between two "pool exhausted"
        log lines.
    @ivar started_count: probes started.
    @ivar exhausted_count: probes refused because every thread was stuck.
    """

    def __init__(self, threads=10, reactor=None, clock=None, stuck_after=None,
                 exhausted_log_interval=10.0):
        """
        @param threads: the pool's size (hlfs's C{--probe-threads}).
        @param reactor: the reactor results are delivered to.
        @param clock: the clock ages and deadlines are measured by; the
            reactor by default.
        """
        if threads < 1:
            raise ValueError("a probe pool needs at least one thread")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.threads = threads
        self.stuck_after = stuck_after
        self.exhausted_log_interval = exhausted_log_interval
        self.started_count = 0
        self.exhausted_count = 0
        self._threadpool = _ProbeThreadPool(0, threads, name="hlfs-probe")
        self._flights = {}
        self._running = set()  # Flights a thread is running; threads add and discard
        self._results = collections.deque()  # (Flight, result) from the threads
        self._wake_pending = False
        self._exhausted_logged = None
        self._exhausted_unlogged = 0

    # -- life cycle, for the daemon's service

    def start(self):
        """
        Start the threads.  The service calls this from C{startService}.
        """
        self._threadpool.start()

    def stop(self):
        """
        Stop the threads: idle ones end at once, threads stuck in a
        probe are abandoned (they are daemon threads).  The service calls
        this from C{stopService}.
        """
        self._threadpool.stop()

    # -- what is in flight

    def find(self, key):
        """
        Return the L{Flight} for C{key}, or L{None}.
        """
        return self._flights.get(key)

    def count(self):
        """
        Return how many probes are in flight (running or waiting).
        """
        return len(self._flights)

    def busy(self):
        """
        Return how many threads are running a probe.
        """
        return len(self._running)

    def _stuck_after(self):
        return 1.0 if self.stuck_after is None else self.stuck_after

    def exhausted(self):
        """
        Return whether every thread is stuck in a probe that has run
        longer than L{stuck_after}.
        """
        running = list(self._running)
        if len(running) < self.threads:
            return False
        now = self.clock.seconds()
        limit = self._stuck_after()
        return all(f.started is not None and now - f.started >= limit for f in running)

    def in_flight(self):
        """
        Return a L{FlightInfo} for every probe asked for and not finished.
        """
        now = self.clock.seconds()
        return [
            FlightInfo(
                f.key, f.path, now - f.submitted,
                None if f.started is None else now - f.started,
            )
            for f in list(self._flights.values())
        ]

    def hung(self):
        """
        Return the L{FlightInfo}s of the probes that have been running
        longer than L{stuck_after}.
        """
        limit = self._stuck_after()
        return [f for f in self.in_flight() if f.running is not None and f.running >= limit]

    # -- running probes

    def submit(self, key, path, probe, args, finish):
        """
        Start C{probe(*args)} in a thread for C{key}, unless every thread is
        stuck.

        @param path: what the probe checks, for logs and the console.
        @param finish: called in the reactor thread with the L{Flight}
            and the probe's result (L{None} if it raised) before any
            waiter is answered; what it returns is every waiter's answer.
        @return: the new L{Flight}, or L{None} when the pool is exhausted.
        @raise ValueError: if a probe for C{key} is already in flight.
        """
        if key in self._flights:
            raise ValueError(f"a probe for {key!r} is already in flight")
        if self.exhausted():
            self.exhausted_count += 1
            self._log_exhausted(path)
            return None
        flight = Flight(key, path, self.clock.seconds())
        self._flights[key] = flight
        self.started_count += 1
        flight.finish = finish
        self._threadpool.callInThread(self._run, flight, probe, args)
        return flight

    def _run(self, flight, probe, args):
        # In a probe thread.  Results go back in batches: one wake-up of
        # the reactor for every result waiting, not one per result (what
        # deferToThreadPool would do), which matters in a probe storm.
        flight.started = self.clock.seconds()
        self._running.add(flight)
        try:
            result = probe(*args)
        except BaseException:
            result = Failure()
        finally:
            self._running.discard(flight)
        self._results.append((flight, result))
        if not self._wake_pending:
            self._wake_pending = True
            self.reactor.callFromThread(self._deliver)

    def _deliver(self):
        # Clear the flag before emptying the queue: a result appended
        # after this point schedules another delivery.
        self._wake_pending = False
        results = self._results
        while results:
            flight, result = results.popleft()
            self._finished(result, flight)

    def _finished(self, result, flight):
        if isinstance(result, Failure):
            log.failure("home probe for {key} raised", result, key=flight.key)
            result = None
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        finish, flight.finish = flight.finish, None
        answer = finish(flight, result)
        waiters, flight.waiters = flight.waiters, []
        for d, timer in waiters:
            if timer.active():
                timer.cancel()
            d.callback(answer)

    def wait(self, flight, timeout, fallback):
        """
        Return a Deferred that fires with C{flight}'s answer, or with
        C{fallback()} if that takes longer than C{timeout} seconds.
        """
        d = Deferred()
        waiter = [d]
        waiter.append(self.clock.callLater(timeout, self._expire, flight, waiter, fallback))
        flight.waiters.append(waiter)
        return d

    def _expire(self, flight, waiter, fallback):
        try:
            flight.waiters.remove(waiter)
        except ValueError:
            return
        waiter[0].callback(fallback(flight))

    def _log_exhausted(self, path):
        now = self.clock.seconds()
        last = self._exhausted_logged
        if last is not None and now - last < self.exhausted_log_interval:
            self._exhausted_unlogged += 1
            return
        log.error(
            "probe pool exhausted: all {threads} probe threads are stuck "
            "(longest for {longest:.1f} s); answering the alternate spool "
            "at once for {path} ({suppressed} more since the last report)",
            threads=self.threads,
            longest=max((now - f.started for f in list(self._running) if f.started), default=0.0),
            path=os.fsdecode(path),
            suppressed=self._exhausted_unlogged,
        )
        self._exhausted_logged = now
        self._exhausted_unlogged = 0


# Bits of a user's status byte.
_CHECKED = 1  # a probe result is cached (until the user's expiry time)
_FAILED = 2  # ... and it was a failure
_SERVED_ALT = 4  # the last answer for this user was the alternate spool
_CLEAR_CHECKED = bytes(b & ~(_CHECKED | _FAILED) for b in range(256))


class CacheEntry(NamedTuple):
    """
    One user's cached state, for the operator.

    @ivar state: C{ok}, C{failed} (either may be C{(expired)}) or
        C{unverified}.
    @ivar age: seconds since the cached probe finished, or L{None}.
    @ivar expires_in: seconds the result is still used, or L{None}.
    @ivar probing: whether a probe is in flight.
    @ivar target: the link's last answer.
    @ivar changed: the link's time (ns).
    """

    state: str
    age: float | None
    expires_in: float | None
    probing: bool
    target: bytes
    changed: int


class ProbeStats:
    """
    Counters for the operator console.
    """

    __slots__ = ("hits", "misses", "fallbacks", "failures", "late")

    def __init__(self):
        self.hits = self.misses = self.fallbacks = self.failures = self.late = 0

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


class _UserState:
    """
    Per-user state, three arrays in the table's uid order.

      - C{status}: bytes of C{_CHECKED}, C{_FAILED}, C{_SERVED_ALT}.
      - C{expires}: when a cached probe result expires (clock seconds).
      - C{changed}: when the user's link value last changed, in ns; a
        value C{<= 0} stands for C{epochs[-value]}, the stamp of the
        table load that brought the entry, so a fresh table needs no
        per-user stamps.
    """

    __slots__ = ("table", "status", "expires", "changed", "epoch")

    def __init__(self, table, epoch):
        n = len(table)
        self.table = table
        self.epoch = epoch
        self.status = bytearray(n)
        self.expires = array("d", bytes(8 * n))
        self.changed = array("q", [-epoch]) * n

    def footprint(self):
        return len(self.status) + 8 * len(self.expires) + 8 * len(self.changed)


_FOREVER = float("inf")
_TOUCHED = re.compile(rb"[^\x00]")


def _remap(old, new_table, epoch):
    """
    Build the L{_UserState} of C{new_table} from C{old}.  Runs in a thread.

    An identical table keeps every user's state.  Otherwise, users whose
    entry (uid, name, home) did not change keep their cached probe result
    and link time; every other user starts afresh, its link time the
    reload's (later than any time given before, so a changed value always
    shows a new time).  Only users with some state are looked at: the
    cost follows the users seen since the last reload, not the table's
    size.

    @return: C{(state, changed)}, C{changed} telling whether the table
        changed at all.
    """
    old_table = old.table
    state = _UserState.__new__(_UserState)
    state.table = new_table
    state.epoch = epoch
    if old_table == new_table:
        state.status = bytearray(old.status)
        state.expires = old.expires[:]
        state.changed = old.changed[:]
        return state, False
    n = len(new_table)
    status = bytearray(n)
    expires = array("d", bytes(8 * n))
    changed = array("q", [-epoch]) * n
    old_status, old_expires, old_changed = old.status, old.expires, old.changed
    old_at, new_at, index_of = old_table.at, new_table.at, new_table.index_of
    for match in _TOUCHED.finditer(old_status):
        i = match.start()
        user = old_at(i)
        j = index_of(user.uid)
        if j >= 0 and new_at(j) == user:
            status[j] = old_status[i]
            expires[j] = old_expires[i]
            changed[j] = old_changed[i]
    state.status, state.expires, state.changed = status, expires, changed
    return state, True


@implementer(ILinkResolver)
class ProbingResolver:
    """
    Resolve the home link, verifying the home with a L{HomeProbe}.

    A cached probe result (good or bad) answers at once for the cache
    interval.  Otherwise the caller waits for the user's probe (started
    now, or shared with the callers already waiting on it) until the
    probe is C{deadline} seconds old, then gets the alternate spool; a
    probe that finishes later still fills the cache.  A user's link time
    (C{Resolution.changed}) moves, strictly forward, exactly when the
    answer for that user changes, and on reloads that change the table.

    Reload with L{reload} (in threads; see L{hlfs.tableload} for a loader
    that keeps the parsing out of the daemon), not L{set_table}, whose
    remapping runs in the calling thread.

    @ivar table: the current L{hlfs.users.UserTable}.
    @ivar stats: a L{ProbeStats}.
    """

    def __init__(self, table, rules, clock, pool, cache_interval=300.0, deadline=1.0,
                 verify=True, probe=None):
        """
        @param rules: the L{hlfs.resolver.SpoolRules}.
        @param clock: the clock of cache expiry, deadlines and link times.
        @param pool: the L{ProbePool} probes run in.
        @param cache_interval: seconds a probe result (good or bad) is used
            (hlfsd's C{-c}).
        @param deadline: the longest a caller waits for a probe before it
            gets the alternate spool.
        @param verify: L{False} for hlfsd's C{-n}: no probes, the link
            points into the home whenever the table has a usable one.
        @param probe: the blocking check, a L{HomeProbe} by default.
        """
        self.rules = rules
        self.clock = clock
        self.pool = pool
        self.cache_interval = cache_interval
        self.deadline = deadline
        self.verify = verify
        self.probe = probe if probe is not None else HomeProbe()
        if pool is not None and pool.stuck_after is None:
            pool.stuck_after = deadline
        self.changes = ChangeClock(clock)
        self.stats = ProbeStats()
        self._epochs = [self.changes.now()]
        self._unknown = self._epochs[0]
        self._state = _UserState(table, 0)
        self._dirty = None  # positions changed while a reload runs
        self._flush_after_reload = False
        self._reloading = None
        # Moves whenever an answer may change other than by expiry: the
        # reply cache drops everything it holds then.
        self.generation = 0

    @property
    def table(self):
        return self._state.table

    # -- the state of one user

    def _stamp(self, state, i):
        value = state.changed[i]
        return value if value > 0 else self._epochs[-value]

    def _serve(self, state, i, spool, alt):
        """
        Return the answer for position C{i}, recording that it was given:
        the user's link time moves exactly when the answer changes.
        """
        st = state.status[i]
        if bool(st & _SERVED_ALT) != alt:
            state.status[i] = st ^ _SERVED_ALT
            stamp = self.changes.now()
            state.changed[i] = stamp
            self.generation += 1
            self._touch(state, i)
        else:
            stamp = self._stamp(state, i)
        return Resolution(self.rules.alt_dir if alt else spool, stamp)

    def _touch(self, state, i):
        if self._dirty is not None and state is self._state:
            self._dirty.add(i)

    def _serve_uid(self, uid, alt):
        state = self._state
        i = state.table.index_of(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        spool = self.rules.spool_of(state.table.at(i))
        return self._serve(state, i, spool, alt or spool is None)

    # -- ILinkResolver

    def resolve(self, uid):
        state = self._state
        i = state.table.index_of(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        user = state.table.at(i)
        spool = self.rules.spool_of(user)
        if spool is None or not self.verify:
            return self._serve(state, i, spool, spool is None)
        st = state.status[i]
        now = self.clock.seconds()
        if st & _CHECKED and now < state.expires[i]:
            self.stats.hits += 1
            failed = bool(st & _FAILED)
            if failed == bool(st & _SERVED_ALT):
                # The usual case, inline: the same answer as last time.
                value = state.changed[i]
                return Resolution(
                    self.rules.alt_dir if failed else spool,
                    value if value > 0 else self._epochs[-value],
                )
            return self._serve(state, i, spool, failed)
        self.stats.misses += 1
        pool = self.pool
        flight = pool.find(uid)
        if flight is None:
            flight = pool.submit(uid, spool, self.probe, (user, spool), self._probed)
            if flight is None:
                self.stats.fallbacks += 1
                return self._serve(state, i, spool, True)
        remaining = self.deadline - (now - flight.submitted)
        if remaining <= 0:
            self._fallback(flight)
            return self._serve(state, i, spool, True)
        return pool.wait(flight, remaining, self._fallback_answer)

    def _fallback(self, flight):
        self.stats.fallbacks += 1
        if not flight.late:
            flight.late = True
            log.warn(
                "home probe of {path} for {user} (uid {uid}) still running after "
                "{deadline} s; answering {alt} meanwhile",
                path=os.fsdecode(flight.path), user=self._name_of(flight.key), uid=flight.key,
                deadline=self.deadline, alt=os.fsdecode(self.rules.alt_dir),
            )

    def _name_of(self, uid):
        user = self._state.table.by_uid(uid)
        return "?" if user is None else os.fsdecode(user.name)

    def _fallback_answer(self, flight):
        self._fallback(flight)
        return self._serve_uid(flight.key, True)

    def _probed(self, flight, result):
        """
        Record a finished probe (in the reactor thread) and return the
        answer for the callers waiting on it.
        """
        uid, spool = flight.key, flight.path
        if result is None:
            result = ProbeResult(False, errnos.EIO, spool, "the probe raised")
        state = self._state
        i = state.table.index_of(uid)
        user = state.table.at(i) if i >= 0 else None
        name = os.fsdecode(user.name) if user is not None else "?"
        if flight.late:
            self.stats.late += 1
            log.info(
                "home probe of {path} for {user} (uid {uid}) finished after {age:.1f} s: {outcome}",
                path=os.fsdecode(spool), user=name, uid=uid,
                age=self.clock.seconds() - flight.submitted,
                outcome="ok" if result.ok else errno_name(result.errno),
            )
        if not result.ok:
            self.stats.failures += 1
            log.warn(
                "home of {user} (uid {uid}) unusable, mail goes to {alt}: {failure}",
                user=name, uid=uid, alt=os.fsdecode(self.rules.alt_dir),
                failure=result.describe(),
            )
        if user is None or self.rules.spool_of(user) != spool:
            # The table changed under the probe: its result is not about
            # this user's home any more.
            return self.peek(uid)
        state.status[i] = (state.status[i] & _SERVED_ALT) | _CHECKED | (0 if result.ok else _FAILED)
        state.expires[i] = self.clock.seconds() + self.cache_interval
        self._touch(state, i)
        return self._serve(state, i, spool, not result.ok)

    def valid_until(self, uid):
        state = self._state
        i = state.table.index_of(uid)
        if i < 0 or not self.verify or self.rules.spool_of(state.table.at(i)) is None:
            return _FOREVER
        if state.status[i] & _CHECKED:
            return state.expires[i]
        return 0.0

    def peek(self, uid):
        state = self._state
        i = state.table.index_of(uid)
        if i < 0:
            return Resolution(self.rules.alt_dir, self._unknown)
        spool = self.rules.spool_of(state.table.at(i))
        if spool is None or not self.verify:
            return self._serve(state, i, spool, spool is None)
        alt = bool(state.status[i] & _SERVED_ALT)
        return Resolution(self.rules.alt_dir if alt else spool, self._stamp(state, i))

    def mailbox(self, name):
        """
        Return C{~NAME/<subdir>/NAME}, or the alternate spool's C{NAME}
        while the user's link points there; never waits for a probe.
        """
        state = self._state
        user = state.table.by_name(name)
        if user is None:
            return None
        i = state.table.index_of(user.uid)
        target = self.rules.mailbox_of(user)
        if self.verify and state.status[i] & _SERVED_ALT:
            target = self.rules.alt_dir + b"/" + user.name
        return Resolution(target, self._stamp(state, i))

    # -- the operator's view and controls

    def in_flight(self):
        """
        Return the probes in flight (L{FlightInfo}s, with their ages).
        """
        return self.pool.in_flight() if self.pool is not None else []

    def hung(self):
        """
        Return the probes running longer than the deadline.
        """
        return self.pool.hung() if self.pool is not None else []

    def cache_entry(self, uid):
        """
        Return the L{CacheEntry} of C{uid}, or L{None} for a uid the table
        does not know.
        """
        state = self._state
        i = state.table.index_of(uid)
        if i < 0:
            return None
        st = state.status[i]
        now = self.clock.seconds()
        if st & _CHECKED:
            verdict = "failed" if st & _FAILED else "ok"
            expires_in = state.expires[i] - now
            if expires_in <= 0:
                verdict += " (expired)"
            age = now - (state.expires[i] - self.cache_interval)
        else:
            verdict, expires_in, age = "unverified", None, None
        flight = self.pool.find(uid) if self.pool is not None else None
        target = self.rules.alt_dir if st & _SERVED_ALT else self.rules.spool_of(state.table.at(i))
        return CacheEntry(
            verdict, age, expires_in, flight is not None,
            target if target is not None else self.rules.alt_dir, self._stamp(state, i),
        )

    def describe(self, uid):
        """
        Return C{(state, age)} of C{uid}'s cached probe result for a dump:
        C{ok}, C{failed}, C{unverified} (possibly C{+probing}), and the
        result's age in whole seconds or C{-}.
        """
        entry = self.cache_entry(uid)
        if entry is None:
            return "unknown", "-"
        state = entry.state.replace(" (expired)", "-expired")
        if entry.probing:
            state += "+probing"
        return state, "-" if entry.age is None else str(int(entry.age))

    def status(self):
        """
        Name/value pairs for the status report: the cache's and the
        pool's counters.
        """
        counts = self.stats_dict()
        pairs = [("verify", self.verify), ("cache_interval", self.cache_interval),
                 ("probe_deadline", self.deadline)]
        pairs += [(f"cache_{name}", counts[name]) for name in ("hits", "misses")]
        pairs += [
            ("probes_started", counts["started"]),
            ("probes_in_flight", counts["in_flight"]),
            ("probes_hung", len(self.hung())),
            ("probes_failed", counts["failures"]),
            ("probes_late", counts["late"]),
            ("fallbacks", counts["fallbacks"]),
            ("pool_exhausted", counts["exhausted"]),
            ("pool_threads", self.pool.threads if self.pool is not None else 0),
            ("pool_busy", self.pool.busy() if self.pool is not None else 0),
        ]
        return pairs

    def stats_dict(self):
        """
        Return every counter by name: cache hits and misses, probes
        started, fallbacks to the alternate spool, probes refused because
        the pool was exhausted, failed probes, probes that finished after
        their deadline.
        """
        counts = self.stats.as_dict()
        counts["started"] = self.pool.started_count if self.pool is not None else 0
        counts["exhausted"] = self.pool.exhausted_count if self.pool is not None else 0
        counts["in_flight"] = self.pool.count() if self.pool is not None else 0
        return counts

    def flush(self, uid=None):
        """
        Forget cached probe results, of C{uid} or of everybody: the next
        request probes again.  Link values stay as they are until then.
        """
        state = self._state
        self.generation += 1
        if uid is None:
            state.status[:] = state.status.translate(_CLEAR_CHECKED)
            if self._dirty is not None:
                self._flush_after_reload = True
            return
        i = state.table.index_of(uid)
        if i >= 0:
            state.status[i] &= ~(_CHECKED | _FAILED)
            self._touch(state, i)

    def footprint(self):
        """
        Return the bytes held by the table and the per-user state.
        """
        return self._state.table.footprint() + self._state.footprint()

    # -- reloading the table

    def set_table(self, table):
        """
        Swap in C{table} now (in the calling thread): users whose entry
        did not change keep their cached state.
        """
        if self._reloading is not None:
            raise RuntimeError("a reload is running")
        state, changed = _remap(self._state, table, len(self._epochs))
        self._install(state, changed)

    def reload(self, loader):
        """
        Load a new table with C{loader()} in a thread, remap the per-user
        state there too, and swap both in at once.  Serving goes on
        meanwhile; a reload asked for while one runs shares it.

        @return: a Deferred that fires with the new table, or with
            L{None} (and a log line) if C{loader} failed.
        """
        if self._reloading is not None:
            d = Deferred()
            self._reloading.append(d)
            return d
        self._reloading = []
        self._dirty = set()
        self._flush_after_reload = False
        old = self._state
        epoch = len(self._epochs)
        reactor = self.pool.reactor

        def work():
            table = loader()
            return _remap(old, table, epoch)

        d = deferToThreadPool(reactor, reactor.getThreadPool(), work)
        d.addCallbacks(self._reloaded, self._reload_failed, callbackArgs=(old,))
        return d

    def _reloaded(self, result, old):
        state, changed = result
        dirty, self._dirty = self._dirty, None
        # Whatever happened to the old state while the thread copied it.
        for i in dirty:
            uid = old.table.at(i).uid
            j = state.table.index_of(uid)
            if j >= 0 and state.table.at(j) == old.table.at(i):
                state.status[j] = old.status[i]
                state.expires[j] = old.expires[i]
                state.changed[j] = old.changed[i]
        if self._flush_after_reload:
            state.status[:] = state.status.translate(_CLEAR_CHECKED)
        self._install(state, changed)
        return self._reload_done(state.table)

    def _reload_failed(self, failure):
        self._dirty = None
        log.error(
            "reloading the user table failed, keeping the {count} users loaded: {error}",
            count=len(self._state.table), error=failure.getErrorMessage() or failure.type.__name__,
        )
        return self._reload_done(None)

    def _reload_done(self, table):
        waiting, self._reloading = self._reloading, None
        for d in waiting:
            d.callback(table)
        return table

    def _install(self, state, changed):
        old_table = self._state.table
        # The stamp is taken now, in the reactor thread: later than any
        # answer given before the swap.
        stamp = self.changes.now()
        self._epochs.append(stamp)
        if state.epoch != len(self._epochs) - 1:
            raise AssertionError("reload epochs out of order")
        if changed:
            self._unknown = stamp
        self._state = state
        self.generation += 1
        forget = getattr(self.probe, "forget", None)
        if forget is not None and state.table is not old_table:
            forget()


def resolver_for(config, table, rules, reactor):
    """
    Return C{(resolver, pool)} for the daemon, from its L{hlfs.config.Config}
    (C{cache_interval}, C{probe_deadline}, C{probe_threads}, C{verify},
    C{password_file}): a L{ProbingResolver} on C{reactor}'s clock and its
    L{ProbePool}.  The service starts the pool in C{startService} and
    stops it in C{stopService}.
    """
    pool = ProbePool(threads=config.probe_threads, reactor=reactor,
                     stuck_after=config.probe_deadline)
    probe = HomeProbe(credentials=Credentials(nss=config.password_file is None))
    resolver = ProbingResolver(
        table, rules, reactor, pool, cache_interval=config.cache_interval,
        deadline=config.probe_deadline, verify=config.verify, probe=probe,
    )
    return resolver, pool
