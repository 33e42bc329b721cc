"""
Tests for C{hlfs check}, run as a real command against password and
group files, directories and mount tables made by the test (and one real
tmpfs mount).
"""

import os

import pytest

from hlfs.mail.accounts import Account
from hlfs.cli.check import check_accounts
from hlfs.core.resolver import SpoolRules
from tests.support.mail import make_dir, needs_root, run_hlfs
from tests.support.filesystems import tmpfs

from tests.support.proc_mounts import DEFAULT_NFS4_LINE, HLFS_LINE
from tests.support.server import HLFS_GID


@pytest.fixture
def system(world):
    """
    A healthy configuration: distinct homes, an hlfs group, mount point
    0755, alternate spool 1777, hlfs mounted with caches off.
    """
    root = world
    passwd = os.path.join(root, "passwd")
    with open(passwd, "w") as f:
        f.write(
            "root:x:0:0:root:/root:/bin/sh\n"
            "alice:x:60001:60001::/home/alice:/bin/sh\n"
            "bob:x:60002:60002::/home/bob:/bin/sh\n"
            "alias:x:60002:60002::/home/bob:/bin/sh\n"
        )
    group = os.path.join(root, "group")
    with open(group, "w") as f:
        f.write("root:x:0:\nhlfs:x:65400:\n")
    mount_point = make_dir(os.path.join(root, "mail"), 0o755)
    alt = make_dir(os.path.join(root, "alt_mail"), 0o1777)
    mounts = os.path.join(root, "mounts")
    with open(mounts, "w") as f:
        f.write("proc /proc proc rw 0 0\n" + HLFS_LINE.replace(" /mail ", f" {mount_point} ") + "\n")
    return {
        "root": root, "passwd": passwd, "group": group, "mount_point": mount_point,
        "alt": alt, "mounts": mounts,
    }


def check(s, *extra):
    return run_hlfs(
        "check", "--password-file", s["passwd"], "--group-file", s["group"],
        "--mount-point", s["mount_point"], "--alt-dir", s["alt"],
        "--proc-mounts", s["mounts"], *extra,
    )


def warnings_of(result):
    return [
        line for line in result.stdout.decode().splitlines() if ": warning: " in line
    ]


@needs_root
def test_healthy_system_passes(system):
    result = check(system)
    assert result.returncode == 0, result.stdout
    assert warnings_of(result) == []
    assert b"no problems found" in result.stdout
    assert b"mounted with the lookup and attribute caches off" in result.stdout


@needs_root
def test_shared_uid_with_different_homes(system):
    with open(system["passwd"], "a") as f:
        f.write("toor:x:60001:0::/root2:/bin/sh\n")
    result = check(system)
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "uid 60001 is shared by entries with different homes" in warning
    assert "alice (/home/alice)" in warning and "toor (/root2)" in warning


def test_account_checks_are_pure():
    warnings = check_accounts(
        [
            Account(b"a", 1001, 1, b"/"),
            Account(b"b", 1002, 2, b"home/b"),
            Account(b"c", 1003, 3, b""),
            Account(b"d", 1004, 4, b"/home/d"),
            Account(b"e", 1004, 4, b"/home/d"),
        ],
        SpoolRules(b".mailspool", b"/var/alt_mail", 1000),
    )
    assert len(warnings) == 3
    assert "user a (uid 1001) has home /" in warnings[0]
    assert "relative home 'home/b'" in warnings[1]
    assert "relative home ''" in warnings[2]


def test_account_checks_follow_the_daemons_rules():
    """
    System accounts get the alternate spool by design (their homes are
    never looked at): no warning, whatever their home or shared uid.  A
    root entry whose home is / gets the alternate spool as anybody does.
    """
    rules = SpoolRules(b".mailspool", b"/var/alt_mail", 1000)
    warnings = check_accounts(
        [
            Account(b"daemon", 1, 1, b"/usr/sbin"),
            Account(b"bin", 2, 2, b"/"),
            Account(b"sync", 4, 65534, b"bin"),
            Account(b"mail", 8, 8, b"/var/mail"),
            Account(b"alias8", 8, 8, b"/var/spool/other"),
            Account(b"toor", 0, 0, b"/"),
            Account(b"alice", 1000, 1000, b"/home/alice"),
        ],
        rules,
    )
    assert warnings == [
        "user toor (uid 0) has home /: hlfs gives it the alternate spool, so its mail never "
        "reaches a home"
    ]


@needs_root
def test_mail_owner_with_a_home_spool(system):
    """
    If a mail owner's uid is not under --uid-min, then its link would point
    into its home: one warning naming it; under the limit, none.
    """
    with open(system["passwd"], "a") as f:
        f.write("postfix:x:901:901::/var/spool/postfix:/usr/sbin/nologin\n"
                "Debian-exim:x:903:903::/var/spool/exim4:/usr/sbin/nologin\n")
    assert warnings_of(check(system)) == []
    result = check(system, "--uid-min", "902")
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "mail owner Debian-exim (uid 903" in warning and "opens mailboxes as root" in warning
    [bad] = warnings_of(check(system, "--uid-min", "x"))
    assert "--uid-min must be a uid" in bad


@needs_root
def test_bad_homes_and_malformed_lines(system):
    with open(system["passwd"], "a") as f:
        f.write("slash:x:60010:1::/:/bin/sh\nrel:x:60011:1::home/rel:/bin/sh\nbroken line\n")
    result = check(system)
    assert result.returncode == 1
    text = "\n".join(warnings_of(result))
    assert "user slash (uid 60010) has home /" in text
    assert "user rel (uid 60011) has a relative home 'home/rel'" in text
    assert "passwd:7: 1 fields, expected 7" in text


def test_names_and_homes_are_escaped():
    """
    A directory entry's name or home with control characters (a user may
    be able to set their own) is printed escaped.
    """
    [warning] = check_accounts([Account(b"e\x1b[2Jvil", 5005, 5, b"home/\x1b]0;x\x07\n")],
                               SpoolRules(b".mailspool", b"/var/alt_mail", 1000))
    assert warning == (
        "user e\\x1b[2Jvil (uid 5005) has a relative home 'home/\\x1b]0;x\\x07\\x0a': hlfs gives "
        "it the alternate spool, so its mail never reaches a home"
    )


@needs_root
def test_missing_hlfs_group(system):
    result = check(system, "--group", "mailreaders")
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "group 'mailreaders' does not exist" in warning


@needs_root
def test_wrong_modes(system):
    os.chmod(system["mount_point"], 0o700)
    os.chmod(system["alt"], 0o755)
    result = check(system)
    assert result.returncode == 1
    text = "\n".join(warnings_of(result))
    assert "has mode 0700: it must be world readable and searchable" in text
    assert "has mode 0755, expected 1777" in text


@needs_root
def test_missing_and_symlinked_directories(system):
    os.rmdir(system["mount_point"])
    real = system["alt"]
    os.rename(real, real + ".real")
    os.symlink(real + ".real", real)
    result = check(system)
    text = "\n".join(warnings_of(result))
    assert "No such file or directory" in text
    assert "is a symbolic link" in text


@needs_root
def test_mount_with_caches_on(system):
    with open(system["mounts"], "w") as f:
        f.write(DEFAULT_NFS4_LINE.replace(" /srv/export ", f" {system['mount_point']} ") + "\n")
    result = check(system)
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "client caches on; remount with lookupcache=none or users" in warning
    result = check(system, "--require-noac")
    [warning] = warnings_of(result)
    assert "client caches on; remount with noac,lookupcache=none or users" in warning


@needs_root
def test_attribute_cache_on_is_a_note_unless_required(system):
    """
    The daemon's own default mount (lookup cache off, attribute cache on)
    passes; with --require-noac it does not.
    """
    line = f"127.0.0.1:/mail {system['mount_point']} nfs rw,sync,relatime,vers=3,hard,nolock,lookupcache=none 0 0\n"
    with open(system["mounts"], "w") as f:
        f.write(line)
    result = check(system)
    assert result.returncode == 0, result.stdout
    assert b"attribute cache is on, which per-caller link handles make safe" in result.stdout
    result = check(system, "--require-noac")
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "remount with noac or users" in warning


def check_hlfs_mounted(system, options):
    """
    Run C{hlfs check} with hlfs mounted with C{options} in the mount table.
    """
    with open(system["mounts"], "w") as f:
        f.write(f"127.0.0.1:/mail {system['mount_point']} nfs {options} 0 0\n")
    return check(system)


@needs_root
@pytest.mark.parametrize("options, expected", [
    # As am-utils mounted hlfsd: root's delivery agents write the real
    # mailboxes they find there.
    ("ro,sync,relatime,vers=3,hard,nolock,lookupcache=none", ("mounted read-only", "remount it rw")),
    # Without sync (nor noac, which implies it), a full home fails a root
    # agent's write only at fsync or close.
    ("rw,relatime,vers=3,hard,nolock,lookupcache=none", ("mounted without sync", "remount it sync")),
])
def test_mount_root_cannot_write_well(system, options, expected):
    """
    hlfs mounted read-only, or asynchronously, is a warning.
    """
    result = check_hlfs_mounted(system, options)
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert all(text in warning for text in expected), warning


@needs_root
def test_noac_mount_writes_synchronously(system):
    assert check_hlfs_mounted(system, "rw,relatime,vers=3,hard,nolock,noac,lookupcache=none").returncode == 0


@needs_root
def test_not_mounted_is_only_a_note(system):
    with open(system["mounts"], "w") as f:
        f.write("proc /proc proc rw 0 0\n")
    result = check(system)
    assert result.returncode == 0
    assert b"nothing is mounted on" in result.stdout


@needs_root
def test_real_mount_table_with_something_else_mounted(system):
    """
    Against the kernel's own table: a tmpfs where hlfs should be is named.
    """
    with tmpfs(system["mount_point"], "64k"):
        os.chmod(system["mount_point"], 0o755)
        result = check(system, "--proc-mounts", "/proc/self/mounts")
    assert result.returncode == 1
    [warning] = warnings_of(result)
    assert "is a tmpfs mount, not hlfs" in warning


@needs_root
def test_unreadable_inputs_are_reported(system):
    result = run_hlfs(
        "check", "--password-file", "/nonexistent/passwd", "--group-file", "/nonexistent/group",
        "--mount-point", system["mount_point"], "--alt-dir", system["alt"],
        "--proc-mounts", "/nonexistent/mounts",
    )
    assert result.returncode == 1
    text = "\n".join(warnings_of(result))
    assert "cannot read /nonexistent/passwd" in text
    assert "cannot read /nonexistent/group" in text
    assert "cannot read /nonexistent/mounts" in text
    assert b"Traceback" not in result.stderr


def test_usage_error():
    result = run_hlfs("check", "--no-such-option")
    assert result.returncode == 64
    assert b"Traceback" not in result.stderr


AGREEMENT_USERS = [
    # system accounts (under --uid-min 1000)
    ("daemon", 1, "/usr/sbin"), ("bin", 2, "/"), ("sync", 4, "bin"),
    # login accounts
    ("alice", 1001, "{base}/home/alice"), ("slash", 1002, "/"), ("rel", 1003, "home/rel"),
    # root, whose home is /
    ("root", 0, "/"),
]


@pytest.mark.verify_optional
def test_check_agrees_with_the_daemon(make_server):
    """
    For every kind of account (system accounts, login accounts, root;
    homes of /, relative and usual), `hlfs check` warns
    about a user exactly when the real daemon, asked over NFS, gives that
    user the alternate spool although the user is not a system account
    (which gets it by design).
    """
    srv = make_server("--insecure", "--no-verify", "--uid-min", "1000", users=AGREEMENT_USERS)
    alt = str(srv.alt)
    result = run_hlfs("check", "--password-file", str(srv.passwd), "--uid-min", "1000",
                      "--alt-dir", alt, "--group", "root")
    text = result.stdout.decode()
    for name, uid, _ in AGREEMENT_USERS:
        if uid == 0:
            # Root's link by name: with gid HLFS_GID (from a privileged
            # port, gid 0 would find the real mailbox, a regular file).
            asked = ["--uid", "0", "--gid", str(HLFS_GID), "--name", name]
        else:
            asked = ["--uid", str(uid)]
        link = run_hlfs("resolve", "--server", f"127.0.0.1:{srv.port}", *asked)
        assert link.returncode == 0, link.stderr
        target = link.stdout.decode().strip()
        alternate = target in (alt, f"{alt}/{name}")
        warned = f"user {name} (uid {uid})" in text
        system = 0 < uid < 1000
        assert (alternate, warned) == (True if system else alternate, alternate and not system), (
            name, target, text)
    # Not one line about the system accounts.
    assert not any(f"user {name} " in text for name in ("daemon", "bin", "sync"))
