"""
A real NFS server: nfs-ganesha (Debian's C{nfs-ganesha},
C{nfs-ganesha-vfs}) on the host's loopback, exporting host directories
NFSv3 over TCP.  The kernel tier serves the homes from it with
C{root_squash}, as sites serve homes; the conformance matrix
(L{tests.support.conformance}) asks it what a real server answers.

Why ganesha on the host rather than knfsd in the guest: the host checks
the mailboxes once the guest is gone, and a guest's knfsd could export
only a guest directory (a 9p share cannot be exported).

The server must not touch the machine: no rpcbind registration, no port
111 or 2049, nothing in C{/run} or C{/var/lib/nfs}.  So it runs under
C{unshare --mount} with a private tmpfs on C{/run}, whose
C{rpcbind.sock} is L{fakerpcbind} (ganesha will not start unless it can
register), on ephemeral ports, with its configuration, log, pid file and
recovery directory in the test's own directory.  Server and stand-in are
one process group, ended together.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from tests.support.ports import free_port

HERE = Path(__file__).resolve().parent
GANESHA = "/usr/bin/ganesha.nfsd"
#: The VFS backend, where Debian's nfs-ganesha-vfs puts it.
FSAL_VFS = "/usr/lib/*/ganesha/libfsalvfs.so"

CONFIG = """\
NFS_CORE_PARAM {{
    Protocols = 3;
    Bind_addr = 127.0.0.1;
    NFS_Port = {nfs_port};
    MNT_Port = {mount_port};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = {workdir}/recovery;
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
{exports}"""

EXPORT = """\
EXPORT {{
    Export_Id = {id};
    Path = {path};
    Pseudo = {path};
    Access_Type = {access};
    Squash = {squash};
    SecType = sys;
    Protocols = 3;
    Transports = TCP;
{more}    FSAL {{
        Name = VFS;
    }}
}}
"""


class Export(NamedTuple):
    """
    One exported directory.

    @ivar squash: ganesha's C{Squash} (C{root_squash}, C{no_root_squash}).
    @ivar access: C{RW} or C{RO}.
    @ivar attr_expiration: seconds ganesha may keep attributes and names
        (its C{Attr_Expiration_Time}; L{None}: its default): 0 for a
        directory the host changes behind the server's back.
    """

    path: Path
    squash: str = "root_squash"
    access: str = "RW"
    attr_expiration: int | None = None

    def config(self, export_id):
        more = "" if self.attr_expiration is None else f"    Attr_Expiration_Time = {self.attr_expiration};\n"
        return EXPORT.format(
            id=export_id, path=self.path, access=self.access, squash=self.squash, more=more,
        )

#: Run inside the private mount namespace: the stand-in's socket must
#: exist before ganesha registers.
SCRIPT = """\
mount -t tmpfs -o mode=755 hlfs-ganesha-run /run || exit 91
"$1" {fakerpcbind} /run/rpcbind.sock &
n=0
while [ ! -S /run/rpcbind.sock ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
exec {ganesha} -F -f "$2" -L "$3" -p "$4" -N NIV_EVENT
"""


def missing():
    """
    @return: why the server cannot run here, or L{None}.
    """
    if not os.path.exists(GANESHA) or not glob.glob(FSAL_VFS):
        return "nfs-ganesha and nfs-ganesha-vfs are not installed (scripts/run-tests installs them)"
    if shutil.which("unshare") is None:
        return "util-linux unshare is missing"
    if os.geteuid() != 0:
        return "nfs-ganesha's VFS backend needs root (open_by_handle_at)"
    return None


class Ganesha:
    """
    One nfs-ganesha exporting C{export}: a path (exported read-write with
    C{root_squash}), or a list of L{Export}s.

    @ivar nfs_port: the NFS program's TCP port on 127.0.0.1.
    @ivar mount_port: the MOUNT program's TCP port on 127.0.0.1.
    """

    def __init__(self, export, workdir):
        self.exports = list(export) if isinstance(export, (list, tuple)) else [Export(Path(export))]
        self.export = self.exports[0].path
        self.workdir = Path(workdir)
        self.nfs_port = free_port()
        self.mount_port = free_port()
        while self.mount_port == self.nfs_port:
            self.mount_port = free_port()
        self.process = None

    @property
    def log_file(self):
        return self.workdir / "ganesha.log"

    def start(self, timeout=60):
        """
        Start the server and wait until both its programs accept TCP
        connections.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "recovery").mkdir(exist_ok=True)
        config = self.workdir / "ganesha.conf"
        exports = "".join(export.config(n) for n, export in enumerate(self.exports, 1))
        config.write_text(CONFIG.format(
            nfs_port=self.nfs_port, mount_port=self.mount_port, workdir=self.workdir, exports=exports,
        ))
        script = SCRIPT.format(fakerpcbind=HERE / "fakerpcbind.py", ganesha=GANESHA)
        out = open(self.workdir / "ganesha.out", "wb")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "ganesha",
             sys.executable, str(config), str(self.log_file), str(self.workdir / "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nfs-ganesha exited with {self.process.returncode}:\n{self.log()}")
            if all(_listening(port) for port in (self.nfs_port, self.mount_port)):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nfs-ganesha did not listen within {timeout}s:\n{self.log()}")

    def mount_options(self):
        """
        @return: C{(port, mountport)} for L{guestscript.mount}.
        """
        return self.nfs_port, self.mount_port

    def stop(self):
        """
        End the server, then its stand-in rpcbind (the rest of its process
        group): the server unregisters on its way out, and with no
        stand-in listening that would go to the machine's rpcbind.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            # The shell exec'd the server: the child is ganesha itself.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log(self):
        """
        @return: the server's log and output so far.
        """
        parts = []
        for name in ("ganesha.out", "ganesha.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name} ---\n" + path.read_text(errors="replace"))
        return "\n".join(parts)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
