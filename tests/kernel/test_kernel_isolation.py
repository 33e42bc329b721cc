"""
Scenarios 2 and 3: no user ever sees another user's link, however the
accesses of different callers interleave.

One guest runs both, on two mounts: the issue's C{noac,lookupcache=none}
and C{lookupcache=none} alone (the daemon's candidate defaults).  The
accesses are made by long-lived processes (the probe program), because
starting one process per access serialises the callers and hides a leak.
"""

import pytest

import guestscript as gs
from hlfsserver import HlfsServer
from world import HLFS_GID, World

#: (mount point, cache options, sequential accesses of scenario 2,
#: accesses per process of scenario 3).  C{/mail} has the daemon's default
#: cache options; the other mount has C{noac,lookupcache=none}, the
#: options the issue asks about.
MOUNTS = (
    ("/mail", gs.daemon_cache_options(), 10_000, 1_500),
    ("/mnt/noac", gs.NO_CACHES, 1_000, 500),
)
ALTERNATIONS = {m: n for m, _, n, _ in MOUNTS}
CONCURRENT = {m: n for m, _, _, n in MOUNTS}


def credentials(world):
    users = world.users
    return {
        "alice": (users["alice"].uid, users["alice"].gid, users["alice"].gid),
        "bob": (users["bob"].uid, users["bob"].gid, users["bob"].gid),
        "root": (0, 0, 0),
        "carol": (users["carol"].uid, users["carol"].gid, users["carol"].gid),
        "hlfsgid": (users["alice"].uid, users["alice"].gid, HLFS_GID),
    }


def concurrent_loops(world, mountpoint):
    """
    @return: C{(label, caller, kind, path, expected)} for each process of
        scenario 3.
    """
    creds = credentials(world)

    def link(name):
        return world.link_value(creds[name][0], creds[name][2])

    def owner(name):
        return world.owner(creds[name][0], creds[name][2])

    home = f"{mountpoint}/home"
    return [
        ("alice-readlink", "alice", "readlink", home, link("alice")),
        ("bob-readlink", "bob", "readlink", home, link("bob")),
        ("root-readlink", "root", "readlink", home, link("root")),
        ("hlfsgid-readlink", "hlfsgid", "readlink", home, "."),
        ("hlfsgid-userlink", "hlfsgid", "readlink", f"{mountpoint}/bob", world.mailbox_link("bob")),
        ("alice-open", "alice", "open", f"{home}/.owner", owner("alice")),
        ("bob-open", "bob", "open", f"{home}/.owner", owner("bob")),
        ("carol-open", "carol", "open", f"{home}/.owner", owner("carol")),
    ]


def alternation_specs(world):
    creds = credentials(world)
    return [
        (name, *creds[name], world.link_value(creds[name][0], creds[name][2]))
        for name in ("alice", "bob", "root", "carol", "hlfsgid")
    ]


def scenario(world, probe, port):
    lines = [gs.preamble(probe)]
    for mountpoint, extra, _, _ in MOUNTS:
        lines.append(gs.mount("$P", mountpoint, port, 3, extra))
    for mountpoint, _, alternations, concurrent in MOUNTS:
        tag = mountpoint.strip("/").replace("/", "-")
        # Scenario 2: strict turns, alternating readlink(2) and opens.
        specs = " ".join(f"{uid}:{gid}:{egid}:{value}" for _, uid, gid, egid, value in alternation_specs(world))
        lines.append(gs.mountstats(f"{tag}-before", mountpoint))
        lines.append(f"R alt-start.{tag} $(up)")
        lines.append(f'"$P" alternate readlink {alternations} {mountpoint}/home {specs} > /tmp/alt-{tag}.txt')
        lines.append(f"R alt-end.{tag} $(up)")
        lines.append(gs.mountstats(f"{tag}-after", mountpoint))
        lines.append(f"sed 's/^/R alt.{tag} /' /tmp/alt-{tag}.txt")
        lines.append(f"R mountstats.{tag} \"$(grep -A40 ' on {mountpoint} ' /proc/self/mountstats | grep -E 'GETATTR|LOOKUP|READLINK|ACCESS' | tr -s ' \\t\\n' ' ')\"")
        # Scenario 3: every process in a tight loop, all released at once.
        creds = credentials(world)
        go = f"/tmp/go-{tag}"
        for label, caller, kind, path, expected in concurrent_loops(world, mountpoint):
            uid, gid, egid = creds[caller]
            lines.append(
                f'as {uid} {gid} {egid} "$P" loop {kind} {concurrent} {path} {expected} {go}'
                f" > /tmp/conc-{tag}-{label}.txt 2>&1 &"
            )
        lines.append("sleep 1")
        lines.append(f"R conc-start.{tag} $(up)")
        lines.append(f"touch {go}")
        lines.append("wait")
        lines.append(f"R conc-end.{tag} $(up)")
        for label, *_ in concurrent_loops(world, mountpoint):
            lines.append(f"R conc.{tag}.{label} $(cat /tmp/conc-{tag}-{label}.txt)")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


@pytest.fixture(scope="module")
def isolation_run(guest, probe, kernel_workdir):
    """
    Boot one guest for scenarios 2 and 3 against a host hlfs.
    """
    world = World(kernel_workdir / "isolation").create()
    server = HlfsServer(world, kernel_workdir / "isolation-server").start()
    try:
        result = guest.run(kernel_workdir / "isolation-run", scenario(world, probe, server.port), timeout=600)
    finally:
        server.stop()
    assert result.status == 0, result.describe() + server.log()
    return world, result


@pytest.mark.parametrize("mountpoint", [m for m, *_ in MOUNTS])
def test_alternation(isolation_run, mountpoint, measure):
    """
    Scenario 2: 10,000 accesses in strict turn by five callers (two users,
    root, a user with an unusable home, an HLFS_GID process): every one
    reads its own value, with no error.
    """
    world, result = isolation_run
    tag = mountpoint.strip("/").replace("/", "-")
    lines = [line[len(f"R alt.{tag} "):] for line in result.output.splitlines() if line.startswith(f"R alt.{tag} ")]
    counts = [gs.loop_counts(line) for line in lines]
    assert len(counts) == len(alternation_specs(world)), result.describe()
    total = ALTERNATIONS[mountpoint]
    assert sum(c["ok"] for c in counts) == total, result.describe()
    assert [(c["wrong"], c["errors"]) for c in counts] == [(0, 0)] * len(counts), result.describe()
    got = gs.results(result.output)
    seconds = float(got[f"alt-end.{tag}"]) - float(got[f"alt-start.{tag}"])
    ops = gs.op_delta(result.output, f"{tag}-before", f"{tag}-after")
    per_access = sum(ops.values()) / total
    measure(
        f"scenario 2 (alternation) on {mountpoint}: {total} accesses by {len(counts)} callers,"
        f" 0 wrong, 0 errors, {seconds:.1f}s; {per_access:.2f} RPCs per readlink"
        f" (mountstats: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items())) + ")"
    )


@pytest.mark.parametrize("mountpoint", [m for m, *_ in MOUNTS])
def test_concurrency(isolation_run, mountpoint, measure):
    """
    Scenario 3: eight processes of different credentials, each in a tight
    loop of readlink(2) or of opening a file through the link, all at once:
    every access lands on the caller's own target, with no error.
    """
    world, result = isolation_run
    tag = mountpoint.strip("/").replace("/", "-")
    got = gs.results(result.output)
    loops = concurrent_loops(world, mountpoint)
    counts = {label: gs.loop_counts(got.get(f"conc.{tag}.{label}", "")) for label, *_ in loops}
    summary = {label: (c.get("ok"), c.get("wrong"), c.get("errors")) for label, c in counts.items()}
    assert summary == {label: (CONCURRENT[mountpoint], 0, 0) for label, *_ in loops}, result.describe()
    seconds = float(got[f"conc-end.{tag}"]) - float(got[f"conc-start.{tag}"])
    measure(
        f"scenario 3 (concurrency) on {mountpoint}: {len(loops)} processes x {CONCURRENT[mountpoint]} accesses"
        f" = {len(loops) * CONCURRENT[mountpoint]}, 0 wrong, 0 errors, {seconds:.1f}s"
    )
