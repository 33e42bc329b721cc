"""
Prometheus metrics for C{twistd hlfs --metrics}: a collector that reads,
at each scrape, the very counters the status program (C{hlfs status})
reports, so the two never disagree and nothing is counted twice.

Each metric family is one function of the service yielding
C{prometheus_client} metric families, listed in L{FAMILIES}; adding one
is writing one more.  Labels are of low cardinality by construction:
programs, versions and procedures are the served ones, outcomes and
errno names come from fixed sets, and no label ever holds a uid or a user
name.
"""

import platform

import twisted
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.web.resource import Resource
from twisted.web.server import Site

from hlfs import __version__
from hlfs.console.options import listen_description
from hlfs.daemon.config import ConfigError
from hlfs.nfs.status import call_labels

FAMILIES = []


def family(function):
    """
    Add C{function(service) -> iterable of metric families} to what is
    collected at each scrape.
    """
    FAMILIES.append(function)
    return function


@family
def rpc_requests(service):
    requests = CounterMetricFamily(
        "hlfs_rpc_requests",
        "RPC calls by program, version, procedure and outcome (success, or the error "
        "reply's name; dropped: no reply), those the reply cache answered included.",
        labels=["program", "version", "procedure", "outcome"],
    )
    stats = service.stats
    for key, count in list(stats.items()):
        if isinstance(key, str):
            requests.add_metric(["", "", "", key], count)
        elif isinstance(key[0], str):
            requests.add_metric([*call_labels(*key[1:]), key[0]], count)
        else:
            # Calls that reached the procedure, less those it answered
            # with an error (counted under their own outcome).
            failed = stats.get(("garbage_args", *key), 0) + stats.get(("system_err", *key), 0)
            requests.add_metric([*call_labels(*key), "success"], count - failed)
    yield requests
    yield CounterMetricFamily(
        "hlfs_rpc_reply_cache_hits",
        "Calls answered from the reply cache.",
        value=service.replies.hits,
    )
    yield GaugeMetricFamily(
        "hlfs_rpc_reply_cache_entries", "Replies held by the reply cache.",
        value=len(service.replies.entries),
    )


@family
def home_checks(service):
    resolver = service.resolver
    counts = resolver.stats_dict()
    for name, key, text in (
        ("hlfs_home_check_cache_hits", "hits", "Link answers taken from a cached home check."),
        ("hlfs_home_check_cache_misses", "misses", "Link answers that needed a home check."),
        ("hlfs_home_checks", "started", "Home checks run."),
        ("hlfs_home_check_fallbacks", "fallbacks",
         "Answers given the alternate spool because a check passed its deadline or the "
         "pool was exhausted."),
        ("hlfs_home_checks_late", "late", "Home checks that finished after their deadline."),
        ("hlfs_home_check_pool_exhausted", "exhausted",
         "Home checks not started because every home-check process was stuck."),
    ):
        yield CounterMetricFamily(name, text, value=counts[key])
    failures = CounterMetricFamily(
        "hlfs_home_check_failures", "Home checks that found the home unusable, by errno name.",
        labels=["errno"],
    )
    for errno, count in sorted(resolver.stats.failures_by_errno.items()):
        failures.add_metric([errno], count)
    yield failures
    yield GaugeMetricFamily(
        "hlfs_home_checks_in_flight", "Home checks asked for and not finished.",
        value=counts["in_flight"],
    )
    yield GaugeMetricFamily(
        "hlfs_home_checks_hung", "Home checks running longer than the deadline.",
        value=len(resolver.hung()),
    )
    engine = service.checks
    yield GaugeMetricFamily(
        "hlfs_home_check_processes_max",
        "Home-check processes the daemon keeps (--home-checks): the most jobs running at once.",
        value=engine.size)
    yield GaugeMetricFamily("hlfs_home_check_processes", "Home-check processes running.",
                            value=len(engine.processes.alive))
    yield GaugeMetricFamily("hlfs_home_check_processes_busy",
                            "Home-check processes on a job (a home check or a lock file).",
                            value=engine.busy())
    yield GaugeMetricFamily(
        "hlfs_home_check_processes_stuck",
        "Home-check processes on a job for longer than the deadline (a hung home); when "
        "it equals hlfs_home_check_processes_max, new checks are refused: every caller "
        "gets the alternate spool at once.", value=engine.stuck())
    yield CounterMetricFamily(
        "hlfs_home_check_processes_started",
        "Home-check processes started (at start-up, and a replacement for one that ended).",
        value=engine.processes.started)
    yield GaugeMetricFamily("hlfs_home_checks_queued",
                            "Jobs waiting for a home-check process.", value=engine.queued())
    for name, value, text in (
        ("hlfs_home_checks_expired_queued", engine.expired_count,
         "Jobs dropped unstarted at their deadline: no home-check process was free in time."),
        ("hlfs_home_checks_refused_queue_full", engine.queue_full_count,
         "Jobs refused because the queue of jobs waiting for a process was full."),
        ("hlfs_home_checks_lost", engine.lost_count,
         "Jobs whose home-check process ended before it answered."),
    ):
        yield CounterMetricFamily(name, text, value=value)


@family
def users(service):
    yield GaugeMetricFamily("hlfs_users", "Entries in the user table.",
                            value=len(service.resolver.table))


@family
def user_lookups(service):
    stats = service.resolver.user_stats
    lookups = CounterMetricFamily(
        "hlfs_user_lookups",
        "Per-user name-service lookups of users the table lacks, by result (found, "
        "not_found, error: the name service could not be asked; late: answered after "
        "the deadline; refused: too many in flight; backed_off: not asked, the name "
        "service having failed for the same key less than a second before).",
        labels=["result"],
    )
    for result, count in (("found", stats.found), ("not_found", stats.not_found),
                          ("error", stats.errors), ("late", stats.late),
                          ("refused", stats.refused), ("backed_off", stats.backed_off)):
        lookups.add_metric([result], count)
    yield lookups
    yield CounterMetricFamily("hlfs_user_lookup_cache_hits",
                              "Per-user lookups answered from kept results.", value=stats.hits)
    yield CounterMetricFamily("hlfs_reloads_refused",
                              "Reloads whose table was refused, the previous table kept.",
                              value=stats.reloads_kept)


@family
def connections(service):
    stats = service.server.stats
    yield GaugeMetricFamily("hlfs_tcp_connections", "Open TCP connections.",
                            value=stats.connections)
    yield GaugeMetricFamily("hlfs_tcp_connections_unprivileged",
                            "Open TCP connections from unprivileged source ports.",
                            value=stats.unprivileged)
    yield GaugeMetricFamily("hlfs_tcp_connections_paused",
                            "TCP connections not read while their replies wait unsent.",
                            value=stats.paused)
    refused = CounterMetricFamily(
        "hlfs_tcp_connections_refused",
        "TCP connections closed or refused, by the limit that did it.",
        labels=["limit"],
    )
    for limit, count in stats.refused.items():
        refused.add_metric([limit], count)
    yield refused


@family
def reloads(service):
    yield CounterMetricFamily("hlfs_reloads", "Reloads of the user table, failed ones included.",
                              value=service.reloads)
    yield CounterMetricFamily("hlfs_reload_failures", "Reloads of the user table that failed.",
                              value=service.reload_failures)
    if service.last_reload is not None:
        when, _, seconds = service.last_reload
        yield GaugeMetricFamily("hlfs_reload_duration_seconds",
                                "How long the last successful reload took.", value=seconds)
        yield GaugeMetricFamily("hlfs_reload_last_success_timestamp_seconds",
                                "When the last successful reload finished (Unix time).",
                                value=when)


@family
def alt_spool(service):
    watch = service.spool_watch
    count = watch.last if watch is not None else None
    if count is None:
        return
    yield GaugeMetricFamily(
        "hlfs_alt_spool_mailboxes",
        "Non-empty mailboxes waiting in the alternate spool at the last count (not those of "
        "system accounts, whose mailbox it is).",
        value=count.mailboxes,
    )
    yield GaugeMetricFamily("hlfs_alt_spool_bytes", "Bytes of those mailboxes.", value=count.bytes)
    yield GaugeMetricFamily(
        "hlfs_alt_spool_resident_mailboxes",
        "Non-empty mailboxes of system accounts (uid under --uid-min) at the last count: the "
        "alternate spool is their mailbox, and they are not counted as waiting.",
        value=count.resident,
    )
    if count.oldest is not None:
        yield GaugeMetricFamily(
            "hlfs_alt_spool_oldest_change_timestamp_seconds",
            "When the mailbox changed least recently was last written (Unix time).",
            value=count.oldest,
        )
    yield GaugeMetricFamily(
        "hlfs_alt_spool_count_complete",
        "1 if the last count read every name of the spool, 0 if it stopped at its bound "
        "(the counts are then lower bounds) or could not read the spool.",
        value=int(count.complete),
    )
    yield GaugeMetricFamily(
        "hlfs_alt_spool_count_timestamp_seconds", "When the spool was last counted (Unix time).",
        value=count.at,
    )


@family
def portmap(service):
    registration = service.registration
    if registration is None:
        return
    state = GaugeMetricFamily(
        "hlfs_portmap_registration",
        "1 for the state of the portmapper registration: registered (this daemon's "
        "mappings are in place), deferred (another live daemon holds them), unregistered "
        "(no portmapper, or it lost them and they are not back yet).",
        labels=["state"],
    )
    for name in ("registered", "deferred", "unregistered"):
        state.add_metric([name], int(registration.state == name))
    yield state
    yield CounterMetricFamily(
        "hlfs_portmap_registrations",
        "Times this daemon set its mappings with the portmapper (again after a restart of it).",
        value=registration.registrations,
    )


@family
def daemon(service):
    if service.mount_service is not None:
        yield GaugeMetricFamily(
            "hlfs_mounted",
            "1 while the kernel has this daemon mounted, else 0 (not yet, or the mount was "
            "found gone from /proc/mounts); absent with --no-mount.",
            value=int(service.mounted),
        )
    yield GaugeMetricFamily("hlfs_start_time_seconds", "When the daemon started (Unix time).",
                            value=service.started_at)
    yield GaugeMetricFamily("hlfs_uptime_seconds", "Seconds since the daemon started.",
                            value=service.reactor.seconds() - service.started_at)
    info = InfoMetricFamily("hlfs_build", "The versions hlfs runs with.")
    info.add_metric([], {
        "version": __version__.public(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
    })
    yield info


class HLFSCollector:
    """
    A C{prometheus_client} collector of L{FAMILIES} for an
    L{hlfs.daemon.service.HLFSService}.

    @ivar name: the daemon's C{--name}, added as the label C{name} to every
        sample, or L{None}: several daemons on one host tell apart so.
    """

    def __init__(self, service, families=FAMILIES, name=None):
        self.service = service
        self.families = families
        self.name = name

    def collect(self):
        for metrics in self.families:
            for family in metrics(self.service):
                if self.name is not None:
                    family.samples = [
                        s._replace(labels={**s.labels, "name": self.name}) for s in family.samples
                    ]
                yield family


class MetricsPage(Resource):
    """
    C{/metrics}, rendered in the reactor thread, where the counters
    change: a scrape reads them between two requests, never during one.
    (C{prometheus_client.twisted.MetricsResource} would collect in the
    reactor's thread pool, alongside the reactor thread that updates
    them, and take a thread reloads need.)
    """

    isLeaf = True

    def __init__(self, registry):
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request):
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return encode(self.registry)


class MetricsSite(Site):
    """
    A site that logs nothing per request: a scrape every few seconds
    would fill the daemon's log.
    """

    noisy = False

    def log(self, request):
        pass


def metrics_site(service, name=None):
    """
    Return a L{Site} serving the service's metrics at C{/metrics}, from a
    registry of its own (not the process-wide default one).
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(HLFSCollector(service, name=name))
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    return MetricsSite(root)


def metrics_endpoint(portspec, reactor):
    """
    Return the endpoint C{--metrics PORTSPEC} listens on: a bare port
    number listens on loopback only, any other interface must be given
    in an endpoint description.

    @raise ConfigError: for an empty or unusable C{portspec}.
    """
    if not portspec.strip():
        raise ConfigError("--metrics needs a port number or an endpoint description")
    try:
        return endpoints.serverFromString(reactor, listen_description(portspec))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"bad --metrics endpoint {portspec!r}: {e}") from None


def metrics_service(endpoint, service, name=None):
    """
    Return the service serving C{service}'s metrics on C{endpoint}; a port
    it cannot listen on fails the daemon's start, as the manhole's does.
    """
    metrics = StreamServerEndpointService(endpoint, metrics_site(service, name))
    metrics._raiseSynchronously = True
    return metrics
