"""
The conformance matrix: every procedure a client can send to hlfs's
directory, for every kind of entry in it, as each caller of the paper's
Tables 1-3, asked of hlfs and of a real NFS server (nfs-ganesha,
L{tests.support.ganesha}) exporting a directory with the same entries.

Each caller's view of C{/mail} is a directory of its own on the real
server: mode 0555 and owned by root as hlfs's is, holding what that
caller sees (L{views}):

  - an ordinary user (alice): C{home -> ~alice/.mailspool};
  - a user whose home cannot take mail (slash, home C{/}):
    C{home -> /var/alt_mail};
  - an HLFS_GID caller (Table 2): C{home -> .} and a link per user to
    that user's mailbox, and C{alice.lock}, alice's 0600 dotlock, while
    it is held;
  - root from a privileged port: the same, but each user's name is that
    user's mailbox itself, a regular file of the user's, 0600 (root sees
    real mailboxes, L{hlfs.core.mailfiles}); alice's is emptied before
    each call, on both servers.

The real server exports them read-write, root not squashed: the writes
hlfs takes (root's dotlocks) must be possible there, and everything hlfs
refuses shows as what a writable server would do instead.

Nothing here knows what hlfs answers: L{Matrix.run} asks both servers the
same calls, from the same state, and records both answers.
"""

import itertools
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from tests.support import nfscalls
from tests.support.nfscalls import Target
from tests.support.rpcsock import Connection, cred
from tests.support.server import HLFS_GID

NAME = b"alice"
LOCK = NAME + b".lock"
ALICE_UID = 1001
#: In a view, a name that is a regular file of its user's, not a link.
MAILBOX_FILE = None


class Caller(NamedTuple):
    label: str
    credential: object
    view: str


CALLERS = (
    Caller("user", cred(ALICE_UID), "user"),
    Caller("no usable home", cred(1004), "nohome"),
    Caller("HLFS_GID", cred(1002, HLFS_GID), "table2"),
    Caller("root", cred(0), "root"),
)


class Entry(NamedTuple):
    """
    @ivar held: whether alice's dotlock exists while the call is made.
    """

    label: str
    name: bytes
    held: bool = False


#: A hidden name of the Linux client's silly rename (".nfs", 16 hex
#: digits of the file id, 8 of a counter) that nobody made.
UNUSED_HIDDEN = b".nfs" + b"f" * 24

ENTRIES = (
    Entry("the directory", b"."),
    Entry("..", b".."),
    Entry("home", b"home"),
    Entry("NAME", NAME),
    Entry("NAME.lock held", LOCK, held=True),
    Entry("NAME.lock free", LOCK),
    Entry("no such name", b"ghost"),
    Entry("no user's .lock", b"ghost.lock"),
    Entry(".nfs name", UNUSED_HIDDEN),
)

#: Calls that can change the directory or a file.
CHANGES = {
    "CREATE/U", "CREATE/G", "CREATE/E", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME",
    "LINK to", "LINK from", "SETATTR mode", "SETATTR size", "WRITE", "COMMIT",
}


def hidden_names():
    """
    Fresh hidden names, one per call that makes a name.
    """
    for n in itertools.count(1):
        yield b".nfs%024x" % n


def views(mirror):
    """
    What each view holds besides alice's dotlock: name -> link value.

    @param mirror: where the links point on the real server (a copy of the
        homes, so that a server following a link writes nothing of
        hlfs's).
    """
    spool = f"{mirror}/home/alice/.mailspool"
    return {
        "user": {"home": spool},
        "nohome": {"home": f"{mirror}/alt_mail"},
        "table2": {
            "home": ".",
            "alice": f"{spool}/alice",
            "bob": f"{mirror}/home/bob/.mailspool/bob",
        },
        "root": {"home": ".", "alice": MAILBOX_FILE, "bob": MAILBOX_FILE},
    }


#: The views that hold alice's dotlock while it is held.
LOCK_VIEWS = ("table2", "root")


def reset_mailbox(path, uid):
    """
    Make C{path} an empty regular file of C{uid}'s, 0600.
    """
    path = Path(path)
    if path.is_symlink() or path.is_dir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.write_bytes(b"")
    os.chown(path, uid, uid)
    os.chmod(path, 0o600)


def set_lock(path, held):
    """
    Make alice's dotlock at C{path} (hers, 0600, empty) or remove it.
    """
    path = Path(path)
    if held:
        if not path.exists():
            path.touch()
        os.chown(path, ALICE_UID, ALICE_UID)
        os.chmod(path, 0o600)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Reference:
    """
    The real server's side: one directory per view under C{base}.
    """

    def __init__(self, base):
        self.base = Path(base)
        self.mirror = self.base / "mirror"
        self.views = views(self.mirror)

    def export(self, view):
        return self.base / view

    def build(self):
        for directory, owner in (("home/alice/.mailspool", ALICE_UID), ("home/bob/.mailspool", 1002)):
            path = self.mirror / directory
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, owner, owner)
        for name, owner in (("alice", ALICE_UID), ("bob", 1002)):
            box = self.mirror / "home" / name / ".mailspool" / name
            box.touch()
            os.chown(box, owner, owner)
            os.chmod(box, 0o600)
        (self.mirror / "alt_mail").mkdir(exist_ok=True)
        os.chmod(self.mirror / "alt_mail", 0o1777)
        for view in self.views:
            self.export(view).mkdir(exist_ok=True)
            self.restore(view, held=False)
        return self

    def restore(self, view, held):
        """
        Put C{view}'s directory back as it should be, alice's dotlock held
        or not; leave alone what already is.
        """
        directory = self.export(view)
        os.chmod(directory, 0o555)
        want = self.views[view]
        for entry in os.scandir(directory):
            name = entry.name
            if name in want and want[name] is MAILBOX_FILE and entry.is_file(follow_symlinks=False):
                continue
            if name in want and entry.is_symlink() and os.readlink(entry.path) == want[name]:
                continue
            if name == LOCK.decode() and view in LOCK_VIEWS and held and entry.is_file(follow_symlinks=False):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        for name, value in want.items():
            if value is MAILBOX_FILE:
                reset_mailbox(directory / name, ALICE_UID if name == NAME.decode() else 1002)
            elif not os.path.lexists(directory / name):
                os.symlink(value, directory / name)
        if view in LOCK_VIEWS:
            set_lock(directory / LOCK.decode(), held)


class Side:
    """
    One server as the matrix calls it: its connections, and the root
    handle of each view's export.
    """

    def __init__(self, label, nfs_port, mount_port, exports, vers=3):
        self.label = label
        self.vers = vers
        self.nfs = Connection(nfs_port)
        self.mount = self.nfs if mount_port == nfs_port else Connection(mount_port)
        self.roots = {view: nfscalls.mount(self.mount, path, cred(0), vers) for view, path in exports.items()}

    def call(self, procedure, target, credential):
        reply = self.nfs.call(nfscalls.NFS, self.vers, procedure.number, procedure.args(target), credential)
        return nfscalls.answer(reply, procedure, self.vers)

    def target(self, caller, entry, procedures, fresh):
        """
        The L{Target} of C{entry} for C{caller}: its handle and the
        caller's C{home} handle, as LOOKUP gives them.
        """
        root = self.roots[caller.view]
        lookup = procedures[0]
        handles = {}
        for name in (entry.name, b"home"):
            _, handles[name] = self.call(lookup, Target(root, name, None, None, b""), caller.credential)
        return Target(root, entry.name, handles[entry.name], handles[b"home"], fresh)

    def close(self):
        self.nfs.close()
        if self.mount is not self.nfs:
            self.mount.close()


class Cell(NamedTuple):
    caller: str
    entry: str
    procedure: str
    hlfs: str
    reference: str


NO_HANDLE = "(no handle)"

_REMOVE = next(procedure for procedure in nfscalls.V3 if procedure.label == "REMOVE")


class Matrix:
    """
    Runs every cell on hlfs and on the reference, from the same state.

    @ivar hlfs_lock: the path of alice's real dotlock in hlfs's world.
    """

    def __init__(self, hlfs, reference, hlfs_lock, reference_dirs, hlfs_v2=None):
        self.hlfs = hlfs
        self.reference = reference
        self.hlfs_v2 = hlfs_v2
        self.hlfs_lock = hlfs_lock
        self.dirs = reference_dirs
        self.fresh = hidden_names()

    def _prepare(self, caller, entry):
        set_lock(self.hlfs_lock, entry.held)
        reset_mailbox(self.hlfs_lock.with_name(NAME.decode()), ALICE_UID)
        # Root's scratch files live in hlfs's memory: a name an earlier
        # call made is removed, as the reference's directory is restored.
        if caller.view == "root" and entry.name not in (b".", b"..", b"home", NAME, LOCK):
            self.hlfs.call(_REMOVE, Target(self.hlfs.roots["root"], entry.name, None, None, b""),
                           caller.credential)
        self.dirs.restore(caller.view, entry.held)

    def _ask(self, side, procedures, caller, entry, procedure):
        target = side.target(caller, entry, procedures, next(self.fresh))
        if procedure.on_handle and target.fh is None:
            return NO_HANDLE
        return side.call(procedure, target, caller.credential)[0]

    def run(self):
        """
        @return: the v3 L{Cell}s (hlfs against the reference), then the v2
            ones (hlfs's v2 against its own v3 answer to the same call).
        """
        cells = []
        v3 = {}
        for caller in CALLERS:
            for entry in ENTRIES:
                for procedure in nfscalls.V3:
                    self._prepare(caller, entry)
                    mine = self._ask(self.hlfs, nfscalls.V3, caller, entry, procedure)
                    self._prepare(caller, entry)
                    theirs = self._ask(self.reference, nfscalls.V3, caller, entry, procedure)
                    v3[caller.label, entry.label, procedure.label] = mine
                    cells.append(Cell(caller.label, entry.label, procedure.label, mine, theirs))
        self._prepare(CALLERS[0], ENTRIES[0])
        v2 = []
        if self.hlfs_v2 is not None:
            for caller in CALLERS:
                for entry in ENTRIES:
                    for procedure in nfscalls.V2:
                        self._prepare(caller, entry)
                        mine = self._ask(self.hlfs_v2, nfscalls.V2, caller, entry, procedure)
                        as_v3 = v2_status(v3[caller.label, entry.label, procedure.label])
                        v2.append(Cell(caller.label, entry.label, procedure.label, mine, as_v3))
            self._prepare(CALLERS[0], ENTRIES[0])
        return cells, v2


#: NFSv3 statuses NFSv2 does not have, and what hlfs's v2 says instead.
V3_ONLY = {"JUKEBOX": "IO", "NOTSUPP": "IO", "SERVERFAULT": "IO", "BADTYPE": "IO", "TOOSMALL": "IO",
           "BAD_COOKIE": "IO", "BADHANDLE": "IO", "NOT_SYNC": "IO"}


def v2_status(answer):
    """
    What an NFSv2 server answers where v3 answers C{answer}.
    """
    word, _, rest = answer.partition(" ")
    if word in V3_ONLY:
        return V3_ONLY[word]
    return answer
