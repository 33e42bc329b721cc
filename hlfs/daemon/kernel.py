"""
The kernel NFS client side of the daemon: the mount command hlfs runs on
itself, the /proc/mounts checks around it, and the mount's lifetime.

Reading /proc/mounts never touches the mount point, so it is safe even
while a stale mount of ours (left by a crash) would hang any access to the
directory until this process serves again.
"""

import os
import shutil

from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from hlfs.daemon import mounts
from hlfs.daemon.mounts import find_mount, parse_proc_mounts

PROC_MOUNTS = "/proc/mounts"
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MOUNT = "/bin/mount"
UMOUNT = "/bin/umount"

# The caches that could hand one user's link to another.  With per-caller
# link handles the one that matters is the dentry cache (lookupcache=none);
# noac only doubles the RPCs per access.  Read-write, though hlfs refuses
# every change but one: root's dotlocks, NAME.lock (hlfs.core.locks), which a
# read-only mount would refuse in the client before hlfs is asked.
DEFAULT_OPTIONS = "rw,lookupcache=none,nolock,vers=3,proto=tcp,mountproto=tcp,retry=0"


def read_mounts(path=PROC_MOUNTS):
    with open(path) as f:
        return parse_proc_mounts(f.read())


def our_mount(entries, mountpoint, export):
    """
    Return the mount on top of C{mountpoint} if it is an NFS mount of our
    export, or L{None}.
    """
    entry = find_mount(entries, mountpoint)
    if entry is not None and entry.fstype in ("nfs", "nfs4") and entry.device.endswith(":" + export):
        return entry
    return None


def mounted_port(entry):
    """
    The server port recorded in a mount's options, or L{None}.
    """
    value = entry.options.get("port") if entry else None
    return int(value) if value and value.isdigit() and 0 < int(value) < 65536 else None


def mount_options(port, extra=""):
    options = DEFAULT_OPTIONS + f",port={port},mountport={port}"
    return options + ("," + extra if extra else "")


def mount_command(address, export, mountpoint, port, extra=""):
    """
    Return the argv of the mount(8) call that mounts hlfs on itself.
    """
    return [
        MOUNT, "-t", "nfs", "-o", mount_options(port, extra), f"{address}:{export}", mountpoint,
    ]


def missing_cache_options(entry):
    """
    Return the cache-disabling options the kernel did not keep.  Link
    handles are per caller, so attributes may be cached: only the lookup
    cache must be off.
    """
    return mounts.missing_cache_options(entry.options, attributes=False)


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done):
        self.done = done
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        code = reason.value.exitCode
        self.done.callback((code, b"".join(self.output).decode(errors="replace").strip()))


def run(reactor, argv):
    """
    Run a command as a child process, never blocking the reactor: the
    kernel's mount waits for replies only this process can send.  Fires
    with C{(exit code, output)}.
    """
    d = defer.Deferred()
    reactor.spawnProcess(_Collect(d), argv[0], argv, env={"PATH": _SEARCH_PATH})
    return d


class KernelMount:
    """
    Mount and unmount hlfs on its mount point.
    """

    log = Logger()

    def __init__(self, reactor, mountpoint, export, address, extra_options="",
                 proc_mounts=PROC_MOUNTS):
        self.reactor = reactor
        self.mountpoint = mountpoint
        self.export = export
        self.address = address
        self.extra_options = extra_options
        self.proc_mounts = proc_mounts

    def current(self):
        return our_mount(read_mounts(self.proc_mounts), self.mountpoint, self.export)

    @defer.inlineCallbacks
    def mount(self, port):
        """
        Mount, then read the options back.  Fires with the list of cache
        options the kernel did not keep (empty when all is well).

        @raise MountError: if mount(8) fails.
        """
        if shutil.which("mount.nfs", path=_SEARCH_PATH) is None:
            raise MountError(
                "mount.nfs is not installed (Debian: apt-get install nfs-common); "
                "it is needed to mount hlfs"
            )
        argv = mount_command(self.address, self.export, self.mountpoint, port, self.extra_options)
        self.log.info("mounting: {command}", command=" ".join(argv))
        code, output = yield run(self.reactor, argv)
        if code != 0:
            raise MountError(f"mount failed (exit {code}): {output or 'no message'}")
        entry = self.current()
        if entry is None:
            raise MountError(f"mount reported success but {self.mountpoint} is not in {self.proc_mounts}")
        return missing_cache_options(entry)

    @defer.inlineCallbacks
    def unmount(self, tries=5, delay=1.0):
        """
        Unmount, retrying while busy, then lazily.  Fires with True once
        the mount is gone.
        """
        for attempt in range(tries):
            if self.current() is None:
                return True
            code, output = yield run(self.reactor, [UMOUNT, self.mountpoint])
            if code == 0:
                self.log.info("unmounted {mountpoint}", mountpoint=self.mountpoint)
                return True
            self.log.warn(
                "unmount of {mountpoint} failed ({output}); retrying",
                mountpoint=self.mountpoint, output=output,
            )
            yield task.deferLater(self.reactor, delay)
        code, output = yield run(self.reactor, [UMOUNT, "-l", self.mountpoint])
        if code == 0:
            self.log.warn("{mountpoint} was busy: unmounted lazily", mountpoint=self.mountpoint)
            return True
        self.log.error("cannot unmount {mountpoint}: {output}", mountpoint=self.mountpoint, output=output)
        return False


class MountError(Exception):
    pass



def prepare_mountpoint(mountpoint, linkname, alt_dir, log):
    """
    Step 1 of start-up: make the mount point usable and plant the fixed
    link C{<mountpoint>/<linkname> -> <alt_dir>}, so the spool path leads to
    a real directory while hlfs is not running.
    """
    os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    mode = os.stat(mountpoint).st_mode & 0o7777
    if mode & 0o555 != 0o555:
        os.chmod(mountpoint, mode | 0o555)
        log.info("made {path} world readable and searchable (was {mode:o})", path=mountpoint, mode=mode)
    link = os.path.join(mountpoint, linkname)
    hidden = sorted(set(os.listdir(mountpoint)) - {linkname})
    if hidden:
        log.warn("the mount will hide {names} in {path}", names=", ".join(hidden[:10]), path=mountpoint)
    try:
        current = os.readlink(link)
    except FileNotFoundError:
        os.symlink(alt_dir, link)
        log.info("created the fixed link {link} -> {target}", link=link, target=alt_dir)
    except OSError as e:
        raise MountError(f"{link} exists and is not a symbolic link ({e.strerror})") from None
    else:
        if current != alt_dir:
            os.unlink(link)
            os.symlink(alt_dir, link)
            log.info("replaced the fixed link {link} -> {target}", link=link, target=alt_dir)


def prepare_spool(alt_dir, log):
    """
    The alternate spool is a spool directory: mode 1777, set explicitly
    because twistd's daemon mode runs with umask 077.
    """
    if not os.path.isdir(alt_dir):
        os.makedirs(alt_dir, exist_ok=True)
        os.chmod(alt_dir, 0o1777)
        log.info("created the alternate spool {path}", path=alt_dir)
        return
    mode = os.stat(alt_dir).st_mode & 0o7777
    if mode != 0o1777:
        log.warn(
            "the alternate spool {path} has mode {mode:o}, not 1777: local delivery may fail there",
            path=alt_dir, mode=mode,
        )
