"""
The policy core without sockets: the paper's Tables 1-3, handles and
attributes, driven directly.
"""

import pytest
from twisted.internet.task import Clock

from hlfs.core import linkfs
from hlfs.core.linkfs import HomeLinkFS, LinkConfig, NFSError
from hlfs.core.handles import HandleCodec
from hlfs.homes.resolver import HomeResolver
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

PASSWD = b"""\
root:x:0:0:root:/root:/bin/bash
toor:x:0:0:alias:/:/bin/sh
ezk:x:1001:100::/users/ezk:/bin/sh
bob:x:1002:100::/users/bob/:/bin/sh
dup:x:1001:100::/elsewhere:/bin/sh
slash:x:1003:100::/:/bin/sh
"""
HLFS_GID = 77


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_700_000_000)
    return c


@pytest.fixture
def fs(clock):
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/var/alt_mail"),
        clock, None, verify=False,
    )
    return HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), resolver, 5_000)


def readlink_as(fs, uid, gid, name=b"home"):
    caller = fs.caller(1, uid, gid)
    fh, _ = fs.lookup(fs.root_handle, name, caller)
    return fs.readlink(fh, caller)[0]


def test_table1(fs):
    assert readlink_as(fs, 1001, 100) == b"/users/ezk/.mailspool"
    assert readlink_as(fs, 1002, 100) == b"/users/bob/.mailspool"


def test_table2(fs):
    assert readlink_as(fs, 1001, HLFS_GID) == b"."
    assert readlink_as(fs, 5, HLFS_GID, b"bob") == b"/users/bob/.mailspool/bob"
    assert readlink_as(fs, 5, HLFS_GID, b"slash") == b"/var/alt_mail/slash"
    with pytest.raises(NFSError) as e:
        readlink_as(fs, 5, HLFS_GID, b"nobody")
    assert e.value.status == linkfs.NOENT


def test_table3(fs):
    assert readlink_as(fs, 4242, 100) == b"/var/alt_mail"
    assert readlink_as(fs, 1003, 100) == b"/var/alt_mail"


def test_root_sees_every_mailbox(fs):
    """
    If root walks the spool, then it gets Table 2, whatever its gid: C{home}
    is C{.} and each user's name leads to that user's mailbox, never to
    root's own spool.  Root's own mail is at C{root}.
    """
    for gid in (0, 100, HLFS_GID):
        assert readlink_as(fs, 0, gid) == b"."
        assert readlink_as(fs, 0, gid, b"ezk") == b"/users/ezk/.mailspool/ezk"
        assert readlink_as(fs, 0, gid, b"root") == b"/root/.mailspool/root"
        assert readlink_as(fs, 0, gid, b"slash") == b"/var/alt_mail/slash"


def test_root_rule_without_group(clock):
    """
    If the HLFS_GID feature is off, then root still gets Table 2.
    """
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt"),
        clock, None, verify=False,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, 1)
    assert readlink_as(fs, 0, 0) == b"."
    assert readlink_as(fs, 0, 0, b"bob") == b"/users/bob/.mailspool/bob"


def test_duplicate_uid(fs):
    assert readlink_as(fs, 1001, 0) == b"/users/ezk/.mailspool"


def test_system_accounts(clock):
    """
    If an account's uid is under UID_MIN (root excepted), then its link and
    its mailbox link are the alternate spool's, whatever its home.
    """
    table = UserTable.from_passwd_bytes(PASSWD + b"postfix:x:105:110::/var/spool/postfix:/bin/false\n")
    resolver = HomeResolver(
        table, SpoolRules(b".mailspool", b"/alt", uid_min=1000), clock, None, verify=False,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), resolver, 1)
    assert readlink_as(fs, 105, 110) == b"/alt"
    assert readlink_as(fs, 0, 0, b"postfix") == b"/alt/postfix"
    assert readlink_as(fs, 1001, 100) == b"/users/ezk/.mailspool"
    assert readlink_as(fs, 0, 0, b"root") == b"/root/.mailspool/root"
    lowered = HomeResolver(
        table, SpoolRules(b".mailspool", b"/alt", uid_min=100), clock, None, verify=False,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), lowered, 1)
    assert readlink_as(fs, 105, 110) == b"/var/spool/postfix/.mailspool"


def test_group_feature_off(clock):
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt"),
        clock, None, verify=False,
    )
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), resolver, 1)
    assert readlink_as(fs, 1001, HLFS_GID) == b"/users/ezk/.mailspool"


def test_foreign_handles_stale(fs):
    ezk = fs.caller(1, 1001, 100)
    bob = fs.caller(1, 1002, 100)
    finger = fs.caller(1, 1001, HLFS_GID)
    fh, attr = fs.lookup(fs.root_handle, b"home", ezk)
    assert attr.uid == 1001 and attr.size == len(b"/users/ezk/.mailspool")
    for other in (bob, finger):
        with pytest.raises(NFSError) as e:
            fs.readlink(fh, other)
        assert e.value.status == linkfs.STALE
        with pytest.raises(NFSError):
            fs.getattr(fh, other)
    assert fs.lookup(fs.root_handle, b"home", bob)[0] != fh
    assert fs.lookup(fs.root_handle, b"home", finger)[0] != fh


def test_mailbox_handles_only_for_table2_callers(fs):
    """
    If a caller who does not see Table 2 (anonymous, an ordinary user,
    the mailbox's own user) presents a mailbox link's handle, then STALE,
    as for another caller's link; root and HLFS_GID callers may.
    """
    finger = fs.caller(1, 1001, HLFS_GID)
    fh, _ = fs.lookup(fs.root_handle, b"bob", finger)
    for outsider in (fs.caller(0, 0, 0), fs.caller(1, 1001, 100), fs.caller(1, 1002, 100)):
        for op in (fs.readlink, fs.getattr, fs.attr_for_update, lambda fh, c: fs.lookup(fh, b"x", c)):
            with pytest.raises(NFSError) as e:
                op(fh, outsider)
            assert e.value.status == linkfs.STALE
    for insider in (finger, fs.caller(1, 0, 0)):
        assert fs.readlink(fh, insider)[0] == b"/users/bob/.mailspool/bob"


def test_anonymous(fs):
    anon = fs.caller(0, 0, 0)
    fh, attr = fs.lookup(fs.root_handle, b"home", anon)
    with pytest.raises(NFSError) as e:
        fs.readlink(fh, anon)
    assert e.value.status == linkfs.PERM


def test_directory_semantics(fs):
    ezk = fs.caller(1, 1001, 100)
    fh, _ = fs.lookup(fs.root_handle, b"home", ezk)
    for op, args, status in [
        (fs.lookup, (fh, b"x", ezk), linkfs.NOTDIR),
        (fs.readdir, (fh, ezk), linkfs.NOTDIR),
        (fs.readlink, (fs.root_handle, ezk), linkfs.ISDIR),
        (fs.getattr, (b"\0" * 32, ezk), linkfs.STALE),
        (fs.lookup, (fs.root_handle, b"nosuch", ezk), linkfs.NOENT),
        (fs.lookup, (fs.root_handle, b"bob", ezk), linkfs.NOENT),
    ]:
        with pytest.raises(NFSError) as e:
            op(*args)
        assert e.value.status == status
    names = [e.name for e in fs.readdir(fs.root_handle, ezk)]
    assert names == [b".", b"..", b"home"]
    assert fs.getattr(fs.root_handle, ezk).mode == 0o555


def test_reload_moves_link_times_only_on_change(fs, clock):
    ezk = fs.caller(1, 1001, 100)
    before = fs.getattr(fs.lookup(fs.root_handle, b"home", ezk)[0], ezk)
    clock.advance(10)
    fs.resolver.set_table(UserTable.from_passwd_bytes(PASSWD))
    same = fs.getattr(fs.lookup(fs.root_handle, b"home", ezk)[0], ezk)
    assert same.ctime == before.ctime
    fs.resolver.set_table(UserTable.from_passwd_bytes(PASSWD.replace(b"/users/ezk", b"/u2/ezk")))
    after = fs.getattr(fs.lookup(fs.root_handle, b"home", ezk)[0], ezk)
    assert after.ctime > before.ctime and after.size == len(b"/u2/ezk/.mailspool")


def test_handles_stable_and_config_bound():
    a = HandleCodec(b"/mail", b"home")
    b = HandleCodec(b"/mail", b"home")
    c = HandleCodec(b"/other", b"home")
    assert a.root == b.root and a.link(5, 0) == b.link(5, 0)
    assert c.decode(a.root) is None and c.decode(a.link(5, 0)) is None
    assert a.decode(a.mailbox(b"bob")).name == b"bob"
    assert a.mailbox(b"x" * 256) is None
    # A name too long for the handle: a digest, known to the codec that
    # made it (a restarted server's handle is STALE, and looked up again).
    long = a.mailbox(b"x" * 40)
    assert a.decode(long).name == b"x" * 40 and b.decode(long) is None
    tampered = bytearray(a.link(5, 0))
    tampered[-1] = 1
    assert a.decode(bytes(tampered)) is None


def test_broken_password_files():
    """
    If a password file has malformed lines, then they are skipped with a
    reason and the rest loads.
    """
    table = UserTable.from_passwd_bytes(
        b"ok:x:1:1::/h:/s\nshort:x:2\nbaduid:x:abc:1::/h:/s\n:x:3:1::/h:/s\n"
        b"huge:x:99999999999:1::/h:/s\n#comment\n\n+nis\nok2:x:4:1::/h2:/s\n\xff\xfe:x:5:1::/h3:/s",
        "test",
    )
    assert [u.name for u in table] == [b"ok", b"ok2", b"\xff\xfe"]
    assert [p.lineno for p in table.problems] == [2, 3, 4, 5]
    assert "invalid uid" in str(table.problems[1])
