"""
C{twistd hlfs}'s options and service, in process, as
C{twisted/names/test/test_tap.py} tests its own: L{Options.postOptions}
checks every value and loads the users (a bad value is a
L{usage.UsageError}), L{makeService} only composes, and the twistd
wrapper turns a bad value into one line and exit status 2.
"""

import json
import re
import signal
import socket
import subprocess
import sys
import syslog

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.syslog import SyslogObserver

from hlfs.daemon import kernel, logs, tap
from hlfs.daemon.logs import LOGGER, DaemonLogObserver, LogSettings
from hlfs.daemon.service import HLFSService
from tests.support.server import write_passwd


@pytest.fixture
def passwd(tmp_path):
    path = tmp_path / "passwd"
    write_passwd(path, tmp_path)
    return str(path)


def parsed(passwd, *args, reactor=None):
    options = tap.Options()
    options.reactor = reactor or MemoryReactorClock()
    options.parseOptions(["--password-file", passwd, "--no-portmap", *args])
    return options


BAD = [
    (["--port", "65536"], "--port must be between 0 and 65535"),
    (["--port", "nfs"], "--port must be a port number"),
    (["--probe-deadline", "0.001"], "--probe-deadline must be at least 0.01"),
    (["--idle-timeout", "never"], "--idle-timeout must be a number of seconds"),
    (["--mount", "mail"], "--mount must be an absolute path"),
    (["--alt-dir", "/var/../\0"], "--alt-dir must be an absolute path"),
    (["--uid-min", "-1"], "--uid-min must be between 0 and 4294967295"),
    (["--uid-min", "root"], "--uid-min must be a uid"),
    (["--max-record", "10"], "--max-record must be between 1024"),
    (["--reply-cache-bytes", "lots"], "--reply-cache-bytes must be a whole number"),
    (["--manhole-keys", "/k"], "--manhole-keys need --manhole PORTSPEC"),
    (["--manhole", "2222"], "--manhole needs --manhole-keys FILE and --manhole-host-key FILE"),
    (["--metrics", " "], "--metrics needs a port number"),
    (["--metrics", "tcp:x:y"], "bad --metrics endpoint"),
    (["--interface", "localhost"], "--interface must be an IP address"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_a_bad_value_is_a_usage_error(passwd, args, message):
    with pytest.raises(usage.UsageError) as raised:
        parsed(passwd, *args)
    assert message in str(raised.value)


def test_an_unreadable_password_file_is_a_usage_error(tmp_path):
    with pytest.raises(usage.UsageError, match="cannot read password file"):
        parsed(str(tmp_path / "missing"))


def test_options_load_the_users_before_the_service(passwd):
    options = parsed(passwd, "--port", "2049", "--reload-interval", "60")
    assert options.config.port == 2049 and options.config.reload_interval == 60
    assert options.table.source == passwd
    assert {b"alice", b"bob", b"carol"} <= {u.name for u in options.table}
    assert options.metrics_endpoint is None and options.manhole is None


def test_home_checks_sizes_the_check_processes_under_either_name(passwd):
    """
    C{--home-checks} is how many home-check processes run; the older
    C{--probe-threads} still says the same; the default is 8.
    """
    assert parsed(passwd).config.home_checks == 8
    assert parsed(passwd, "--home-checks", "3").config.home_checks == 3
    assert parsed(passwd, "--probe-threads", "5").config.home_checks == 5
    service = HLFSService(parsed(passwd, "--home-checks", "3").config, MemoryReactorClock(),
                          table=parsed(passwd).table)
    assert service.checks.size == 3 and service.resolver.engine is service.checks


def test_make_service_only_composes(passwd, monkeypatch):
    """
    The service gets the table the options loaded: nothing is read again.
    """
    options = parsed(passwd, "--no-mount", "--metrics", "0")
    monkeypatch.setattr("hlfs.daemon.service.load_table", lambda *_: pytest.fail("loaded again"))
    clock = MemoryReactorClock()
    service = tap.makeService(options, reactor=clock)
    assert isinstance(service, HLFSService)
    assert service.resolver.table is options.table
    assert service.log_output is logs.observer
    assert any(child.__class__.__name__ == "StreamServerEndpointService" for child in service)


def test_twistd_wrapper_one_line_exit_2(capsys, passwd):
    with pytest.raises(SystemExit) as raised:
        tap.TwistdOptions().parseOptions(["--password-file", passwd, "--port", "-1"])
    assert raised.value.code == 2
    assert capsys.readouterr().err == "hlfs: --port must be between 0 and 65535, not -1\n"


# -- the log: twistd --logger


class Twistd(dict):
    """twistd's ServerOptions, as a subcommand's parent is seen."""


@pytest.mark.parametrize("given, expected", [
    ({"logfile": "/var/log/hlfsd.log"}, LOGGER),
    ({"syslog": True, "prefix": "hlfsd"}, LOGGER),
    ({"logfile": "/l", "logger": "my.own"}, "my.own"),
    ({}, LOGGER),
    ({"nodaemon": True}, None),
    ({"logfile": "-", "nodaemon": True}, None),
])
def test_options_name_hlfs_observer_for_twistd(passwd, given, expected):
    options = tap.Options()
    options.reactor = MemoryReactorClock()
    options.parent = Twistd({"logger": None, **given})
    options.parseOptions(["--password-file", passwd, "--no-portmap"])
    assert options.parent["logger"] == expected
    assert options.log_settings == LogSettings.from_twistd(options.parent)


def test_syslog_observer_facility_daemon_with_pid(passwd, tmp_path):
    opened = []

    class Recording(SyslogObserver):
        def openlog(self, *args):
            opened.append(args)

    defaults = SyslogObserver.__init__.__defaults__
    observer = DaemonLogObserver(LogSettings(syslog_prefix="hlfsd"), open_syslog=Recording)
    # A syslog socket of the test's own (the machine may have none).
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log_socket:
        log_socket.bind(str(tmp_path / "log"))
        observer.syslog_socket = str(tmp_path / "log")
        observer()
    assert opened == [("hlfsd", syslog.LOG_PID, syslog.LOG_DAEMON)]
    # Nothing of Twisted's is changed for it.
    tap.makeService(parsed(passwd, "--no-mount"), reactor=MemoryReactorClock())
    assert SyslogObserver.__init__.__defaults__ == defaults


def test_log_file_reopened_and_sigusr1_left_alone(tmp_path):
    path = tmp_path / "hlfsd.log"
    before = signal.getsignal(signal.SIGUSR1)
    observer = DaemonLogObserver(LogSettings(logfile=str(path)))
    emit = observer()
    assert signal.getsignal(signal.SIGUSR1) == before
    emit({"log_format": "first", "log_time": 0, "log_level": None, "log_namespace": "t"})
    path.rename(tmp_path / "hlfsd.log.1")
    observer.reopen()
    emit({"log_format": "second", "log_time": 0, "log_level": None, "log_namespace": "t"})
    observer.log_file.flush()
    assert "first" in (tmp_path / "hlfsd.log.1").read_text()
    assert "second" in path.read_text() and "first" not in path.read_text()


# -- services Twisted provides


def service_on(clock, passwd, *args):
    options = parsed(passwd, *args, reactor=clock)
    return HLFSService(options.config, clock, table=options.table)


def test_periodic_reload_is_a_timer_service_first_one_interval_later(passwd):
    clock = Clock()
    service = service_on(clock, passwd, "--no-mount", "--reload-interval", "60")
    reloads = []
    service.reload = lambda: reloads.append(clock.seconds())
    service.reload_timer.startService()
    clock.advance(59)
    assert reloads == []
    clock.advance(1)
    clock.advance(60)
    assert reloads == [60, 120]
    service.reload_timer.stopService()
    clock.advance(600)
    assert reloads == [60, 120]


def test_uptime_from_the_injected_reactor(passwd):
    from hlfs.daemon.metrics import daemon

    clock = Clock()
    clock.advance(1000)
    service = service_on(clock, passwd, "--no-mount")
    clock.advance(5)
    assert dict(service.status_report())["uptime"] == 5
    uptime = {m.name: m.samples[0].value for m in daemon(service)}["hlfs_uptime_seconds"]
    assert uptime == 5


class FakeMount:
    mountpoint = "/mail"

    def __init__(self, events, missing=()):
        self.events = events
        self.missing = list(missing)

    def mount(self, port):
        self.events.append(("mount", port))
        return defer.succeed(self.missing)

    def unmount(self):
        self.events.append("unmount")
        self.pending = defer.Deferred()
        return self.pending


class Recorder(kernel.MultiService):
    def __init__(self, events):
        kernel.MultiService.__init__(self)
        self.events = events

    def startService(self):
        self.events.append("serve")
        kernel.MultiService.startService(self)

    def stopService(self):
        self.events.append("stop serving")
        return kernel.MultiService.stopService(self)


def test_mount_service_mounts_after_its_children_and_unmounts_before_them():
    events, fatal = [], []
    mount = FakeMount(events)
    service = kernel.MountService(mount, lambda: 2049, fatal.append,
                                  prepare=lambda: events.append("register"))
    Recorder(events).setServiceParent(service)
    service.startService()
    assert events == ["serve", "register", ("mount", 2049)] and service.mounted
    stopped = []
    service.stopService().addCallback(stopped.append)
    started = ["serve", "register", ("mount", 2049)]
    assert events == started + ["unmount"] and not stopped
    mount.pending.callback(True)
    assert events == started + ["unmount", "stop serving"]
    assert stopped and not service.mounted
    assert fatal == []


def test_mount_service_refuses_caches_it_cannot_turn_off():
    events, fatal = [], []
    mount = FakeMount(events, missing=["lookupcache=none"])
    service = kernel.MountService(mount, lambda: 2049, fatal.append)
    service.startService()
    mount.pending.callback(True)
    assert events == [("mount", 2049), "unmount"] and not service.mounted
    assert fatal == ["refusing to run with the client's caches on"]


def test_hlfs_service_puts_server_and_registration_under_the_mount(passwd, tmp_path):
    clock = MemoryReactorClock()
    options = parsed(passwd, "--mount", str(tmp_path / "mail"), reactor=clock)
    options.config = type(options.config)(**{**vars(options.config), "portmap": True})
    service = HLFSService(options.config, clock, table=options.table)
    assert service.mount_service.parent is service
    assert service.server.parent is service.mount_service
    assert service.registration.parent is service.mount_service
    # It registers, then mounts, once the home-check processes have started.
    assert service.mount_service.prepare == service._prepare_mount
    assert not service.mount_service.prepare().called


# -- subprocesses, each in a process of its own whose reactor reaps children
# (the shared test reactor runs without signal handlers, so without SIGCHLD)

RUN = """
import json, sys
from twisted.internet import task
from hlfs.daemon.kernel import run

def main(reactor):
    return run(reactor, sys.argv[1:]).addCallback(lambda r: print(json.dumps(r)))

task.react(main)
"""


def run_in_reactor(*argv):
    result = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return tuple(json.loads(result.stdout.splitlines()[-1]))


def test_run_collects_code_and_output():
    assert run_in_reactor("/bin/sh", "-c", "echo out; echo err >&2; exit 3") == (3, "out\nerr")


def test_run_reports_a_signal():
    got = run_in_reactor("/bin/sh", "-c", "echo partial; kill -9 $$")
    assert got == (None, "partial; killed by signal 9")


def test_run_passes_only_the_search_path():
    got = run_in_reactor("/bin/sh", "-c", "echo $PATH; echo ${HOME:-none}")
    assert got == (0, "/usr/sbin:/usr/bin:/sbin:/bin\nnone")


# -- --config and --name: the template unit's instances


def config_file(tmp_path, text):
    path = tmp_path / "tmp.conf"
    path.write_text(text)
    return str(path)


def test_config_file_gives_the_settings_the_command_line_left_out(passwd, tmp_path):
    path = config_file(tmp_path, """\
[hlfs]
# the paper's per-user /var/tmp
mount = /var/tmp-link
linkname = home
subdir = tmp
alt-dir = /var/tmp-alt
metrics = 9437
no-verify = yes
allow-attribute-cache = no
""")
    options = parsed(passwd, "--config", path, "--subdir", ".tmp", "--name", "tmp")
    config = options.config
    assert (config.mount, config.linkname, config.subdir, config.alt_dir, config.verify,
            config.allow_attribute_cache, config.name) == (
        "/var/tmp-link", "home", ".tmp", "/var/tmp-alt", False, False, "tmp")
    assert options["metrics"] == "9437"


@pytest.mark.parametrize("text, message", [
    ("[hlfs]\nmount-point = /x\n", "unknown setting 'mount-point'"),
    ("[hlfs]\nconfig = /etc/other\n", "unknown setting 'config'"),
    ("[hlfs]\nno-verify = maybe\n", "no-verify must be yes or no, not 'maybe'"),
    ("[mail]\nmount = /x\n", "no [hlfs] section"),
    ("mount = /x\n", "cannot read"),
    ("[hlfs]\nport = http\n", "--port must be a port number"),
])
def test_config_file_errors(passwd, tmp_path, text, message):
    with pytest.raises(usage.UsageError, match=re.escape(message)):
        parsed(passwd, "--config", config_file(tmp_path, text))


def test_missing_config_file(passwd, tmp_path):
    with pytest.raises(usage.UsageError, match="cannot read .*: No such file or directory"):
        parsed(passwd, "--config", str(tmp_path / "nope.conf"))


def test_name_labels_every_metric(passwd):
    from hlfs.daemon.metrics import HLFSCollector

    service = tap.makeService(parsed(passwd, "--no-mount", "--name", "tmp"),
                              reactor=MemoryReactorClock())
    samples = [s for family in HLFSCollector(service, name=service.config.name).collect()
               for s in family.samples]
    assert samples and all(s.labels.get("name") == "tmp" for s in samples)
    assert dict(service.status_report())["name"] == "tmp"
    with pytest.raises(usage.UsageError, match="--name must be"):
        parsed(passwd, "--name", "a/b")
