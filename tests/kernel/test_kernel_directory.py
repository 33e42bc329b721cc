"""
Scenario 10: a directory user's mail through C{/var/spool/mail} on the
real Linux client, with the directory's enumeration off.

The host's C{twistd hlfs} runs in the private mount namespace of a
L{tests.support.directory.DirectoryWorld}: its users come from the name
service (C{files ldap}), nslcd answers from a real slapd and lists no
directory user (C{nss_disable_enumeration yes}), so the daemon's table
holds only the local users and a directory caller's uid is found by a
per-user C{getpwuid_r} through nslcd to slapd.  One guest, booted once,
runs every caller: processes running as a directory uid, as a local
user and as a uid the directory does not know read C{/mail/home} and
append a message through C{/var/spool/mail/NAME}; the host then finds
each message in that user's own spool (the alternate spool for the
unknown uid) and nowhere else.

The same boot does it twice: against a daemon whose name service is
nslcd, then (C{/var/spool/mail} relinked) against one whose name service
is sssd (C{enumerate = false}, its default), each with its own slapd and
homes; without sssd's packages only the first runs.
"""

import os

import pytest

import guestscript as gs
from tests.support.directory import (
    DIRECTORY_GID, DirectoryServer, DirectoryWorld, directory_name, directory_uid, missing_parts,
)
from world import OWNER_FILE, SUBDIR

pytestmark = pytest.mark.skipif(missing_parts() is not None, reason=str(missing_parts()))

#: The NSS daemons, and where each one's daemon is mounted in the guest.
MOUNTS = {"nslcd": "/mail", "sssd": "/mail-sssd"}
NSS = ["nslcd", pytest.param("sssd", marks=pytest.mark.skipif(
    missing_parts("sssd") is not None, reason=str(missing_parts("sssd"))))]

#: Directory users in slapd; the unknown caller's uid is past them.
COUNT = 20
UNKNOWN_UID = directory_uid(COUNT + 500)


def callers():
    """
    @return: C{(label, uid, gid, mailbox name)} for each caller: two
        directory users, a local (files) user, a uid unknown to the
        directory.
    """
    return [
        ("dir1", directory_uid(1), DIRECTORY_GID, directory_name(1)),
        ("dir2", directory_uid(COUNT), DIRECTORY_GID, directory_name(COUNT)),
        ("alice", 1001, 1001, "alice"),
        ("unknown", UNKNOWN_UID, DIRECTORY_GID, "unknown"),
    ]


def token(label, nss):
    return f"hlfs-kernel-directory-{nss}-{label}"


def make_spools(world):
    """
    A spool (with its C{.owner} file) in each caller's home, owned by
    the caller, as a site would have them.
    """
    for label, uid, gid, name in callers():
        if label == "unknown":
            continue
        spool = world.homes / name / SUBDIR
        spool.mkdir()
        (spool / OWNER_FILE).write_text(name + "\n")
        for path, mode in ((spool, 0o755), (spool / OWNER_FILE, 0o644)):
            os.chown(path, uid, gid)
            os.chmod(path, mode)
    (world.alt / OWNER_FILE).write_text("alt\n")


def scenario(probe, ports):
    """
    @param ports: the daemons' ports by NSS daemon.
    """
    lines = [gs.preamble(probe)]
    for nss, port in ports.items():
        lines.append(gs.mount("$P", MOUNTS[nss], port, 3, gs.daemon_cache_options()))
    for nss in ports:
        lines.append(f"rm -rf /var/spool/mail && ln -s {MOUNTS[nss]}/home /var/spool/mail")
        for label, uid, gid, name in callers():
            cred = f"{uid} {gid} {gid}"
            key = f"{nss}.{label}"
            lines.append(f'R link.{key} "$(as {cred} readlink {MOUNTS[nss]}/home 2>&1)"')
            lines.append(f'R owner.{key} "$(as {cred} cat /var/spool/mail/.owner 2>&1)"')
            lines.append(f"as {cred} sh -c 'echo {token(label, nss)} >> /var/spool/mail/{name}'")
            lines.append(f"R write.{key} $?")
            lines.append(f'R path.{key} "$(as {cred} readlink -f /var/spool/mail/{name} 2>&1)"')
    lines.append("grep ' nfs ' /proc/mounts")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


class Side:
    """
    One NSS daemon's world and daemon, and what was found after the run.
    """

    def __init__(self, nss):
        self.nss = nss
        self.world = DirectoryWorld(count=COUNT, enumerate=False, nss=nss)
        self.server = None
        self.log = ""

    def start(self):
        make_spools(self.world)
        self.listed = self.world.getent("passwd").stdout
        # A deadline well past a lookup's time on a loaded machine: the
        # scenario is about the path, the deadline has its own tests.
        self.server = DirectoryServer(self.world, ["--probe-deadline", "5"]).start()

    def collect(self):
        self.log = self.server.logtext()
        world = self.world
        self.spools = {}
        for label, _, _, name in callers():
            path = (world.alt if label == "unknown" else world.homes / name / SUBDIR) / name
            self.spools[label] = path.read_text() if path.exists() else None
        self.searched = {label: len(world.slapd.searches(f"(uidNumber={uid})"))
                         for label, uid, _, _ in callers()}

    def close(self):
        if self.server is not None:
            self.server.stop()
        self.world.close()


@pytest.fixture(scope="module")
def directory_run(guest, probe, kernel_workdir):
    """
    Boot one guest against host daemons that resolve their users through
    slapd and nslcd, and slapd and sssd, with enumeration off.

    @return: the guest's result and the L{Side}s by NSS daemon.
    """
    names = [n for n in MOUNTS if missing_parts(n) is None]
    sides = {}
    try:
        for nss in names:
            sides[nss] = Side(nss)
            sides[nss].start()
        ports = {nss: side.server.port for nss, side in sides.items()}
        result = guest.run(kernel_workdir / "directory-run", scenario(probe, ports),
                           shares=[side.world.base for side in sides.values()], timeout=400)
        for side in sides.values():
            side.collect()
        assert result.status == 0, result.describe() + "".join(s.log for s in sides.values())
        yield result, sides
    finally:
        for side in sides.values():
            side.close()


def link(world, label):
    name = dict((c[0], c[3]) for c in callers())[label]
    return str(world.alt) if label == "unknown" else f"{world.homes}/{name}/{SUBDIR}"


@pytest.mark.parametrize("nss", NSS)
def test_enumeration_is_off(directory_run, nss):
    """
    The world under test: the name service lists no directory user, so
    the daemon's table holds the five local users only and every
    directory caller is a per-user lookup.
    """
    side = directory_run[1][nss]
    assert [line.split(":")[0] for line in side.listed.splitlines()] == \
        ["root", "daemon", "alice", "bob", "nobody"]
    assert "loaded 5 users from" in side.log, side.log
    # The directory was asked for each directory caller's uid (and for the
    # unknown one); a local user's uid never reached it.
    searched = side.searched
    assert searched["dir1"] >= 1 and searched["dir2"] >= 1 and searched["unknown"] >= 1, searched
    assert searched["alice"] == 0, searched


@pytest.mark.parametrize("nss", NSS)
def test_directory_user_mail(directory_run, nss, measure):
    """
    Scenario 10: a process running as a directory uid in the guest reads
    its own spool through C{/mail/home}, and what it appends through
    C{/var/spool/mail/NAME} lands in that user's C{~/.mailspool} on the
    host, in no other mailbox; a local user alongside gets the same.
    """
    result, sides = directory_run
    side = sides[nss]
    got = gs.results(result.output)
    for label in ("dir1", "dir2", "alice"):
        name = dict((c[0], c[3]) for c in callers())[label]
        want = {
            f"link.{nss}.{label}": link(side.world, label),
            f"owner.{nss}.{label}": name,
            f"write.{nss}.{label}": "0",
            f"path.{nss}.{label}": f"{link(side.world, label)}/{name}",
        }
        assert {k: got.get(k) for k in want} == want, result.describe() + side.log
        assert side.spools[label] == token(label, nss) + "\n", side.spools
    others = [text or "" for label, text in side.spools.items() if label != "dir1"]
    assert not any(token("dir1", nss) in text for text in others), side.spools
    marks = result.uptime_marks()
    measure(
        f"scenario 10 (directory through {nss}, enumeration off): 2 directory users and a local"
        f" user wrote through /var/spool/mail into their own spools; guest at stage 2 after"
        f" {marks.get('stage2')}s, whole boot+scenario {result.elapsed:.1f}s"
    )


@pytest.mark.parametrize("nss", NSS)
def test_unknown_user_gets_alternate_spool(directory_run, nss):
    """
    Scenario 10: a uid the directory does not know reads the alternate
    spool through C{/mail/home}, and its message lands there.
    """
    result, sides = directory_run
    side = sides[nss]
    got = gs.results(result.output)
    want = {
        f"link.{nss}.unknown": str(side.world.alt),
        f"owner.{nss}.unknown": "alt",
        f"write.{nss}.unknown": "0",
        f"path.{nss}.unknown": f"{side.world.alt}/unknown",
    }
    assert {k: got.get(k) for k in want} == want, result.describe() + side.log
    assert side.spools["unknown"] == token("unknown", nss) + "\n"
