"""
The SSH manhole, through its real boundary: keys made by ssh-keygen, a
daemon process running the real manhole service (tests/support/manhole_server.py)
around the real resolver and its home-check engine, whose checks and
clock the test drives (see there), and Debian's OpenSSH client driven
through a pty by pexpect.
"""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time

import pexpect
import pytest

from hlfs.console.values import NotAvailable, Text
from hlfs.console.namespace import build_namespace
from hlfs.console.options import ManholeConfigError, check_manhole_options, listen_description
from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

from tests.support.processes import stop_process
from tests.support.console import (
    PROMPT, close, free_loopback_port, key_fingerprint, keygen, open_console, private_dir, run, ssh_args,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, os.pardir, "support", "manhole_server.py")

pytestmark = pytest.mark.timeout(120)

PASSWD = b"""\
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001:Bob:/:/bin/sh
carol:x:1002:1002:Carol:relative/home:/bin/sh
dave:x:1003:1003:Dave:/home/dave:/bin/sh
erin:x:1004:1004:Erin:/home/erin:/bin/sh
"""

# The daemon's probe deadline (tests/support/manhole_server.py), in
# seconds of its test clock.
DEADLINE = 2.0
NL = r"\r?\n"


class Daemon:
    """
    A running tests/support/manhole_server.py process and where it listens.
    """

    def __init__(self, directory, portspec, keys_file, host_key):
        self.directory = directory
        self.host_key = host_key
        self.log_path = directory / "daemon.log"
        self.ready = directory / "ready.json"
        passwd = directory / "passwd"
        passwd.write_bytes(PASSWD)
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                SERVER,
                "--manhole",
                portspec,
                "--keys",
                str(keys_file),
                "--host-key",
                str(host_key),
                "--passwd",
                str(passwd),
                "--ready",
                str(self.ready),
            ],
            stdout=self.log,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.process.returncode}: {self.process.stderr.read()!r}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("daemon did not start listening within 30s")
            time.sleep(0.05)
        ports = json.loads(self.ready.read_text())
        self.ssh_port = ports["ssh_port"]
        self.udp_port = ports["udp_port"]

    def log_text(self):
        return self.log_path.read_text()

    def control(self, command, timeout=5.0):
        """
        Send one command to the daemon's control socket; return its answer.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(command.encode(), ("127.0.0.1", self.udp_port))
            answer = s.recv(256).decode()
        assert not answer.startswith("error"), (command, answer)
        return answer

    def udp_ping(self, timeout=2.0):
        """
        Return the daemon's UDP counter after one more datagram.
        """
        return int(self.control("ping", timeout))

    def entered(self, uid):
        return int(self.control(f"entered {uid}"))

    def wait_entered(self, uid, count):
        """
        Wait until C{count} checks for C{uid} have begun in a probe thread
        (the timeout is a hang guard, not a measurement).
        """
        deadline = time.monotonic() + 30
        while self.entered(uid) < count:
            assert time.monotonic() < deadline, f"no check of uid {uid} began"
            time.sleep(0.02)

    def release(self, uid, outcome="ok"):
        self.control(f"release {uid} {outcome}")

    def advance(self, seconds):
        self.control(f"advance {seconds}")

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        stop_process(self.process)
        self.process.stderr.close()
        self.log.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = private_dir(tmp_path_factory.mktemp("keys"))
    operator = keygen(directory / "operator", "operator@test")
    intruder = keygen(directory / "intruder", "intruder@test")
    authorized = directory / "authorized_keys"
    authorized.write_bytes(
        b"# manhole operators\n" + (directory / "operator.pub").read_bytes()
    )
    return {"operator": operator, "intruder": intruder, "authorized": authorized}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, keys):
    directory = private_dir(tmp_path_factory.mktemp("daemon"))
    # A bare port number: the manhole must then listen on loopback only.
    running = Daemon(
        directory, str(free_loopback_port()), keys["authorized"], directory / "host_key"
    )
    yield running
    running.stop()


# The console itself.


def test_console_evaluates_expressions(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, 'print("SUM", 6 * 7)', r"SUM 42\r\n")
    run(console, 'print("USERS", len(users))', r"USERS 5\r\n")
    run(console, 'print("STATS", sorted(stats))', r"STATS \['GETATTR', 'READLINK'\]")
    close(console)


def test_help_lists_the_helpers_with_their_docstrings(daemon, keys):
    console = open_console(daemon, keys["operator"])
    console.sendline("help()")
    console.expect("Names available here:")
    console.expect_exact(PROMPT)
    listing = console.before
    for name in ("resolve", "flush", "reload", "hung"):
        assert re.search(rf"^\s+{name}\(\)\s+\S.*$", listing, re.M), (name, listing)
    for name in ("service", "users", "cache", "checks", "stats", "config"):
        assert re.search(rf"^\s+{name}\s+\S", listing, re.M), (name, listing)
    assert "reactor thread" in listing
    # help(obj) documents an object without a pager.
    run(console, "help(flush)", r"Drop probe cache entries")
    close(console)


def test_resolve_explains_the_alternate_spool(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "resolve(1001)", r"home '/' is the root directory .* alternate spool /var/alt_mail")
    run(console, "resolve(424242)", r"uid 424242: not in the user table \(5 users")
    run(console, "resolve(424242)", r"home -> /var/alt_mail")
    run(console, 'resolve("nobody-here")', r"LookupError: no user named 'nobody-here'")
    close(console)


def probe_stat(console, name):
    return int(run(console, f'print("STAT", probe_stats[{name!r}])', r"STAT (\d+)\r?\n").group(1))


def wait_in_console(console, expression, expected):
    """
    Evaluate C{expression} in the console until it prints C{expected}: a
    probe's result reaches the reactor thread a moment after the test
    releases it (the timeout is a hang guard).
    """
    deadline = time.monotonic() + 30
    while True:
        shown = run(console, f'print("VALUE", {expression})', r"VALUE (.*?)\r?\n").group(1)
        if shown == expected:
            return
        assert time.monotonic() < deadline, (expression, shown, expected)
        time.sleep(0.05)


def start_probe(console, daemon, uid, shown=None):
    """
    C{resolve(uid)} in the console, for a uid without a cached result:
    it shows C{shown} (by default that it started a probe), and the check
    begins in a probe thread, where it waits for the test to release it.
    """
    entered = daemon.entered(uid)
    run(console, f"resolve({uid})", shown or rf"probe started for uid {uid}")
    daemon.wait_entered(uid, entered + 1)


def test_probe_stats_are_the_resolvers_counters(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(
        console,
        'print("KEYS", sorted(probe_stats))',
        r"KEYS \['daemon_errors', 'exhausted', 'failures', 'fallbacks', 'hits', 'in_flight', "
        r"'late', 'misses', 'started'\]\r?\n",
    )
    close(console)


def test_resolve_probes_in_the_background_and_flush_forgets(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "flush()", rf"flushed all probe cache entries{NL}")
    started = probe_stat(console, "started")
    # Not cached yet: the helper starts the probe, returns its Deferred, and
    # the console prints the answer when it fires.
    start_probe(
        console, daemon, 1000,
        r"probe cache entry: CacheEntry\(state='unverified'.*probe started for uid 1000",
    )
    daemon.release(1000, "ok")
    console.expect(rf"called back: home -> /home/alice/\.mailspool{NL}because: the home is usable \(this probe\)")
    assert probe_stat(console, "started") == started + 1
    # Cached now: answered at once, with the reason, by name as well.
    run(
        console,
        'resolve("alice")',
        r"probe cache entry: CacheEntry\(state='ok', age=0\.0, expires_in=300\.0, probing=False"
        rf".*home -> /home/alice/\.mailspool{NL}because: the home is usable \(the cached probe result\)",
    )
    assert probe_stat(console, "started") == started + 1
    # The real flush returns nothing: the helper's line has no count.
    run(console, "flush(1000)", rf"flushed the probe cache entry of uid 1000{NL}")
    start_probe(console, daemon, 1000)
    assert probe_stat(console, "started") == started + 2
    daemon.release(1000, "ok")
    console.expect(rf"called back: home -> /home/alice/\.mailspool{NL}")
    close(console)


def test_a_failed_probe_is_explained_and_cached(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "flush(1004)", rf"flushed the probe cache entry of uid 1004{NL}")
    failures = probe_stat(console, "failures")
    start_probe(console, daemon, 1004)
    daemon.release(1004, "EACCES")
    console.expect(rf"called back: home -> /var/alt_mail{NL}because: the spool failed this probe")
    assert probe_stat(console, "failures") == failures + 1
    run(
        console,
        "resolve(1004)",
        r"probe cache entry: CacheEntry\(state='failed'.*"
        rf"home -> /var/alt_mail{NL}because: the spool failed the cached probe result",
    )
    close(console)


def test_hung_lists_probes_in_flight_and_those_past_the_deadline(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "flush(1003)", rf"flushed the probe cache entry of uid 1003{NL}")
    fallbacks = probe_stat(console, "fallbacks")
    start_probe(console, daemon, 1003)
    flight = r"uid 1003: /home/dave/\.mailspool asked {0}s ago, running {0}s"
    run(console, "hung()", rf"1 probe\(s\) in flight:{NL}\s+{flight.format('0.0')}{NL}0 probe\(s\) stuck{NL}")
    # Just short of the deadline: still waiting, not stuck yet.
    daemon.advance(DEADLINE - 0.5)
    run(console, "hung()", rf"1 probe\(s\) in flight:{NL}\s+{flight.format('1.5')}{NL}0 probe\(s\) stuck{NL}")
    # At the deadline the caller gets the alternate spool, and the probe,
    # still running, counts as stuck.
    daemon.advance(0.5)
    console.expect(
        rf"called back: home -> /var/alt_mail{NL}because: the spool failed this probe or the "
        "probe did not finish in time"
    )
    run(
        console,
        "hung()",
        rf"1 probe\(s\) in flight:{NL}\s+{flight.format('2.0')}{NL}"
        rf"1 probe\(s\) stuck:{NL}\s+{flight.format('2.0')}{NL}",
    )
    assert probe_stat(console, "fallbacks") == fallbacks + 1
    assert probe_stat(console, "in_flight") == 1
    # The late answer still fills the cache.
    late = probe_stat(console, "late")
    daemon.release(1003, "ok")
    wait_in_console(console, 'probe_stats["late"]', str(late + 1))
    run(console, "hung()", rf"0 probe\(s\) in flight{NL}0 probe\(s\) stuck{NL}")
    run(console, "resolve(1003)", rf"home -> /home/dave/\.mailspool{NL}because: the home is usable \(the cached")
    close(console)


def test_reload_reports_the_new_table(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "reload()", r"called back: reloaded: the user table \(5 users from .*passwd\), 0 lines skipped")
    close(console)


def test_exceptions_end_neither_the_session_nor_the_service(daemon, keys):
    answered = []
    failures = []
    stop = threading.Event()

    def load():
        # The stand-in daemon's UDP counter plays the NFS server's part.
        while not stop.is_set():
            try:
                answered.append(daemon.udp_ping())
            except OSError as e:
                failures.append(e)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        console = open_console(daemon, keys["operator"])
        run(console, "1/0", r"ZeroDivisionError: division by zero")
        run(console, "raise KeyboardInterrupt", r"KeyboardInterrupt")
        run(console, "undefined_name", r"NameError")
        run(console, "def broken(:", r"SyntaxError")
        run(console, 'print("STILL", 1 + 1)', r"STILL 2\r\n")
        # exit() and SystemExit end the session, never the daemon.
        console.sendline("raise SystemExit(3)")
        console.expect(pexpect.EOF)
        console.close()
        console = open_console(daemon, keys["operator"])
        console.sendline("exit()")
        console.expect(pexpect.EOF)
        console.close()
        before = len(answered)
        time.sleep(0.5)
        assert len(answered) > before
    finally:
        stop.set()
        loader.join()
    assert failures == []
    assert answered == sorted(answered) and len(answered) > 10
    assert daemon.alive()
    # Nothing unwound into the reactor: errors stayed in the session.
    assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]
    console = open_console(daemon, keys["operator"])
    run(console, 'print("BACK", 2 + 2)', r"BACK 4\r\n")
    close(console)


def test_console_reads_piped_input_without_a_terminal(daemon, keys):
    # ssh -T: no pty, lines from a pipe; end of input ends the session.
    result = subprocess.run(
        ["ssh", "-T", *ssh_args(daemon.ssh_port, keys["operator"], "-o", "BatchMode=yes")],
        input=b'print("PIPED", 3 * 3)\nresolve(1001)\n',
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert b"PIPED 9\r\n" in result.stdout
    assert b"home '/' is the root directory" in result.stdout


def test_commands_are_not_executed(daemon, keys):
    result = subprocess.run(
        ["ssh", *ssh_args(daemon.ssh_port, keys["operator"], "-o", "BatchMode=yes"), "id"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert b"uid=" not in result.stdout


# Authentication.


def test_login_is_logged_with_name_and_key_fingerprint(daemon, keys):
    console = open_console(daemon, keys["operator"], user="night-shift")
    close(console)
    expected = key_fingerprint(str(keys["operator"]) + ".pub")
    assert re.search(
        rf"manhole login: user 'night-shift' from 127\.0\.0\.1:\d+ with key {re.escape(expected)} accepted",
        daemon.log_text(),
    ), daemon.log_text()[-3000:]


def test_unauthorized_key_is_refused_and_logged(daemon, keys):
    result = subprocess.run(
        [
            "ssh",
            *ssh_args(daemon.ssh_port, keys["intruder"], "-o", "BatchMode=yes", user="root"),
            "true",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    fp = key_fingerprint(str(keys["intruder"]) + ".pub")
    assert re.search(
        rf"manhole login attempt: user 'root' from 127\.0\.0\.1:\d+ method publickey "
        rf"key {re.escape(fp)}: refused: key not authorized",
        daemon.log_text(),
    )
    assert f"with key {fp} accepted" not in daemon.log_text()


def test_no_password_is_asked_or_accepted(daemon, keys):
    client = pexpect.spawn(
        "ssh",
        ssh_args(
            daemon.ssh_port,
            keys["operator"],
            "-v",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
        ),
        timeout=30,
        encoding="utf-8",
    )
    which = client.expect([r"(?i)password:", r"(?i)verification code", "Permission denied", pexpect.EOF])
    output = client.before + (client.after if isinstance(client.after, str) else "")
    if which in (0, 1):
        client.sendline("hunter2")
    client.expect(pexpect.EOF)
    client.close()
    assert which == 2, output
    assert re.search(r"Authentications that can continue: publickey\r*\n", output), output
    assert client.exitstatus == 255


def connection_refused(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_listens_on_loopback_only_by_default(daemon, keys):
    assert not connection_refused("127.0.0.1", daemon.ssh_port)
    # Another loopback address: a socket bound to all interfaces would
    # answer here, one bound to 127.0.0.1 does not.
    assert connection_refused("127.0.0.2", daemon.ssh_port)


def test_port_specs():
    assert listen_description("2222") == "tcp:2222:interface=127.0.0.1"
    assert listen_description("tcp:2222") == "tcp:2222:interface=127.0.0.1"
    assert listen_description("tcp:2222:interface=0.0.0.0") == "tcp:2222:interface=0.0.0.0"
    assert listen_description("tcp:port=2222:backlog=5") == "tcp:port=2222:backlog=5:interface=127.0.0.1"
    assert listen_description("tcp6:2222") == r"tcp6:2222:interface=\:\:1"
    assert listen_description("unix:/run/hlfs.manhole") == "unix:/run/hlfs.manhole"
    with pytest.raises(ManholeConfigError):
        listen_description("  ")


# Host key and key file protection.


def test_host_key_is_generated_0600_and_served(daemon):
    mode = stat.S_IMODE(os.stat(daemon.host_key).st_mode)
    assert mode == 0o600
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(daemon.host_key)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(daemon.ssh_port), "-t", "ed25519", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert scanned[1:3] == public


def start_refused(directory, keys, host_key, keys_file=None):
    passwd = directory / "passwd"
    passwd.write_bytes(PASSWD)
    result = subprocess.run(
        [
            sys.executable,
            SERVER,
            "--manhole",
            "tcp:0",
            "--keys",
            str(keys_file or keys["authorized"]),
            "--host-key",
            str(host_key),
            "--passwd",
            str(passwd),
            "--ready",
            str(directory / "ready.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert not (directory / "ready.json").exists()
    return lines[0]


def test_group_writable_host_key_is_refused(tmp_path, keys):
    directory = private_dir(tmp_path / "state")
    host_key = directory / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    host_key.chmod(0o620)
    line = start_refused(directory, keys, host_key)
    assert "writable by group or others (mode 0620)" in line and str(host_key) in line


def test_host_key_in_a_directory_others_can_write_is_refused(tmp_path, keys):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    line = start_refused(directory, keys, directory / "host_key")
    assert "directory of the manhole host key" in line and "writable by group or others" in line
    assert not (directory / "host_key").exists()


def test_writable_authorized_keys_file_is_refused(tmp_path, keys):
    directory = private_dir(tmp_path / "state")
    authorized = directory / "authorized_keys"
    authorized.write_bytes(keys["authorized"].read_bytes())
    authorized.chmod(0o666)
    line = start_refused(directory, keys, directory / "host_key", keys_file=authorized)
    assert "manhole authorized keys file" in line and "writable by group or others" in line


def test_missing_authorized_keys_file_is_refused(tmp_path, keys):
    directory = private_dir(tmp_path / "state")
    line = start_refused(directory, keys, directory / "host_key", keys_file=directory / "nope")
    assert "cannot read manhole authorized keys" in line


def test_existing_host_key_is_reused(tmp_path, keys):
    directory = private_dir(tmp_path / "state")
    host_key = directory / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(host_key)], check=True)
    before = host_key.read_bytes()
    running = Daemon(directory, "tcp:0", keys["authorized"], host_key)
    try:
        scanned = subprocess.run(
            ["ssh-keyscan", "-p", str(running.ssh_port), "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        public = (directory / "host_key.pub").read_text().split()[1]
        assert public in scanned
    finally:
        running.stop()
    assert host_key.read_bytes() == before


# Options and the namespace, in process.


def test_each_factory_has_its_own_host_key(tmp_path):
    from twisted.conch.manhole_ssh import ConchFactory
    from twisted.cred.portal import Portal
    from twisted.internet.task import Clock

    from hlfs.console.manhole import ManholeSSHFactory
    from hlfs.console.access import load_or_create_host_key

    directory = private_dir(tmp_path / "keys")
    clock = Clock()
    first = ManholeSSHFactory(Portal(None), load_or_create_host_key(str(directory / "a")), clock)
    second = ManholeSSHFactory(Portal(None), load_or_create_host_key(str(directory / "b")), clock)
    assert first.publicKeys != second.publicKeys
    assert first.privateKeys[b"ssh-ed25519"] != second.privateKeys[b"ssh-ed25519"]
    assert ConchFactory.publicKeys == {} and ConchFactory.privateKeys == {}


def test_manhole_options_go_together():
    from twisted.python import usage

    check_manhole_options({"manhole": None, "manhole-keys": None, "manhole-host-key": None})
    check_manhole_options({"manhole": "2222", "manhole-keys": "k", "manhole-host-key": "h"})
    with pytest.raises(usage.UsageError, match="need --manhole"):
        check_manhole_options({"manhole": None, "manhole-keys": "k", "manhole-host-key": None})
    with pytest.raises(usage.UsageError, match="--manhole-keys FILE and --manhole-host-key"):
        check_manhole_options({"manhole": "2222", "manhole-keys": "k", "manhole-host-key": None})


def test_options_mixin_lists_the_three_options_in_help():
    from twisted.python import usage

    from hlfs.console.options import ManholeOptions

    class Options(ManholeOptions, usage.Options):
        def postOptions(self):
            check_manhole_options(self)

    text = str(Options())
    for option in ("--manhole=", "--manhole-keys=", "--manhole-host-key="):
        assert option in text
    assert "reactor" in text and "never block" in text
    options = Options()
    options.parseOptions(["--manhole", "2222", "--manhole-keys", "k", "--manhole-host-key", "h"])
    assert options["manhole"] == "2222"
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--manhole", "2222"])


def test_namespace_of_a_service_with_nothing_says_not_available():
    # A service object with none of the expected attributes.
    namespace = build_namespace(object())
    assert isinstance(namespace["resolver"], NotAvailable)
    assert "not available" in namespace["flush"]()
    assert "not available" in namespace["hung"]()
    assert "not available" in namespace["reload"]()
    assert "(not available)" in repr(namespace["help"])
    with pytest.raises(AttributeError, match="not available"):
        namespace["fs"].anything


class NoVerifyService:
    """
    A service whose resolver is the real no-verify L{HomeResolver}: it
    answers synchronously and has no home-check engine.
    """

    def __init__(self, table):
        self.resolver = HomeResolver(
            table, SpoolRules(b".mailspool", b"/var/alt_mail"), _Clock(), None, verify=False
        )
        self.stats = {}
        self.config = {}


class _Clock:
    def seconds(self):
        return 1.0e9


def test_resolve_answers_synchronously_for_the_no_verify_resolver():
    service = NoVerifyService(UserTable.from_passwd_bytes(PASSWD))
    namespace = build_namespace(service)
    report = namespace["resolve"](1000)
    assert isinstance(report, Text)
    assert "home -> /home/alice/.mailspool" in report
    assert repr(report) == str(report)
    assert "flushed" in namespace["flush"]()
    # The table name follows a reload's swap.
    assert len(namespace["users"]) == 5
    service.resolver.set_table(UserTable.from_passwd_bytes(PASSWD.splitlines(True)[0]))
    assert len(namespace["users"]) == 1
    assert "1 users" in repr(namespace["users"])
