"""
Scenario 1: the paper's Tables 1-3 by real path resolution in a Linux
guest, through the kernel NFS client, for NFSv3 and NFSv2 over TCP and for
the cache options in question.
"""

import pytest

import guestscript as gs
from hlfsserver import HlfsServer
from world import HLFS_GID

#: (mount point, NFS version, cache options); the first is the one
#: /var/spool/mail leads to.
MOUNTS = (
    ("/mail", 3, gs.NO_CACHES),
    ("/mnt/v3-default", 3, gs.daemon_cache_options()),
    ("/mnt/v2", 2, gs.NO_CACHES),
)


def callers(world):
    """
    @return: C{(label, uid, gid, egid)} for each kind of caller: users with
        usable homes, root, a user whose home is unusable, a uid in no
        password entry, and a setgid process whose effective gid is
        HLFS_GID.
    """
    users = world.users
    return [
        ("alice", users["alice"].uid, users["alice"].gid, users["alice"].gid),
        ("bob", users["bob"].uid, users["bob"].gid, users["bob"].gid),
        ("root", 0, 0, 0),
        ("carol", users["carol"].uid, users["carol"].gid, users["carol"].gid),
        ("stranger", world.stranger_uid, world.stranger_uid, world.stranger_uid),
        ("hlfsgid", users["alice"].uid, users["alice"].gid, HLFS_GID),
    ]


def scenario(world, probe, port):
    lines = [gs.preamble(probe)]
    for mountpoint, vers, extra in MOUNTS:
        lines.append(gs.mount("$P", mountpoint, port, vers, extra))
    lines.append(gs.spool_link())
    # Root lists the directories first (READDIRPLUS on v3, with the link's
    # handle made for root): later lookups by others must not inherit it.
    for mountpoint, _, _ in MOUNTS:
        lines.append(f"ls -la {mountpoint} > /dev/null")
    for label, uid, gid, egid in callers(world):
        cred = f"{uid} {gid} {egid}"
        for mountpoint, _, _ in MOUNTS:
            key = f"{mountpoint}.{label}"
            lines.append(f'R link{key} "$(as {cred} readlink {mountpoint}/home 2>&1)"')
            lines.append(f'R owner{key} "$(as {cred} stat -c %u {mountpoint}/home 2>&1)"')
        name = label if label != "hlfsgid" else "bob"
        lines.append(f'R path.{label} "$(as {cred} readlink -f /var/spool/mail/{name} 2>&1)"')
        lines.append(f'R spool.{label} "$(as {cred} cat /var/spool/mail/.owner 2>&1)"')
        lines.append(f'R userlink.{label} "$(as {cred} readlink /mail/alice >/dev/null 2>&1 && echo yes || echo no)"')
    hlfsgid = f"{world.users['alice'].uid} {world.users['alice'].gid} {HLFS_GID}"
    for mountpoint, _, _ in MOUNTS:
        lines.append(f'R mailbox{mountpoint} "$(as {hlfsgid} readlink {mountpoint}/alice 2>&1)"')
        lines.append(f'R listing{mountpoint} "$(ls -a {mountpoint} | tr "\\n" " ")"')
    lines.append(f"R unknown \"$(as {hlfsgid} readlink /mail/nobody-such >/dev/null 2>&1 && echo found || echo absent)\"")
    for mountpoint, _, _ in MOUNTS:
        lines.append(f"R vers{mountpoint} $(grep ' {mountpoint} nfs ' /proc/mounts | grep -o ',vers=[0-9]*' | tr -d ,)")
    lines.append("grep ' nfs ' /proc/mounts")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def expected(world):
    want = {}
    for label, uid, _, egid in callers(world):
        for mountpoint, _, _ in MOUNTS:
            want[f"link{mountpoint}.{label}"] = world.link_value(uid, egid)
            want[f"owner{mountpoint}.{label}"] = str(uid)
        if label == "hlfsgid":
            # Table 2: home -> ".", then the per-user link to bob's mailbox.
            want[f"path.{label}"] = world.mailbox_link("bob")
            want[f"spool.{label}"] = "cat: /var/spool/mail/.owner: No such file or directory"
            want[f"userlink.{label}"] = "yes"
        elif label == "root":
            # home -> ".", and each name the real mailbox, not a link.
            want[f"path.{label}"] = "/mail/root"
            want[f"spool.{label}"] = "cat: /var/spool/mail/.owner: No such file or directory"
            want[f"userlink.{label}"] = "no"
        else:
            want[f"path.{label}"] = f"{world.link_value(uid)}/{label}"
            want[f"spool.{label}"] = world.owner(uid)
            want[f"userlink.{label}"] = "no"
    for mountpoint, _, _ in MOUNTS:
        want[f"mailbox{mountpoint}"] = world.mailbox_link("alice")
        want[f"listing{mountpoint}"] = ". .. home "
    for mountpoint, vers, _ in MOUNTS:
        want[f"vers{mountpoint}"] = f"vers={vers}"
    want["unknown"] = "absent"
    return want


@pytest.fixture
def server(world, kernel_workdir, request):
    server = HlfsServer(world, kernel_workdir / f"{request.node.name}-server").start()
    yield server
    server.stop()


def test_tables(guest, probe, world, server, run_dir, measure):
    """
    Every kind of caller resolves C{/var/spool/mail/NAME} and reads C{home}
    exactly as Tables 1-3 say (root, like an HLFS_GID caller, gets Table 2's
    C{home -> .}, and in each name the real mailbox rather than a link),
    on NFSv3 with C{noac,lookupcache=none} and
    with the daemon's default cache options, and on NFSv2; C{home}'s owner
    is the caller; the directory lists only the link.
    """
    result = guest.run(run_dir, scenario(world, probe, server.port), net=True, timeout=240)
    assert result.status == 0, result.describe() + server.log()
    got = gs.results(result.output)
    want = expected(world)
    assert {k: got.get(k) for k in want} == want, result.describe()
    marks = result.uptime_marks()
    measure(
        f"scenario 1 (tables): guest at stage 2 after {marks.get('stage2')}s uptime,"
        f" scenario start {marks.get('scenario')}s, first mount done at {got.get('mounted./mail')}s,"
        f" whole boot+scenario {result.elapsed:.1f}s; {len(want)} exact checks"
    )
