"""
C{twistd hlfs --metrics}: a real Prometheus server scrapes a real daemon
on loopback while the test drives a known number of READLINKs over NFS,
one home check that fails, one call to a program that is not served and
one reload; Prometheus's query API shows exactly those counts, and the
same numbers as C{hlfs status}.
"""

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from hlfs.rpc.message import PROG_UNAVAIL
from tests.support.server import BIN, USERS, RunningServer, make_base, write_passwd
from tests.support.prometheus import PrometheusServer, free_port
from tests.support.rpcsock import call, cred, lookup3, mount_root, readlink3

pytestmark = [pytest.mark.root(reason="the probe counters come from homes checked as their users"), pytest.mark.slow]

#: READLINKs of alice's link: the first checks her home, the others are
#: answered from the reply cache.
READLINKS = 7

#: A user whose home does not exist: its check fails with ENOENT.
HOMELESS = ("dave", 1006, "{base}/home/nobody-here")

READLINK_SERIES = (
    'hlfs_rpc_requests_total{program="nfs",version="3",procedure="READLINK",outcome="success"}'
)


@pytest.fixture
def watched(tmp_path):
    base = make_base()
    write_passwd(base / "passwd", base, USERS + [HOMELESS])
    metrics_port = free_port()
    srv = RunningServer(base, ["--insecure", "--metrics", str(metrics_port)]).start()
    prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{metrics_port}"]).start()
    try:
        yield srv, prometheus, metrics_port
    finally:
        prometheus.stop()
        srv.stop()
    assert "Traceback" not in srv.logtext(), srv.logtext()


def link_of(port, uid):
    credential = cred(uid)
    root = mount_root(port, credential)
    status, fh, _ = lookup3(port, root, b"home", credential)
    assert status == 0
    return credential, fh


def test_prometheus_scrapes_the_daemons_counters(watched):
    srv, prometheus, metrics_port = watched
    alice, fh = link_of(srv.port, 1001)
    for _ in range(READLINKS):
        assert readlink3(srv.port, fh, alice) == (0, f"{srv.base}/home/alice/.mailspool".encode())
    dave, fh = link_of(srv.port, 1006)
    assert readlink3(srv.port, fh, dave) == (0, str(srv.alt).encode())
    assert call(srv.port, 100099, 1, 0).stat == PROG_UNAVAIL

    assert prometheus.wait_for(READLINK_SERIES, READLINKS + 1) == READLINKS + 1
    failures = prometheus.query("hlfs_home_check_failures_total")
    assert {dict(labels)["errno"]: value for labels, value in failures.items()} == {"ENOENT": 1}
    assert prometheus.value("hlfs_home_checks_total") == 2
    assert prometheus.value('hlfs_rpc_requests_total{outcome="prog_unavail"}') == 1
    assert prometheus.value("hlfs_rpc_reply_cache_hits_total") == READLINKS - 1
    assert prometheus.value("hlfs_mounted") is None  # --no-mount: no mount to watch
    assert prometheus.value("hlfs_home_check_processes_busy") == 0
    assert prometheus.value("hlfs_reloads_total") == 0
    assert prometheus.value('hlfs_build_info{version!=""}') == 1

    hangup = time.time()
    srv.proc.send_signal(signal.SIGHUP)
    assert prometheus.wait_for("hlfs_reloads_total", 1) == 1
    assert prometheus.value("hlfs_reload_failures_total") == 0
    assert hangup <= prometheus.value("hlfs_reload_last_success_timestamp_seconds") <= time.time()
    assert prometheus.value("hlfs_reload_duration_seconds") > 0

    # The scrape reads the counters `hlfs status` reports.
    status = subprocess.run(
        [str(BIN / "hlfs"), "status", "--server", f"127.0.0.1:{srv.port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    pairs = dict(line.split(None, 1) for line in status.splitlines() if line.strip())
    assert int(pairs["requests.nfs3.READLINK"]) == READLINKS + 1
    assert int(pairs["requests.prog_unavail"]) == 1
    assert int(pairs["probes_failed"]) == 1
    assert int(pairs["probes_failed.ENOENT"]) == 1
    assert int(pairs["reloads"]) == 1
    # USERS and HOMELESS: nine entries, two of them a uid already listed
    # (toor, alias).
    assert prometheus.value("hlfs_users") == int(pairs["users"]) == 7
    for limit in ("record_size", "idle_timeout", "max_connections", "max_unprivileged"):
        assert prometheus.value(f'hlfs_tcp_connections_refused_total{{limit="{limit}"}}') == \
            int(pairs[f"refused.{limit}"])
    assert prometheus.value("hlfs_tcp_connections") == int(pairs["connections"])
    assert prometheus.value('hlfs_user_lookups_total{result="refused"}') == \
        int(pairs["user_lookups_refused"])
    assert prometheus.value('hlfs_user_lookups_total{result="late"}') == \
        int(pairs["user_lookups_late"])
    assert prometheus.value('hlfs_user_lookups_total{result="backed_off"}') == \
        int(pairs["user_lookups_backed_off"])
    # The checks ran in the home-check processes, all started before the
    # daemon served; none is stuck, the pool is not exhausted.
    size = int(pairs["check_processes_max"])
    assert prometheus.value("hlfs_home_check_processes_max") == size == 8
    assert prometheus.value("hlfs_home_check_processes") == int(pairs["check_processes"]) == size
    assert prometheus.value("hlfs_home_check_processes_started_total") == \
        int(pairs["check_processes_started"]) == size
    assert prometheus.value("hlfs_home_check_processes_stuck") == \
        int(pairs["check_processes_stuck"]) == 0
    assert prometheus.value("hlfs_home_checks_queued") == int(pairs["checks_queued"]) == 0
    for name, key in (("hlfs_home_checks_expired_queued_total", "checks_expired_queued"),
                      ("hlfs_home_checks_refused_queue_full_total", "checks_refused_queue_full"),
                      ("hlfs_home_checks_lost_total", "checks_lost"),
                      ("hlfs_home_check_pool_exhausted_total", "pool_exhausted")):
        assert prometheus.value(name) == int(pairs[key]) == 0, name


def test_metrics_text_has_no_user_names_or_uids(watched):
    srv, prometheus, metrics_port = watched
    alice, fh = link_of(srv.port, 1001)
    readlink3(srv.port, fh, alice)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
        assert reply.headers["Content-Type"].startswith("text/plain")
    assert "hlfs_rpc_requests_total" in text
    assert "alice" not in text and "1001" not in text
    assert os.fsdecode(str(srv.base)) not in text
