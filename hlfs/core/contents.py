"""
What hlfs answers to the calls on a node's contents and attributes: READ,
WRITE, COMMIT, SETATTR and ACCESS.

hlfs serves no file's contents but the mailbox files of root's view
(L{hlfs.core.mailfiles}): its directory holds links, and root's lock
files are made and removed, never read or written through hlfs.  So, but
for those files, as a read-only server answers:

  - the directory's contents are not a file's (ISDIR), nor are a link's
    (INVAL: READLINK reads those);
  - a lock file is neither read (ACCES) nor written (ROFS), and nothing
    written waits for a COMMIT;
  - no attribute changes (ROFS);
  - ACCESS grants what the calls above would do: the directory may be
    read and looked up in, and written by root from a privileged port
    (its locks); a link may be read and followed.

Each call first checks the handle as GETATTR's weak cache consistency
data does (STALE for one this caller may not hold).
"""

from hlfs.core import handles, locks
from hlfs.core.mailfiles import FileChanges
from hlfs.core.nodes import ACCES, INVAL, ISDIR, ROFS, NFSError

# ACCESS3 bits (RFC 1813).
ACCESS_READ = 0x01
ACCESS_LOOKUP = 0x02
ACCESS_MODIFY = 0x04
ACCESS_EXTEND = 0x08
ACCESS_DELETE = 0x10
ACCESS_EXECUTE = 0x20

_DIRECTORY = ACCESS_READ | ACCESS_LOOKUP
_WRITE_DIRECTORY = ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE
_LINK = ACCESS_READ | ACCESS_EXECUTE


class NodeContents:
    """
    The calls on a node's contents; the class using this needs
    C{decode} and C{attr_for_update}.
    """

    def _node(self, fh, caller):
        """
        Return the kind of handle C{fh} and its attributes, checked as for
        weak cache consistency data.
        """
        attr = self.attr_for_update(fh, caller)
        return self.decode(fh, caller).kind, attr

    def _scratch_handle(self, fh, caller):
        """
        The L{hlfs.core.scratch.ScratchFile} of C{fh}, or L{None} for any
        other handle (STALE for one C{caller} may not hold).
        """
        handle = self.decode(fh, caller)
        return self._scratch_of(handle) if handle.kind == handles.SCRATCH else None

    @staticmethod
    def _not_a_file(kind):
        if kind == handles.ROOT:
            raise NFSError(ISDIR)
        if kind != handles.LOCK:
            raise NFSError(INVAL)

    def read(self, fh, caller, privileged, offset=0, count=0):
        """
        READ: C{(Attr, data, eof)} of a mailbox or scratch file; never
        anything else.
        """
        name = self._file_handle(fh, caller)
        if name is not None:
            return self._file_read(name, offset, count)
        scratch = self._scratch_handle(fh, caller)
        if scratch is not None:
            return self._scratch_read(scratch, offset, count)
        kind, _ = self._node(fh, caller)
        self._not_a_file(kind)
        raise NFSError(ACCES)

    def write(self, fh, caller, privileged, offset=0, count=0, data=b""):
        """
        WRITE: the L{Attr} of a mailbox file after it; never anything else.
        """
        name = self._file_handle(fh, caller)
        if name is not None:
            return self._file_write(name, offset, count, data)
        scratch = self._scratch_handle(fh, caller)
        if scratch is not None:
            return self._scratch_write(scratch, offset, count, data)
        kind, _ = self._node(fh, caller)
        self._not_a_file(kind)
        raise NFSError(ROFS)

    def commit(self, fh, caller, privileged):
        """
        COMMIT: return the node's L{Attr}, a mailbox file's once synced;
        nothing else was written, so nothing waits.
        """
        name = self._file_handle(fh, caller)
        if name is not None:
            return self._file_sync(name)
        scratch = self._scratch_handle(fh, caller)
        if scratch is not None:
            return self._scratch_attr(scratch)
        kind, attr = self._node(fh, caller)
        self._not_a_file(kind)
        return attr

    def setattr(self, fh, caller, privileged, changes=None):
        """
        SETATTR: of a mailbox file, what L{hlfs.core.mailfiles} allows
        (C{changes}, a L{hlfs.core.mailfiles.FileChanges}); the L{Attr}
        after.  Never anything else.
        """
        name = self._file_handle(fh, caller)
        if name is not None:
            return self._file_setattr(name, changes or FileChanges())
        scratch = self._scratch_handle(fh, caller)
        if scratch is not None:
            return self._scratch_setattr(scratch, changes or FileChanges())
        self._node(fh, caller)
        raise NFSError(ROFS)

    def access(self, fh, caller, privileged, wanted):
        """
        ACCESS: return the node's L{Attr} and the bits of C{wanted} that
        hlfs would grant.
        """
        kind, attr = self._node(fh, caller)
        if kind == handles.ROOT:
            granted = _DIRECTORY
            if locks.may_lock(caller, privileged):
                granted |= _WRITE_DIRECTORY
        elif kind == handles.LOCK:
            granted = 0
        elif kind in (handles.FILE, handles.SCRATCH):
            # Root: what the file's owner may do, hlfs does for it.
            granted = ACCESS_READ | ACCESS_MODIFY | ACCESS_EXTEND
        else:
            granted = _LINK
        return attr, wanted & granted
