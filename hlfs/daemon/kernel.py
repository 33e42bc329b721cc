"""
The kernel NFS client side of the daemon: the mount command hlfs runs on
itself, the /proc/mounts checks around it, and the mount's lifetime.

Reading /proc/mounts never touches the mount point, so it is safe even
while a stale mount of ours (left by a crash) would hang any access to the
directory until this process serves again.
"""

import os
import shutil

from twisted.application.service import MultiService
from twisted.internet import defer, task, utils
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
# every change but root's: its dotlocks, NAME.lock (hlfs.core.locks), and its
# writes to real mailboxes (hlfs.core.mailfiles), which a read-only mount
# would refuse in the client before hlfs is asked.  Synchronous (sync): a
# write() is on the server before it returns, so a full home or a quota
# fails the write() itself, as on a local disk; on an asynchronous mount it
# fails only at fsync() or close(), which some delivery agents ignore
# (OpenSMTPD's mail.local then reports a half-written message delivered).
DEFAULT_OPTIONS = "rw,sync,lookupcache=none,nolock,vers=3,proto=tcp,mountproto=tcp,retry=0"


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


def run(reactor, argv):
    """
    Run a command as a child process, never blocking the reactor: the
    kernel's mount waits for replies only this process can send.  Fires
    with C{(exit code, output)}, the output being its standard output then
    its standard error; the code is L{None} if a signal killed it.
    """
    d = utils.getProcessOutputAndValue(argv[0], argv[1:], env={"PATH": _SEARCH_PATH}, reactor=reactor)

    def ended(result):
        out, err, code = result
        return code, (out + err).decode(errors="replace").strip()

    def killed(failure):
        # getProcessOutputAndValue errbacks with (out, err, signal number).
        if not isinstance(failure.value, tuple):
            return failure
        out, err, signum = failure.value
        text = (out + err).decode(errors="replace").strip()
        return None, (text + "; " if text else "") + f"killed by signal {signum}"

    return d.addCallbacks(ended, killed)


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


class MountService(MultiService):
    """
    The kernel mount of what the child services serve: mounted once they
    have started and C{prepare} (the portmapper registration) has run,
    unmounted before they stop, since the kernel needs their replies for
    both.

    @ivar mounted: whether the kernel has this daemon mounted.
    @ivar reused: set before starting when a mount of ours is still there:
        it is kept, not mounted again, and unmounted at the end.
    @ivar ready: once started, a L{defer.Deferred} firing when mounted
        (or found refused, C{fatal} having been called).
    """

    log = Logger()

    def __init__(self, kernel_mount, port, fatal, allow_attribute_cache=False, prepare=None):
        """
        @param port: a callable returning the port served.
        @param fatal: called with one line when the daemon cannot run.
        """
        MultiService.__init__(self)
        self.kernel_mount = kernel_mount
        self.port = port
        self.fatal = fatal
        self.allow_attribute_cache = allow_attribute_cache
        self.prepare = prepare
        self.mounted = False
        self.reused = False
        self.ready = None

    def startService(self):
        MultiService.startService(self)
        d = defer.maybeDeferred(self.prepare) if self.prepare is not None else defer.succeed(None)
        if self.reused:
            self.mounted = True
        else:
            d.addCallback(lambda _: self._mount(self.port()))
        d.addErrback(lambda f: self.fatal(f"start-up failed: {f.getErrorMessage()}"))
        self.ready = d

    @defer.inlineCallbacks
    def _mount(self, port):
        mountpoint = self.kernel_mount.mountpoint
        try:
            missing = yield self.kernel_mount.mount(port)
        except MountError as e:
            self.fatal(str(e))
            return
        self.mounted = True
        if not missing:
            self.log.info("mounted on {path} with the client's caches off", path=mountpoint)
            return
        if self.allow_attribute_cache:
            self.log.warn(
                "the kernel did not keep {options} on {path}: one user's link may be handed "
                "to another; running anyway (-C)",
                options=",".join(missing), path=mountpoint,
            )
            return
        self.log.error(
            "the kernel did not keep {options} on {path}: one user's link could be handed "
            "to another; unmounting (start with -C to run anyway)",
            options=",".join(missing), path=mountpoint,
        )
        yield self.kernel_mount.unmount()
        self.mounted = False
        self.fatal("refusing to run with the client's caches on")

    def stopService(self):
        d = defer.succeed(None)
        if self.mounted:
            # The children keep serving while the kernel unmounts.
            d.addCallback(lambda _: self.kernel_mount.unmount())
            d.addCallback(self._unmounted)
        d.addCallback(lambda _: MultiService.stopService(self))
        return d

    def _unmounted(self, gone):
        if gone:
            self.mounted = False



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
