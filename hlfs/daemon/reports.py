"""
What the daemon tells its operator about itself: the name/value pairs of
the status program (C{hlfs status}) and SIGUSR1's dump of the users and
their links.
"""

import itertools
import os
from datetime import datetime

from twisted.logger import Logger

from hlfs import __version__
from hlfs.daemon import resources
from hlfs.nfs import status

log = Logger()


def dump(service, path):
    """
    SIGUSR1: write the table and cache of the L{HLFSService} C{service}
    to C{path}, one user a line, then the user source's counters as
    C{# name<TAB>value} lines.
    """
    path = os.path.abspath(path)
    describe = getattr(service.resolver, "describe", None)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# uid\tname\thome\tlink\tcached\tage\n")
        learned = getattr(service.resolver, "learned_users", list)()
        for user in itertools.chain(service.resolver.table, learned):
            if describe is not None:
                state, age = describe(user.uid)
            else:
                state, age = "unverified", "-"
            target = service.resolver.peek(user.uid).target
            f.write(
                f"{user.uid}\t{os.fsdecode(user.name)}\t{os.fsdecode(user.home)}\t"
                f"{os.fsdecode(target)}\t{state}\t{age}\n"
            )
        for name, value in getattr(service.resolver, "user_source", list)():
            f.write(f"# {name}\t{value}\n")
    os.replace(tmp, path)
    log.info("SIGUSR1: dumped {n} users to {path}",
             n=len(service.resolver.table) + len(learned), path=path)
    return path


def status_pairs(service):
    """
    Name/value pairs of the L{HLFSService} C{service} for the status
    program and `hlfs status`.
    """
    pairs = [
        ("version", __version__.public()),
        ("pid", os.getpid()),
        ("uptime", int(service.reactor.seconds() - service.started_at)),
        ("port", service.server.port),
        ("mount", service.config.mount),
        ("mounted", service.mounted),
        ("portmap", service.registration.state if service.registration is not None else "off"),
        ("users", len(service.resolver.table)),
        ("reloads", service.reloads),
        ("reload_failures", service.reload_failures),
        ("reply_cache_hits", service.replies.hits),
    ]
    if service.last_reload is not None:
        when, users, seconds = service.last_reload
        stamp = datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
        pairs.append(("last_reload", stamp))
        pairs.append(("last_reload_seconds", f"{seconds:.3f}"))
    if service.config.name is not None:
        pairs.insert(0, ("name", service.config.name))
    if service.registration is not None and service.registration.holder is not None:
        pairs.append(("portmap_holder_port", service.registration.holder))
    count = service.spool_watch.last if service.spool_watch is not None else None
    if count is not None:
        pairs += [("alt_spool_mailboxes", count.mailboxes), ("alt_spool_bytes", count.bytes),
                  ("alt_spool_resident_mailboxes", count.resident),
                  ("alt_spool_count_complete", count.complete)]
    report = getattr(service.resolver, "status", None)
    if report is not None:
        pairs.extend(report())
    pairs.extend(
        resources.limits_report(
            service.server.limits, service.server.stats, service.replies, service.nofile,
            service.config.fd_reserve,
        )
    )
    pairs.extend(status.request_counts(service.stats))
    return pairs
