"""
Scenario C{directory}: users that the name service does not enumerate,
looked up one at a time through a real directory (issue "directory
users").

The world is the tests' (L{tests.support.directory}): a real slapd on
127.0.0.1 with C{--users} posixAccount users (uids from 20001), nslcd
with C{nss_disable_enumeration yes}, seen through the glibc name service
in a private mount namespace only.  Two servers serve the very same
users and homes:

  - the directory server, C{twistd hlfs} in the namespace with no
    password file: its table holds the five local users, every directory
    uid is a per-user C{getpwuid_r} through nslcd to slapd (and its home
    check's groups a C{getgrouplist} there too);
  - the table server, C{twistd hlfs --password-file} listing the same
    users: every uid is in its table.

Measured:

  1. first access, cold: one LOOKUP of C{home} per uid (what a client
     sends first; it resolves the link), C{--cold} distinct uids in turn
     at window 1, on a fresh server: each directory uid needs the
     directory (the slapd searches are counted), each table uid only its
     home check.  p50/p90/p99/max per call;
  2. cached: after every uid has been resolved once, READLINK over all
     C{--users} rotating uids, UDP and TCP at window 32, as a ratio to
     rpcbind NULL measured right before, the table server next to the
     directory server.  It should match within noise.

Both servers run with C{-c 3600 -i 3600}: the home checks and the
directory answers stay cached for the whole run (a reload forgets the
directory answers, by design).
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import run as bench  # noqa: E402
from tests.support import directory as dw  # noqa: E402

#: Long enough for the whole run: nothing expires between the warm-up and
#: the measurements.
SERVER_ARGS = ("-c", "3600", "-i", "3600")


class DirectoryBenchServer:
    """
    L{dw.DirectoryServer} with the C{port} and C{pid} L{bench.paired}
    wants (C{nsenter} execs C{twistd}: its pid is the server's).
    """

    def __init__(self, world):
        self.server = dw.DirectoryServer(world, SERVER_ARGS).start()
        self.port = self.server.port
        self.pid = self.server.proc.pid

    def stop(self):
        self.server.stop()


def server_status(server):
    """
    The name/value pairs of C{hlfs status} asked of C{server} on the wire.
    """
    hlfs = os.path.join(os.path.dirname(sys.executable), "hlfs")
    r = subprocess.run([hlfs, "status", "--server", f"127.0.0.1:{server.port}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise bench.BenchError(f"hlfs status failed: {r.stderr.strip()}")
    pairs = {}
    for line in r.stdout.splitlines():
        name, _, value = line.partition(" ")
        pairs[name] = value.strip()
    return pairs


def check_lookups(server, asked, after):
    """
    Fail unless the directory server found every one of the C{asked}
    uids in the directory, with no directory error and no lookup refused:
    otherwise every figure of the pass measured failures (a directory
    that could not be reached answers as fast as one that answers).
    """
    pairs = server_status(server)
    wanted = {"users_looked_up": asked, "directory_errors": 0, "user_lookups_refused": 0}
    try:
        found = {name: int(pairs[name]) for name in wanted}
    except (KeyError, ValueError) as e:
        raise bench.BenchError(f"directory server status after {after} lacks {e}: {pairs}") from None
    if found != wanted:
        raise bench.BenchError(
            f"the directory server's lookups after {after} went wrong: {found}, expected"
            f" {wanted} (last directory error: {pairs.get('directory_last_error', '?')});"
            f" these figures would be of failed lookups")
    print(f"  directory server after {after}: {asked} users looked up, no directory error,"
          f" no lookup refused", flush=True)


def write_table(world, path):
    """
    The password file of the table server: the world's local users and
    every directory user, same uids and homes.
    """
    with open(path, "w") as f:
        f.write((world.etc / "passwd").read_text())
        for n in range(1, world.count + 1):
            name = dw.directory_name(n)
            f.write(f"{name}:x:{dw.directory_uid(n)}:{dw.DIRECTORY_GID}::{world.homes}/{name}:/bin/sh\n")
    return path


def make_spools(world):
    for n in range(1, world.count + 1):
        spool = world.homes / dw.directory_name(n) / ".mailspool"
        spool.mkdir()
        os.chown(spool, dw.directory_uid(n), dw.DIRECTORY_GID)


def uid_range(count):
    return f"{dw.FIRST_UID}-{dw.FIRST_UID + count - 1}"


def first_access(server, count, label):
    """
    One LOOKUP of C{home} per uid, C{count} distinct uids one after the
    other (window 1), on a server that has seen none of them.
    """
    res = bench.loadgen(server.port, "--proto", "udp", "--window", 1, "--call", "lookup",
                        "--export", bench.EXPORT, "--auth", "unix", "--uids", uid_range(count),
                        "--timeout-ms", 5000, calls=count, server_pid=server.pid)
    lat = res["latency_us"]
    print(f"  first access {label:<9} {count} uids: p50 {lat['p50']:.0f} us p99 {lat['p99']:.0f} us"
          f" max {lat['max']:.0f} us, errors {res['errors']}", flush=True)
    return res


def warm(server, count):
    """
    Resolve every uid once (window 32), so that what follows is cached.
    """
    bench.loadgen(server.port, "--proto", "udp", "--window", 32, "--call", "lookup",
                  "--export", bench.EXPORT, "--auth", "unix", "--uids", uid_range(count),
                  "--timeout-ms", 5000, calls=count)


def cached(servers, rpcbind_pid, proto, count, seconds, rounds):
    """
    rpcbind NULL, then READLINK over C{count} rotating uids on each
    server, C{rounds} times in turn; per server, the round with the
    median ratio.  Rows in L{bench.paired}'s form.
    """
    args = ["--proto", proto, "--window", 32, "--call", "readlink", "--export", bench.EXPORT,
            "--auth", "unix", "--uids", uid_range(count)]
    measured = {label: [] for label, _ in servers}
    for _ in range(rounds):
        floor = bench.loadgen(111, "--proto", proto, "--window", 32, seconds=seconds,
                              warmup=0.5, server_pid=rpcbind_pid)
        for label, server in servers:
            res = bench.loadgen(server.port, *args, seconds=seconds, warmup=0.5,
                                server_pid=server.pid)
            ratio = res["ops_per_s"] / floor["ops_per_s"] if floor["ops_per_s"] else 0.0
            measured[label].append((ratio, res, floor))
    rows = []
    for label, _ in servers:
        runs = sorted(measured[label], key=lambda m: m[0])
        ratio, res, floor = runs[len(runs) // 2]
        rows.append({
            "scenario": f"directory: {label}", "call": "readlink", "uids": count,
            "proto": proto, "window": 32, "hlfs": res, "rpcbind": floor, "ratio": ratio,
            "ratios": [round(m[0], 3) for m in runs],
        })
        print(f"  cached {label:<9} readlink {count} uids {proto} w32 {res['ops_per_s']:>9,.0f}/s"
              f" p99 {res['latency_us']['p99']:.0f} us err {res['errors']}"
              f" | rpcbind NULL {floor['ops_per_s']:,.0f}/s -> {ratio:.2f}x", flush=True)
    return rows


def cold_table(results):
    lines = ["| users from | first accesses | p50 us | p90 us | p99 us | max us | errors"
             " | slapd uid searches |", "|---|---|---|---|---|---|---|---|"]
    for label, res, searches in results:
        lat = res["latency_us"]
        lines.append(f"| {label} | {res['ok'] + res['errors']} | {lat['p50']:.0f} | {lat['p90']:.0f}"
                     f" | {lat['p99']:.0f} | {lat['max']:.0f} | {res['errors']} | {searches} |")
    return "\n".join(lines)


def scenario(twistd, workdir, rpcbind_pid, seconds, users, rounds, cold=2000):
    """
    @return: C{(rows, text)}: the cached rows for the main table, and the
        section's text (the first-access table and how it was run).
    """
    why = dw.missing_parts()
    if why is not None:
        print(f"scenario directory: skipped ({why})", flush=True)
        return [], f"Skipped: {why}."
    cold = min(cold, users)
    started = time.monotonic()
    world = dw.DirectoryWorld(count=users, enumerate=False)
    servers = []
    try:
        make_spools(world)
        print(f"  directory world: slapd with {users} users, nslcd without enumeration,"
              f" {time.monotonic() - started:.1f}s to build", flush=True)
        table_users = write_table(world, os.path.join(workdir, "directory-passwd"))
        directory = DirectoryBenchServer(world)
        servers.append(("directory", directory))
        table = bench.Server(bench.twistd_path(), workdir, table_users, extra=SERVER_ARGS)
        servers.append(("table", table))
        firsts = []
        for label, server in (("directory", directory), ("table", table)):
            before = len(world.slapd.searches("(uidNumber="))
            res = first_access(server, cold, label)
            time.sleep(0.3)  # slapd logs a search after answering it
            firsts.append((label, res, len(world.slapd.searches("(uidNumber=")) - before))
            if res["errors"]:
                raise bench.BenchError(f"first access on the {label} server: {res['errors']} errors")
        check_lookups(directory, cold, "the first-access pass")
        for _, server in servers:
            warm(server, users)
        check_lookups(directory, users, "the warm pass")
        searched = len(world.slapd.searches())
        rows = []
        for proto in ("udp", "tcp"):
            rows += cached(servers, rpcbind_pid, proto, users, seconds, rounds)
        time.sleep(0.3)
        searched = len(world.slapd.searches()) - searched
        print(f"  slapd searches during the cached runs: {searched}", flush=True)
        text = (
            f"{users} users in slapd (nslcd, `nss_disable_enumeration yes`); the directory"
            f" server's table holds the 5 local users, the table server's a password file of"
            f" the same {users} users.  First access: one LOOKUP of `home` per uid, {cold}"
            f" distinct uids in turn (UDP, window 1), fresh servers; the slapd column counts"
            f" `(uidNumber=N)` searches in slapd's log during the pass.\n\n"
            + cold_table(firsts)
            + "\n\nCached: READLINK over all the rotating uids after one pass over every uid;"
            f" rows `directory: ...` in the table above; slapd searches meanwhile: {searched}.")
        return rows, text
    finally:
        for _, server in servers:
            server.stop()
        world.close()
