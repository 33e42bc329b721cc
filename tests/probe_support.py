"""
Real filesystems and a running reactor for the home probe tests.

The reactor runs in a thread of its own for the whole session; a test
hands it work with L{ReactorThread.call} and waits, with a timeout, for
the answer.  Homes are real directories owned by real (numeric) uids,
on tmpfs, on a FUSE mount the test can freeze, or on the test's disk.
"""

import errno
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager

import pytest
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from hlfs.users import UserTable

FIRST_UID = 42001


class ReactorThread:
    """
    The global reactor, running in a daemon thread.
    """

    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.tid = None
        started = threading.Event()

        def run():
            self.tid = threading.get_native_id()
            reactor.callWhenRunning(started.set)
            reactor.run(installSignalHandlers=False)

        self.thread = threading.Thread(target=run, name="reactor", daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the reactor did not start")

    def call(self, f, *args, timeout=10.0, **kwargs):
        """
        Run C{f(*args, **kwargs)} in the reactor thread; return its result
        (waiting for a Deferred) or raise its exception.

        @raise TimeoutError: if there is no answer in C{timeout} seconds.
        """
        answers = queue.Queue()

        def go():
            d = defer.maybeDeferred(f, *args, **kwargs)
            d.addBoth(answers.put)

        self.reactor.callFromThread(go)
        try:
            result = answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from {f!r} in {timeout} s") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def timed(self, f, *args, timeout=10.0):
        """
        Like L{call}, and also return how long the answer took, measured
        in the reactor thread (so the test thread's scheduling does not
        count).
        """

        def go():
            start = time.monotonic()
            d = defer.maybeDeferred(f, *args)
            return d.addCallback(lambda r: (r, time.monotonic() - start))

        return self.call(go, timeout=timeout)


class Homes:
    """
    A directory of homes for numeric test users, and their user table.
    """

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="hlfs-probe-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.users = []
        self.alt = os.path.join(self.base, "alt_mail")
        os.mkdir(self.alt)

    def add(self, name, home=None, uid=None, make=True):
        """
        Add a user (and, with C{make}, its home owned by it); return the
        uid.
        """
        uid = FIRST_UID + len(self.users) if uid is None else uid
        home = os.path.join(self.base, "home", name) if home is None else home
        if make:
            os.makedirs(home, exist_ok=True)
            os.chown(home, uid, uid)
            os.chmod(home, 0o755)
        self.users.append((os.fsencode(name), uid, os.fsencode(home)))
        return uid

    def table(self):
        return UserTable(self.users)

    def spool(self, name):
        for n, _, home in self.users:
            if n == os.fsencode(name):
                return home + b"/.mailspool"
        raise KeyError(name)

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def homes():
    """
    A L{Homes} for one test, removed after it.
    """
    h = Homes()
    yield h
    h.cleanup()


@pytest.fixture(scope="module")
def rt():
    """
    The reactor running in its background thread.
    """
    return ReactorThread.get()


class LogCapture:
    """
    Collect the formatted log lines of one namespace.
    """

    def __init__(self, namespace="hlfs.probe"):
        self.namespace = namespace
        self.lines = []

    def __call__(self, event):
        if event.get("log_namespace") == self.namespace:
            self.lines.append(formatEvent(event))

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)

    def matching(self, *words):
        return [line for line in self.lines if all(w in line for w in words)]


def run(cmd, timeout=10):
    return subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)


@contextmanager
def tmpfs(path, size="64k"):
    """
    Mount a tmpfs of C{size} on C{path} for the block.
    """
    os.makedirs(path, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path])
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], timeout=10)


def fill(directory):
    """
    Fill the filesystem holding C{directory} (as root) until it is full;
    return the file that holds the space.
    """
    path = os.path.join(directory, "ballast")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path


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
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
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


def thread_ids():
    """
    Return the native ids of every thread of this process.
    """
    return [int(t) for t in os.listdir("/proc/self/task")]


def wait_for(predicate, timeout=10.0, interval=0.01):
    """
    Poll C{predicate} until it is true; raise L{TimeoutError} after
    C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
