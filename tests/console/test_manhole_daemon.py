"""
The manhole of the real daemon: C{twistd hlfs --manhole ...} with keys from
ssh-keygen, Debian's OpenSSH client through a pty, and NFS clients on the
wire (C{hlfs resolve}, a READLINK load loop).
"""

import os
import re
import subprocess
import sys
import time

import pexpect
import pytest

from tests.support.server import BIN
from tests.support.console import (
    free_loopback_port, key_fingerprint, keygen, open_console, private_dir, run, ssh_args,
)

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD_LOOP = os.path.join(HERE, os.pardir, "support", "nfs_readlink_loop.py")
# The daemon does more at start-up than the stand-in server.
CONSOLE_TIMEOUT = 20


pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def manhole_files(tmp_path):
    directory = private_dir(tmp_path / "manhole")
    key = keygen(directory / "operator", "operator@test")
    authorized = directory / "authorized_keys"
    authorized.write_bytes((directory / "operator.pub").read_bytes())
    return {"key": key, "authorized": authorized, "host_key": directory / "host_key"}


@pytest.fixture
def daemon(make_server, manhole_files):
    port = free_loopback_port()
    server = make_server(
        "--insecure",
        "--manhole",
        str(port),
        "--manhole-keys",
        str(manhole_files["authorized"]),
        "--manhole-host-key",
        str(manhole_files["host_key"]),
    )
    server.ssh_port = port
    return server


def nfs_resolve(server, uid):
    result = subprocess.run(
        [str(BIN / "hlfs"), "resolve", "--uid", str(uid), "--server", f"127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def console_resolve(console, uid):
    # Either at once or, when a probe runs, in the "called back" line.
    return run(console, f"resolve({uid})", r"home -> (\S+)\r").group(1)


def test_console_resolve_matches_what_nfs_clients_get(daemon, manhole_files):
    console = open_console(daemon, manhole_files["key"], user="night-shift", timeout=CONSOLE_TIMEOUT)
    # alice (a home), slash (home /), and a uid nobody has.
    for uid in (1001, 1004, 4321):
        over_nfs = nfs_resolve(daemon, uid)
        assert console_resolve(console, uid) == over_nfs
    console.sendcontrol("d")
    console.expect(pexpect.EOF)
    fp = key_fingerprint(str(manhole_files["key"]) + ".pub")
    assert re.search(
        rf"manhole login: user 'night-shift' from 127\.0\.0\.1:\d+ with key {re.escape(fp)} accepted",
        daemon.logtext(),
    )


def test_flush_makes_the_next_readlink_probe_again(daemon, manhole_files):
    console = open_console(daemon, manhole_files["key"], timeout=CONSOLE_TIMEOUT)

    def started():
        return int(run(console, 'print("STARTED", probe_stats["started"])', r"STARTED (\d+)\r").group(1))

    nfs_resolve(daemon, 1001)
    before = started()
    nfs_resolve(daemon, 1001)
    assert started() == before, "a cached answer started a probe"
    run(console, "flush()", r"flushed all probe cache entries")
    nfs_resolve(daemon, 1001)
    assert started() == before + 1


@pytest.mark.verify_optional
def test_console_shows_the_user_source(daemon, manhole_files):
    """
    C{user_source} in the console gives the same counters as C{hlfs
    status}: the table's size and source, lookups, directory errors.
    """
    console = open_console(daemon, manhole_files["key"], timeout=CONSOLE_TIMEOUT)
    nfs_resolve(daemon, 4321)
    shown = run(console, 'print("SOURCE", user_source["users_table"], user_source["users_source"], '
                'user_source["users_not_found_cached"], user_source["directory_errors"])',
                r"SOURCE (\S+) (\S+) (\S+) (\S+)\r").groups()
    assert shown == ("6", str(daemon.passwd), "0", "0")
    status = subprocess.run(
        [str(BIN / "hlfs"), "status", "--server", f"127.0.0.1:{daemon.port}"],
        capture_output=True, text=True, timeout=30,
    ).stdout
    pairs = dict(line.split(None, 1) for line in status.splitlines())
    assert (pairs["users_source"], pairs["directory_errors"]) == (str(daemon.passwd), "0")


@pytest.mark.verify_optional
def test_nfs_keeps_answering_while_the_console_raises(daemon, manhole_files, tmp_path):
    ready = tmp_path / "load.ready"
    out_path = tmp_path / "load.out"
    with open(out_path, "w") as out:
        load = subprocess.Popen(
            [sys.executable, LOAD_LOOP, str(daemon.port), "1001", "8", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert load.poll() is None, out_path.read_text()
                assert time.monotonic() < deadline, "the load loop got no answer"
                time.sleep(0.05)
            console = open_console(daemon, manhole_files["key"], timeout=CONSOLE_TIMEOUT)
            answered_before = out_path.read_text().count("\nok ")
            run(console, "1/0", r"ZeroDivisionError")
            run(console, "raise KeyboardInterrupt", r"KeyboardInterrupt")
            run(console, "[][1]", r"IndexError")
            run(console, "resolve(object())", r"TypeError: expected a uid")
            run(console, "import nonexistent_module_xyz", r"ModuleNotFoundError")
            console.sendline("raise SystemExit(1)")
            console.expect(pexpect.EOF)
            console.close()
            console = open_console(daemon, manhole_files["key"], timeout=CONSOLE_TIMEOUT)
            run(console, 'print("ALIVE", 20 + 22)', r"ALIVE 42\r")
            time.sleep(0.5)
            answered_during = out_path.read_text().count("\nok ")
            console.sendcontrol("d")
            console.expect(pexpect.EOF)
            assert load.wait(60) == 0
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
    lines = out_path.read_text().splitlines()
    assert lines[-1].startswith("done "), lines[-5:]
    ok, failed = map(int, lines[-1].split()[1:])
    assert failed == 0, [line for line in lines if line.startswith("fail")]
    assert answered_during > answered_before
    targets = {line.split()[2] for line in lines if line.startswith("ok ")}
    assert targets == {nfs_resolve(daemon, 1001)}
    assert daemon.proc.poll() is None


def test_unprotected_host_key_stops_the_daemon_with_one_line(tmp_path, manhole_files):
    manhole_files["host_key"].write_bytes(b"")
    manhole_files["host_key"].chmod(0o666)
    base = private_dir(tmp_path / "base")
    (base / "passwd").write_text("alice:x:1001:1001::/home/alice:/bin/sh\n")
    result = subprocess.run(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            f"--logfile={base / 'log'}",
            "hlfs",
            "--no-mount",
            "--insecure",
            "--password-file",
            str(base / "passwd"),
            "--alt-dir",
            str(base),
            "--manhole",
            str(free_loopback_port()),
            "--manhole-keys",
            str(manhole_files["authorized"]),
            "--manhole-host-key",
            str(manhole_files["host_key"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("hlfs: refusing to start the manhole"), lines


def manhole_lines(text):
    """
    The log lines of the manhole's SSH server and its logins.
    """
    return [line for line in text.splitlines()
            if "[twisted.conch" in line or "[hlfs.manhole" in line or "[hlfs.console" in line]


def test_failed_logins_cannot_flood_the_log(daemon, manhole_files, tmp_path):
    """
    Any local user may connect to the manhole.  Forty logins with a key it
    does not know, by OpenSSH's client, cost the log a bounded number of
    lines (the first attempts, then a count a minute), not a dozen each;
    the operator's login afterwards is still logged in full.
    """
    intruder = keygen(tmp_path / "intruder", "intruder@test")
    before = len(manhole_lines(daemon.logtext()))
    for _ in range(40):
        result = subprocess.run(
            ["ssh", *ssh_args(daemon.ssh_port, intruder, "-o", "BatchMode=yes", user="root"),
             "true"],
            capture_output=True, timeout=30,
        )
        assert result.returncode == 255
    console = open_console(daemon, manhole_files["key"], user="night-shift",
                           timeout=CONSOLE_TIMEOUT)
    console.sendcontrol("d")
    console.expect(pexpect.EOF)
    time.sleep(0.5)
    lines = manhole_lines(daemon.logtext())[before:]
    [login] = [i for i, line in enumerate(lines) if "user 'night-shift'" in line
               and line.endswith("accepted")]
    # Up to the operator's login: at most 10 lines of each outcome of an
    # attempt (asked for methods, refused, offered) and one of each of
    # Twisted's lines a minute; then counts.
    assert len(lines[:login]) <= 25, "\n".join(lines)
    refused = [line for line in lines if "refused: key not authorized" in line]
    assert 1 <= len(refused) <= 10


def _ssh_libraries(server):
    """
    The shared libraries of conch's cryptography that the daemon's process
    has mapped, from C{/proc/PID/maps}.
    """
    with open(f"/proc/{server.proc.pid}/maps") as maps:
        return {line.split()[-1] for line in maps
                if re.search(r"/(cryptography|bcrypt)/[^/]*\.so$", line)}


def test_only_a_daemon_with_a_manhole_loads_the_ssh_code(make_server, daemon):
    """
    conch and the cryptography library under it are most of what the
    daemon would import: without C{--manhole}, they stay out of its memory.
    """
    plain = make_server("--insecure")
    assert _ssh_libraries(plain) == set()
    assert _ssh_libraries(daemon) != set()
