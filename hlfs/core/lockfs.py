"""
The lock files of Table 2 as nodes of hlfs's directory: the part of
L{hlfs.core.linkfs.HomeLinkFS} that looks up, makes and removes
C{NAME.lock} (the policy is L{hlfs.core.locks}; the files are made by its
C{locks}, an L{hlfs.core.locks.ISpoolLocks}).
"""

from hlfs.core import handles, locks
from hlfs.core.nodes import (
    ACCES, MAX_NAME, NAMETOOLONG, NOENT, NOTDIR, NOTSUPP, REG, ROFS, STALE, Attr,
    NFSError, locking, then_found,
)


class LockFiles:
    """
    Lock-file operations; the class using this needs C{resolver},
    C{handles}, C{locks}, C{decode} and a C{_locks_seen} dict.
    """

    #: Lock files last seen, for attributes that cannot wait.
    MAX_LOCKS_SEEN = 4096

    @staticmethod
    def lasting(attr):
        """
        Whether an answer about the node with C{attr} may be kept (by the
        reply cache) as long as its caller's link stays as it is: not for
        a lock file, which comes and goes under hlfs's feet.
        """
        return attr.type != REG

    def _lock_fileid(self, name):
        return (3 << 61) | (handles.fingerprint(name, locks.SUFFIX) & 0xFFFFFFFF)

    def _lock_seen(self, name, st):
        """
        Return the L{Attr} of C{name}'s lock file from its L{locks.LockStat}
        (L{None}: there is none), remembering it.
        """
        seen = self._locks_seen
        if st is None:
            seen.pop(name, None)
            return None
        attr = Attr(REG, st.mode, 1, st.uid, st.gid, st.size, self._lock_fileid(name), st.mtime, st.ctime)
        if name not in seen and len(seen) >= self.MAX_LOCKS_SEEN:
            seen.clear()
        seen[name] = attr
        return attr

    def _on_lock(self, name, operation, *args):
        """
        Find C{name}'s mailbox (checking NAME's home as for its link), then
        call C{operation(name, lock path, *args)} on the lock file next to
        it; NOENT for a user nobody knows.
        """
        return then_found(
            self.resolver.find_mailbox(name),
            lambda r: locking(operation, name, locks.lock_path(r.target), *args),
        )

    def _lock_lookup(self, name):
        fh = self.handles.lock(name)
        if fh is None:
            raise NFSError(NOENT)

        def found(st):
            attr = self._lock_seen(name, st)
            if attr is None:
                raise NFSError(NOENT)
            return fh, attr

        return self._then_lock(self._on_lock(name, self.locks.stat), found)

    @staticmethod
    def _then_lock(result, f):
        """
        Apply C{f} to a lock operation's result (a L{locks.LockStat},
        L{None}, or a Deferred firing with one).
        """
        if result is None or isinstance(result, tuple):
            return f(result)
        return result.addCallback(f)

    def _lock_getattr(self, name):
        if self.locks is None:
            raise NFSError(STALE)

        def found(st):
            attr = self._lock_seen(name, st)
            if attr is None:
                raise NFSError(STALE)
            return attr

        return self._then_lock(self._on_lock(name, self.locks.stat), found)

    def _lock_owner_for_change(self, dirfh, name, caller, privileged):
        """
        Return the user whose lock file C{name} in C{dirfh} names, if
        C{caller} may make or remove it; raise the NFS error otherwise
        (ROFS for anything but a lock file, as everywhere in hlfs).
        """
        handle = self.decode(dirfh, caller)
        if handle.kind != handles.ROOT:
            raise NFSError(ROFS if handle.kind != handles.LOCK else NOTDIR)
        if len(name) > MAX_NAME:
            raise NFSError(NAMETOOLONG)
        owner = locks.lock_owner(name)
        if owner is None or self.locks is None or not locks.may_look(caller):
            raise NFSError(ROFS)
        if not locks.may_lock(caller, privileged):
            raise NFSError(ACCES)
        return owner

    def create(self, dirfh, name, caller, privileged, mode=None, verifier=False):
        """
        Make the lock file C{name} (C{NAME.lock}) for root: C{(fh, Attr)}.
        Always exclusive: EXIST when it is there.  A create that asks for
        NFSv3's verifier semantics (EXCLUSIVE) gets NOTSUPP: the client
        asks again GUARDED, exclusive here as well, and owes no SETATTR.
        """
        owner = self._lock_owner_for_change(dirfh, name, caller, privileged)
        fh = self.handles.lock(owner)
        if fh is None:
            raise NFSError(NAMETOOLONG)
        if verifier:
            raise NFSError(NOTSUPP)
        mode = 0o600 if mode is None else mode & 0o777
        return self._then_lock(
            self._on_lock(owner, self.locks.create, mode),
            lambda st: (fh, self._lock_seen(owner, st)),
        )

    def remove(self, dirfh, name, caller, privileged):
        """
        Remove the lock file C{name} (C{NAME.lock}) for root: C{()}.
        """
        owner = self._lock_owner_for_change(dirfh, name, caller, privileged)
        if self.handles.lock(owner) is None:
            raise NFSError(NOENT)

        def removed(_):
            self._lock_seen(owner, None)
            return ()

        return self._then_lock(self._on_lock(owner, self.locks.remove), removed)

