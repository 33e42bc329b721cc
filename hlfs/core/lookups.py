"""
Users the table does not list, asked for one at a time.

A directory that does not enumerate (sssd's default, nslcd's
C{nss_disable_enumeration}), or that lists only part of its users (a
size limit), still answers for one user.  L{UserLookups} is the second
link of the chain "user table, then the name service": it asks for a uid
or a name in threads of its own, and keeps what it learns.

  - Found: kept until the next reload (L{forget}).  The resolver keeps
    serving the users it learned across a reload, and asks again for each
    at its next call, in the background (L{confirm}).
  - Not found: kept C{negative_ttl} seconds (60 by default).
  - Could not ask (the service failed or timed out): never kept; the
    next caller asks again.
  - At most one lookup per key in flight, at most C{max_in_flight} in
    all: past that, a new key is answered "unknown for now" at once,
    without a query.
  - Callers wait at most C{deadline} seconds; a later answer is kept
    for the next caller.
  - At most C{max_cached} answers of each kind; the oldest go first.

Answers are L{hlfs.core.users.User} (found) or L{None} (not found, or not
known in time).  The blocking lookups are handed in; this module does
no I/O of its own.
"""

import collections
import os

from twisted.logger import Logger

from hlfs.core.users import User, UserTable

log = Logger(namespace="hlfs.users")


class LookupStats:
    """
    The counters of per-user lookups, as plain attributes.

    @ivar started: lookups sent to the name service.
    @ivar found: lookups that found the user.
    @ivar not_found: lookups that found no such user.
    @ivar errors: lookups the name service could not answer.
    @ivar late: lookups that answered after their deadline.
    @ivar refused: keys answered "unknown for now" because too many
        lookups were in flight.
    @ivar hits: answers from the kept results.
    @ivar backed_off: calls answered "unknown for now" without a lookup,
        the name service having just failed for the same key.
    @ivar last_error: the last error's message, or C{""}.
    @ivar last_error_time: when it happened (clock seconds), or L{None}.
    @ivar reloads_kept: reloads whose table was refused, the previous
        table kept.
    @ivar last_reload: C{"accepted"}, C{"refused: ..."}, or C{""}.
    """

    def __init__(self):
        self.started = self.found = self.not_found = self.errors = 0
        self.late = self.refused = self.hits = self.backed_off = 0
        self.last_error = ""
        self.last_error_time = None
        self.reloads_kept = 0
        self.last_reload = ""


class UserLookups:
    """
    Per-user lookups in the name service, cached, bounded, off the
    reactor thread.
    """

    def __init__(self, pool, by_uid, by_name, clock, deadline=1.0, negative_ttl=60.0,
                 max_cached=100_000, unavailable=(OSError,), error_log_interval=60.0,
                 error_retry=1.0):
        """
        @param pool: the L{hlfs.homes.threads.LookupThreads}, the lookups' own
            threads (never the home probes').
        @param by_uid: the blocking lookup of a uid: an object with
            C{name}, C{uid} and C{home}, or L{None} for no such user;
            raises one of C{unavailable} when it could not ask.
        @param by_name: the same for a name (C{bytes}).
        @param error_log_interval: at most one "could not ask" warning
            in this many seconds; the next one counts those left out.
        @param error_retry: after the name service could not be asked
            for a key, it is asked again for that key only this many
            seconds later; callers meanwhile get "not known now", never
            "no such user".
        """
        self.pool = pool
        self.by_uid = by_uid
        self.by_name = by_name
        self.clock = clock
        self.deadline = deadline
        self.negative_ttl = negative_ttl
        self.max_cached = max_cached
        self.unavailable = unavailable
        self.error_log_interval = error_log_interval
        self.error_retry = error_retry
        self._error_logged_at = None
        self._errors_not_logged = 0
        self.stats = LookupStats()
        self._found = collections.OrderedDict()  # ("uid", uid) / ("name", name) -> User
        self._missing = collections.OrderedDict()  # key -> expiry time
        # A directory that is down fails each lookup at once; without a
        # pause per key, every call of an unknown caller would be a query.
        self._unreachable = collections.OrderedDict()  # key -> time to ask again

    # -- answers

    def cached(self, key):
        """
        Return C{(known, user)} for C{key} (C{("uid", N)} or C{("name",
        b"...")}) from the kept answers, without asking.
        """
        user = self._found.get(key)
        if user is not None:
            return True, user
        expires = self._missing.get(key)
        if expires is not None:
            if self.clock.seconds() < expires:
                return True, None
            del self._missing[key]
        return False, None

    def find(self, key):
        """
        Return the L{User} for C{key}, L{None} (no such user, or not known
        now), or a Deferred firing with one of those within the deadline.
        """
        known, user = self.cached(key)
        if known:
            self.stats.hits += 1
            return user
        if self._backing_off(key):
            return None
        pool = self.pool
        flight = pool.find(key)
        if flight is None:
            kind, value = key
            lookup = self.by_uid if kind == "uid" else self.by_name
            flight = pool.submit(key, self._describe(key).encode(), self._ask, (lookup, value),
                                 self._answered)
            if flight is None:
                self.stats.refused += 1
                return None
            self.stats.started += 1
        remaining = self.deadline - (self.clock.seconds() - flight.submitted)
        if remaining <= 0:
            self._overdue(flight)
            return None
        return pool.wait(flight, remaining, self._overdue)

    def _backing_off(self, key):
        # Whether the name service failed for key less than error_retry
        # seconds ago (counted): not asked again yet.
        retry = self._unreachable.get(key)
        if retry is None:
            return False
        if self.clock.seconds() < retry:
            self.stats.backed_off += 1
            return True
        del self._unreachable[key]
        return False

    def find_uid(self, uid):
        return self.find(("uid", uid))

    def find_name(self, name):
        return self.find(("name", name))

    def _ask(self, lookup, value):
        # In a lookup thread.
        try:
            return "found", lookup(value)
        except self.unavailable as e:
            return "error", getattr(e, "strerror", None) or str(e)

    def _answered(self, flight, result):
        """
        Keep a lookup's answer (in the reactor thread) and return it to
        the callers waiting.
        """
        if flight.late:
            self.stats.late += 1
        return self._settle(flight.key, result)[1]

    def _settle(self, key, result, then="not kept, asked again at the next call"):
        """
        Count and keep the answer C{result} for C{key}; return C{(outcome,
        user)}, C{outcome} one of C{"found"}, C{"missing"}, C{"error"}
        (logged, saying what C{then} happens).
        """
        stats = self.stats
        if result is None:
            result = "error", "the lookup raised"
        outcome, value = result
        if outcome == "error":
            stats.errors += 1
            stats.last_error = f"{self._describe(key)}: {value}"
            stats.last_error_time = self._log_error(key, value, then)
            self._keep(self._unreachable, key, self.clock.seconds() + self.error_retry)
            return "error", None
        self._unreachable.pop(key, None)
        if value is None:
            stats.not_found += 1
            self._found.pop(key, None)
            self._keep(self._missing, key, self.clock.seconds() + self.negative_ttl)
            return "missing", None
        stats.found += 1
        user = User(os.fsencode(value.name), value.uid, os.fsencode(value.home))
        self._keep(self._found, ("uid", user.uid), user)
        self._keep(self._found, ("name", user.name), user)
        self._missing.pop(key, None)
        if key != ("uid", user.uid) and key != ("name", user.name):
            # Asked by name, and NSS answered another spelling: keep both.
            self._keep(self._found, key, user)
        return "found", user

    def confirm(self, previous, then):
        """
        Ask again, in the background, for the uid of C{previous}: a user
        found before the last reload, still served from that entry.
        C{then(previous, user)} is called in the reactor thread with the
        L{User} found or L{None} (no such user), but not when the name
        service could not be asked.  One lookup per key, as for L{find}.
        """
        key = ("uid", previous.uid)
        if self._backing_off(key):
            return
        if self.pool.find(key) is None:
            flight = self.pool.submit(key, self._describe(key).encode(), self._ask,
                                      (self.by_uid, previous.uid),
                                      lambda f, result: self._confirmed(f, result, previous, then))
            self.stats.refused += flight is None
            self.stats.started += flight is not None

    def _confirmed(self, flight, result, previous, then):
        # Nobody waits for a confirmation: a late one is counted here.
        if flight.late or self.clock.seconds() - flight.submitted > self.deadline:
            self.stats.late += 1
        outcome, user = self._settle(flight.key, result, "the entry found before the reload "
                                     "is kept, asked again at the next call")
        if outcome != "error":
            then(previous, user)
        return user

    def _log_error(self, key, error, then):
        # A directory that is down fails every lookup at once, and each
        # unknown caller asks again: one line per interval, not per call.
        now = self.clock.seconds()
        logged = self._error_logged_at
        if logged is not None and now - logged < self.error_log_interval:
            self._errors_not_logged += 1
            return now
        more, self._errors_not_logged = self._errors_not_logged, 0
        self._error_logged_at = now
        log.warn("the name service could not be asked for {what}: {error}; {then}{more}",
                 what=self._describe(key), error=error, then=then,
                 more=f" ({more} more such errors in the last {now - logged:.0f} s)" if more else "")
        return now

    def _keep(self, cache, key, value):
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_cached:
            cache.popitem(last=False)

    def _overdue(self, flight):
        if not flight.late:
            flight.late = True
            log.warn(
                "the name service has not answered for {what} after {deadline} s; "
                "unknown for now, the answer is kept when it comes",
                what=self._describe(flight.key), deadline=self.deadline,
            )
        return None

    @staticmethod
    def _describe(key):
        kind, value = key
        return f"uid {value}" if kind == "uid" else f"user {os.fsdecode(value)}"

    # -- reloads and the operator

    def forget(self):
        """
        Drop the found users (the table was reloaded); users known not to
        exist stay so until their time is up.  (The resolver still serves
        the users it learned, until L{confirm} answers for them.)
        """
        self._found.clear()

    def flush(self):
        """
        Drop every kept answer.
        """
        self._found.clear()
        self._missing.clear()
        self._unreachable.clear()

    def positive(self):
        """
        Return how many users are kept as found.
        """
        return sum(1 for kind, _ in self._found if kind == "uid")

    def negative(self):
        """
        Return how many keys are kept as not found (expired ones
        included until they are asked for again).
        """
        return len(self._missing)

    def in_flight(self):
        return self.pool.count()

    def users(self):
        """
        Return the found users, in the order they were learned.
        """
        return [user for (kind, _), user in list(self._found.items()) if kind == "uid"]

    def status(self, table, to_confirm=0):
        """
        Name/value pairs for the status report, about C{table} (the user
        table in use), these lookups, and C{to_confirm} users found
        before the last reload and not asked for again yet.
        """
        return user_source_pairs(table, self.stats, self.positive(), self.negative(),
                                 self.in_flight(), self.clock.seconds(), to_confirm)


def user_source_pairs(table, stats, positive=0, negative=0, in_flight=0, now=None, to_confirm=0):
    """
    Name/value pairs about where the users come from: C{table}'s size and
    source, and the counters of C{stats} (a L{LookupStats}); the same
    names whether or not users are asked for one at a time.
    """
    when = stats.last_error_time
    return [
        ("users_table", len(table)),
        ("users_source", table.source),
        ("users_looked_up", positive),
        ("users_to_confirm", to_confirm),
        ("users_not_found_cached", negative),
        ("user_lookups_started", stats.started),
        ("user_lookups_in_flight", in_flight),
        ("user_lookups_late", stats.late),
        ("user_lookups_refused", stats.refused),
        ("user_lookups_backed_off", stats.backed_off),
        ("directory_errors", stats.errors),
        ("directory_last_error", stats.last_error or "-"),
        ("directory_last_error_age", "-" if when is None or now is None else f"{now - when:.0f}"),
        ("last_reload_verdict", stats.last_reload or "-"),
        ("reloads_kept_previous", stats.reloads_kept),
    ]


def guard_reload(old, new, confirm, max_loss=0.10, sample=20):
    """
    Decide which table a reload installs: C{new}, unless it lost users
    by accident.  Runs in the reload's thread (C{confirm} blocks).

    Each user of C{old} missing from C{new} is confirmed with
    C{confirm(uid)}, the name service asked for that one user: a user it
    still finds is kept, with its entry as found; one it does not know
    is dropped (deleted for real); one it cannot answer for is kept as it
    was, and no further user is asked (the directory is not answering).

    When more than C{max_loss} of the users are missing (a directory
    down, or cut short by a size limit, during the reload), the first
    C{sample} of them are confirmed first: if any is still known or the
    service does not answer, the list is partial, and the whole reload
    is refused, the previous table kept.  Only if all of them are gone
    for real is the loss taken as a real one, and the rest confirmed.

    @return: C{(table, verdict)}, C{verdict} a line for the log and the
        status report; C{table is old} when the reload was refused.
    """
    missing = [user for user in old if new.index_of(user.uid) < 0]
    if not missing:
        return new, "accepted"
    share = len(missing) / len(old)
    gone = 0
    if share > max_loss:
        why = None
        for user in missing[:sample]:
            try:
                account = confirm(user.uid)
            except OSError as e:
                why = f"the name service could not be asked for {os.fsdecode(user.name)}: " \
                      f"{e.strerror or e}"
                break
            if account is not None:
                why = f"{os.fsdecode(user.name)} is still known one by one"
                break
            gone += 1
        if why is not None:
            return old, (
                f"refused: the name service listed {len(new)} users, {len(missing)} of the "
                f"{len(old)} loaded missing ({share:.0%} > {max_loss:.0%}), and {why}; "
                "keeping the previous table"
            )
    kept, unasked = [], 0
    for user in missing[gone:]:
        if unasked:
            kept.append(user)
            unasked += 1
            continue
        try:
            account = confirm(user.uid)
        except OSError:
            kept.append(user)
            unasked += 1
            continue
        if account is None:
            gone += 1
        else:
            kept.append(User(os.fsencode(account.name), account.uid, os.fsencode(account.home)))
    verdict = f"accepted: {len(missing)} users missing from the list, {gone} confirmed gone"
    if unasked:
        verdict += f", {unasked} kept unconfirmed (the name service did not answer)"
    if not kept:
        return new, verdict
    table = UserTable([*((u.name, u.uid, u.home) for u in new),
                       *((u.name, u.uid, u.home) for u in kept)], new.problems, new.source)
    return table, verdict
