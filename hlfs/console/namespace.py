"""
What an operator finds in the manhole console: the daemon's live objects
under clear names, and a few helpers for diagnosing a live server.

The console runs in the reactor thread, so every helper here returns at
once: when an answer needs I/O (a probe of a home directory, a reload of
the user table) the helper starts it and returns its Deferred, which the
console prints when it fires.

The namespace is built against the service's attributes (C{fs},
C{resolver}, C{stats}, C{config}, C{reload}) and the probing resolver's
optional ones (C{flush}, C{in_flight}, C{hung}, C{engine}, C{stats_dict},
C{cache_entry} or C{cache}); a part that is missing shows up as a clear
"not available" instead of an error.
"""

import os
import pydoc
from datetime import datetime, timezone

from twisted.internet.defer import Deferred

from hlfs.console.values import NotAvailable, Live, Text, as_text, describe_table, live_attribute


class _Context:
    """
    The service and the lookups every helper shares.
    """

    def __init__(self, service):
        self.service = service

    @property
    def resolver(self):
        resolver = getattr(self.service, "resolver", None)
        return NotAvailable("the service has no 'resolver'") if resolver is None else resolver

    @property
    def table(self):
        table = getattr(self.resolver, "table", None)
        return NotAvailable("the resolver has no user 'table'") if table is None else table

    def find(self, who):
        """
        Turn a uid or a user name into C{(uid, user)}; C{user} is L{None} for
        a uid the table does not know.

        @raise LookupError: for a name the table does not know.
        """
        table = self.table
        if isinstance(who, bool) or not isinstance(who, (int, str, bytes)):
            raise TypeError(f"expected a uid (int) or a user name, not {who!r}")
        if isinstance(who, int):
            user = table.by_uid(who) if table else None
            return who, user
        name = os.fsencode(who) if isinstance(who, str) else who
        user = table.by_name(name) if table else None
        if user is None:
            raise LookupError(f"no user named {as_text(name)!r} in {self.describe_table()}")
        return user.uid, user

    def describe_table(self):
        table = self.table
        if not table:
            return repr(table)
        return f"the user table ({len(table)} users from {getattr(table, 'source', '?')})"


def _cache_entry(resolver, uid):
    """
    The probe cache's entry for C{uid}: from the resolver's
    C{cache_entry(uid)} if it has one, else from a C{cache} mapping, else
    L{None}.
    """
    try:
        lookup = getattr(resolver, "cache_entry", None)
        if lookup is not None:
            return lookup(uid)
        cache = getattr(resolver, "cache", None)
        if cache is None:
            return None
        if hasattr(cache, "get"):
            return cache.get(uid)
        return cache[uid]
    except Exception:
        return None


def _probes(resolver):
    """
    Whether C{resolver} verifies homes with probes (it can flush them).
    """
    return hasattr(resolver, "flush") and getattr(resolver, "verify", True)


def _describe_flight(item):
    """
    One probe in flight, for an operator: uid, path, age, running time.
    """
    key, path, age = (getattr(item, name, None) for name in ("key", "path", "age"))
    if key is None or age is None:
        return repr(item)
    running = getattr(item, "running", None)
    state = "queued, waiting for a home-check process" if running is None else f"running {running:.1f}s"
    return f"uid {key}: {as_text(path)} asked {age:.1f}s ago, {state}"


def _fired_result(d):
    """
    Return C{(True, result)} if Deferred C{d} has already fired, else
    C{(False, None)}, without consuming its result.
    """
    box = []

    def take(result):
        box.append(result)
        return result

    d.addBoth(take)
    if box:
        return True, box[0]
    return False, None


class _Helpers:
    """
    The console's helper functions, bound to one service.
    """

    def __init__(self, context, write=print):
        self.context = context
        self.write = write

    def _explain(self, uid, user):
        """
        Lines saying who C{uid} is and what the table alone implies.
        """
        resolver = self.context.resolver
        rules = getattr(resolver, "rules", None)
        if user is None:
            lines = [f"uid {uid}: not in {self.context.describe_table()}"]
        else:
            lines = [
                f"uid {uid}: user {as_text(user.name)}, home {as_text(user.home)}"
            ]
        if rules is not None:
            spool = rules.spool_of(user)
            if user is None:
                lines.append(f"unknown uid, so the link goes to the alternate spool {as_text(rules.alt_dir)}")
            elif spool is None:
                lines.append(
                    f"home {as_text(user.home)!r} is the root directory or a relative path, "
                    f"so the link goes to the alternate spool {as_text(rules.alt_dir)}"
                )
            else:
                lines.append(f"spool if the home is usable: {as_text(spool)}")
        entry = _cache_entry(resolver, uid)
        if entry is not None:
            lines.append(f"probe cache entry: {entry!r}")
        peek = getattr(resolver, "peek", None)
        if peek is not None:
            try:
                known = peek(uid)
            except Exception as e:
                known = f"(peek failed: {e!r})"
            if isinstance(known, Deferred):
                known = "(peek returned a Deferred)"
            lines.append(f"last known link: {self._describe_resolution(known)}")
        return lines

    def _describe_resolution(self, resolution):
        target = getattr(resolution, "target", None)
        if target is None:
            return repr(resolution)
        changed = getattr(resolution, "changed", None)
        if isinstance(changed, int):
            when = datetime.fromtimestamp(changed / 1e9, timezone.utc).isoformat(timespec="seconds")
        else:
            when = "?"
        return f"{as_text(target)} (changed {when})"

    def _verdict(self, lines, uid, user, resolution, probed):
        """
        The report's last lines: the link, and why.

        @param probed: whether the answer waited for a probe (L{False}:
            it came at once, from the table or the probe cache).
        """
        resolver = self.context.resolver
        rules = getattr(resolver, "rules", None)
        target = getattr(resolution, "target", None)
        lines.append(f"home -> {as_text(target) if target is not None else repr(resolution)}")
        if rules is not None and target is not None and user is not None:
            spool = rules.spool_of(user)
            source = "this probe" if probed else "the cached probe result"
            if spool is not None and target == spool:
                if _probes(resolver):
                    lines.append(f"because: the home is usable ({source})")
                else:
                    lines.append("because: the home is in the table (homes are not verified)")
            elif spool is not None and target == rules.alt_dir:
                lines.append(
                    f"because: the spool failed {source} or the probe did not finish in "
                    "time, so mail goes to the alternate spool (the daemon log says why)"
                )
        return Text("\n".join(lines))

    def resolve(self, user_or_uid):
        """
        Show what `home` resolves to for a uid or user name, and why (a probe, if needed, runs in the background).
        """
        uid, user = self.context.find(user_or_uid)
        resolver = self.context.resolver
        lines = self._explain(uid, user)
        if not hasattr(resolver, "resolve"):
            lines.append(repr(resolver))
            return Text("\n".join(lines))
        result = resolver.resolve(uid)
        if isinstance(result, Deferred):
            fired, value = _fired_result(result)
            if fired and not hasattr(value, "getErrorMessage"):
                return self._verdict(lines, uid, user, value, True)
            if not fired:
                self.write("\n".join(lines))
                self.write(
                    f"probe started for uid {uid}; its answer prints below when it finishes"
                )
                return result.addCallback(lambda res: self._verdict([], uid, user, res, True))
            return result
        return self._verdict(lines, uid, user, result, False)

    def flush(self, user=None):
        """
        Drop probe cache entries: one user's (uid or name), or all with no argument.
        """
        resolver = self.context.resolver
        drop = getattr(resolver, "flush", None)
        if drop is None:
            return Text(
                "not available: the resolver keeps no probe cache (links are not verified), "
                "nothing to flush"
            )
        if user is None:
            result = drop()
            what = "all probe cache entries"
        else:
            uid, _ = self.context.find(user)
            result = drop(uid)
            what = f"the probe cache entry of uid {uid}"
        note = "" if result is None else f" (flush returned {result!r})"
        return Text(f"flushed {what}{note}")

    def reload(self):
        """
        Reload the user table now (returns a Deferred; the console prints the outcome).
        """
        start = getattr(self.context.service, "reload", None)
        if start is None:
            return Text("not available: the service has no reload()")
        result = start()
        if not isinstance(result, Deferred):
            return Text(f"reloaded: {self.context.describe_table()}")

        def done(_):
            table = self.context.table
            problems = len(getattr(table, "problems", ()))
            return Text(f"reloaded: {self.context.describe_table()}, {problems} lines skipped")

        return result.addCallback(done)

    def hung(self):
        """
        List the probes in flight, with their age, and those considered stuck.
        """
        resolver = self.context.resolver
        in_flight = getattr(resolver, "in_flight", None)
        stuck = getattr(resolver, "hung", None)
        if in_flight is None and stuck is None:
            return Text("not available: the resolver runs no probes (links are not verified)")
        lines = []
        for label, get in (("in flight", in_flight), ("stuck", stuck)):
            if get is None:
                continue
            items = list(get())
            lines.append(f"{len(items)} probe(s) {label}" + (":" if items else ""))
            lines.extend(f"  {_describe_flight(item)}" for item in items)
        return Text("\n".join(lines))


class ConsoleHelp:
    """
    The console's C{help}: with no argument, lists the names the console
    offers; with one, shows its documentation (never through a pager,
    which would wait on the daemon's own terminal).
    """

    def __init__(self, entries):
        self.entries = entries

    def listing(self):
        width = max(len(name) for name, _ in self.entries)
        lines = ["hlfs manhole console.  Names available here:"]
        lines += [f"  {name:<{width}}  {summary}" for name, summary in self.entries]
        lines.append(
            "The console runs in the daemon's reactor thread: a call that blocks here "
            "stops NFS service until it returns.  The helpers above never block."
        )
        lines.append("help(obj) shows obj's documentation; Ctrl-D or exit() leaves the console.")
        return Text("\n".join(lines))

    def __repr__(self):
        return self.listing()

    def __call__(self, obj=None):
        """
        List the console's names, or show the documentation of C{obj}.
        """
        if obj is None:
            return self.listing()
        return Text(pydoc.render_doc(obj, renderer=pydoc.plaintext))


def _first_doc_line(f):
    return (f.__doc__ or "").strip().splitlines()[0]


class LeaveConsole(SystemExit):
    """
    Raised by the console's C{exit()}: ends the session, never the daemon.
    """


def leave():
    """
    Leave the console; the daemon keeps running.
    """
    raise LeaveConsole()


def _probe_stats(context):
    """
    A L{Live} view of the resolver's probe counters (C{stats_dict()}, or
    its C{stats}).
    """
    resolver = context.resolver
    if hasattr(resolver, "stats_dict"):
        return Live(lambda: context.resolver.stats_dict(), "probe_stats")
    if hasattr(resolver, "stats"):
        return Live(lambda: context.resolver.stats, "probe_stats")
    return NotAvailable("the resolver keeps no probe counters")


def _user_source(context):
    """
    A L{Live} view of the resolver's user source (C{user_source()}), a
    dict of its counters.
    """
    if hasattr(context.resolver, "user_source"):
        return Live(lambda: dict(context.resolver.user_source()), "user_source")
    return NotAvailable("the resolver does not report its user source")


def build_namespace(service, reactor=None):
    """
    Build the console namespace for a running hlfs service.

    @param service: the hlfs service: C{fs}, C{resolver}, C{stats},
        C{config} and C{reload()}; any of them may be missing.
    @param reactor: the reactor, offered as C{reactor}; the global one if
        L{None}.
    @return: a L{dict} for L{hlfs.console.manhole.makeManholeService}.
    """
    if reactor is None:
        from twisted.internet import reactor
    context = _Context(service)
    helpers = _Helpers(context)

    def attribute(name):
        value = getattr(service, name, None)
        return NotAvailable(f"the service has no {name!r}") if value is None else value

    namespace = {
        "service": service,
        "fs": attribute("fs"),
        "resolver": attribute("resolver"),
        "users": live_attribute(
            lambda: context.resolver, "table", "the resolver", describe_table
        ),
        "cache": live_attribute(lambda: context.resolver, "cache", "the resolver"),
        "checks": live_attribute(lambda: context.resolver, "engine", "the resolver"),
        "lookups": live_attribute(lambda: context.resolver, "lookups", "the resolver"),
        "user_source": _user_source(context),
        "stats": live_attribute(lambda: service, "stats", "the service"),
        "probe_stats": _probe_stats(context),
        "config": attribute("config"),
        "reactor": reactor,
        "resolve": helpers.resolve,
        "flush": helpers.flush,
        "reload": helpers.reload,
        "hung": helpers.hung,
        "exit": leave,
        "quit": leave,
    }
    objects = [
        ("service", "the running hlfs service"),
        ("fs", "the NFS file system policy (HomeLinkFS)"),
        ("resolver", "the link resolver: uid -> home link"),
        ("users", "the current user table (follows reloads)"),
        ("cache", "the probe cache"),
        ("checks", "the home-check engine: its processes and the jobs in flight"),
        ("lookups", "users asked for one at a time: lookups.status(users), lookups.stats"),
        ("user_source", "where the users come from: table size and source, lookups, directory errors"),
        ("stats", "RPC request counts"),
        ("probe_stats", "probe counters: cache hits, misses, probes started, fallbacks"),
        ("config", "the options the daemon was started with"),
        ("reactor", "the Twisted reactor"),
    ]
    entries = [
        (name, f"{summary} (not available)" if isinstance(namespace[name], NotAvailable) else summary)
        for name, summary in objects
    ]
    for name in ("resolve", "flush", "reload", "hung"):
        entries.append((f"{name}()", _first_doc_line(namespace[name])))
    namespace["help"] = ConsoleHelp(entries)
    return namespace
