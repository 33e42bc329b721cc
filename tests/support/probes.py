"""
Real filesystems and a running reactor for the home probe tests.

The reactor runs in a thread of its own for the whole session; a test
hands it work with L{ReactorThread.call} and waits, with a timeout, for
the answer.  Homes are real directories owned by real (numeric) uids,
on tmpfs, on a FUSE mount the test can freeze, or on the test's disk.
"""

import os
import queue
import shutil
import tempfile
import threading
import time

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from hlfs.core.users import UserTable
from hlfs.homes import reload as reloads
from hlfs.homes.tableload import load_in_subprocess

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

    def begin(self, f, *args):
        """
        Run C{f(*args)} in the reactor thread and return what it returned
        as it is: an answer given at once, or a Deferred not waited for
        (see L{pending} and L{result}).
        """
        return self.call(lambda: [f(*args)])[0]

    def pending(self, d):
        """
        Return whether Deferred C{d} has not fired yet.
        """
        return not self.call(lambda: [d.called])[0]

    def result(self, d, timeout=10.0):
        """
        Wait for Deferred C{d} (from L{begin}) and return its result; the
        timeout is a hang guard.
        """
        return self.call(lambda: d, timeout=timeout)


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

    def spool_to_freeze(self, name, uid):
        """
        Make the user C{name}'s spool directory and, beside it, a source
        directory of the user's for a L{tests.support.filesystems.frozen_mount}
        over that spool; return C{(source, spool)} as str.
        """
        spool = os.fsdecode(self.spool(name))
        source = os.path.join(self.base, f"{name}-spool-src")
        os.mkdir(spool)
        os.mkdir(source, 0o700)
        os.chown(source, uid, uid)
        return source, spool

    def write_passwd(self, path, extra=0):
        """
        Write a password file of these users and C{extra} generated ones
        (uids from 100000, homes that do not exist).
        """
        with open(path, "wb") as f:
            for name, uid, home in self.users:
                f.write(b"%s:x:%d:%d::%s:/bin/sh\n" % (name, uid, uid, home))
            for n in range(extra):
                f.write(b"gen%d:x:%d:100::/nonexistent/gen%d:/bin/sh\n" % (n, 100000 + n, n))

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)


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


class Gate:
    """
    A point a thread stops at until the test opens it: C{gate()} records
    the calling thread, sets C{reached}, and waits (a hang guard of 30 s)
    for L{open}.
    """

    def __init__(self):
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.threads = []

    def __call__(self):
        self.threads.append(threading.get_native_id())
        self.reached.set()
        if not self.opened.wait(30):
            raise TimeoutError("the gate was never opened")

    def open(self):
        self.opened.set()

    def guarding(self, f):
        """
        Return C{f} behind this gate: the call waits at the gate first.
        """

        def gated(*args, **kwargs):
            self()
            return f(*args, **kwargs)

        return gated


def reload_while_serving(rt, resolver, passwd, served, monkeypatch, at_least=10):
    """
    Reload C{resolver} from C{passwd}, holding the reload in its thread
    twice: once loaded, and again as it remaps the per-user state.  At
    each hold, wait until the reactor has added C{at_least} more entries
    to C{served} while the reload is still pending, then let it go on.

    @return: the new table, and the native ids of the threads the reload
        was held in.
    """
    loaded, remapping = Gate(), Gate()
    monkeypatch.setattr(reloads, "remap", remapping.guarding(reloads.remap))

    def load():
        table = load_in_subprocess(passwd)
        loaded()
        return table

    d = rt.begin(resolver.reload, load)
    for gate in (loaded, remapping):
        assert gate.reached.wait(60), "the reload did not get that far"
        before = len(served)
        wait_for(lambda: len(served) >= before + at_least, timeout=30)
        assert rt.pending(d), "the reload did not wait at the hold"
        gate.open()
    return rt.result(d, timeout=60), loaded.threads + remapping.threads


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
