"""
The MOUNT protocol, versions 1 (RFC 1094 appendix A) and 3 (RFC 1813
section 5): hands out the root handle of the one exported path.
"""

from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.nfs.common import path
from hlfs.xdr import UINT, pack_opaque

PROGRAM = 100005

MNT_OK = 0
MNT_NOENT = 2
MNT_ACCES = 13

MAX_MOUNTS = 1024
MAX_HOSTNAME = 255


class MountState:
    """
    The mount list DUMP reports: (client machine name, path) pairs, capped
    so that no client can grow it without bound.
    """

    def __init__(self):
        self.mounts = []

    def add(self, host, dirpath):
        entry = (host, dirpath)
        if entry not in self.mounts and len(self.mounts) < MAX_MOUNTS:
            self.mounts.append(entry)

    def remove(self, host, dirpath=None):
        self.mounts = [
            (h, d) for (h, d) in self.mounts if h != host or (dirpath is not None and d != dirpath)
        ]


class Mount:
    """
    MOUNT versions 1 and 3 for one exported path.
    """

    def __init__(self, fs, state=None):
        self.fs = fs
        self.export = fs.config.export_path
        self.state = MountState() if state is None else state
        common = (self.null, None, self.dump, self.umnt, self.umntall, self.export_list)
        self.v1 = (common[0], self.mnt1) + common[2:]
        self.v3 = (common[0], self.mnt3) + common[2:]

    def _host(self, call):
        return call.cred.machine[:MAX_HOSTNAME] or b"unknown"

    def _matches(self, dirpath):
        return dirpath.rstrip(b"/") == self.export.rstrip(b"/") or (
            dirpath == b"/" == self.export
        )

    def null(self, args, call):
        return b""

    def mnt1(self, args, call):
        dirpath = path(args)
        if not self._matches(dirpath):
            return UINT.pack(MNT_NOENT)
        self.state.add(self._host(call), dirpath)
        return UINT.pack(MNT_OK) + self.fs.root_handle

    def mnt3(self, args, call):
        dirpath = path(args)
        if not self._matches(dirpath):
            return UINT.pack(MNT_NOENT)
        self.state.add(self._host(call), dirpath)
        # One flavor: AUTH_SYS.  The link's value depends on its uid.
        return UINT.pack(MNT_OK) + pack_opaque(self.fs.root_handle) + UINT.pack(1) + UINT.pack(1)

    def dump(self, args, call):
        parts = []
        for host, dirpath in self.state.mounts:
            parts.append(TRUE + pack_opaque(host) + pack_opaque(dirpath))
        parts.append(FALSE)
        return b"".join(parts)

    def umnt(self, args, call):
        self.state.remove(self._host(call), path(args))
        return b""

    def umntall(self, args, call):
        self.state.remove(self._host(call))
        return b""

    def export_list(self, args, call):
        # One export, no group restriction.
        return TRUE + pack_opaque(self.export) + FALSE + FALSE
