"""
Root's view of real mailboxes in the policy core (hlfs.core.mailfiles,
hlfs.core.scratch), without sockets or files: who sees a regular file
where Table 2 has a link, what each call asks of the mailbox files, the
bounds, and the scratch files that NFS-safe lockers link to a lock or a
mailbox.
"""

import errno

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from hlfs.core import handles, linkfs
from hlfs.core.linkfs import EXCLUSIVE, GUARDED, UNCHECKED, HomeLinkFS, LinkConfig
from hlfs.core.locks import LockFailed
from hlfs.core.mailfiles import FileChanges, FileStat, IMailboxFiles
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable
from hlfs.homes.resolver import HomeResolver
from tests.core.test_locks import HLFS_GID, PASSWD, FakeLocks, result, status_of

MAILBOX = b"/users/ezk/.mailspool/ezk"
LOCK = MAILBOX + b".lock"
LONG = b"averyveryverylongusername1"
AUTH_UNIX = 1


@implementer(IMailboxFiles)
class FakeFiles:
    """
    Mailboxes in a dict of path -> bytearray, all ezk's (uid 1001).
    """

    def __init__(self, later=False):
        self.files = {}
        self.calls = []
        self.later = later

    def _answer(self, value):
        return succeed(value) if self.later else value

    def _stat(self, path):
        data = self.files.get(path)
        return None if data is None else FileStat(0o600, 1, 1001, 100, len(data), 5, 6)

    def stat(self, name, path):
        self.calls.append(("stat", name, path))
        return self._answer(self._stat(path))

    def create(self, name, path, mode):
        self.calls.append(("create", name, path, mode))
        if path in self.files:
            raise LockFailed(errno.EEXIST)
        self.files[path] = bytearray()
        return self._answer(self._stat(path))

    def read(self, name, path, offset, count):
        self.calls.append(("read", name, path, offset, count))
        return self._answer((self._stat(path), bytes(self.files[path][offset:offset + count])))

    def write(self, name, path, offset, data):
        self.calls.append(("write", name, path, offset, len(data)))
        if path not in self.files:
            raise LockFailed(errno.ENOENT)
        box = self.files[path]
        box[offset:offset + len(data)] = data
        return self._answer(self._stat(path))

    def truncate(self, name, path, size):
        self.calls.append(("truncate", name, path, size))
        del self.files[path][size:]
        return self._answer(self._stat(path))

    def sync(self, name, path):
        self.calls.append(("sync", name, path))
        return self._answer(self._stat(path))


@pytest.fixture(params=[False, True], ids=["now", "later"])
def world(request):
    clock = Clock()
    clock.advance(1000)
    resolver = HomeResolver(
        UserTable.from_passwd_bytes(PASSWD), SpoolRules(b".mailspool", b"/alt", uid_min=1000),
        clock, None, verify=False,
    )
    locks, files = FakeLocks(later=request.param), FakeFiles(later=request.param)
    fs = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), resolver, 1, locks, files)
    callers = {
        "root": fs.caller(AUTH_UNIX, 0, 0, True),
        "root-unprivileged": fs.caller(AUTH_UNIX, 0, 0, False),
        "root-hlfs-gid": fs.caller(AUTH_UNIX, 0, HLFS_GID, True),
        "finger": fs.caller(AUTH_UNIX, 1001, HLFS_GID, True),
        "ezk": fs.caller(AUTH_UNIX, 1001, 100, True),
        "anonymous": fs.caller(0, 0, 0, True),
    }
    return fs, locks, files, callers, clock


def test_who_sees_real_mailboxes(world):
    """
    If root calls from a privileged port (its gid not HLFS_GID), then a
    user's name is that user's real mailbox, a regular file; from an
    unprivileged port, or with gid HLFS_GID, Table 2's link as before,
    as for an HLFS_GID caller; an ordinary user sees no user's names;
    nobody sees real mailboxes without a mailbox server (no files).
    """
    fs, _, files, callers, _ = world
    top = fs.root_handle
    files.files[MAILBOX] = bytearray(b"mail\n")
    fh, attr = result(fs.lookup(top, b"ezk", callers["root"]))
    assert (attr.type, attr.uid, attr.size, attr.mode) == (linkfs.REG, 1001, 5, 0o600)
    for who in ("root-unprivileged", "root-hlfs-gid", "finger"):
        link_fh, attr = result(fs.lookup(top, b"ezk", callers[who]))
        assert attr.type == linkfs.LNK and link_fh != fh, who
    assert status_of(lambda: fs.lookup(top, b"ezk", callers["ezk"])) == linkfs.NOENT
    for who in ("root-unprivileged", "root-hlfs-gid", "finger", "ezk", "anonymous"):
        assert status_of(lambda: fs.getattr(fh, callers[who])) == linkfs.STALE, who
        assert status_of(lambda: fs.read(fh, callers[who], True, 0, 10)) == linkfs.STALE, who
    plain = HomeLinkFS(LinkConfig(b"/mail", b"home", HLFS_GID), fs.resolver, 1, FakeLocks())
    assert result(plain.lookup(top, b"ezk", plain.caller(AUTH_UNIX, 0, 0, True)))[1].type == linkfs.LNK
    # home is "." and the listing names no user, for root as for Table 2.
    assert fs.readlink(fs.lookup(top, b"home", callers["root"])[0], callers["root"])[0] == b"."
    assert [e.name for e in fs.readdir(top, callers["root"])] == [b".", b"..", b"home"]


def test_root_calls_reach_the_mailbox(world):
    """
    Each call on a mailbox file is asked of the mailbox server on NAME's
    real mailbox path, as NAME; creates answer as a real server's
    (EXIST, NOTSUPP for EXCLUSIVE of a missing one, UNCHECKED opens);
    SETATTR changes the size, and an owner or mode only to what it is.
    """
    fs, _, files, callers, _ = world
    top = fs.root_handle
    root = callers["root"]
    assert status_of(lambda: fs.lookup(top, b"ezk", root)) == linkfs.NOENT
    assert status_of(lambda: fs.create(top, b"ezk", root, True, 0o600, EXCLUSIVE)) == linkfs.NOTSUPP
    fh, attr = result(fs.create(top, b"ezk", root, True, 0o600, GUARDED))
    assert ("create", b"ezk", MAILBOX, 0o600) in files.calls
    assert status_of(lambda: fs.create(top, b"ezk", root, True, 0o600, GUARDED)) == linkfs.EXIST
    assert status_of(lambda: fs.create(top, b"ezk", root, True, 0o600, EXCLUSIVE)) == linkfs.EXIST
    assert result(fs.create(top, b"ezk", root, True, 0o644, UNCHECKED))[0] == fh
    assert result(fs.write(fh, root, True, 0, 6, b"hello\n")).size == 6
    assert result(fs.read(fh, root, True, 0, 100)) == (fs.getattr(fh, root) if not files.later
                                                       else result(fs.getattr(fh, root)), b"hello\n", True)
    assert result(fs.commit(fh, root, True)).size == 6
    assert result(fs.setattr(fh, root, True, FileChanges(uid=1001, mode=0o600, size=3))).size == 3
    assert files.files[MAILBOX] == b"hel"
    assert status_of(lambda: fs.setattr(fh, root, True, FileChanges(uid=0))) == linkfs.PERM
    assert status_of(lambda: fs.setattr(fh, root, True, FileChanges(mode=0o644))) == linkfs.PERM
    assert fs.access(fh, root, True, 0x3F)[1] == 0x0D
    assert status_of(lambda: fs.readlink(fh, root)) == linkfs.INVAL
    assert status_of(lambda: fs.remove(top, b"ezk", root, True)) == linkfs.ROFS


def test_bounds(world):
    """
    A WRITE of more than a transfer, of another count than its data, or
    reaching past the largest mailbox, and a SETATTR to a huge size, are
    refused in the core: the mailbox server is never asked.
    """
    fs, _, files, callers, _ = world
    root = callers["root"]
    files.files[MAILBOX] = bytearray()
    fh, _ = result(fs.lookup(fs.root_handle, b"ezk", root))
    del files.calls[:]
    assert status_of(lambda: fs.write(fh, root, True, 0, 9000, b"x" * 9000)) == linkfs.INVAL
    assert status_of(lambda: fs.write(fh, root, True, 0, 5, b"x")) == linkfs.INVAL
    assert status_of(lambda: fs.write(fh, root, True, 1 << 41, 1, b"x")) == 27
    assert status_of(lambda: fs.setattr(fh, root, True, FileChanges(size=1 << 41))) == 27
    assert status_of(lambda: fs.read(fh, root, True, 1 << 41, 10)) == linkfs.INVAL
    assert [c[0] for c in files.calls if c[0] not in ("stat",)] == []
    result(fs.read(fh, root, True, 0, 1 << 20))
    assert files.calls[-1][-1] == 8192  # a READ takes at most a transfer


def test_long_names(world):
    """
    A user whose name does not fit in a handle has a mailbox file all
    the same, through a handle holding the name's digest.
    """
    fs, _, files, callers, _ = world
    root = callers["root"]
    fh, attr = result(fs.create(fs.root_handle, LONG, root, True, 0o600))
    assert LONG not in fh and fs.handles.decode(fh) == handles.Handle(handles.FILE, name=LONG)
    assert b"/users/long/.mailspool/" + LONG in files.files


def test_liblockfile_and_procmail_link_a_scratch_file(world):
    """
    If root makes a unique file in the spool and links it to NAME.lock
    (liblockfile, procmail), then the unique file is a scratch file of
    hlfs's memory, the link makes NAME's real lock as NAME with its mode,
    and LOOKUP of NAME.lock gives the scratch file's handle (one inode,
    two links) while the lock is there; removing the unique name leaves
    the lock, removing NAME.lock removes the real lock.  Linking another
    one while the lock is there is EXIST.  procmail's unique file linked
    to a mailbox that is not there makes the mailbox, which stays the
    real one.
    """
    fs, locks, files, callers, _ = world
    top = fs.root_handle
    root = callers["root"]
    tmp = b".lk01234abcguest"
    assert status_of(lambda: fs.create(top, tmp, root, True, 0o644, EXCLUSIVE)) == linkfs.NOTSUPP
    tmp_fh, attr = result(fs.create(top, tmp, root, True, 0o644, GUARDED))
    assert (attr.type, attr.nlink, attr.size) == (linkfs.REG, 1, 0)
    assert fs.write(tmp_fh, root, True, 0, 5, b"1234\n").size == 5
    assert status_of(lambda: fs.create(top, tmp, root, True, 0o644, GUARDED)) == linkfs.EXIST
    assert result(fs.link(tmp_fh, top, b"ezk.lock", root, True)).nlink == 2
    assert locks.files[LOCK].mode == 0o644
    lock_fh, lock_attr = result(fs.lookup(top, b"ezk.lock", root))
    assert lock_fh == tmp_fh and lock_attr.fileid == result(fs.lookup(top, tmp, root))[1].fileid
    assert fs.remove(top, tmp, root, True) == ()
    assert LOCK in locks.files and fs.getattr(tmp_fh, root).nlink == 1
    other, _ = result(fs.create(top, b"_AbC.guest", root, True, 0o444, GUARDED))
    assert status_of(lambda: fs.link(other, top, b"ezk.lock", root, True)) == linkfs.EXIST
    assert result(fs.remove(top, b"ezk.lock", root, True)) == ()
    assert LOCK not in locks.files
    assert status_of(lambda: fs.getattr(tmp_fh, root)) == linkfs.STALE
    assert result(fs.link(other, top, b"ezk", root, True)).type == linkfs.REG
    assert MAILBOX in files.files
    # The mailbox is the real one, never the scratch file.
    mailbox_fh, attr = result(fs.lookup(top, b"ezk", root))
    assert mailbox_fh != other and fs.handles.decode(mailbox_fh).kind == handles.FILE
    assert status_of(lambda: fs.link(other, top, b"ghost", root, True)) == linkfs.ROFS
    assert fs.remove(top, b"_AbC.guest", root, True) == ()
    for who in ("finger", "ezk"):
        assert status_of(lambda: fs.getattr(other, callers[who])) == linkfs.STALE


def test_scratch_files_are_bounded(world):
    """
    At most 256 scratch files, each of at most 512 bytes; one made more
    than ten minutes ago makes room for a new one.
    """
    fs, _, _, callers, clock = world
    top = fs.root_handle
    root = callers["root"]
    made = [result(fs.create(top, b"_tmp%d" % i, root, True, 0o600, GUARDED))[0] for i in range(256)]
    assert status_of(lambda: fs.create(top, b"_one-more", root, True, 0o600, GUARDED)) == 28
    assert status_of(lambda: fs.write(made[0], root, True, 510, 3, b"xyz")) == 28
    clock.advance(601)
    assert result(fs.create(top, b"_one-more", root, True, 0o600, GUARDED))[1].type == linkfs.REG
    assert status_of(lambda: fs.getattr(made[0], root)) == linkfs.STALE
