"""
What hlfs answers to each change a client asks of its directory: CREATE,
MKDIR, SYMLINK, MKNOD, LINK, REMOVE, RMDIR and RENAME.

hlfs's directory changes only by root's dotlocks (L{hlfs.core.lockfs}):
everything else is refused with ROFS.  But a refusal must not hide what a
real server would say first, because clients act on it.  So, as the
Linux VFS and the servers built on it do:

  - a name that is there comes first: making it (CREATE in any mode but
    root's UNCHECKED of a lock, MKDIR, SYMLINK, MKNOD; LINK for the one
    caller who may write the directory) answers EXIST.  OpenSMTPD's
    delivery opens C{/var/mail/NAME} with C{O_CREAT|O_EXCL} as root and
    delivers only on EEXIST;
  - a name that is not there cannot be removed or renamed: NOENT;
  - C{.} and C{..} are the directory itself (ISDIR, NOTEMPTY, INVAL);
  - then the change is refused (ROFS; NOTDIR for RMDIR of what is no
    directory), unless it is root's lock: made, removed, or hidden by the
    client's silly rename (L{hlfs.core.hidden}), or root's CREATE of a
    user's mailbox in its view of real mailboxes (L{hlfs.core.mailfiles}).

Which names are there is what LOOKUP says for the same caller: the link,
and for the callers of Table 2 the users' names and the locks present.
docs/conformance.md compares every answer with a real server's.
"""

from hlfs.core import handles, hidden, locks
from hlfs.core.nodes import (
    EXIST, GUARDED, INVAL, ISDIR, MAX_NAME, NAMETOOLONG, NOENT, NOTDIR, NOTEMPTY, ROFS, NFSError, after,
)

#: The names of the directory itself.
DOTS = (b".", b"..")


class DirectoryChanges:
    """
    The changes of the directory; the class using this needs C{decode},
    C{lookup}, C{attr_for_update}, C{config}, C{locks}, C{hidden} and the
    lock operations of L{hlfs.core.lockfs.LockFiles}.
    """

    def _directory(self, dirfh, name, caller):
        """
        Check that C{dirfh} is hlfs's directory and C{name} may be a name
        in it.
        """
        if self.decode(dirfh, caller).kind != handles.ROOT:
            raise NFSError(NOTDIR)
        if len(name) > MAX_NAME:
            raise NFSError(NAMETOOLONG)

    def _exists(self, dirfh, name, caller):
        """
        Whether C{caller} finds C{name} in the directory (now or later).
        """
        if name == self.config.linkname:
            # Always there: no need to resolve it.
            return True
        try:
            found = self.lookup(dirfh, name, caller)
        except NFSError as e:
            if e.status == NOENT:
                return False
            raise
        if isinstance(found, tuple):
            return True

        def missing(failure):
            failure.trap(NFSError)
            if failure.value.status == NOENT:
                return False
            return failure

        return found.addCallbacks(lambda _: True, missing)

    def _refused(self, dirfh, name, caller, there, absent):
        """
        Refuse a change of C{name}: the status C{there} if the caller finds
        it, C{absent} otherwise.
        """

        def refuse(found):
            raise NFSError(there if found else absent)

        return after(self._exists(dirfh, name, caller), refuse)

    def _lock_name(self, name, caller):
        """
        The user whose lock C{name} is, for a caller who sees locks; else
        L{None}.
        """
        owner = locks.lock_owner(name)
        if owner is None or self.locks is None or not locks.may_look(caller):
            return None
        return owner

    def create(self, dirfh, name, caller, privileged, mode=None, how=GUARDED, size=None):
        """
        CREATE: root's lock file (L{hlfs.core.lockfs}); EXIST for any other
        name that is there, ROFS for one that is not.  C{how} is NFSv3's
        createmode3 (NFSv2: GUARDED); C{mode} and C{size} what it sets.

        @return: C{(fh, Attr)}, or a Deferred firing with it.
        """
        self._directory(dirfh, name, caller)
        if name in DOTS:
            raise NFSError(ISDIR)
        if handles.sees_root_files(caller) and name != self.config.linkname:
            # A user's real mailbox or lock, made as its user
            # (L{hlfs.core.mailfiles}), or else a scratch file
            # (L{hlfs.core.scratch}).
            return self._root_create(name, caller, privileged, mode, how, size)
        owner = self._lock_name(name, caller)
        if owner is not None:
            return self._lock_create(owner, caller, privileged, mode, how, size)
        return self._refused(dirfh, name, caller, EXIST, ROFS)

    def make(self, dirfh, name, caller):
        """
        MKDIR, SYMLINK, MKNOD: EXIST for a name that is there, else ROFS.
        """
        self._directory(dirfh, name, caller)
        if name in DOTS:
            raise NFSError(EXIST)
        return self._refused(dirfh, name, caller, EXIST, ROFS)

    def link(self, fh, dirfh, name, caller, privileged):
        """
        LINK C{fh} as C{name}: never, but for root's scratch files
        (L{hlfs.core.scratch}): the file's L{Attr}.  Only a caller who may
        write the directory (root, for its locks) learns that a name is
        there (EXIST), as a server checks the directory's permission first.
        """
        self.attr_for_update(fh, caller)
        self._directory(dirfh, name, caller)
        if not locks.may_lock(caller, privileged):
            raise NFSError(ROFS)
        if name in DOTS:
            raise NFSError(EXIST)
        handle = self.decode(fh, caller)
        if handle.kind == handles.SCRATCH:
            return self._scratch_link(self._scratch_of(handle), name, caller, privileged)
        return self._refused(dirfh, name, caller, EXIST, ROFS)

    def remove(self, dirfh, name, caller, privileged, client=b""):
        """
        REMOVE: root's lock file, or a hidden name C{client}'s silly rename
        gave one (its lock already removed); NOENT for any other name that
        is not there, ROFS for one that is.

        @param client: who root is (the AUTH_SYS machine name).
        @return: C{()}, or a Deferred firing with it.
        """
        self._directory(dirfh, name, caller)
        if name in DOTS:
            raise NFSError(ISDIR)
        if handles.sees_root_files(caller) and self._root_remove(name) is not None:
            return ()
        owner = self._lock_name(name, caller)
        if owner is not None:
            return self._lock_remove(owner, caller, privileged)
        if hidden.is_hidden(name) and locks.may_lock(caller, privileged):
            if self.hidden.forget(client, name) is not None:
                return ()
        return self._refused(dirfh, name, caller, ROFS, NOENT)

    def rmdir(self, dirfh, name, caller):
        """
        RMDIR: the directory holds no directory but itself.
        """
        self._directory(dirfh, name, caller)
        if name in DOTS:
            raise NFSError(NOTEMPTY)
        return self._refused(dirfh, name, caller, NOTDIR, NOENT)

    def rename(self, fromfh, fromname, tofh, toname, caller, privileged, client=b""):
        """
        RENAME: only the Linux client's silly rename of root's lock file
        (to a hidden C{.nfs} name, L{hlfs.core.hidden}), taken as its
        removal; NOENT for a name that is not there, ROFS for one that is.

        @return: C{()}, or a Deferred firing with it.
        """
        self._directory(fromfh, fromname, caller)
        self._directory(tofh, toname, caller)
        if fromname in DOTS or toname in DOTS:
            raise NFSError(INVAL)
        owner = self._lock_name(fromname, caller)
        if owner is not None:
            if not locks.may_lock(caller, privileged):
                return self._lock_refused(owner)
            if hidden.is_hidden(toname):
                return self._lock_hide(owner, toname, caller, privileged, client)
        return self._refused(fromfh, fromname, caller, ROFS, NOENT)
