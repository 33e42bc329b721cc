"""
Real filesystems for tests: a small tmpfs that can be filled to the last
byte (a full disk), and a FUSE (bindfs) mount that can be frozen (a hung
home).  Every mount is undone when its block ends.
"""

import contextlib
import os
import signal
import subprocess
import time
from contextlib import contextmanager

from tests.support.processes import stop_process

@contextlib.contextmanager
def tmpfs(path, size="64k"):
    """
    Mount a tmpfs of C{size} (mount(8) syntax) on C{path}; unmount after.
    """
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path], check=True, timeout=10)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False, timeout=10)


def fill(directory):
    """
    Fill the file system holding C{directory} to the last byte.
    """
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        while True:
            try:
                if not f.write(b"\0"):
                    break
            except OSError:
                break
    return path


def run(cmd, timeout=10):
    return subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)


class FrozenMount:
    """
    A bindfs (FUSE) mirror of a directory, whose server process the test
    can stop (SIGSTOP): every operation on the mount then hangs, as on a
    dead NFS server with a hard mount.
    """

    def __init__(self, source, mountpoint):
        self.source = source
        self.mountpoint = mountpoint
        self.proc = None
        self.frozen = False

    def start(self, timeout=10):
        os.makedirs(self.mountpoint, exist_ok=True)
        self.proc = subprocess.Popen(
            ["bindfs", "-f", self.source, self.mountpoint],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not self._mounted():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bindfs exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("bindfs did not mount")
            time.sleep(0.02)
        return self

    def _mounted(self):
        # From the mount table: never stat the mount point, it may hang.
        target = os.path.realpath(self.mountpoint)
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == target for line in f)

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self):
        """
        Thaw and unmount, whatever state the mount is in.
        """
        self.thaw()
        if self.proc is None:
            return
        subprocess.run(["fusermount", "-u", self.mountpoint], timeout=10, capture_output=True)
        if self._mounted():
            subprocess.run(["umount", "-l", self.mountpoint], timeout=10, capture_output=True)
        stop_process(self.proc, timeout=5)
        self.proc.stderr.close()


@contextmanager
def frozen_mount(source, mountpoint):
    """
    A L{FrozenMount} for the block; always thawed and unmounted after it.
    """
    mount = FrozenMount(source, mountpoint)
    try:
        yield mount.start()
    finally:
        mount.stop()
