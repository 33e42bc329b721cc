"""
Scenario 6: the real daemon on a real host.  Inside the guest (the host's
root shared read-only, an overlay on top), C{twistd hlfs --mount /mail}
with the default options (no C{--insecure}: the guest kernel's client
calls from privileged ports) plants the fixed link, mounts itself,
registers with a real rpcbind, serves Tables 1-3 and an alternation
through its own mount.  Killed, it leaves its mount behind: a restart with
another C{--port} is refused, one without serves on the mount's port with
no remount.  On SIGTERM it unmounts, unregisters and exits 0, leaving
C{/mail/home} the fixed link to the alternate spool.  Started with a mount
option that keeps the client's lookup cache on, it refuses to run.
"""


import pytest

import guestscript as gs
from hlfsserver import SUBDIR, venv_bin
from world import HLFS_GID, World

#: Sequential accesses through the daemon's own mount.  Python runs many
#: times slower under emulation, so fewer than against the host's daemon.
ALTERNATIONS = 1_000

#: Seconds the guest waits for the daemon's mount to appear.
MOUNT_WAIT = 240

NFS_PROGRAM = 100003

#: The line the daemon logs when the kernel kept the lookup cache on.
REFUSAL = (
    "the kernel did not keep lookupcache=none on /mail-cached: one user's link could be"
    " handed to another; unmounting (start with -C to run anyway)"
)


def callers(world):
    users = world.users
    return [
        ("alice", users["alice"].uid, users["alice"].gid, users["alice"].gid),
        ("bob", users["bob"].uid, users["bob"].gid, users["bob"].gid),
        ("root", 0, 0, 0),
        ("carol", users["carol"].uid, users["carol"].gid, users["carol"].gid),
        ("hlfsgid", users["alice"].uid, users["alice"].gid, HLFS_GID),
    ]


def scenario(world, probe):
    twistd = venv_bin("twistd")
    common = (
        f"--password-file {world.password_file} --alt-dir {world.alt_dir}"
        f" --subdir {SUBDIR} --group {HLFS_GID}"
    )
    lines = [gs.preamble(probe)]
    lines.append("mkdir -p /run/rpcbind; rpcbind; R rpcbind $?")
    # A mount option that keeps the lookup cache on: hlfs must refuse.
    lines.append("R refuse-start $(up)")
    lines.append(
        f"{twistd} -n --pidfile= --logfile=refuse.log hlfs --mount /mail-cached"
        f" -o lookupcache=all {common}; R refuse.status $?"
    )
    lines.append("R refuse.mounted $(grep -c ' /mail-cached ' /proc/mounts)")
    lines.append(f"R refuse.logged $(grep -c -F \"{REFUSAL}\" refuse.log)")
    lines.append("R refuse-end $(up)")
    # The daemon with its defaults.
    lines.append("rm -rf /var/spool/mail && ln -s /mail/home /var/spool/mail")
    lines.append("R daemon-start $(up)")
    lines.append(f"{twistd} -n --pidfile= --logfile=daemon.log hlfs {common} &")
    lines.append("pid=$!")
    lines.append(f"""
waited=0
while ! grep -q ' /mail nfs ' /proc/mounts; do
    kill -0 $pid 2>/dev/null || break
    [ $waited -lt {MOUNT_WAIT * 5} ] || break
    sleep 0.2
    waited=$((waited + 1))
done
""")
    lines.append("R daemon-mounted $(up)")
    lines.append("R mount-options $(grep ' /mail nfs ' /proc/mounts | cut -d' ' -f4)")
    for label, uid, gid, egid in callers(world):
        cred = f"{uid} {gid} {egid}"
        name = label if label != "hlfsgid" else "bob"
        lines.append(f'R link.{label} "$(as {cred} readlink /mail/home 2>&1)"')
        lines.append(f'R path.{label} "$(as {cred} readlink -f /var/spool/mail/{name} 2>&1)"')
    specs = " ".join(
        f"{uid}:{gid}:{egid}:{world.link_value(uid, egid)}" for _, uid, gid, egid in callers(world)
    )
    lines.append("R alt-start $(up)")
    lines.append(f'"$P" alternate readlink {ALTERNATIONS} /mail/home {specs} > /tmp/alt.txt')
    lines.append("R alt-end $(up)")
    lines.append("sed 's/^/R alt /' /tmp/alt.txt")
    lines.append(f"R registered $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' {NFS_PROGRAM} ')")
    # A crash leaves the mount behind: a restart with another --port is
    # refused, a restart without one serves on the mount's port, no remount.
    lines.append("kill -KILL $pid; wait $pid")
    lines.append("R stale.mounted $(grep -c ' /mail nfs ' /proc/mounts)")
    lines.append("port=$(grep ' /mail nfs ' /proc/mounts | sed 's/.*,port=\\([0-9]*\\).*/\\1/')")
    lines.append(
        f"timeout 300 {twistd} -n --pidfile= --logfile=other-port.log hlfs {common}"
        " --port $((port + 1));"
        " R other-port.status $?"
    )
    lines.append(
        'R other-port.logged $(grep -c -F "cannot start: /mail is still mounted from a previous'
        ' hlfs on port $port; unmount it or start without --port" other-port.log)'
    )
    lines.append("R restart-start $(up)")
    lines.append(f"{twistd} -n --pidfile= --logfile=restart.log hlfs {common} &")
    lines.append("pid=$!")
    lines.append(f"""
waited=0
while ! grep -q 'serving /mail' restart.log 2>/dev/null; do
    kill -0 $pid 2>/dev/null || break
    [ $waited -lt {MOUNT_WAIT * 5} ] || break
    sleep 0.2
    waited=$((waited + 1))
done
""")
    lines.append("R restart-serving $(up)")
    lines.append(
        'R restart.reused $(grep -c -F "an hlfs mount of /mail is still present (port $port):'
        ' serving on the same port with the same handles, no remount" restart.log)'
    )
    lines.append('R restart.port "$(grep -c -F "port $port (UDP and TCP)" restart.log)"')
    lines.append("R restart.mounts $(grep -c ' /mail nfs ' /proc/mounts)")
    for label, uid, gid, egid in callers(world):
        # Bounded: with nobody serving, the stale hard mount would hang.
        lines.append(
            f'R relink.{label} "$(timeout -s KILL 60 "$P" as {uid} {gid} {egid} readlink /mail/home 2>&1)"'
        )
    lines.append("R term-start $(up)")
    lines.append("kill -TERM $pid; wait $pid; R daemon.status $?")
    lines.append("R daemon-end $(up)")
    lines.append("R unmounted $(grep -c ' /mail nfs ' /proc/mounts)")
    lines.append(f"R registered-after $(rpcinfo -p 127.0.0.1 2>&1 | grep -c ' {NFS_PROGRAM} ')")
    lines.append('R fixed "$(readlink /mail/home)"')
    lines.append("tail -n 30 daemon.log; tail -n 10 refuse.log; tail -n 5 other-port.log; tail -n 30 restart.log")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def expected(world):
    want = {
        "rpcbind": "0",
        "refuse.mounted": "0",
        "daemon.status": "0",
        "unmounted": "0",
        "registered-after": "0",
        "fixed": str(world.alt_dir),
        "stale.mounted": "1",
        "other-port.status": "2",
        "other-port.logged": "1",
        "restart.reused": "1",
        "restart.port": "1",
        "restart.mounts": "1",
    }
    for label, uid, _, egid in callers(world):
        want[f"link.{label}"] = world.link_value(uid, egid)
        want[f"relink.{label}"] = world.link_value(uid, egid)
        if label == "hlfsgid":
            # Table 2: the per-user link to the mailbox.
            want[f"path.{label}"] = world.mailbox_link("bob")
        elif label == "root":
            # Root sees the real mailbox itself, a regular file: no link.
            want[f"path.{label}"] = "/mail/root"
        else:
            want[f"path.{label}"] = f"{world.link_value(uid)}/{label}"
    return want


@pytest.fixture(scope="module")
def daemon_run(guest, probe, kernel_workdir, precompiled):
    world = World(kernel_workdir / "daemon").create()
    # The homes writable in the guest, as on a real host: the daemon checks
    # that each spool directory is usable before linking to it.
    result = guest.run(
        kernel_workdir / "daemon-run", scenario(world, probe), shares=[world.base], net=False, timeout=900
    )
    assert result.status == 0, result.describe()
    return world, result


def test_daemon(daemon_run, measure):
    """
    The daemon mounts itself with its default options, serves every kind
    of caller its own link through its own mount, keeps the lookup cache
    off; killed, it leaves its mount, and a restart refuses another
    C{--port} with one line and exit 2, and without one serves on the
    mount's port with no remount; on SIGTERM it unmounts, unregisters and
    exits 0 with the fixed link back in place.
    """
    world, result = daemon_run
    got = gs.results(result.output)
    want = expected(world)
    assert {k: got.get(k) for k in want} == want, result.describe()
    options = got.get("mount-options", "").split(",")
    assert "lookupcache=none" in options and "rw" in options, got.get("mount-options")
    assert int(got.get("registered", "0")) >= 2, result.describe()
    counts = [gs.loop_counts(v) for k, v in _alternation_lines(result.output)]
    assert len(counts) == len(callers(world)), result.describe()
    assert sum(c["ok"] for c in counts) == ALTERNATIONS, result.describe()
    assert all(c["wrong"] == 0 and c["errors"] == 0 for c in counts), result.describe()
    measure(
        f"scenario 6 (daemon in the guest): mounted {float(got['daemon-mounted']) - float(got['daemon-start']):.1f}s"
        f" after start, options {got.get('mount-options')};"
        f" {ALTERNATIONS} alternating accesses in {float(got['alt-end']) - float(got['alt-start']):.1f}s, 0 wrong;"
        f" restart on the stale mount serving after"
        f" {float(got['restart-serving']) - float(got['restart-start']):.1f}s;"
        f" SIGTERM to exit {float(got['daemon-end']) - float(got['term-start']):.1f}s"
    )


def test_refuses_attribute_cache(daemon_run):
    """
    With a mount option that keeps the lookup cache on, and without C{-C},
    the daemon says why in one log line, exits 1 and leaves nothing
    mounted (a crash would exit otherwise, without the line).
    """
    world, result = daemon_run
    got = gs.results(result.output)
    assert got.get("refuse.status") == "1", result.describe()
    assert got.get("refuse.logged") == "1", result.describe()
    assert got.get("refuse.mounted") == "0", result.describe()


def _alternation_lines(output):
    for line in output.splitlines():
        if line.startswith("R alt "):
            yield "alt", line[len("R alt "):]
