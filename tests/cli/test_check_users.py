"""
C{hlfs check}'s view of the users: how many the name service listed,
whether the list looks partial, and one user by name.
"""

import errno

from hlfs.homes import nss
from hlfs.core.users import Account
from hlfs.core.resolver import SpoolRules
from hlfs.cli.check import check_enumeration, check_user, passwd_sources


def accounts(*uids):
    return [Account(f"u{u}".encode(), u, u, f"/home/u{u}".encode()) for u in uids]


def test_passwd_sources():
    """
    If nsswitch.conf has a passwd line, then its sources are returned
    without their actions and comments; without one, files.
    """
    text = "# comment\ngroup: files\npasswd:  files [NOTFOUND=return] ldap # here\n"
    assert passwd_sources(text) == ["files", "ldap"]
    assert passwd_sources("hosts: files dns\n") == ["files"]


def test_counts_and_enumeration_off():
    """
    If a directory is configured but listed nobody, then the count says
    so and a warning tells to check users one by one.
    """
    warnings, notes = check_enumeration(accounts(0, 1, 1001), {0, 1, 1001}, ["files", "ldap"])
    assert notes == ["3 users seen through the name service (3 local, 0 from ldap)"]
    assert len(warnings) == 1
    assert "enumeration is off or the directory did not answer" in warnings[0]
    assert check_enumeration(accounts(0, 1), {0, 1}, ["files", "systemd"])[0] == []


def test_round_numbers_look_cut():
    """
    If the directory listed exactly a round number of users, then a size
    limit is suspected; other counts pass.
    """
    local = {0}
    warnings, notes = check_enumeration(accounts(0, *range(20000, 20500)), local, ["files", "sss"])
    assert notes == ["501 users seen through the name service (1 local, 500 from sss)"]
    assert "size limit" in warnings[0]
    assert "size limit" in check_enumeration(accounts(*range(20000, 20999)), local, ["ldap"])[0][0]
    assert check_enumeration(accounts(0, *range(20000, 20437)), local, ["files", "ldap"])[0] == []


def test_one_system_account():
    """
    A system account gets the alternate spool by the daemon's rules: said
    in a note, never warned about, whatever its home.
    """
    rules = SpoolRules(b".mailspool", b"/var/alt_mail", 1000)
    daemon = Account(b"daemon", 1, 1, b"/")
    assert check_user(b"daemon", lambda name: daemon, rules) == ([], [
        "user daemon: uid 1, home /",
        "user daemon is a system account (uid under --uid-min 1000): hlfs gives it the "
        "alternate spool",
    ])


def test_one_user():
    """
    If one user is asked for, then it is checked when found, and "no such
    user" and "could not ask" are told apart.
    """
    found = Account(b"luser", 20001, 20000, b"/")

    def lookup(name):
        if name == b"down":
            raise nss.NameServiceUnavailable(errno.ENOENT, "getpwnam_r: No such file or directory")
        return found if name == b"luser" else None

    rules = SpoolRules(b".mailspool", b"/var/alt_mail", 1000)
    warnings, notes = check_user(b"luser", lookup, rules)
    assert notes == ["user luser: uid 20001, home /"]
    assert "has home /" in warnings[0]
    assert check_user(b"gone", lookup, rules) == (["user gone: no such user"], [])
    # sssd offline says "not found" for any user it has not cached.
    [warning] = check_user(b"gone", lookup, rules, ["files", "sss"])[0]
    assert warning.startswith("user gone: no such user, or none in sssd's cache: while sssd ")
    assert check_user(b"down", lookup, rules)[0] == [
        "user down: the name service could not be asked (getpwnam_r: No such file or directory)"
    ]
