"""
Start-up errors: whatever stops the daemon from starting is one line on
standard error and a non-zero exit status, never a traceback, and leaves
no pid file behind.  Each case starts the real daemon as the units,
C{hlfsd} and the demo do (C{hlfs twistd}, twistd in process), and a plain
C{twistd hlfs} too where twistd's own reporting differs: a port in use
(NFS, metrics, the manhole), no permission (a pid file, a log file, a
privileged port), root needed for the mount (checked before anything
else), a missing syslog socket (said, and the log goes to standard
error), a daemon whose mount fails after it started (its waiting parent
says why), a broken pipe (C{hlfs status | head}), and C{hlfs} without a
subcommand.

The unprivileged cases run Debian's own Python and Twisted (the packages
C{scripts/run-tests} installs to build the .deb) as C{nobody}, on a copy
of the source that user can read.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import HLFS_GID, make_base

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOBODY = 65534
DEBIAN_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.slow


def run(cmd, timeout=60, **kwargs):
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=timeout, **kwargs,
    )


def one_line(result, status=1):
    """
    Assert the command failed with C{status}, wrote nothing on standard
    output and exactly one C{hlfs...:} line on standard error; return it.
    """
    lines = result.stderr.splitlines()
    assert (result.returncode, result.stdout, len(lines)) == (status, "", 1), (
        result.returncode, result.stdout, result.stderr
    )
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def base():
    base = make_base()
    (base / "run").mkdir()
    return base


def daemon(base, *args, twistd=("-n",), program=(str(BIN / "hlfs"), "twistd")):
    """
    The command line of a daemon serving C{base}'s users on an ephemeral
    loopback port, logging to a file, with its pid file in C{base/run}.
    """
    return [
        *program, *twistd, f"--pidfile={base}/run/hlfsd.pid", f"--logfile={base}/hlfs.log",
        "hlfs", "--no-mount", "--no-portmap", "--insecure", "--no-verify",
        "--password-file", base / "passwd", "--alt-dir", base / "alt_mail",
        "--group", str(HLFS_GID), "--port-file", base / "port", *args,
    ]


def no_pid_file(base):
    assert list((base / "run").iterdir()) == []


@pytest.fixture
def udp_taken():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def tcp_taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_nfs_port_in_use(base, udp_taken):
    line = one_line(run(daemon(base, "--port", str(udp_taken))))
    assert line == f"hlfs: cannot serve NFS on 127.0.0.1 port {udp_taken}: Address already in use"
    no_pid_file(base)
    assert f"cannot start: cannot serve NFS on 127.0.0.1 port {udp_taken}" in (
        base / "hlfs.log").read_text()


def test_nfs_tcp_port_in_use(base, tcp_taken):
    line = one_line(run(daemon(base, "--port", str(tcp_taken))))
    assert line == f"hlfs: cannot serve NFS on 127.0.0.1 port {tcp_taken}: Address already in use"
    no_pid_file(base)


def test_metrics_port_in_use_stops_the_start(base, tcp_taken):
    line = one_line(run(daemon(base, "--metrics", str(tcp_taken))))
    assert line == f"hlfs: cannot serve metrics on 127.0.0.1 port {tcp_taken}: Address already in use"
    no_pid_file(base)
    assert not (base / "port").exists()


def test_manhole_port_in_use_stops_the_start(base, tcp_taken, tmp_path):
    keys = tmp_path / "authorized_keys"
    keys.write_text("")
    keys.chmod(0o600)
    line = one_line(run(daemon(
        base, "--manhole", str(tcp_taken), "--manhole-keys", keys,
        "--manhole-host-key", tmp_path / "host_key",
    )))
    assert line == (
        f"hlfs: cannot serve the manhole on 127.0.0.1 port {tcp_taken}: Address already in use"
    )
    no_pid_file(base)


def test_plain_twistd_port_in_use_is_one_line(base, udp_taken):
    """
    Where Twisted's command is run directly (pip's twistd), the plugin's
    exception hook makes the error one line too.
    """
    line = one_line(run(daemon(base, "--port", str(udp_taken), program=[BIN / "twistd"])))
    assert line == f"hlfs: cannot serve NFS on 127.0.0.1 port {udp_taken}: Address already in use"
    no_pid_file(base)


def test_daemon_mode_start_failure_is_one_line_from_the_parent(base, tcp_taken):
    """
    Without -n, the daemon's parent waits and says why the start failed.
    """
    line = one_line(run(daemon(base, "--metrics", str(tcp_taken), twistd=())))
    assert line == f"hlfs: cannot serve metrics on 127.0.0.1 port {tcp_taken}: Address already in use"
    no_pid_file(base)


def test_daemon_mode_returns_once_serving(base):
    result = run(daemon(base, twistd=()))
    try:
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        # It returned once the daemon served: the port is known already.
        assert int((base / "port").read_text()) > 0
    finally:
        pid = int((base / "run" / "hlfsd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (base / "run" / "hlfsd.pid").exists():
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.1)


def test_another_daemon_on_the_pid_file(base):
    (base / "run" / "hlfsd.pid").write_text(f"{os.getpid()}\n")
    line = one_line(run(daemon(base)))
    assert line == (
        f"hlfs: Another twistd server is running, PID {os.getpid()} "
        f"(pid file {base}/run/hlfsd.pid)"
    )


def test_alternate_spool_that_cannot_be_made(base):
    cmd = daemon(base)
    cmd[cmd.index(base / "alt_mail")] = "/proc/hlfs-alt"
    # Exit status 2: a configuration the daemon cannot use.
    line = one_line(run(cmd), status=2)
    assert line.startswith("hlfs: cannot create the alternate spool /proc/hlfs-alt: ")
    no_pid_file(base)


def test_log_file_that_cannot_be_opened(base):
    cmd = daemon(base)
    cmd[cmd.index(f"--logfile={base}/hlfs.log")] = f"--logfile={base}/missing/dir/hlfs.log"
    line = one_line(run(cmd))
    assert line == f"hlfs: cannot open the log file {base}/missing/dir/hlfs.log: No such file or directory"
    no_pid_file(base)


# -- the mount, as root, in a private mount and network namespace


@pytest.mark.root(reason="mounts in a private mount namespace")
def test_mount_failure_after_start_is_reported_by_the_waiting_parent(base):
    """
    C{hlfsd} (daemon mode) returns only once the daemon has mounted
    itself: here the mount fails (contradictory options), and the parent
    says why, with status 1; the daemon leaves no pid file.
    """
    script = (
        "ip link set lo up && mount -t tmpfs tmpfs /run && "
        f"{BIN}/hlfsd -o vers=2 -l {base}/hlfs.log -a {base}/alt_mail -P {base}/passwd "
        f"-g {HLFS_GID} {base}/mnt/home; status=$?; "
        "sleep 1; ls -A /run; exit $status"
    )
    result = run(["unshare", "--mount", "--net", "sh", "-c", script], timeout=120)
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (1, 1), result
    assert lines[0].startswith("hlfs: mount failed (exit 32): mount.nfs: "), lines
    # No pid file in /run (libmount's own directory may be there).
    assert "hlfsd.pid" not in result.stdout.split(), result.stdout


@pytest.mark.root(reason="mounts in a private mount namespace")
def test_mount_failure_in_the_foreground_leaves_no_pid_file(base):
    script = (
        "ip link set lo up && "
        f"{BIN}/hlfs twistd -n --pidfile={base}/run/hlfsd.pid --logfile={base}/hlfs.log "
        f"hlfs --mount {base}/mnt -o vers=2 --password-file {base}/passwd "
        f"--alt-dir {base}/alt_mail --group {HLFS_GID} --no-portmap"
    )
    result = run(["unshare", "--mount", "--net", "sh", "-c", script], timeout=120)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + (base / "hlfs.log").read_text()
    no_pid_file(base)


# -- no syslog socket


@pytest.mark.root(reason="hides /dev/log in a private mount namespace")
def test_missing_syslog_socket_is_said_and_the_log_goes_to_stderr(base, tmp_path):
    hide = ""
    if os.path.lexists("/dev/log"):
        (tmp_path / "nothing").write_text("")
        hide = f"mount --bind {tmp_path}/nothing /dev/log && "
    cmd = daemon(base)
    cmd.remove(f"--logfile={base}/hlfs.log")
    cmd[cmd.index("hlfs", 2):cmd.index("hlfs", 2)] = ["--syslog", "--prefix", "hlfsd"]
    script = hide + "exec " + " ".join(str(c) for c in cmd)
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (base / "port").exists() or not (base / "port").read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("hlfs: no syslog at /dev/log (") and lines[0].endswith(
        "): logging to standard error"), lines
    # Then the log itself, on standard error.
    assert any("serving" in line for line in lines[1:]), err
    assert "Traceback" not in err and out == ""


# -- unprivileged: Debian's Python as nobody


@pytest.fixture(scope="module")
def readable_source(tmp_path_factory):
    """
    A copy of hlfs and its plugin that nobody may read, with Twisted's
    plugin cache made (as the package's trigger makes it), run by
    Debian's Python and Twisted.
    """
    if not os.path.exists(DEBIAN_PYTHON) or run([DEBIAN_PYTHON, "-c", "import twisted"]).returncode:
        pytest.fail("Debian's python3-twisted is missing: scripts/run-tests installs it")
    copy = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "hlfs", copy / "hlfs", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "twisted" / "plugins").mkdir(parents=True)
    shutil.copy(ROOT / "twisted" / "plugins" / "hlfs_plugin.py", copy / "twisted" / "plugins")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = run([DEBIAN_PYTHON, "-c",
                "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"],
               env=env)
    assert done.returncode == 0, done.stderr
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    path = copy
    while path != Path("/"):
        path.chmod(path.stat().st_mode | 0o055)
        path = path.parent
    return copy


def as_nobody(source, *args, cwd):
    return run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "env", f"PYTHONPATH={source}", DEBIAN_PYTHON, "-m", "hlfs.cli", *args],
        cwd=cwd,
    )


@pytest.fixture
def open_base(base):
    """
    C{base}, which nobody may read, with a C{run} directory it may write.
    """
    for path in (base, base / "passwd"):
        path.chmod(path.stat().st_mode | 0o044)
    (base / "run").chmod(0o777)
    return base


def nobody_daemon(base, *args):
    return ["twistd", "-n", "--pidfile=", f"--logfile={base}/run/hlfs.log", "hlfs",
            "--password-file", str(base / "passwd"), "--alt-dir", str(base / "alt_mail"),
            "--group", str(HLFS_GID), *args]


@pytest.mark.root(reason="runs the daemon as nobody")
def test_root_needed_for_the_mount_is_checked_first(readable_source, open_base):
    """
    Mounting needs root: said at once, before the pid file, the log, the
    users or the mount point are touched (all unusable here).
    """
    base = open_base
    result = as_nobody(
        readable_source, "twistd", "-n", "--pidfile=/run/hlfs-nobody.pid",
        "--logfile=/var/log/hlfs-nobody.log", "hlfs", "--mount", f"{base}/mnt",
        "--password-file", "/nonexistent", cwd=base,
    )
    assert one_line(result) == (
        f"hlfs: mounting on {base}/mnt needs root; run as root, or give --no-mount to serve "
        "without mounting"
    )
    assert not (base / "mnt").exists()
    assert not os.path.exists("/run/hlfs-nobody.pid")


@pytest.mark.root(reason="runs hlfsd as nobody")
def test_hlfsd_as_a_user(readable_source, open_base):
    result = run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "env", f"PYTHONPATH={readable_source}", DEBIAN_PYTHON, "-c",
         "import sys; from hlfs.cli.hlfsd import main; sys.exit(main())"],
        cwd=open_base,
    )
    assert one_line(result) == (
        "hlfs: mounting on /mail needs root; run as root, or give --no-mount to serve "
        "without mounting"
    )


@pytest.mark.root(reason="runs the daemon as nobody")
def test_no_permission_for_the_pid_file(readable_source, open_base):
    result = as_nobody(
        readable_source, "twistd", "-n", "--pidfile=/run/hlfs-nobody.pid",
        f"--logfile={open_base}/run/hlfs.log", "hlfs", "--no-mount",
        "--password-file", str(open_base / "passwd"), "--alt-dir", str(open_base / "alt_mail"),
        cwd=open_base,
    )
    assert one_line(result) == "hlfs: cannot write the pid file /run/hlfs-nobody.pid: Permission denied"


@pytest.mark.root(reason="runs the daemon as nobody")
def test_no_permission_for_a_privileged_port(readable_source, open_base):
    result = as_nobody(readable_source, *nobody_daemon(open_base, "--no-mount", "--port", "1023"),
                       cwd=open_base)
    assert one_line(result) == "hlfs: cannot serve NFS on 127.0.0.1 port 1023: Permission denied"


@pytest.mark.root(reason="runs the daemon as nobody")
def test_no_permission_for_the_log_file(readable_source, open_base):
    result = as_nobody(
        readable_source, "twistd", "-n", "--pidfile=", "--logfile=/var/log/hlfs-nobody.log",
        "hlfs", "--no-mount", "--password-file", str(open_base / "passwd"),
        "--alt-dir", str(open_base / "alt_mail"), cwd=open_base,
    )
    assert one_line(result) == (
        "hlfs: cannot open the log file /var/log/hlfs-nobody.log: Permission denied"
    )


@pytest.mark.root(reason="runs Debian's twistd3 as nobody")
def test_no_warnings_at_start_on_debians_twisted(readable_source, open_base):
    """
    conch's SSH transport names ciphers that the cryptography library of
    Debian 12 deprecates: four warning lines at every start, unless hlfs
    silences them.  Debian's own twistd3, the plugin's --help.
    """
    result = run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "env", f"PYTHONPATH={readable_source}", "twistd3", "hlfs", "--help"],
        cwd=open_base,
    )
    assert result.returncode == 0, result.stderr
    assert "--probe-deadline" in result.stdout
    assert result.stderr == ""


# -- the operator command


def test_hlfs_without_a_subcommand():
    line = one_line(run([BIN / "hlfs"]), status=2)
    assert line.startswith("usage: hlfs {resolve|status|")


@pytest.mark.verify_optional
def test_broken_pipe(server):
    """
    C{hlfs status | head}: the reader went away before hlfs wrote.  (A
    real C{head} would usually read it all: the pipe's buffer holds the
    report.)
    """
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [BIN / "hlfs", "status", "--server", f"127.0.0.1:{server.port}"],
            stdout=writer, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=60,
        )
    finally:
        os.close(writer)
    lines = result.stderr.splitlines()
    assert (result.returncode, lines) == (
        141, ["hlfs status: standard output closed early (broken pipe)"]
    )
