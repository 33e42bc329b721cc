"""
The MOUNT protocol, versions 1 (RFC 1094 appendix A) and 3 (RFC 1813
section 5): hands out the root handle of the one exported path.
"""

from collections import OrderedDict

from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.nfs.common import path
from hlfs.xdr import UINT, pack_opaque

PROGRAM = 100005

MNT_OK = 0
MNT_NOENT = 2
MNT_ACCES = 13

MAX_HOSTNAME = 255
#: Client machines the mount list keeps.
MAX_MOUNTS = 256
#: Bytes of a DUMP reply's results at most.  With the RPC reply header
#: (24 bytes) it fits in 8800 bytes (UDPMSGSIZE), the buffer glibc's and
#: libtirpc's UDP clients receive into: showmount and rpcinfo get it whole.
MAX_DUMP = 8192
_END = len(FALSE)


def path_parts(dirpath):
    """
    Return the components of an absolute path as a server resolving it
    lexically sees them (C{//mail/./} is C{/mail}), or L{None} for a path
    that is relative or climbs with C{..}: those name no export here.
    """
    if not dirpath.startswith(b"/"):
        return None
    parts = [part for part in dirpath.split(b"/") if part not in (b"", b".")]
    return None if b".." in parts else parts


class MountState:
    """
    The mount list DUMP reports: one entry per client machine name (the
    AUTH_SYS credential's), for the one exported path, the most recently
    mounted last.  At most C{max_mounts} machines are kept: a new one
    pushes out the one that mounted longest ago.
    """

    def __init__(self, max_mounts=MAX_MOUNTS):
        self.max_mounts = max_mounts
        self._hosts = OrderedDict()

    @property
    def hosts(self):
        """
        The machines that have mounted, the most recent first.
        """
        return list(reversed(self._hosts))

    def add(self, host):
        hosts = self._hosts
        hosts[host] = None
        hosts.move_to_end(host)
        while len(hosts) > self.max_mounts:
            hosts.popitem(last=False)

    def remove(self, host):
        self._hosts.pop(host, None)


class Mount:
    """
    MOUNT versions 1 and 3 for one exported path.
    """

    def __init__(self, fs, state=None):
        self.fs = fs
        self.export = fs.config.export_path
        self._export_parts = path_parts(self.export)
        self.state = MountState() if state is None else state
        common = (self.null, None, self.dump, self.umnt, self.umntall, self.export_list)
        self.v1 = (common[0], self.mnt1) + common[2:]
        self.v3 = (common[0], self.mnt3) + common[2:]

    def _host(self, call):
        return call.cred.machine[:MAX_HOSTNAME] or b"unknown"

    def _matches(self, dirpath):
        """
        Whether C{dirpath} names the export.  As knfsd's mountd (which
        resolves it with realpath(3)) does, repeated and trailing slashes
        and C{.} components are allowed; C{..} is not, since resolving it
        would take the file system, not the path's text.
        """
        parts = path_parts(dirpath)
        return parts is not None and parts == self._export_parts

    def null(self, args, call):
        return b""

    def _mount(self, args, call):
        if not self._matches(path(args)):
            return False
        self.state.add(self._host(call))
        return True

    def mnt1(self, args, call):
        if not self._mount(args, call):
            return UINT.pack(MNT_NOENT)
        return UINT.pack(MNT_OK) + self.fs.root_handle

    def mnt3(self, args, call):
        if not self._mount(args, call):
            return UINT.pack(MNT_NOENT)
        # One flavor: AUTH_SYS.  The link's value depends on its uid.
        return UINT.pack(MNT_OK) + pack_opaque(self.fs.root_handle) + UINT.pack(1) + UINT.pack(1)

    def dump(self, args, call):
        """
        The mount list, the most recent mounts first, as many as fit in
        L{MAX_DUMP} bytes: a valid list, shorter, never a reply a UDP
        client cannot take.  The path is always the export's, however the
        client wrote it.
        """
        parts = []
        size = _END
        tail = pack_opaque(self.export)
        for host in self.state.hosts:
            entry = TRUE + pack_opaque(host) + tail
            size += len(entry)
            if size > MAX_DUMP:
                break
            parts.append(entry)
        parts.append(FALSE)
        return b"".join(parts)

    def umnt(self, args, call):
        if self._matches(path(args)):
            self.state.remove(self._host(call))
        return b""

    def umntall(self, args, call):
        self.state.remove(self._host(call))
        return b""

    def export_list(self, args, call):
        # One export, no group restriction.
        return TRUE + pack_opaque(self.export) + FALSE + FALSE
