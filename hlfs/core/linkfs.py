"""
HomeLinkFS: the policy core, the paper's "Home-Link File Service".

A read-only directory holding C{.}, C{..} and one symbolic link (C{home})
whose value depends on the caller:

  - root, and a caller whose gid is HLFS_GID, get C{.}, and may look up
    any user's name to get a link to that user's mailbox (Table 2);
  - any other caller gets its home's spool directory, or the alternate
    spool when the home is unknown or unusable (Tables 1 and 3);
  - C{NAME.lock}, for the callers of Table 2, is the dotlock next to
    NAME's mailbox, which root may make and remove (L{hlfs.core.locks});
  - root from a privileged port (its gid not HLFS_GID) finds in C{NAME}
    not a link but NAME's real mailbox, a regular file that hlfs reads
    and writes as NAME (L{hlfs.core.mailfiles}).

What it answers to changes of the directory is L{hlfs.core.changes}, to
the calls on a node's contents L{hlfs.core.contents}.

Every method takes a L{Caller} and a handle and returns an answer, a
Deferred that fires with one, or raises L{NFSError}.  Nothing here knows
about XDR or sockets.
"""

from hlfs.core import handles, locks
from hlfs.core.changes import DirectoryChanges
from hlfs.core.contents import NodeContents
from hlfs.core.hidden import HiddenNames
from hlfs.core.lockfs import LockFiles
from hlfs.core.handles import ANONYMOUS, HLFS_CALLER, ROOT_FILES, HandleCodec
from hlfs.core.mailfiles import MailboxFiles
from hlfs.core.resolver import ChangeClock
from hlfs.core.scratch import ScratchFiles, ScratchNodes
from hlfs.core.resolver import Resolution

from hlfs.core.nodes import (  # noqa: F401  (the core's names, as they always were)
    PERM, NOENT, IO, ACCES, EXIST, NOTDIR, ISDIR, INVAL, ROFS, NAMETOOLONG, NOTEMPTY, STALE, NOTSUPP,
    REG, DIR, LNK, UNCHECKED, GUARDED, EXCLUSIVE, ROOT_FILEID, MAX_NAME, AUTH_NONE, AUTH_UNIX,
    NFSError, Caller, Attr, Entry, LinkConfig,
)
from hlfs.core.nodes import then as _then, then_found as _then_found

_FOREVER = float("inf")
_DOT = Resolution(b".", 0)
_NOTHING = Resolution(b"", 0)


class HomeLinkFS(LockFiles, MailboxFiles, ScratchNodes, DirectoryChanges, NodeContents):
    """
    The Home-Link filesystem for one configuration.

    @ivar resolver: an L{hlfs.core.resolver.ILinkResolver}.
    @ivar start: the server's start time (ns): the directory's times.
    @ivar locks: the L{locks.ISpoolLocks} that makes lock files, or
        L{None}: then there are none.
    @ivar files: the L{hlfs.core.mailfiles.IMailboxFiles} that serves
        root's mailbox files, or L{None}: then root sees Table 2's links.
    """

    def __init__(self, config, resolver, start, locks=None, files=None):
        self.config = config
        self.resolver = resolver
        self.start = start
        self.locks = locks
        self.files = files
        self._locks_seen = {}
        self._files_seen = {}
        if files is not None:
            self.scratch = ScratchFiles(resolver.clock, ChangeClock(resolver.clock).now)
        self.hidden = HiddenNames()
        self.handles = HandleCodec(config.export_path, config.linkname)
        self.root_handle = self.handles.root
        self.root_attr = Attr(DIR, 0o555, 2, 0, 0, 512, ROOT_FILEID, start, start)

    # -- callers and handles

    def caller(self, flavor, uid, gid, privileged=False):
        """
        Return the L{Caller} for an RPC credential, from a privileged port
        or not.  Anything but AUTH_UNIX is anonymous: it may look, but the
        link does not resolve for it.
        """
        if flavor != AUTH_UNIX:
            return Caller(0xFFFFFFFE, ANONYMOUS)
        hlfs_gid = self.config.hlfs_gid
        if uid == 0:
            # A process running as root delivers for everybody (local(8)
            # over a spool it cannot write as the mail owner, mail.local):
            # its own spool would take every user's mail.  It gets the
            # view that names each user's mailbox (Table 2), and from a
            # privileged port, the mailboxes themselves.
            if privileged and self.files is not None and gid != hlfs_gid:
                return Caller(0, HLFS_CALLER | ROOT_FILES)
            return Caller(0, HLFS_CALLER)
        return Caller(uid, HLFS_CALLER if hlfs_gid is not None and gid == hlfs_gid else 0)

    def decode(self, fh, caller):
        """
        Return the L{handles.Handle} in C{fh}, or raise STALE for a handle
        this configuration did not make or C{caller} may not present
        (L{handles.may_use}): the same answer, so a caller learns nothing
        from a handle it should not hold.
        """
        handle = self.handles.decode(fh)
        if handle is None or not handles.may_use(handle, caller):
            raise NFSError(STALE)
        return handle

    def _link_fileid(self, uid, flags):
        return 2 + (uid << 2) + flags

    def _mailbox_fileid(self, name):
        return (1 << 62) | (handles.fingerprint(name, b"") & 0xFFFFFFFF)

    @staticmethod
    def _symlink_attr(owner, fileid, resolution):
        # rwxrwxrwx like any symbolic link; size and times follow the value.
        changed = resolution.changed
        return Attr(LNK, 0o777, 1, owner, 0, len(resolution.target), fileid, changed, changed)

    def _link_attr(self, uid, flags, resolution):
        owner = 0 if flags & ANONYMOUS else uid
        return self._symlink_attr(owner, self._link_fileid(uid, flags), resolution)

    def _resolve_link(self, caller, wait=True):
        """
        Return the L{Resolution} of the link for C{caller}, or a Deferred.
        """
        if handles.sees_table2(caller):
            return _DOT._replace(changed=self.start)
        if caller.flags & ANONYMOUS:
            return _NOTHING._replace(changed=self.start)
        if wait:
            return self.resolver.resolve(caller.uid)
        return self.resolver.peek(caller.uid)

    def _mailbox(self, name, wait=True):
        """
        Return the L{Resolution} of C{name}'s mailbox link, or a Deferred;
        raise STALE for a name the table does not know (any more).
        """
        resolution = self.resolver.mailbox(name, wait)
        if resolution is None:
            raise NFSError(STALE)
        return resolution

    def _mailbox_attr(self, name, resolution):
        return self._symlink_attr(0, self._mailbox_fileid(name), resolution)

    def valid_until(self, caller):
        """
        Until when (clock seconds) the answers about C{caller}'s link stay
        as they are, barring a change of the resolver's C{generation}.
        """
        if caller.flags:
            return _FOREVER
        return self.resolver.valid_until(caller.uid)

    # -- operations

    def getattr(self, fh, caller):
        handle = self.decode(fh, caller)
        if handle.kind == handles.ROOT:
            return self.root_attr
        if handle.kind == handles.LINK:
            return _then(
                self._resolve_link(caller),
                lambda r: self._link_attr(caller.uid, caller.flags, r),
            )
        if handle.kind == handles.LOCK:
            return self._lock_getattr(handle.name)
        if handle.kind == handles.FILE:
            return self._file_attr(handle.name, STALE)
        if handle.kind == handles.SCRATCH:
            return self._scratch_attr(self._scratch_of(handle))
        return _then(self._mailbox(handle.name), lambda r: self._mailbox_attr(handle.name, r))

    def lookup(self, dirfh, name, caller):
        """
        Return C{(fh, Attr)} for C{name} in the directory C{dirfh}.
        """
        handle = self.decode(dirfh, caller)
        if handle.kind != handles.ROOT:
            raise NFSError(NOTDIR)
        if len(name) > MAX_NAME:
            raise NFSError(NAMETOOLONG)
        if name in (b".", b".."):
            return self.root_handle, self.root_attr
        if name == self.config.linkname:
            fh = self.handles.link(caller.uid, caller.flags)
            return _then(
                self._resolve_link(caller),
                lambda r: (fh, self._link_attr(caller.uid, caller.flags, r)),
            )
        if not handles.sees_table2(caller):
            raise NFSError(NOENT)
        if handles.sees_root_files(caller):
            return self._root_lookup(name)
        owner = locks.lock_owner(name)
        if owner is not None and self.locks is not None:
            return self._lock_lookup(owner)
        if not handles.nameable(name):
            raise NFSError(NOENT)
        return _then_found(
            self.resolver.find_mailbox(name),
            lambda resolution: (self.handles.mailbox(name), self._mailbox_attr(name, resolution)),
        )

    def readlink(self, fh, caller):
        """
        Return C{(target, Attr)} for a link handle.
        """
        handle = self.decode(fh, caller)
        if handle.kind == handles.ROOT:
            raise NFSError(ISDIR)
        if handle.kind == handles.LINK:
            if caller.flags & ANONYMOUS:
                # The paper: only Unix authentication reveals a home.
                raise NFSError(PERM)
            return _then(
                self._resolve_link(caller),
                lambda r: (r.target, self._link_attr(caller.uid, caller.flags, r)),
            )
        if handle.kind in (handles.LOCK, handles.FILE, handles.SCRATCH):
            raise NFSError(INVAL)
        return _then(
            self._mailbox(handle.name),
            lambda r: (r.target, self._mailbox_attr(handle.name, r)),
        )

    def readdir(self, fh, caller):
        """
        Return the root's L{Entry} list: C{.}, C{..} and the link, the
        link's handle and attributes made for C{caller}.
        """
        handle = self.decode(fh, caller)
        if handle.kind != handles.ROOT:
            raise NFSError(NOTDIR)
        link_fh = self.handles.link(caller.uid, caller.flags)
        link_attr = self._link_attr(
            caller.uid, caller.flags, self._resolve_link(caller, wait=False)
        )
        return [
            Entry(ROOT_FILEID, b".", self.root_handle, self.root_attr),
            Entry(ROOT_FILEID, b"..", self.root_handle, self.root_attr),
            Entry(link_attr.fileid, self.config.linkname, link_fh, link_attr),
        ]

    def attr_for_update(self, fh, caller):
        """
        Return the current attributes of C{fh} for a write-type call's
        weak cache consistency data, without waiting on a probe; raise
        STALE for an unknown handle.
        """
        handle = self.decode(fh, caller)
        if handle.kind == handles.ROOT:
            return self.root_attr
        if handle.kind == handles.LINK:
            return self._link_attr(
                caller.uid, caller.flags, self._resolve_link(caller, wait=False)
            )
        if handle.kind == handles.LOCK:
            seen = self._locks_seen.get(handle.name)
            if seen is None:
                raise NFSError(STALE)
            return seen
        if handle.kind == handles.FILE:
            # Not known without asking the home: L{None}, no attributes.
            return self._files_seen.get(handle.name)
        if handle.kind == handles.SCRATCH:
            return self._scratch_attr(self._scratch_of(handle))
        return self._mailbox_attr(handle.name, self._mailbox(handle.name, wait=False))
