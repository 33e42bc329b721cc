"""
The hlfs benchmark suite: one command.

    .venv/bin/python benchmarks/run.py [--scenario NAME ...] [--seconds S]

It builds C{benchmarks/build/loadgen} with the system C compiler, makes
sure Debian's C{rpcbind} answers on 127.0.0.1:111 (starting C{rpcbind -w}
if not), writes a password file with C{--users} users whose homes live
under a temporary directory, starts C{twistd -n hlfs} on an ephemeral
loopback port, and runs the chosen scenarios.  Every hlfs figure is paired
with C{rpcbind} NULL at the same transport and window, measured right
before it, and reported as a ratio: absolute numbers drift between runs on
shared machines, ratios much less.  The results are printed and appended,
with the command and the date, to C{benchmarks/BENCHMARKS.md}.

Scenarios (issue "a benchmark suite"):
  - C{tools}: loadgen against every other client on this machine that can
    call rpcbind NULL (proves the load generator is not the bottleneck);
  - C{floors}: servers answering every call with a fixed reply: a C batch
    echo over UDP (C{echo_server.c}: the load generator's own ceiling) and
    a bare Twisted protocol (C{bare_twisted.py}: what Twisted costs);
  - C{readlink} (1): cached READLINK, one uid and 10,000 rotating uids,
    UDP and TCP, window 1 and 32;
  - C{getattr-lookup} (2): GETATTR and LOOKUP of the link;
  - C{profile}: py-spy samples of the server during scenario 1 at window
    32, summarised into C{benchmarks/PROFILE.md} (not run by default);
  - C{what-if}: scenario 1 at window 32 on servers with changes patched in
    at start-up (C{what_if.py}): bounds on what they would gain;
  - C{storm} (3): every READLINK probes a home (C{-c 0}), 10,000 users;
    skipped unless the server has C{--probe-deadline}/C{-c} and answers
    the alternate spool for a user without a home (it checks homes);
  - C{hung} (4): scenario 1's READLINK (10,000 users, UDP, window 32)
    without and with one user's home on a frozen FUSE mount (bindfs
    stopped with SIGSTOP) that a side client keeps asking for;
  - C{scale} (5): 10k, 100k, 1M users: RSS per user, start-up and reload
    (SIGHUP) time, READLINK p99 during a reload;
  - C{rotating}: the cost of 10,000 rotating uids against one uid, the
    median of interleaved pairs (C{homecheck.py});
  - C{storm-cached}: 100 cached users asked by a side client during the
    uncached storm, their p99 and maximum (C{homecheck.py});
  - C{suite}: all of readlink, getattr-lookup, rotating, storm,
    storm-cached, hung and scale, the figures of the targets.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
LOADGEN_SRC = os.path.join(HERE, "loadgen.c")
LOADGEN = os.path.join(BUILD, "loadgen")
RESULTS = os.path.join(HERE, "BENCHMARKS.md")
PROFILE = os.path.join(HERE, "PROFILE.md")

FIRST_UID = 10000
NO_HOME_UID = 9999  # a user whose home does not exist
EXPORT = "/mail"

SCENARIOS = ("tools", "floors", "readlink", "getattr-lookup", "profile", "what-if", "storm", "hung", "scale",
             "storm-cached", "rotating", "suite", "directory")
DEFAULT_SCENARIOS = ("readlink", "getattr-lookup")
# --scenario suite: every figure of the targets (BENCHMARKS.md's summary).
SUITE = ("readlink", "getattr-lookup", "rotating", "storm", "storm-cached", "hung", "scale")

# Targets of the issue, as (scenario key, minimum ratio to rpcbind NULL).
TARGETS = {
    ("readlink", 1, "udp", 32): 1.5,
    ("readlink", 1, "tcp", 32): 2.0,
    ("readlink", "many", "udp", 32): 1.5,
    ("readlink", "many", "tcp", 32): 1.5,
}
STORM_TARGET = 0.16  # ratio; p99 <= 6 ms


class Skip(Exception):
    """
    A scenario cannot run against this server; the message says why.
    """


class BenchError(Exception):
    """
    A problem that stops the benchmark, with a message for the user.
    """


def build_loadgen(cc="gcc"):
    """
    Compile the load generator if it is missing or older than its source.

    @return: the path of the executable.
    """
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(LOADGEN) or os.path.getmtime(LOADGEN) < os.path.getmtime(LOADGEN_SRC):
        if shutil.which(cc) is None:
            raise BenchError(f"no C compiler {cc!r}: install gcc")
        r = subprocess.run([cc, "-O2", "-Wall", "-o", LOADGEN, LOADGEN_SRC],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"building loadgen failed:\n{r.stderr}")
    return LOADGEN


def loadgen(port, *args, seconds=None, calls=None, server_pid=None, warmup=0.0, check=True):
    """
    Run the load generator once.

    @return: its JSON result as a dict, or C{None} when it failed and
        C{check} is false.
    """
    cmd = [LOADGEN, "--port", str(port), "--quiet", *map(str, args)]
    if seconds is not None:
        cmd += ["--duration", str(seconds)]
    if calls is not None:
        cmd += ["--calls", str(calls)]
    if warmup:
        cmd += ["--warmup", str(warmup)]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        if check:
            raise BenchError(f"loadgen failed: {' '.join(cmd)}\n{r.stderr.strip()}")
        return None
    return json.loads(r.stdout)


def find_pid(comm):
    """
    @return: the pid of a process whose command name is C{comm}, or C{None}.
    """
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        return int(entry)
            except OSError:
                pass
    return None


def rpcbind_answers():
    r = loadgen(111, "--calls", 1, "--timeout-ms", 500, check=False)
    return r is not None and r["ok"] == 1


def ensure_rpcbind():
    """
    Make sure rpcbind answers NULL on 127.0.0.1:111, starting it if needed.

    @return: C{(pid, started)}: its pid, and whether this call started it.
    """
    if rpcbind_answers():
        return find_pid("rpcbind"), False
    exe = shutil.which("rpcbind") or "/usr/sbin/rpcbind"
    if not os.path.exists(exe):
        raise BenchError("rpcbind is not installed: apt-get install rpcbind")
    for args in ([exe, "-w"], [exe]):
        subprocess.run(args, capture_output=True)
        for _ in range(20):
            if rpcbind_answers():
                return find_pid("rpcbind"), True
            time.sleep(0.1)
    raise BenchError("could not start rpcbind (it needs root): start it and retry")


def free_port():
    """
    @return: a loopback port free for both TCP and UDP right now.
    """
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise BenchError("no free loopback port")


def write_users(directory, count, make_homes=True):
    """
    Write a passwd(5) file of C{count} users C{u<uid>} with uids from
    L{FIRST_UID} and homes (with their C{.mailspool}) under C{directory}.

    @return: the password file's path.
    """
    path = os.path.join(directory, "passwd")
    homes = os.path.join(directory, "home")
    # mkdtemp makes 0700 directories: the users must reach their homes.
    os.chmod(directory, 0o755)
    with open(path, "w") as f:
        f.write(f"root:x:0:0:root:{directory}/root:/bin/sh\n")
        f.write(f"nohome:x:{NO_HOME_UID}:100::{directory}/missing/nohome:/bin/sh\n")
        for uid in range(FIRST_UID, FIRST_UID + count):
            f.write(f"u{uid}:x:{uid}:100::{homes}/u{uid}:/bin/sh\n")
    if make_homes:
        # Owned by their users, as real homes are: a home probe runs with
        # the user's credentials.
        chown = os.geteuid() == 0
        for uid in range(FIRST_UID, FIRST_UID + count):
            spool = f"{homes}/u{uid}/.mailspool"
            os.makedirs(spool, exist_ok=True)
            if chown:
                os.chown(spool, uid, 100)
                os.chown(os.path.dirname(spool), uid, 100)
    return path


def twistd_path():
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    return exe if os.path.exists(exe) else shutil.which("twistd")


def server_help(twistd):
    """
    @return: the text of C{twistd hlfs --help}, or C{""} if there is no
        hlfs plugin.
    """
    r = subprocess.run([twistd, "hlfs", "--help"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


class Server:
    """
    A C{twistd -n hlfs} process on an ephemeral loopback port.
    """

    def __init__(self, twistd, workdir, users, extra=(), profile=None, launcher=None, env=None):
        self.workdir = workdir
        self.port = free_port()
        self.log = os.path.join(workdir, "server.log")
        help_text = server_help(twistd)
        if not help_text:
            raise BenchError(f"{twistd} has no hlfs plugin: install hlfs in this venv")
        alt = os.path.join(workdir, "alt_mail")
        os.makedirs(alt, exist_ok=True)
        os.chmod(alt, 0o1777)  # a spool directory's mode
        cmd = list(launcher or [twistd]) + ["-n", "--pidfile="]
        if profile:
            cmd += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
        cmd += ["hlfs", "--no-mount", "--port", str(self.port), "--interface", "127.0.0.1",
                "--insecure", "--password-file", users, "--alt-dir", alt]
        if "--no-portmap" in help_text:
            cmd.append("--no-portmap")
        cmd += list(extra)
        self.command = cmd
        self.logfile = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     cwd=workdir, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"hlfs exited with status {self.proc.returncode}:\n{self.log_tail()}")
            r = loadgen(self.port, "--prog", 100003, "--vers", 3, "--calls", 1,
                        "--timeout-ms", 300, check=False)
            if r is not None and r["ok"] == 1:
                return
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"hlfs did not answer NULL within 30 s:\n{self.log_tail()}")

    def log_tail(self, lines=20):
        with open(self.log) as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


def paired(server, rpcbind_pid, call, proto, window, uids, seconds, rounds=3, name=None,
           target=None):
    """
    Measure rpcbind NULL and then hlfs C{call} at the same transport and
    window, C{rounds} times in turn, and keep the round with the median
    ratio (other programs on a shared machine come and go).

    @return: a result row (dict).
    """
    args = ["--proto", proto, "--window", window, "--call", call]
    if call != "null":
        args += ["--export", EXPORT]
    if uids > 1:
        args += ["--uids", f"{FIRST_UID}-{FIRST_UID + uids - 1}"]
    else:
        args += ["--uid", FIRST_UID]
    measured = []
    for _ in range(rounds):
        floor = loadgen(111, "--proto", proto, "--window", window, seconds=seconds,
                        warmup=0.5, server_pid=rpcbind_pid)
        res = loadgen(server.port, *args, seconds=seconds, warmup=0.5, server_pid=server.pid)
        ratio = res["ops_per_s"] / floor["ops_per_s"] if floor["ops_per_s"] else 0.0
        measured.append((ratio, res, floor))
    measured.sort(key=lambda m: m[0])
    ratio, res, floor = measured[len(measured) // 2]
    row = {
        "scenario": name or call, "call": call, "uids": uids, "proto": proto,
        "window": window, "hlfs": res, "rpcbind": floor, "ratio": ratio,
        "ratios": [round(m[0], 3) for m in measured],
    }
    key = (call, 1 if uids == 1 else "many", proto, window)
    if target is None:
        target = TARGETS.get(key)
    if target is not None:
        row["target"] = target
    line = (f"  {call:<8} {uids:>6} uid{'s' if uids > 1 else ' '} {proto} w{window:<3}"
            f" {res['ops_per_s']:>9,.0f}/s  p99 {res['latency_us']['p99']:>8.1f} us"
            f"  err {res['errors']:<3} | rpcbind NULL {floor['ops_per_s']:>9,.0f}/s"
            f"  -> {ratio:.2f}x")
    cpu = res.get("server_cpu_us_per_op")
    if cpu is not None:
        line += f"  cpu {cpu:.1f} us/call"
    if "target" in row:
        line += f"  (target >= {row['target']}x: {'met' if ratio >= row['target'] else 'MISSED'})"
    print(line, flush=True)
    return row


def scenario_readlink(server, rpcbind_pid, seconds, many, rounds):
    rows = []
    for uids in (1, many):
        for proto in ("udp", "tcp"):
            for window in (1, 32):
                rows.append(paired(server, rpcbind_pid, "readlink", proto, window, uids,
                                   seconds, rounds))
    return rows


def scenario_getattr_lookup(server, rpcbind_pid, seconds, many, rounds):
    rows = []
    for call in ("getattr", "lookup"):
        for uids in (1, many):
            for proto in ("udp", "tcp"):
                rows.append(paired(server, rpcbind_pid, call, proto, 32, uids, seconds, rounds))
    return rows


def probes_homes(server, workdir):
    """
    Whether the server checks homes: a user whose home does not exist
    must get the alternate spool (asked on the wire with C{hlfs resolve}).
    """
    hlfs = os.path.join(os.path.dirname(sys.executable), "hlfs")
    r = subprocess.run([hlfs, "resolve", "--uid", str(NO_HOME_UID), "--gid", "100",
                        "--server", f"127.0.0.1:{server.port}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise BenchError(f"hlfs resolve failed: {r.stderr.strip()}")
    return r.stdout.strip().endswith(os.path.join(workdir, "alt_mail"))


def scenario_storm(twistd, workdir, users, rpcbind_pid, seconds, many, rounds):
    """
    Scenario 3: every READLINK needs a home probe on a real filesystem
    (probe cache interval 0), 10,000 distinct users, UDP and TCP, window 32.
    """
    rows = storm_rows(twistd, workdir, users, rpcbind_pid, seconds, many, rounds,
                      "storm (-c 0)")
    if os.geteuid() == 0 and shutil.which("mount"):
        rows += storm_on_tmpfs(twistd, workdir, rpcbind_pid, seconds, many, rounds)
    return rows


def storm_rows(twistd, workdir, users, rpcbind_pid, seconds, many, rounds, name):
    server = Server(twistd, workdir, users, extra=["-c", "0"])
    try:
        print(f"hlfs -c 0 pid {server.pid} port {server.port} ({name})", flush=True)
        if not probes_homes(server, workdir):
            raise Skip("this server resolves the link without checking the home"
                       " (no home probes yet)")
        return [paired(server, rpcbind_pid, "readlink", proto, 32, many, seconds, rounds,
                       name=name, target=STORM_TARGET) for proto in ("udp", "tcp")]
    finally:
        server.stop()


def storm_on_tmpfs(twistd, workdir, rpcbind_pid, seconds, many, rounds):
    """
    The storm again with the homes on a tmpfs of its own: the daemon's
    cost without the disk's.  (This machine's disk is ext4 without a
    journal, where every file created scans the inodes freed in the last
    minutes: after a few storms a check costs 300-500 us of kernel time,
    against 50-70 us on a quiet disk.  See PROFILE.md.)
    """
    d = os.path.join(workdir, "tmpfs")
    os.mkdir(d)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", d], check=True)
    try:
        users = write_users(d, many)
        return storm_rows(twistd, d, users, rpcbind_pid, seconds, many, rounds,
                          "storm (-c 0), homes on tmpfs")
    finally:
        subprocess.run(["umount", "-l", d], check=False)


class FloorServer:
    """
    A minimal server answering every call with a fixed reply, on an
    ephemeral port, for the C{floors} scenario.
    """

    def __init__(self, argv):
        self.port = free_port()
        self.proc = subprocess.Popen([*argv, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        for _ in range(100):
            r = loadgen(self.port, "--calls", 1, "--timeout-ms", 200, check=False)
            if r is not None and r["ok"] == 1:
                return
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{argv[-1]} did not answer")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def build_echo_server():
    exe = os.path.join(BUILD, "echo_server")
    src = os.path.join(HERE, "echo_server.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        r = subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, src], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"building echo_server failed:\n{r.stderr}")
    return exe


def scenario_floors(rpcbind_pid, seconds, rounds):
    """
    Servers that do nothing per call: a C batch echo over UDP (the load
    generator's own ceiling) and a bare Twisted protocol (Twisted's cost).
    """
    rows = []
    echo = FloorServer([build_echo_server()])
    try:
        for window in (1, 32):
            rows.append(paired(echo, rpcbind_pid, "null", "udp", window, 1, seconds, rounds,
                               name="C echo, recvmmsg/sendmmsg"))
    finally:
        echo.stop()
    bare = FloorServer([sys.executable, os.path.join(HERE, "bare_twisted.py")])
    try:
        for proto in ("udp", "tcp"):
            rows.append(paired(bare, rpcbind_pid, "null", proto, 32, 1, seconds, rounds,
                               name="bare Twisted, fixed reply"))
    finally:
        bare.stop()
    return rows


def _rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def _wait_for_log(server, pattern, after, timeout=120):
    """
    Wait until the server's log has a line containing C{pattern} past
    offset C{after}.

    @return: that line.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(server.log) as f:
            f.seek(after)
            for line in f:
                if pattern in line:
                    return line
        time.sleep(0.01)
    raise BenchError(f"no {pattern!r} in the server log within {timeout} s")


def scenario_scale(twistd, workdir, seconds, sizes):
    """
    Scenario 5: for each size, a password file of that many users: the
    server's RSS growth per user over a 10-user table, the start-up time
    over a 10-user table's, and a reload (SIGHUP) while loadgen drives
    cached READLINK (one uid, UDP, window 32): the reload's time and the
    READLINK p99/max during it against a run without reload.

    @return: Markdown table text.
    """
    def start(n):
        d = os.path.join(workdir, f"scale-{n}")
        os.makedirs(d, exist_ok=True)
        users = write_users(d, n, make_homes=False)
        t0 = time.monotonic()
        server = Server(twistd, d, users)
        return server, time.monotonic() - t0, d

    base, base_ready, d = start(10)
    base_rss = _rss_bytes(base.pid)
    probing = probes_homes(base, d)
    base.stop()
    lines = ["| users | start-up s (over 10 users) | RSS MB | RSS bytes/user (over 10 users)"
             " | reload s (server's log) | READLINK p99 / max us, no reload | same during reload"
             " | errors |",
             "|---|---|---|---|---|---|---|---|"]
    args = ["--call", "readlink", "--uid", FIRST_UID, "--export", EXPORT, "--window", 32]
    for n in sizes:
        server, ready, _ = start(n)
        try:
            rss = _rss_bytes(server.pid)
            quiet = loadgen(server.port, *args, seconds=seconds, warmup=0.5, server_pid=server.pid)
            offset = os.path.getsize(server.log)
            cmd = [LOADGEN, "--port", str(server.port), "--quiet",
                   "--duration", str(seconds), *map(str, args)]
            load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(min(0.5, seconds / 4))
            server.proc.send_signal(signal.SIGHUP)
            line = _wait_for_log(server, "reloaded", offset)
            out, err = load.communicate(timeout=seconds + 120)
            if load.returncode != 0:
                raise BenchError(f"loadgen failed: {err.strip()}")
            during = json.loads(out)
            reload_s = line.rsplit(" in ", 1)[1].split()[0] if " in " in line else "?"
            ql, dl = quiet["latency_us"], during["latency_us"]
            lines.append(
                f"| {n:,} | {ready - base_ready:.2f} | {rss / 2**20:.1f}"
                f" | {(rss - base_rss) / n:.0f} | {reload_s} | {ql['p99']:.0f} / {ql['max']:.0f}"
                f" | {dl['p99']:.0f} / {dl['max']:.0f} | {quiet['errors'] + during['errors']} |")
            print("  " + lines[-1], flush=True)
        finally:
            server.stop()
    lines.append("")
    lines.append("The RSS includes the per-user probe cache only if the server checks homes: "
                 + ("it does (but the cache holds only the uids called)." if probing else
                    "this one does not, so these are the table's figures."))
    return "\n".join(lines)


def scenario_what_if(twistd, workdir, users, rpcbind_pid, seconds, rounds):
    """
    Cached READLINK, one uid, window 32, on the server as it is and with
    each change of C{what_if.py} patched in.
    """
    rows = []
    for changes in ("", "rawsend", "replycache", "rawsend,replycache"):
        env = dict(os.environ, WHAT_IF=changes)
        server = Server(twistd, workdir, users, env=env,
                        launcher=[sys.executable, os.path.join(HERE, "what_if.py")])
        try:
            for proto in ("udp", "tcp"):
                rows.append(paired(server, rpcbind_pid, "readlink", proto, 32, 1, seconds, rounds,
                                   name=f"what-if: {changes or 'as is'}"))
        finally:
            server.stop()
    return rows


HUNG_UID = 9998  # the user whose home is on the frozen mount


def _mounted(path):
    # From the mount table: never stat a mount point that may hang.
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def _log_lines(server, needle):
    """
    @return: the messages (after the log prefix) of the server's log lines
        that mention C{needle}.
    """
    with open(server.log) as f:
        return [line.split("] ", 1)[-1].strip() for line in f if needle in line]


def scenario_hung(twistd, workdir, many, rpcbind_pid, seconds, rounds):
    """
    Scenario 4: cached READLINK for C{many} users (UDP, window 32) without
    and then with one user's home on a frozen FUSE mount (bindfs stopped
    with SIGSTOP) that a side client keeps asking for.

    @return: C{(rows, note)}.
    """
    if shutil.which("bindfs") is None:
        raise Skip("bindfs (Debian package bindfs) is not installed")
    if os.geteuid() != 0:
        raise Skip("needs root (FUSE mount, home checks as other users)")
    d = os.path.join(workdir, "hung")
    os.makedirs(d, exist_ok=True)
    users = write_users(d, many)
    src, mnt = os.path.join(d, "fuse-src"), os.path.join(d, "fuse")
    os.makedirs(os.path.join(src, "hung", ".mailspool"))
    os.makedirs(mnt)
    for path in (os.path.join(src, "hung"), os.path.join(src, "hung", ".mailspool")):
        os.chown(path, HUNG_UID, 100)
    os.chmod(src, 0o755)
    with open(users, "a") as f:
        f.write(f"hung:x:{HUNG_UID}:100::{mnt}/hung:/bin/sh\n")
    bindfs = subprocess.Popen(["bindfs", "-f", "-o", "allow_other", src, mnt],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    server = side = None
    try:
        for _ in range(250):
            if _mounted(mnt):
                break
            time.sleep(0.02)
        else:
            raise Skip("bindfs did not mount")
        server = Server(twistd, d, users)
        if not probes_homes(server, d):
            raise Skip("this server resolves the link without checking the home")
        def side_client(uid):
            # The same side load in both runs: one caller asking at window 1.
            return subprocess.Popen(
                [LOADGEN, "--port", str(server.port), "--quiet", "--call", "readlink",
                 "--uid", str(uid), "--window", "1", "--timeout-ms", "30000",
                 "--duration", str(rounds * 2 * (seconds + 1.5) + 5)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        side = side_client(NO_HOME_UID)
        time.sleep(1)
        rows = [paired(server, rpcbind_pid, "readlink", "udp", 32, many, seconds, rounds,
                       name="hung: no hang")]
        side.kill()
        side.wait()
        bindfs.send_signal(signal.SIGSTOP)
        side = side_client(HUNG_UID)
        time.sleep(1)
        rows.append(paired(server, rpcbind_pid, "readlink", "udp", 32, many, seconds, rounds,
                           name="hung: one home frozen"))
        side.kill()
        out, err = side.communicate(timeout=60)
        side = None
        bindfs.send_signal(signal.SIGCONT)
        a, b = rows[0]["hlfs"]["latency_us"], rows[1]["hlfs"]["latency_us"]
        note = (f"Other users' READLINK p99 with one home frozen: {b['p99'] / a['p99']:.2f}x the"
                f" run without (target <= 1.2x), maximum {b['max'] / 1000:.1f} ms (target <= 50 ms).")
        note += ("  In both runs a side client asked for one more user's link at window 1:"
                 " a user without a home, then the frozen home's user.")
        probe_lines = _log_lines(server, str(HUNG_UID))
        if probe_lines:
            note += "  Server log on the frozen home: " + " / ".join(probe_lines[:2])
        return rows, note
    finally:
        if side is not None:
            side.kill()
            side.wait()
        if bindfs.poll() is None:
            bindfs.send_signal(signal.SIGCONT)
        if server is not None:
            server.stop()
        subprocess.run(["fusermount", "-u", mnt], timeout=10, capture_output=True)
        if _mounted(mnt):
            subprocess.run(["umount", "-l", mnt], timeout=10, capture_output=True)
        try:
            bindfs.wait(5)
        except subprocess.TimeoutExpired:
            bindfs.kill()
            bindfs.wait()


def scenario_profile(server, seconds, many, cases=None, label="READLINK"):
    """
    Sample the server with py-spy while loadgen drives READLINK at window
    32, for each C{(uids, proto)} of C{cases} (default: one uid and C{many}
    uids, UDP and TCP).

    @return: C{(heading, Markdown)} pairs for L{PROFILE}.
    """
    sys.path.insert(0, HERE)
    import profile_server

    pyspy = profile_server.find_pyspy()
    if pyspy is None:
        raise BenchError("the profile needs py-spy: .venv/bin/pip install py-spy")
    parts = []
    if cases is None:
        cases = [(uids, proto) for uids in (1, many) for proto in ("udp", "tcp")]
    for uids, proto in cases:
        args = ["--proto", proto, "--window", 32, "--call", "readlink", "--export", EXPORT]
        args += ["--uids", f"{FIRST_UID}-{FIRST_UID + uids - 1}"] if uids > 1 else ["--uid", FIRST_UID]
        # One pass first, so that the sampled run's set-up (a LOOKUP per
        # uid) finds every home already checked.
        loadgen(server.port, *args, calls=uids)
        raw = os.path.join(server.workdir, f"profile-{uids}-{proto}.txt")
        cmd = [LOADGEN, "--port", str(server.port), "--quiet", "--server-pid", str(server.pid),
               "--duration", str(seconds + 2), *map(str, args)]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        spy = profile_server.record(pyspy, server.pid, seconds, raw)
        _, spy_err = spy.communicate(timeout=seconds + 60)
        out, err = load.communicate(timeout=seconds + 60)
        if load.returncode != 0:
            raise BenchError(f"loadgen failed: {err.strip()}")
        if not os.path.exists(raw):
            raise BenchError(f"py-spy recorded nothing: {spy_err.strip()}")
        res = json.loads(out)
        with open(raw) as f:
            own, inclusive, total = profile_server.parse_collapsed(f)
        head = (f"{label}, {uids} uid{'s' if uids > 1 else ''}, {proto.upper()}, window 32:"
                f" {res['ops_per_s']:,.0f} calls/s, server CPU"
                f" {res['server_cpu_us_per_op']:.1f} us/call, {total} busy samples")
        print(f"  {head}", flush=True)
        parts.append((head, profile_server.summarise(own, inclusive, total)))
    return parts


PROFILE_TITLE = "# Where hlfs spends its time: scenario 1 (cached READLINK)"


def other_profile_parts(path=PROFILE, title=PROFILE_TITLE):
    """
    The top-level sections of C{path} other than the one titled C{title}
    (the storm's profile, written by hand from C{profile_storm.py}): a new
    scenario-1 profile replaces its own section only.
    """
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("# ") and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current))
    return "".join("\n" + p.rstrip("\n") + "\n" for p in parts if not p.startswith(title))


def write_profile(command, parts):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    others = other_profile_parts()
    with open(PROFILE, "w") as f:
        f.write(f"{PROFILE_TITLE}\n\n"
                f"{now}, commit {git_commit()}, {os.cpu_count()} CPUs. Command: `{command}`.\n\n"
                "py-spy samples of the running server (threads waiting on a condition for"
                " work left out; time in epoll, waiting included, shows as doPoll); own % is"
                " the share of busy samples with the function as the innermost Python frame,"
                " C calls (socket.sendto, struct) included.\n")
        for head, body in parts:
            f.write(f"\n## {head}\n\n{body}\n")
        f.write(others)


def uid_cost_note(rows):
    """
    The 10,000-uid target: rotating uids may cost at most 1.1x one uid
    (server CPU per call).

    @return: lines of text.
    """
    notes = []
    by = {(r["scenario"], r["call"], r["uids"] > 1, r["proto"], r["window"]): r for r in rows}
    for (scenario, call, many, proto, window), r in sorted(by.items(), key=str):
        one = by.get((scenario, call, False, proto, window))
        if not many or one is None:
            continue
        a = one["hlfs"].get("server_cpu_us_per_op")
        b = r["hlfs"].get("server_cpu_us_per_op")
        if a and b:
            notes.append(f"{call} {proto} w{window}: server CPU per call with {r['uids']} uids ="
                         f" {b / a:.2f}x one uid (target <= 1.1x at w32)")
    return notes


def format_table(rows):
    lines = [
        "| scenario | call | uids | transport | window | server calls/s | p50 us | p99 us | max us"
        " | errors | server CPU us/call | rpcbind NULL calls/s | ratio (rounds) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, f = r["hlfs"], r["rpcbind"]
        lat = h["latency_us"]
        cpu = h.get("server_cpu_us_per_op")
        target = ""
        if "target" in r:
            target = f">= {r['target']}x {'met' if r['ratio'] >= r['target'] else 'missed'}"
        rounds = ", ".join(f"{x:.2f}" for x in r["ratios"])
        lines.append(
            f"| {r['scenario']} | {r['call'].upper()} | {r['uids']} | {r['proto']} | {r['window']}"
            f" | {h['ops_per_s']:,.0f} | {lat['p50']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f}"
            f" | {h['errors']} | {'-' if cpu is None else f'{cpu:.1f}'} | {f['ops_per_s']:,.0f}"
            f" | {r['ratio']:.2f}x ({rounds}) | {target} |"
        )
    return "\n".join(lines)


def git_commit():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def append_results(command, sections, load_before):
    """
    Append a dated section with the command and the tables.
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_after = os.getloadavg()[0]
    head = (f"\n## {now}\n\n"
            f"Command: `{command}`  \n"
            f"Commit {git_commit()}; {os.cpu_count()} CPUs; Linux {platform.release()};"
            f" Python {platform.python_version()}; 1-minute load average {load_before:.1f}"
            f" before, {load_after:.1f} after (anything above about 2 means other programs"
            f" shared the CPUs).\n")
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as f:
        if new:
            f.write("# hlfs benchmark results\n\n"
                    "Appended by `benchmarks/run.py`, newest last.  Ratios are to Debian's"
                    " rpcbind answering NULL at the same transport and window, measured"
                    " right before each figure in the same run.\n")
        f.write(head)
        for title, body in sections:
            f.write(f"\n### {title}\n\n{body}\n")


def expand_scenarios(chosen):
    """
    The scenarios to run, in order, with C{suite} standing for L{SUITE}.
    """
    out = []
    for name in chosen:
        for s in (SUITE if name == "suite" else (name,)):
            if s not in out:
                out.append(s)
    return out


def run_homecheck_scenarios(twistd, workdir, users, server_scenarios, args, rows, sections):
    """
    The scenarios of L{homecheck}: C{rotating} (its own server) and
    C{storm-cached}; adds their tables to C{sections}.
    """
    sys.path.insert(0, HERE)
    import homecheck

    bench = sys.modules[__name__]
    if "rotating" in server_scenarios:
        print("rotating uids: median of interleaved pairs, one uid then "
              f"{args.users} uids", flush=True)
        server = Server(twistd, workdir, users)
        try:
            _, table = homecheck.scenario_rotating(bench, server, args.seconds, args.users,
                                                   pairs=max(args.rounds, 3))
        finally:
            server.stop()
        sections.append(("Rotating uids: median of interleaved pairs (server CPU per call)",
                         table))
    if "storm-cached" in server_scenarios:
        print(f"storm-cached: {homecheck.SIDE_USERS} cached users during the uncached storm",
              flush=True)
        try:
            _, table = homecheck.scenario_storm_cached(bench, twistd, workdir, users, args.users,
                                                       args.seconds, args.rounds)
            sections.append(("Cached users during the uncached storm", table))
        except Skip as e:
            print(f"scenario storm-cached: skipped ({e})", flush=True)
            sections.append(("Scenario storm-cached", f"Skipped: {e}."))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help=f"run this scenario (repeatable; default: {' '.join(DEFAULT_SCENARIOS)})")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each figure, in turn with rpcbind; the median is kept")
    parser.add_argument("--users", type=int, default=10000,
                        help="users in the password file, and uids rotated (10000)")
    parser.add_argument("--scale-sizes", default="10000,100000,1000000",
                        type=lambda v: [int(x) for x in v.split(",")],
                        help="password file sizes for the scale scenario")
    parser.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    scenarios = expand_scenarios(args.scenario or list(DEFAULT_SCENARIOS))
    if args.users < 2 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--users must be at least 2, --seconds and --rounds positive")
    python = sys.executable
    if python.startswith(ROOT + os.sep):
        python = os.path.relpath(python, ROOT)
    command = f"{python} benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    sections = []
    load_before = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="hlfs-bench-")
    os.chmod(workdir, 0o755)  # users must reach their homes below it
    server = None
    rpcbind_started = None
    try:
        build_loadgen()
        rpcbind_pid, started = ensure_rpcbind()
        if started:
            rpcbind_started = rpcbind_pid
        print(f"rpcbind pid {rpcbind_pid}{' (started here)' if started else ''}", flush=True)

        if "tools" in scenarios:
            sys.path.insert(0, HERE)
            import compare_null

            print("tools: loadgen vs other clients, rpcbind NULL", flush=True)
            table = compare_null.format_rows(
                compare_null.compare(LOADGEN, 111, 32, args.seconds, rpcbind_pid, args.rounds))
            print(table, flush=True)
            sections.append(("Load generator vs other clients (rpcbind NULL)", table))

        rows = []
        if "floors" in scenarios:
            print("floors: a bare Twisted server with a fixed reply", flush=True)
            rows += scenario_floors(rpcbind_pid, args.seconds, args.rounds)

        server_scenarios = [s for s in scenarios if s not in ("tools", "floors")]
        if server_scenarios:
            twistd = twistd_path()
            if twistd is None:
                raise BenchError("no twistd: run with the project's .venv/bin/python")
            help_text = server_help(twistd)
            probe_ready = "--probe-deadline" in help_text and "-c," in help_text
            needs_server = [s for s in server_scenarios
                            if s in ("readlink", "getattr-lookup", "profile")]
            users = None
            if needs_server:
                users = write_users(workdir, args.users)
                server = Server(twistd, workdir, users)
                print(f"hlfs pid {server.pid} port {server.port}: {' '.join(server.command)}",
                      flush=True)
                if "readlink" in server_scenarios:
                    print("scenario 1: cached READLINK", flush=True)
                    rows += scenario_readlink(server, rpcbind_pid, args.seconds, args.users,
                                               args.rounds)
                if "getattr-lookup" in server_scenarios:
                    print("scenario 2: GETATTR and LOOKUP of the link", flush=True)
                    rows += scenario_getattr_lookup(server, rpcbind_pid, args.seconds,
                                                     args.users, args.rounds)
                if "profile" in server_scenarios:
                    print("profile: py-spy during scenario 1 at window 32", flush=True)
                    parts = scenario_profile(server, args.seconds, args.users)
                    server.stop()
                    server = None
                    if probe_ready:
                        storm = Server(twistd, workdir, users, extra=["-c", "0"])
                        try:
                            if probes_homes(storm, workdir):
                                print("profile: py-spy during the uncached storm", flush=True)
                                parts += scenario_profile(
                                    storm, args.seconds, args.users,
                                    cases=[(args.users, "udp")],
                                    label="Uncached READLINK (-c 0, every call probes a home)")
                        finally:
                            storm.stop()
                    if not args.no_write:
                        write_profile(command, parts)
                        print(f"wrote {PROFILE}")
                if server is not None:
                    server.stop()
                    server = None
            if "what-if" in server_scenarios:
                print("what-if: changes patched into the server", flush=True)
                users = users or write_users(workdir, args.users)
                rows += scenario_what_if(twistd, workdir, users, rpcbind_pid, args.seconds,
                                         args.rounds)
            if "storm" in server_scenarios and probe_ready:
                print("scenario 3: uncached storm (-c 0)", flush=True)
                users = users or write_users(workdir, args.users)
                try:
                    rows += scenario_storm(twistd, workdir, users, rpcbind_pid, args.seconds,
                                           args.users, args.rounds)
                except Skip as e:
                    print(f"scenario storm: skipped ({e})", flush=True)
                    sections.append(("Scenario storm", f"Skipped: {e}."))
            homecheck_scenarios = [s for s in ("rotating", "storm-cached")
                                   if s in server_scenarios and (probe_ready or s == "rotating")]
            if homecheck_scenarios:
                users = users or write_users(workdir, args.users)
                run_homecheck_scenarios(twistd, workdir, users, homecheck_scenarios, args, rows,
                                        sections)
            if "scale" in server_scenarios:
                print("scenario 5: scale", flush=True)
                table = scenario_scale(twistd, workdir, args.seconds, args.scale_sizes)
                sections.append(("Scenario 5: scale", table))
            if "hung" in server_scenarios and probe_ready:
                print("scenario 4: one hung home", flush=True)
                try:
                    hung_rows, note = scenario_hung(twistd, workdir, args.users, rpcbind_pid,
                                                    args.seconds, args.rounds)
                    rows += hung_rows
                    print(note, flush=True)
                    sections.append(("Scenario 4: one hung home", note))
                except Skip as e:
                    print(f"scenario hung: skipped ({e})", flush=True)
                    sections.append(("Scenario hung", f"Skipped: {e}."))
            if "directory" in server_scenarios:
                print("directory: users looked up one at a time in slapd through nslcd",
                      flush=True)
                sys.path.insert(0, HERE)
                import directory

                dir_rows, note = directory.scenario(twistd, workdir, rpcbind_pid, args.seconds,
                                                    args.users, args.rounds)
                rows += dir_rows
                sections.append(("Scenario directory: directory users", note))
            for s in ("storm", "hung", "storm-cached"):
                if s in server_scenarios and not probe_ready:
                    why = "the server lacks --probe-deadline/-c"
                    print(f"scenario {s}: skipped ({why})", flush=True)
                    sections.append((f"Scenario {s}", f"Skipped: {why}."))
        if rows:
            os.makedirs(BUILD, exist_ok=True)
            with open(os.path.join(BUILD, "last-run.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            table = format_table(rows)
            notes = uid_cost_note(rows)
            body = table + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
            print(body, flush=True)
            sections.insert(0, ("Servers vs rpcbind NULL, same transport and window", body))
        if sections and not args.no_write:
            append_results(command, sections, load_before)
            print(f"appended to {RESULTS}")
        return 0
    except BenchError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if rpcbind_started:
            os.kill(rpcbind_started, signal.SIGTERM)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
