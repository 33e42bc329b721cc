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
"""

import os

import pytest

import guestscript as gs
from tests.support.directory import (
    DIRECTORY_GID, DirectoryServer, DirectoryWorld, directory_name, directory_uid, missing_parts,
)
from world import OWNER_FILE, SUBDIR

pytestmark = pytest.mark.skipif(missing_parts() is not None, reason=str(missing_parts()))

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


def token(label):
    return f"hlfs-kernel-directory-{label}"


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


def scenario(probe, port):
    lines = [gs.preamble(probe), gs.mount("$P", "/mail", port, 3, gs.daemon_cache_options()), gs.spool_link()]
    for label, uid, gid, name in callers():
        cred = f"{uid} {gid} {gid}"
        lines.append(f'R link.{label} "$(as {cred} readlink /mail/home 2>&1)"')
        lines.append(f'R owner.{label} "$(as {cred} cat /var/spool/mail/.owner 2>&1)"')
        lines.append(f"as {cred} sh -c 'echo {token(label)} >> /var/spool/mail/{name}'")
        lines.append(f"R write.{label} $?")
        lines.append(f'R path.{label} "$(as {cred} readlink -f /var/spool/mail/{name} 2>&1)"')
    lines.append("grep ' nfs ' /proc/mounts")
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


@pytest.fixture(scope="module")
def directory_run(guest, probe, kernel_workdir):
    """
    Boot one guest against a host daemon that resolves its users through
    slapd and nslcd with enumeration off.
    """
    world = DirectoryWorld(count=COUNT, enumerate=False)
    try:
        make_spools(world)
        listed = world.getent("passwd").stdout
        # A deadline well past a lookup's time on a loaded machine: the
        # scenario is about the path, the deadline has its own tests.
        server = DirectoryServer(world, ["--probe-deadline", "5"]).start()
        try:
            result = guest.run(kernel_workdir / "directory-run", scenario(probe, server.port),
                               shares=[world.base], timeout=400)
            log = server.logtext()
        finally:
            server.stop()
        assert result.status == 0, result.describe() + log
        spools = {}
        for label, uid, _, name in callers():
            spool = world.alt if label == "unknown" else world.homes / name / SUBDIR
            spools[label] = (spool / name).read_text() if (spool / name).exists() else None
        searched = {label: len(world.slapd.searches(f"(uidNumber={uid})")) for label, uid, _, _ in callers()}
        yield world, result, listed, log, spools, searched
    finally:
        world.close()


def link(world, label):
    name = dict((c[0], c[3]) for c in callers())[label]
    return str(world.alt) if label == "unknown" else f"{world.homes}/{name}/{SUBDIR}"


def test_enumeration_is_off(directory_run):
    """
    The world under test: the name service lists no directory user, so
    the daemon's table holds the five local users only and every
    directory caller is a per-user lookup.
    """
    world, result, listed, log, _, searched = directory_run
    assert [line.split(":")[0] for line in listed.splitlines()] == ["root", "daemon", "alice", "bob", "nobody"]
    assert "loaded 5 users from" in log, log
    # The directory was asked for each directory caller's uid (and for the
    # unknown one); a local user's uid never reached it.
    assert searched["dir1"] >= 1 and searched["dir2"] >= 1 and searched["unknown"] >= 1, searched
    assert searched["alice"] == 0, searched


def test_directory_user_mail(directory_run, measure):
    """
    Scenario 10: a process running as a directory uid in the guest reads
    its own spool through C{/mail/home}, and what it appends through
    C{/var/spool/mail/NAME} lands in that user's C{~/.mailspool} on the
    host, in no other mailbox; a local user alongside gets the same.
    """
    world, result, _, log, spools, _ = directory_run
    got = gs.results(result.output)
    for label in ("dir1", "dir2", "alice"):
        name = dict((c[0], c[3]) for c in callers())[label]
        want = {
            f"link.{label}": link(world, label),
            f"owner.{label}": name,
            f"write.{label}": "0",
            f"path.{label}": f"{link(world, label)}/{name}",
        }
        assert {k: got.get(k) for k in want} == want, result.describe() + log
        assert spools[label] == token(label) + "\n", spools
    assert not any(token("dir1") in (text or "") for label, text in spools.items() if label != "dir1"), spools
    marks = result.uptime_marks()
    measure(
        f"scenario 10 (directory, enumeration off): 2 directory users and a local user wrote"
        f" through /var/spool/mail into their own spools; guest at stage 2 after"
        f" {marks.get('stage2')}s, whole boot+scenario {result.elapsed:.1f}s"
    )


def test_unknown_user_gets_alternate_spool(directory_run):
    """
    Scenario 10: a uid the directory does not know reads the alternate
    spool through C{/mail/home}, and its message lands there.
    """
    world, result, _, log, spools, _ = directory_run
    got = gs.results(result.output)
    want = {
        "link.unknown": str(world.alt),
        "owner.unknown": "alt",
        "write.unknown": "0",
        "path.unknown": f"{world.alt}/unknown",
    }
    assert {k: got.get(k) for k in want} == want, result.describe() + log
    assert spools["unknown"] == token("unknown") + "\n"
