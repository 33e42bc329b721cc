"""
An interleaved A/B of two hlfs trees: this one (A) and another checkout
(B, C{--against DIR}), each figure measured on both in one run, round
after round, the order swapped every round.  On a machine other programs
share, two runs an hour apart differ more than two trees do; in one run,
in turn, they share the same weather.

    .venv/bin/python benchmarks/ab.py --against ../main [--rounds 3] [--seconds 3]
        [--scenario storm --scenario storm-cached ...]

The servers are C{twistd hlfs} from this venv with C{PYTHONPATH} set to
the tree's root, so each runs its own code (its home-check processes
too).  Scenarios (default: all):

  - C{storm}: every READLINK checks a home (C{-c 0}), 10,000 users whose
    homes are on a tmpfs, window 32, UDP and TCP; calls/s as a ratio to
    rpcbind NULL measured right before, p50 and p99;
  - C{storm-cached}: 100 users whose checks are kept, asked at window 1
    during that storm (L{homecheck.scenario_storm_cached}): their p99;
  - C{directory}: a directory user's first access (slapd, nslcd without
    enumeration, L{directory}): one LOOKUP per uid, 2,000 uids in turn on
    a fresh server, p50 and p99;
  - C{readlink}: cached READLINK, one uid and 10,000 rotating, window 32,
    UDP and TCP, as a ratio to rpcbind NULL;
  - C{rotating}: the server CPU per call of 10,000 rotating uids over one
    uid's (L{homecheck.scenario_rotating}, one pair a round);
  - C{memory}: the memory of a server at idle after it checked 100 homes,
    with every process under it counted: resident (RSS, shared pages
    counted in each process), proportional (PSS, each shared page split
    among the processes sharing it) and unique (USS) set sizes, and PSS
    split into anonymous memory (heaps and stacks) and file pages (the
    Python binary and libraries).  A file page shared with processes
    outside the tree (this script's own Python, say) counts a larger share
    for a tree of more processes, though it costs the machine nothing
    more: the anonymous column is what the tree's own processes hold.

The tables are printed and appended to C{BENCHMARKS.md} with the command,
both trees' commits and the load average before and after.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import homecheck  # noqa: E402
import run as bench  # noqa: E402

SCENARIOS = ("storm", "storm-cached", "directory", "readlink", "rotating", "memory")


def commit(tree):
    r = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--", "hlfs"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + (" with changes to hlfs/" if dirty else "")


class Trees:
    """
    The two trees, and the code each server runs.
    """

    def __init__(self, against):
        self.trees = [("A", ROOT), ("B", os.path.abspath(against))]

    def order(self, round_):
        # Swapped every round: neither tree always goes first.
        return self.trees if round_ % 2 == 0 else self.trees[::-1]

    @staticmethod
    def use(tree):
        """
        Make the servers started next run C{tree}'s code.
        """
        os.environ["PYTHONPATH"] = tree


def median(values):
    return statistics.median(values) if values else float("nan")


def each(values, spec=".0f"):
    """
    C{values} one after the other, as a table shows the rounds.
    """
    return ", ".join(format(v, spec) for v in values)


def summary(values, spec=".0f", suffix=""):
    """
    The median of C{values}, then each of them in parentheses.
    """
    return f"{format(median(values), spec)}{suffix} ({each(values, spec)})"


def _tmpfs(workdir, name):
    d = os.path.join(workdir, name)
    os.mkdir(d)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", d], check=True)
    return d


def storm(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users):
    d = _tmpfs(workdir, "storm")
    try:
        passwd = bench.write_users(d, users)
        got = {(label, proto): [] for label, _ in trees.trees for proto in ("udp", "tcp")}
        for r in range(rounds):
            for label, tree in trees.order(r):
                trees.use(tree)
                server = bench.Server(twistd, d, passwd, extra=["-c", "0"])
                try:
                    for proto in ("udp", "tcp"):
                        row = bench.paired(server, rpcbind_pid, "readlink", proto, 32, users,
                                           seconds, rounds=1, name=f"storm {label}")
                        got[label, proto].append(row)
                finally:
                    server.stop()
    finally:
        subprocess.run(["umount", "-l", d], check=False)
    lines = ["| transport | tree | ratio to rpcbind NULL, median (rounds) | calls/s, median"
             " | p50 us, median | p99 us, median (rounds) | server CPU us/call, median |",
             "|---|---|---|---|---|---|---|"]
    for proto in ("udp", "tcp"):
        for label, _ in trees.trees:
            rows = got[label, proto]
            lat = [row["hlfs"]["latency_us"] for row in rows]
            rate = median([row["hlfs"]["ops_per_s"] for row in rows])
            cpu = median([row["hlfs"].get("server_cpu_us_per_op") or 0 for row in rows])
            lines.append(
                f"| {proto} | {label} | {summary([row['ratio'] for row in rows], '.2f', 'x')}"
                f" | {rate:,.0f} | {median([x['p50'] for x in lat]):.0f}"
                f" | {summary([x['p99'] for x in lat])} | {cpu:.1f} |")
    return "Uncached storm (`-c 0`), homes on a tmpfs, window 32", "\n".join(lines)


def storm_cached(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users):
    d = _tmpfs(workdir, "storm-cached")
    try:
        passwd = bench.write_users(d, users)
        got = {(label, proto): [] for label, _ in trees.trees for proto in ("udp", "tcp")}
        for r in range(rounds):
            for label, tree in trees.order(r):
                trees.use(tree)
                rows, _ = homecheck.scenario_storm_cached(bench, twistd, d, passwd, users,
                                                          seconds, 1)
                for row in rows:
                    got[label, row["proto"]].append(row)
    finally:
        subprocess.run(["umount", "-l", d], check=False)
    lines = ["| transport | tree | side p99 us, median (rounds) | side max us, all rounds"
             " | storm calls/s, median | storm p99 us, median |", "|---|---|---|---|---|---|"]
    for proto in ("udp", "tcp"):
        for label, _ in trees.trees:
            rows = got[label, proto]
            p99 = [row["side"]["latency_us"]["p99"] for row in rows]
            worst = max(row["side_max_us"] for row in rows)
            rate = median([row["storm"]["ops_per_s"] for row in rows])
            storm_p99 = median([row["storm"]["latency_us"]["p99"] for row in rows])
            lines.append(f"| {proto} | {label} | {summary(p99)} | {worst:.0f} | {rate:,.0f}"
                         f" | {storm_p99:.0f} |")
    return ("Cached users during the uncached storm (homes on a tmpfs; 100 users at window 1)",
            "\n".join(lines))


def directory_first_access(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users,
                           cold=2000):
    import directory

    why = directory.dw.missing_parts()
    if why is not None:
        return "Directory users' first access", f"Skipped: {why}."
    world = directory.dw.DirectoryWorld(count=users, enumerate=False)
    got = {label: [] for label, _ in trees.trees}
    try:
        directory.make_spools(world)
        for r in range(rounds):
            for label, tree in trees.order(r):
                trees.use(tree)
                server = directory.DirectoryBenchServer(world)
                try:
                    got[label].append(directory.first_access(server, min(cold, users), label))
                finally:
                    server.stop()
    finally:
        world.close()
    lines = ["| tree | first accesses | p50 us, median (rounds) | p99 us, median (rounds)"
             " | max us, all rounds | errors |", "|---|---|---|---|---|---|"]
    for label, _ in trees.trees:
        lat = [res["latency_us"] for res in got[label]]
        errors = sum(res["errors"] for res in got[label])
        lines.append(
            f"| {label} | {min(cold, users)} | {summary([x['p50'] for x in lat])}"
            f" | {summary([x['p99'] for x in lat])} | {max(x['max'] for x in lat):.0f}"
            f" | {errors} |")
    return ("Directory users' first access (slapd, nslcd without enumeration; one LOOKUP per"
            " uid, UDP, window 1, a fresh server each round)", "\n".join(lines))


def readlink(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users):
    d = os.path.join(workdir, "readlink")
    os.makedirs(d)
    passwd = bench.write_users(d, users)
    cases = [(uids, proto) for uids in (1, users) for proto in ("udp", "tcp")]
    got = {(label, case): [] for label, _ in trees.trees for case in cases}
    for r in range(rounds):
        for label, tree in trees.order(r):
            trees.use(tree)
            server = bench.Server(twistd, d, passwd)
            try:
                bench.loadgen(server.port, "--call", "readlink", "--export", bench.EXPORT,
                              "--uids", f"{bench.FIRST_UID}-{bench.FIRST_UID + users - 1}",
                              "--window", 32, calls=users)
                for uids, proto in cases:
                    got[label, (uids, proto)].append(bench.paired(
                        server, rpcbind_pid, "readlink", proto, 32, uids, seconds, rounds=1,
                        name=f"readlink {label}"))
            finally:
                server.stop()
    lines = ["| uids | transport | tree | ratio to rpcbind NULL, median (rounds)"
             " | server CPU us/call, median |", "|---|---|---|---|---|"]
    for uids, proto in cases:
        for label, _ in trees.trees:
            rows = got[label, (uids, proto)]
            cpu = median([row["hlfs"].get("server_cpu_us_per_op") or 0 for row in rows])
            lines.append(f"| {uids} | {proto} | {label}"
                         f" | {summary([row['ratio'] for row in rows], '.2f', 'x')} | {cpu:.1f} |")
    return "Cached READLINK, window 32", "\n".join(lines)


def rotating(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users):
    d = os.path.join(workdir, "rotating")
    os.makedirs(d)
    passwd = bench.write_users(d, users)
    got = {label: [] for label, _ in trees.trees}
    for r in range(rounds):
        for label, tree in trees.order(r):
            trees.use(tree)
            server = bench.Server(twistd, d, passwd)
            try:
                rows, _ = homecheck.scenario_rotating(bench, server, seconds, users, pairs=1)
                got[label].append({(row["call"], row["proto"]): row["cpu_ratio"] for row in rows})
            finally:
                server.stop()
    lines = ["| call | transport | tree | CPU per call, rotating over one uid, median (rounds) |",
             "|---|---|---|---|"]
    for key in got[trees.trees[0][0]][0]:
        for label, _ in trees.trees:
            values = [run[key] for run in got[label] if run.get(key)]
            lines.append(f"| {key[0].upper()} | {key[1]} | {label}"
                         f" | {summary(values, '.2f', 'x')} |")
    return f"Rotating uids ({users}) against one uid, window 32", "\n".join(lines)


def tree_of(pid):
    """
    C{pid} and every process under it.
    """
    found = [pid]
    for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
        found += tree_of(int(child))
    return found


def memory_of(pid):
    """
    C{(rss, pss, uss, pss_anon, pss_file)} in bytes of process C{pid}.
    """
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[name] = int(value.split()[0]) * 1024
    return (fields["Rss"], fields["Pss"],
            fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
            fields["Pss_Anon"], fields["Pss_File"])


def memory(trees, twistd, workdir, rpcbind_pid, seconds, rounds, users):
    d = os.path.join(workdir, "memory")
    os.makedirs(d)
    passwd = bench.write_users(d, users)
    got = {label: [] for label, _ in trees.trees}
    for r in range(rounds):
        for label, tree in trees.order(r):
            trees.use(tree)
            server = bench.Server(twistd, d, passwd)
            try:
                bench.loadgen(server.port, "--call", "lookup", "--export", bench.EXPORT,
                              "--uids", f"{bench.FIRST_UID}-{bench.FIRST_UID + 99}",
                              "--window", 8, calls=100)
                time.sleep(2)  # idle: what a quiet daemon holds
                pids = tree_of(server.pid)
                per = [memory_of(pid) for pid in pids]
                got[label].append((len(pids), memory_of(server.pid),
                                   tuple(sum(x[i] for x in per) for i in range(5))))
            finally:
                server.stop()
    mb = 1 << 20
    lines = ["| tree | processes | daemon RSS / PSS / USS MB | all RSS MB, median (rounds)"
             " | all PSS MB, median (rounds) | all USS MB, median (rounds)"
             " | all PSS anonymous MB, median (rounds) | all PSS of files MB, median (rounds) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, _ in trees.trees:
        runs = got[label]
        total = [run[2] for run in runs]
        daemon = runs[len(runs) // 2][1]
        cols = [summary([t[i] / mb for t in total], ".1f") for i in range(5)]
        lines.append(f"| {label} | {runs[0][0]} | {daemon[0] / mb:.1f} / {daemon[1] / mb:.1f}"
                     f" / {daemon[2] / mb:.1f} | {' | '.join(cols)} |")
    return ("Memory at idle, every process under the daemon counted (after 100 homes"
            " checked)", "\n".join(lines))


RUNNERS = {"storm": storm, "storm-cached": storm_cached, "directory": directory_first_access,
           "readlink": readlink, "rotating": rotating, "memory": memory}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmarks/ab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the other tree (B), a checkout of hlfs")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: homes are checked as their users, on a tmpfs")
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    command = f"{python} benchmarks/ab.py " + " ".join(sys.argv[1:] if argv is None else argv)
    trees = Trees(args.against)
    load_before = os.getloadavg()
    bench.build_loadgen()
    rpcbind_pid, started = bench.ensure_rpcbind()
    twistd = bench.twistd_path()
    workdir = tempfile.mkdtemp(prefix="hlfs-ab-")
    os.chmod(workdir, 0o755)
    sections = []
    try:
        for name in args.scenario or SCENARIOS:
            print(f"{name}: {args.rounds} rounds, A and B in turn", flush=True)
            title, body = RUNNERS[name](trees, twistd, workdir, rpcbind_pid, args.seconds,
                                        args.rounds, args.users)
            print(f"{title}\n{body}", flush=True)
            sections.append((title, body))
    finally:
        os.environ.pop("PYTHONPATH", None)
        if started:
            os.kill(rpcbind_pid, 15)
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"\n## {now}: A/B\n\nCommand: `{command}`  \n"
            f"A: this tree, commit {commit(ROOT)}; B: `{args.against}`, commit"
            f" {commit(trees.trees[1][1])}.  {os.cpu_count()} CPUs; Linux {platform.release()};"
            f" Python {platform.python_version()}; 1-minute load average {load_before[0]:.1f}"
            f" before (5-minute {load_before[1]:.1f}), {load_after[0]:.1f} after.\n")
    if not args.no_write:
        with open(bench.RESULTS, "a") as f:
            f.write(head)
            for title, body in sections:
                f.write(f"\n### {title}\n\n{body}\n")
        print(f"appended to {bench.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
