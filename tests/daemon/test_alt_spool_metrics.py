"""
Watching the alternate spool as Prometheus users watch other daemons.

  - L{count_spool}: what counts as a mailbox waiting, and the bound on the
    names one count reads.
  - A real Prometheus scrapes a real daemon (C{--metrics}) and a real
    node_exporter whose textfile collector reads what C{hlfs lostmail
    --textfile} wrote: mail waiting shows as mailboxes and bytes; once
    lostmail has resent it, the daemon's next count shows none and the
    textfile the messages resent, the run's success and no mailbox left.
  - A spool filled with a million names (a tmpfs in a mount namespace of
    the test's own): the daemon counts at most ten thousand of them each
    time, says its count is incomplete, keeps serving, and its memory does
    not grow with the counts.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

from hlfs.daemon.altspool import MAX_ENTRIES, count_spool
from tests.support.mail import SENDMAIL, message
from tests.support.prometheus import PrometheusServer, free_port
from tests.support.processes import stop_process
from tests.support.rpcsock import call
from tests.support.server import BIN, USERS, RunningServer, make_base, write_passwd

pytestmark = pytest.mark.slow


def test_what_counts_as_a_mailbox_waiting(tmp_path):
    spool = tmp_path / "alt_mail"
    spool.mkdir()
    (spool / "alice").write_bytes(b"x" * 100)
    (spool / "bob").write_bytes(b"y" * 50)
    os.utime(spool / "bob", (1000, 1000))
    (spool / "empty").write_bytes(b"")
    (spool / "alice.lock").write_bytes(b"1")
    (spool / ".lostmail").mkdir()
    (spool / "dir").mkdir()
    (spool / "link").symlink_to(spool / "alice")
    count = count_spool(str(spool))
    assert (count.mailboxes, count.bytes, count.oldest, count.entries, count.complete,
            count.error) == (2, 150, 1000, 7, True, None)


def test_a_count_reads_a_bounded_number_of_names(tmp_path):
    spool = tmp_path / "alt_mail"
    spool.mkdir()
    for n in range(250):
        (spool / f"user{n}").write_bytes(b"m")
    count = count_spool(str(spool), max_entries=100)
    assert (count.entries, count.complete) == (100, False)
    assert count.mailboxes <= 100
    assert count_spool(str(spool)).complete


def test_an_unreadable_spool_is_an_error_not_a_count(tmp_path):
    count = count_spool(str(tmp_path / "nowhere"))
    assert (count.complete, count.error) == (False, "No such file or directory")


# -- a real Prometheus, the daemon and node_exporter's textfile collector


class NodeExporter:
    """
    Debian's node_exporter with only its textfile collector, on loopback.
    """

    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.proc = None

    def start(self):
        program = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if program is None:
            pytest.fail("prometheus-node-exporter is missing: scripts/run-tests installs it")
        self.proc = subprocess.Popen(
            [program, "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={self.directory}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self

    def stop(self):
        stop_process(self.proc)


@pytest.fixture
def watched(tmp_path):
    base = make_base()
    write_passwd(base / "passwd", base, USERS)
    textfiles = base / "node-exporter"
    textfiles.mkdir()
    metrics_port = free_port()
    srv = RunningServer(base, ["--insecure", "--no-verify", "--metrics", str(metrics_port),
                               "--alt-spool-interval", "1"], verify_optional=True).start()
    exporter = NodeExporter(textfiles).start()
    prometheus = PrometheusServer(
        tmp_path, [f"127.0.0.1:{metrics_port}", f"127.0.0.1:{exporter.port}"]
    ).start()
    try:
        yield srv, prometheus, textfiles
    finally:
        prometheus.stop()
        exporter.stop()
        srv.stop()
    assert "Traceback" not in srv.logtext(), srv.logtext()


def fake_sendmail(base):
    here = base / "sendmail"
    (here / "out").mkdir(parents=True)
    path = here / "sendmail"
    path.write_text(SENDMAIL.format(python=sys.executable, here=str(here)))
    path.chmod(0o755)
    return path


def run_lostmail(srv, textfiles):
    """
    Run C{hlfs lostmail} over the daemon's spool, its figures for
    node_exporter's textfile collector.
    """
    state = srv.base / "lostmail-state"
    state.mkdir(mode=0o700)
    return subprocess.run(
        [BIN / "hlfs", "lostmail", "--alt-dir", srv.alt, "--state-dir", state,
         "--password-file", srv.passwd, "--sendmail", fake_sendmail(srv.base),
         "--syslog-socket", "", "--textfile", textfiles / "hlfs_lostmail.prom"],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.root(reason="hlfs lostmail takes mailboxes owned by their users as root")
def test_prometheus_sees_mail_wait_then_lostmail_resend_it(watched):
    srv, prometheus, textfiles = watched
    mailbox = srv.alt / "alice"
    data = b"".join(b"From sender@example.org Wed Nov 18 11:06:40 2026\n" + message(n) + b"\n"
                    for n in range(3))
    mailbox.write_bytes(data)
    os.chown(mailbox, 1001, 1001)
    mailbox.chmod(0o600)

    assert prometheus.wait_for("hlfs_alt_spool_mailboxes", 1) == 1
    assert prometheus.value("hlfs_alt_spool_bytes") == len(data)
    assert prometheus.value("hlfs_alt_spool_count_complete") == 1
    assert abs(prometheus.value("hlfs_alt_spool_oldest_change_timestamp_seconds")
               - mailbox.stat().st_mtime) < 1
    assert prometheus.value("hlfs_lostmail_last_run_timestamp_seconds") is None

    result = run_lostmail(srv, textfiles)
    assert result.returncode == 0, result.stderr

    alt = f'{{alt_dir="{srv.alt}"}}'
    assert prometheus.wait_for(f"hlfs_lostmail_messages_resent{alt}", 3) == 3
    assert prometheus.value(f"hlfs_lostmail_last_run_success{alt}") == 1
    assert prometheus.value(f"hlfs_lostmail_mailboxes_left{alt}") == 0
    assert prometheus.value(f"hlfs_lostmail_problems{alt}") == 0
    assert prometheus.value(f"hlfs_lostmail_last_success_timestamp_seconds{alt}") == \
        prometheus.value(f"hlfs_lostmail_last_run_timestamp_seconds{alt}")
    # The daemon's next count finds the spool empty.
    assert prometheus.wait_for("hlfs_alt_spool_mailboxes", 0) == 0
    assert prometheus.value("hlfs_alt_spool_bytes") == 0


@pytest.mark.root(reason="hlfs lostmail looks at mailboxes owned by their users as root")
def test_a_system_accounts_mailbox_is_no_mail_waiting(watched):
    """
    The alternate spool is a system account's mailbox (uid under
    --uid-min): its mail is not "waiting", for the daemon's figures or
    for lostmail's, so "mail waiting for a day" never fires for cron's
    mail to www-data; both count it apart, and lostmail leaves it.
    """
    srv, prometheus, textfiles = watched
    with open(srv.passwd, "a") as f:
        f.write("www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n")
    mailbox = srv.alt / "www-data"
    mailbox.write_bytes(b"From cron@example.org Wed Nov 18 11:06:40 2026\n" + message(1) + b"\n")
    os.chown(mailbox, 33, 33)
    mailbox.chmod(0o600)

    assert prometheus.wait_for("hlfs_alt_spool_resident_mailboxes", 1) == 1
    assert prometheus.value("hlfs_alt_spool_mailboxes") == 0
    assert prometheus.value("hlfs_alt_spool_bytes") == 0

    result = run_lostmail(srv, textfiles)
    assert result.returncode == 0, result.stderr
    assert os.listdir(srv.base / "sendmail" / "out") == []
    alt = f'{{alt_dir="{srv.alt}"}}'
    assert prometheus.wait_for(f"hlfs_lostmail_mailboxes_resident{alt}", 1) == 1
    assert prometheus.value(f"hlfs_lostmail_mailboxes_left{alt}") == 0
    assert prometheus.value(f"hlfs_lostmail_problems{alt}") == 0
    assert prometheus.value("hlfs_alt_spool_resident_mailboxes") == 1


# -- a million names


MILLION = 1_000_000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.root(reason="a tmpfs in a mount namespace of the test's own")
def test_a_million_names_neither_stall_nor_bloat_the_daemon(tmp_path):
    base = make_base()
    flooded = base / "flooded"
    flooded.mkdir()
    fill = (
        f"mount -t tmpfs -o size=64m,nr_inodes=0 tmpfs {flooded} && chmod 1777 {flooded} && "
        f"{sys.executable} -c \"import os; p='{flooded}'; open(p+'/seed','wb').write(b'x'); "
        f"[os.link(p+'/seed', p+'/u%d' % n) for n in range({MILLION})]\" && "
        "echo ready && exec sleep 100000"
    )
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", fill],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"ready", holder.stderr.read()
        metrics_port = free_port()
        prefix = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--"]
        srv = RunningServer(base, ["--insecure", "--no-verify", "--alt-dir", str(flooded),
                                   "--metrics", str(metrics_port), "--alt-spool-interval", "0.5"],
                            prefix=prefix, verify_optional=True)
        # (The last --alt-dir wins over the one RunningServer gives.)
        srv.start()
        try:
            prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{metrics_port}"]).start()
            try:
                assert prometheus.wait_for("hlfs_alt_spool_count_complete", 0) == 0
                counted = prometheus.value("hlfs_alt_spool_mailboxes")
                assert 0 < counted <= MAX_ENTRIES
                first = rss_kib(srv.proc.pid)
                # Twenty more counts, and calls answered all along.
                stamp = prometheus.value("hlfs_alt_spool_count_timestamp_seconds")
                deadline = time.monotonic() + 60
                answered = 0
                while prometheus.value("hlfs_alt_spool_count_timestamp_seconds") < stamp + 10:
                    assert time.monotonic() < deadline, srv.logtext()
                    assert call(srv.port, 100003, 3, 0).stat == 0
                    answered += 1
                    time.sleep(0.1)
                assert answered > 20
                grown = rss_kib(srv.proc.pid) - first
                assert grown < 4096, f"RSS grew by {grown} KiB over twenty counts"
                log = srv.logtext()
                assert log.count("holds more than 10000 names") == 1, log
            finally:
                prometheus.stop()
        finally:
            srv.stop()
        assert "Traceback" not in srv.logtext()
    finally:
        holder.kill()
        holder.wait()
