"""
The daemon as an administrator runs it: options, start-up steps, no
portmapper, signals to a real twistd, syslog.  (Registration with a real
rpcbind: test_registration.py.)
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from hlfs.cli import hlfsd
from hlfs.daemon import kernel
from tests.support.rpcsock import cred, lookup3, mount_root, readlink3, status_pairs
from tests.support.server import BIN, RunningServer, make_base, write_passwd, USERS

TWISTD = [str(BIN / "twistd"), "-n", "--pidfile="]


def run_twistd(*plugin_args, timeout=30):
    return subprocess.run(
        TWISTD + ["hlfs", *plugin_args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


BAD_VALUES = [
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--port", "http"], "--port must be a port number"),
    (["--mount", "mail"], "--mount must be an absolute path"),
    (["--linkname", "a/b"], "--linkname must be a single path component"),
    (["--subdir", ".."], "--subdir must be a single path component"),
    (["--alt-dir", "alt"], "--alt-dir must be an absolute path"),
    (["--interface", "localhost:1"], "--interface must be an IP address"),
    (["-c", "-5"], "--cache-interval must be at least 0"),
    (["--reload-interval", "soon"], "--reload-interval must be a number of seconds"),
    (["--home-checks", "0"], "--home-checks must be between 1 and 1024"),
    (["--probe-threads", "0"], "--home-checks must be between 1 and 1024"),
    (["--probe-deadline", "0"], "--probe-deadline must be at least 0.01"),
    (["-o", "rw;reboot"], "invalid mount option"),
    (["--no-such-option"], "option --no-such-option not recognized"),
    (["--password-file", "/nonexistent/passwd", "--no-mount"], "cannot read password file"),
]


@pytest.mark.parametrize("args, message", BAD_VALUES)
def test_bad_values_one_line_exit_2(args, message):
    """
    If an option's value is unusable, then one clear line on stderr and
    exit status 2, never a traceback or the whole usage text.
    """
    # Without --no-mount, a user would hear that mounting needs root first.
    result = run_twistd(*args, "--no-portmap", "--no-mount")
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_help_describes_startup_and_signals():
    result = subprocess.run(TWISTD + ["hlfs", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for text in ("START-UP", "SIGHUP", "SIGUSR1", "lookupcache=none", "--probe-deadline",
                 "--no-portmap", "-f (fast start) skips"):
        assert text in result.stdout


# -- the mount step, unit tested with recorded /proc/mounts lines

REAL_NOAC = (
    "127.0.0.1:/mail /mail nfs rw,sync,relatime,vers=3,rsize=8192,wsize=8192,namlen=255,"
    "acregmin=0,acregmax=0,acdirmin=0,acdirmax=0,hard,noac,nolock,proto=tcp,port=40123,"
    "timeo=600,retrans=2,sec=sys,mountaddr=127.0.0.1,mountvers=3,mountport=40123,"
    "mountproto=tcp,lookupcache=none,local_lock=all,addr=127.0.0.1 0 0"
)
REAL_CACHED = (
    "127.0.0.1:/mail /mail nfs ro,relatime,vers=3,rsize=8192,wsize=8192,namlen=255,hard,"
    "nolock,proto=tcp,port=40999,timeo=600,retrans=2,sec=sys,mountaddr=127.0.0.1,mountvers=3,"
    "mountport=40999,mountproto=tcp,local_lock=all,addr=127.0.0.1 0 0"
)
OTHER = "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\ntmpfs /mail\\040spool tmpfs rw 0 0"


def test_mount_command():
    assert kernel.mount_command("127.0.0.1", "/mail", "/mail", 40123, "soft") == [
        "/bin/mount", "-t", "nfs", "-o",
        "rw,sync,lookupcache=none,nolock,vers=3,proto=tcp,mountproto=tcp,retry=0,"
        "port=40123,mountport=40123,soft",
        "127.0.0.1:/mail", "/mail",
    ]


def test_proc_mounts_cache_check():
    entries = kernel.parse_proc_mounts(OTHER + "\n" + REAL_NOAC)
    entry = kernel.our_mount(entries, "/mail", "/mail")
    assert kernel.missing_cache_options(entry) == []
    entry = kernel.our_mount(kernel.parse_proc_mounts(REAL_CACHED), "/mail", "/mail")
    assert kernel.missing_cache_options(entry) == ["lookupcache=none"]
    assert entries[1].mountpoint == "/mail spool"


def test_port_reuse_from_stale_mount():
    """
    If an hlfs mount of ours is still listed, then its port is the one to
    serve on; the topmost entry wins; another export or directory is not ours.
    """
    text = "\n".join([OTHER, REAL_CACHED, REAL_NOAC])
    entry = kernel.our_mount(kernel.parse_proc_mounts(text), "/mail", "/mail")
    assert kernel.mounted_port(entry) == 40123
    assert kernel.our_mount(kernel.parse_proc_mounts(text), "/var/mail", "/mail") is None
    assert kernel.our_mount(kernel.parse_proc_mounts(text), "/mail", "/other") is None
    assert kernel.mounted_port(None) is None


def test_prepare_mountpoint(tmp_path):
    class Log:
        def __init__(self):
            self.lines = []

        def info(self, fmt, **kw):
            self.lines.append(fmt.format(**kw))

        warn = info

    log = Log()
    mount = tmp_path / "mail"
    mount.mkdir(mode=0o700)
    (mount / "leftover").write_text("x")
    kernel.prepare_mountpoint(str(mount), "home", "/var/alt_mail", log)
    assert os.readlink(mount / "home") == "/var/alt_mail"
    assert os.stat(mount).st_mode & 0o555 == 0o555
    assert any("hide leftover" in l for l in log.lines)
    (mount / "home").unlink()
    (mount / "home").mkdir()
    with pytest.raises(kernel.MountError):
        kernel.prepare_mountpoint(str(mount), "home", "/var/alt_mail", log)
    alt = tmp_path / "alt"
    os.umask(0o077)
    try:
        kernel.prepare_spool(str(alt), log)
    finally:
        os.umask(0o022)
    assert os.stat(alt).st_mode & 0o7777 == 0o1777


def test_hlfsd_command_line():
    twistd, daemon, print_pid = hlfsd.translate(
        ["-a", "/var/spool/alt", "-c", "60", "-i", "0", "-g", "mailers", "-n", "-f", "-C",
         "-o", "soft", "-P", "/etc/pw", "-l", "/var/log/h.log", "-D", "nodaemon", "-p",
         "/var/mail/box", ".spool"]
    )
    assert not daemon and print_pid
    assert twistd == [
        "-n", "--logfile", "/var/log/h.log", "--logger=hlfs.daemon.logs.observer",
        "--pidfile=/run/hlfsd.pid", "hlfs",
        "--alt-dir", "/var/spool/alt", "--cache-interval", "60", "--reload-interval", "0",
        "--group", "mailers", "--no-verify", "--fast", "--allow-attribute-cache",
        "--mount-options", "soft", "--password-file", "/etc/pw",
        "--mount", "/var/mail", "--linkname", "box", "--subdir", ".spool",
    ]
    twistd, daemon, _ = hlfsd.translate([])
    assert daemon and twistd[:3] == ["--syslog", "--prefix", "hlfsd"]
    for bad in (["-q"], ["relative/home"], ["/a/b", "c", "d"], ["-c"]):
        with pytest.raises(hlfsd.CommandLineError):
            hlfsd.translate(bad)


def test_hlfsd_x_and_D_take_am_utils_words_only():
    """
    -x and -D take the words of am-utils' log and debug options (each with
    a "no" prefix), as hlfsd did, and refuse any other.
    """
    twistd, daemon, _ = hlfsd.translate(["-x", "fatal,error,user,warn,info,map,stats,nodebug",
                                         "-D", "amq,mem,nodaemon"])
    assert not daemon and "--verbose" not in twistd
    for words in (["-x", "all"], ["-x", "debug"], ["-D", "trace"], ["-D", "full"]):
        twistd, daemon, _ = hlfsd.translate(words)
        assert daemon and "--verbose" in twistd, words
    twistd, daemon, _ = hlfsd.translate(["-D", "test"])
    assert not daemon and "--verbose" in twistd
    for opt, words in (("-x", "warn,loud"), ("-D", "nodaemon,verbose"), ("-x", "nodaemon"),
                       ("-D", "debug"), ("-x", ""), ("-D", "no")):
        with pytest.raises(hlfsd.CommandLineError, match=f"{opt}: unknown option"):
            hlfsd.translate([opt, words])
    result = subprocess.run([str(BIN / "hlfsd"), "-x", "loud"], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "hlfsd: -x: unknown option 'loud' (known: all, debug, defaults, error, fatal, info, map, "
        "stats, user, warn, warning; each may be prefixed with no) (hlfsd -h for help)"
    ]


def test_hlfsd_script_bad_option_exit_2():
    result = subprocess.run([str(BIN / "hlfsd"), "-Z"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("hlfsd: option -Z")
    result = subprocess.run([str(BIN / "hlfsd"), "-c", "never", "-D", "nodaemon", "-l", "/dev/null"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--cache-interval must be" in result.stderr


# -- registration with the portmapper: tests/daemon/test_registration.py


def wait_for(predicate, server, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, server.logtext()
        time.sleep(0.1)


@pytest.mark.root(reason="a network namespace of its own (unshare --net)")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing")
def test_no_portmapper_is_a_warning(tmp_path_factory):
    """
    If nothing answers on port 111, then a warning, and serving goes on:
    run in a network namespace of its own, where no portmapper listens.
    """
    base = make_base(tmp_path_factory)
    script = (
        f"ip link set lo up && exec {BIN}/twistd -n --pidfile= --logfile={base}/hlfs.log hlfs "
        f"--no-mount --insecure --password-file {base}/passwd --alt-dir {base}/alt_mail "
        f"--port-file {base}/port"
    )
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script])
    srv = RunningServer(base, [])
    try:
        wait_for(lambda: "no portmapper answered" in srv.logtext(), srv, timeout=30)
        assert proc.poll() is None
        assert "serving /mail" in srv.logtext()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# -- signals to a real twistd


def resolve(port, uid):
    out = subprocess.run(
        [str(BIN / "hlfs"), "resolve", "--uid", str(uid), "--server", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=30,
    )
    return out.stdout.strip()


@pytest.mark.verify_optional
def test_signals(make_server):
    """
    SIGHUP picks up a user added to the password file; SIGUSR1 writes the
    dump in the run directory; SIGTERM exits 0.
    """
    srv = make_server("--insecure")
    assert resolve(srv.port, 1077) == str(srv.alt)
    (srv.base / "home" / "dave").mkdir()
    if os.geteuid() == 0:
        os.chown(srv.base / "home" / "dave", 1077, 1077)
    write_passwd(srv.passwd, srv.base, USERS + [("dave", 1077, "{base}/home/dave")])
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded 7 users" in srv.logtext(), srv)
    assert resolve(srv.port, 1077) == f"{srv.base}/home/dave/.mailspool"
    srv.proc.send_signal(signal.SIGUSR1)
    dump = srv.base / "hlfs-dump.txt"
    wait_for(dump.exists, srv)
    lines = dump.read_text().splitlines()
    assert lines[0].startswith("# uid")
    assert any(l.startswith(f"1077\tdave\t{srv.base}/home/dave\t") for l in lines)
    source = dict(l[2:].split("\t", 1) for l in lines[1:] if l.startswith("# "))
    assert source["users_table"] == "7"
    assert source["users_source"] == str(srv.passwd)
    assert source["directory_errors"] == "0"
    assert source["last_reload_verdict"].startswith("accepted")
    assert srv.stop() == 0


@pytest.mark.verify_optional
def test_periodic_reload_drops_cached_replies(make_server):
    """
    With --reload-interval and no signal, a home moved in the password file
    is picked up by the periodic reload, and the READLINK the reply cache
    held is answered anew: the reload itself invalidates cached replies,
    nothing flushes them.
    """
    srv = make_server("--insecure", "--reload-interval", "1")
    alice = cred(1001)
    root = mount_root(srv.port, alice)
    _, fh, _ = lookup3(srv.port, root, b"home", alice)
    old = f"{srv.base}/home/alice/.mailspool".encode()
    assert readlink3(srv.port, fh, alice) == (0, old)
    hits = int(status_pairs(srv.port)["reply_cache_hits"])
    assert readlink3(srv.port, fh, alice) == (0, old)
    assert int(status_pairs(srv.port)["reply_cache_hits"]) == hits + 1, "the reply was not cached"
    moved = srv.base / "home" / "alice-moved"
    moved.mkdir()
    if os.geteuid() == 0:
        os.chown(moved, 1001, 1001)
    users = [(n, u, "{base}/home/alice-moved" if n == "alice" else h) for n, u, h in USERS]
    reloads = srv.logtext().count("reloaded")
    write_passwd(srv.passwd, srv.base, users)
    # Two more reloads: the second one started after the file changed.
    wait_for(lambda: srv.logtext().count("reloaded") >= reloads + 2, srv)
    assert "SIGHUP" not in srv.logtext()
    assert readlink3(srv.port, fh, alice) == (0, f"{moved}/.mailspool".encode())


@pytest.mark.verify_optional
def test_sighup_reopens_log(make_server):
    srv = make_server("--insecure")
    moved = srv.log.with_suffix(".1")
    srv.log.rename(moved)
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: srv.log.exists() and "reloaded" in srv.log.read_text(), srv)
    assert "SIGHUP" in moved.read_text()


# -- syslog, with a syslog socket of the test's own in a private mount namespace


@pytest.mark.root(reason="a mount namespace of its own, to bind a socket on /dev/log")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing")
def test_syslog_facility_daemon(tmp_path):
    base = tmp_path
    (base / "alt").mkdir()
    write_passwd(base / "passwd", base)
    sock_path = base / "log.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(20)
    devdir = base / "dev"
    devdir.mkdir()
    script = f"""
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs {devdir}
for n in null zero random urandom; do touch {devdir}/$n; mount --bind /dev/$n {devdir}/$n; done
touch {devdir}/log; mount --bind {sock_path} {devdir}/log
mount --rbind {devdir} /dev
exec {BIN}/twistd -n --syslog --prefix hlfsd --pidfile= hlfs --no-mount --no-portmap --insecure \
    --password-file {base}/passwd --alt-dir {base}/alt --port-file {base}/port
"""
    proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    messages = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                data = listener.recv(65536).decode(errors="replace")
            except socket.timeout:
                break
            messages.append(data)
            if "hlfs" in data and "serving" in data:
                break
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
        listener.close()
    startup = [m for m in messages if "serving" in m]
    assert startup, (messages, out)
    # <30> is facility daemon (3) * 8 + priority info (6).
    assert startup[0].startswith("<30>") and "hlfsd[" in startup[0]
