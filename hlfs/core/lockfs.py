"""
The lock files of Table 2 as nodes of hlfs's directory: the part of
L{hlfs.core.linkfs.HomeLinkFS} that looks up, makes and removes
C{NAME.lock}, and takes the Linux client's silly rename of one as its
removal (the policy is L{hlfs.core.locks}; the files are made by its
C{locks}, an L{hlfs.core.locks.ISpoolLocks}; which call gets here is
L{hlfs.core.changes}).
"""

from hlfs.core import handles, locks
from hlfs.core.nodes import (
    ACCES, EXCLUSIVE, EXIST, NAMETOOLONG, NOENT, NOTSUPP, REG, ROFS, STALE, UNCHECKED, Attr,
    NFSError, locking, then, then_found, unless,
)


class LockFiles:
    """
    Lock-file operations; the class using this needs C{resolver},
    C{handles}, C{locks}, C{decode}, a C{_locks_seen} dict and C{hidden}
    (L{hlfs.core.hidden.HiddenNames}).
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

    def _lock_or_none(self, name):
        """
        The L{locks.LockStat} of C{name}'s lock, L{None} when there is
        none or C{name} is no user's (now or later).
        """
        return unless(lambda: self._on_lock(name, self.locks.stat), NOENT, lambda: None)

    def _lock_refused(self, name):
        """
        Refuse a caller who may look at locks but not change them
        (HLFS_GID) as a server refuses a change of a directory it may not
        write: NOENT for a lock that is not there, ACCES for one that is.
        """

        def refuse(st):
            raise NFSError(NOENT if st is None else ACCES)

        return self._then_lock(self._lock_or_none(name), refuse)

    def _lock_create(self, name, caller, privileged, mode, how, size):
        """
        Make C{NAME.lock} for root: C{(fh, Attr)}.

        GUARDED is exclusive: EXIST when the lock is there.  EXCLUSIVE
        (NFSv3's verifier semantics) answers EXIST for a lock that is
        there and NOTSUPP otherwise: the client asks again GUARDED, and
        owes no SETATTR of the verifier, which hlfs would refuse.
        UNCHECKED, as RFC 1813 has it, opens a lock that is there as it
        is (ROFS if it asks for another size: hlfs writes no lock).
        A caller who may only look gets EXIST for a lock that is there
        (unless UNCHECKED), ACCES otherwise.
        """
        fh = self.handles.lock(name)
        if fh is None:
            raise NFSError(NAMETOOLONG)
        if not locks.may_lock(caller, privileged):

            def refuse(st):
                raise NFSError(EXIST if st is not None and how != UNCHECKED else ACCES)

            return self._then_lock(self._lock_or_none(name), refuse)

        def found(st):
            attr = self._lock_seen(name, st)
            if attr is None:
                # Gone since it was found there: the client asks again.
                raise NFSError(locks.TRYLATER)
            if how == EXCLUSIVE:
                raise NFSError(EXIST)
            if size is not None and size != attr.size:
                raise NFSError(ROFS)
            return fh, attr

        def existing():
            return self._then_lock(self._on_lock(name, self.locks.stat), found)

        if how == EXCLUSIVE:

            def exclusive(st):
                if st is None:
                    raise NFSError(NOTSUPP)
                return found(st)

            return self._then_lock(self._on_lock(name, self.locks.stat), exclusive)
        mode = 0o600 if mode is None else mode & 0o777

        def make():
            return self._then_lock(
                self._on_lock(name, self.locks.create, mode), lambda st: (fh, self._lock_seen(name, st))
            )

        if how == UNCHECKED:
            return unless(make, EXIST, existing)
        return make()

    def _lock_remove(self, name, caller, privileged):
        """
        Remove C{NAME.lock} for root: C{()}.
        """
        if self.handles.lock(name) is None:
            raise NFSError(NOENT)
        if not locks.may_lock(caller, privileged):
            return self._lock_refused(name)

        def removed(_):
            self._lock_seen(name, None)
            return ()

        return self._then_lock(self._on_lock(name, self.locks.remove), removed)

    def _lock_hide(self, name, hidden_name, caller, privileged, client):
        """
        The Linux client's silly rename of C{NAME.lock} to C{hidden_name}
        (L{hlfs.core.hidden}): remove the lock, remember the name.
        """

        def hidden(_):
            self.hidden.remember(client, hidden_name, name)
            return ()

        return then(self._lock_remove(name, caller, privileged), hidden)
