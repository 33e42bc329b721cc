"""
The SSH manhole, through its real boundary: keys made by ssh-keygen, a
daemon process running the real manhole service (tests/support/manhole_server.py,
whose hlfs service is a stand-in with the real policy objects, see there),
and Debian's OpenSSH client driven through a pty by pexpect.
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
from hlfs.console.access import ManholeConfigError, listen_description
from hlfs.console.manhole import check_manhole_options
from hlfs.homes.cache import ProbingResolver
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

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
"""


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

    def udp_ping(self, timeout=2.0):
        """
        Return the daemon's UDP counter after one more datagram.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"ping", ("127.0.0.1", self.udp_port))
            return int(s.recv(64))

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
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
    run(console, 'print("USERS", len(users))', r"USERS 3\r\n")
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
    for name in ("service", "users", "cache", "pool", "stats", "config"):
        assert re.search(rf"^\s+{name}\s+\S", listing, re.M), (name, listing)
    assert "reactor thread" in listing
    # help(obj) documents an object without a pager.
    run(console, "help(flush)", r"Drop probe cache entries")
    close(console)


def test_resolve_probes_in_the_background_and_flush_forgets(daemon, keys):
    console = open_console(daemon, keys["operator"])
    # Not cached yet: the helper starts the probe, returns its Deferred, and
    # the console prints the answer when it fires.
    run(console, "resolve(1000)", r"probe started for uid 1000")
    run(console, "", r"called back: home -> /home/alice/\.mailspool")
    run(console, 'print("PROBES", resolver.probes)', r"PROBES (\d+)")
    probes = int(console.match.group(1))
    # Cached now: answered at once, with the reason, by name as well.
    run(console, 'resolve("alice")', r"home -> /home/alice/\.mailspool\r\nbecause: the home is usable")
    run(console, 'print("PROBES", resolver.probes)', rf"PROBES {probes}\r\n")
    # After a flush, the next resolution probes again.
    run(console, "flush(1000)", r"flushed the probe cache entry of uid 1000")
    run(console, "resolve(1000)", r"probe started for uid 1000")
    run(console, 'print("PROBES", resolver.probes)', rf"PROBES {probes + 1}\r\n")
    close(console)


def test_resolve_explains_the_alternate_spool(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "resolve(1001)", r"home '/' is the root directory .* alternate spool /var/alt_mail")
    run(console, "resolve(424242)", r"uid 424242: not in the user table \(3 users")
    run(console, "resolve(424242)", r"home -> /var/alt_mail")
    run(console, 'resolve("nobody-here")', r"LookupError: no user named 'nobody-here'")
    close(console)


def test_hung_lists_probes_in_flight_with_their_age(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(
        console,
        "flush(); resolve(1000); hung()",
        r"1 probe\(s\) in flight:\r\n\s+uid 1000: /home/alice/\.mailspool asked [\d.]+s ago, running",
    )
    run(console, "", r"called back: home -> /home/alice/\.mailspool")
    run(console, "probe_stats", r"\{'probes': \d+, 'cached': 1\}")
    close(console)


def test_reload_reports_the_new_table(daemon, keys):
    console = open_console(daemon, keys["operator"])
    run(console, "reload()", r"called back: reloaded: the user table \(3 users from .*passwd\)")
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

    from hlfs.console.manhole import ManholeSSHFactory
    from hlfs.console.access import load_or_create_host_key

    directory = private_dir(tmp_path / "keys")
    first = ManholeSSHFactory(Portal(None), load_or_create_host_key(str(directory / "a")))
    second = ManholeSSHFactory(Portal(None), load_or_create_host_key(str(directory / "b")))
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

    from hlfs.console.manhole import ManholeOptions

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
    A service whose resolver is the real no-verify L{ProbingResolver}: it
    answers synchronously and has no pool.
    """

    def __init__(self, table):
        self.resolver = ProbingResolver(
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
    assert len(namespace["users"]) == 3
    service.resolver.set_table(UserTable.from_passwd_bytes(PASSWD.splitlines(True)[0]))
    assert len(namespace["users"]) == 1
    assert "1 users" in repr(namespace["users"])
