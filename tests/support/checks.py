"""
The home-check engine for tests: real check processes started under the
session's reactor (L{tests.support.probes.ReactorThread}), and a way to
count, from outside, the check files a home sees created (inotify).
"""

import ctypes
import ctypes.util
import os
import struct
import sys

from hlfs.homes.engine import CheckEngine
from tests.support.probes import wait_for

#: The forker of a stand-in check process (L{tests.support.standin_checker}).
STANDIN = [sys.executable, "-m", "tests.support.standin_checker"]


def started_engine(rt, size=2, clock=None, stuck_after=1.0, argv=None, **kwargs):
    """
    Return a L{CheckEngine} of C{size} processes on C{rt}'s reactor (its
    deadlines on C{clock}, the reactor's by default), once they have all
    started.
    """
    engine = CheckEngine(size, rt.reactor, clock=clock, stuck_after=stuck_after, argv=argv,
                         **kwargs)
    rt.result(rt.begin(engine.start), timeout=30)
    return engine


def stop_engine(rt, engine):
    """
    Stop C{engine} and wait until none of its processes is left.
    """
    pids = rt.call(engine.processes.pids)
    rt.call(engine.stop)
    for pid in pids:
        wait_for(lambda: gone(pid), timeout=10)


def gone(pid):
    """
    Whether process C{pid} has ended (or is a zombie).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:  # ENOENT, or ESRCH when it ends between open and read
        return True


def ids(pid, key):
    """
    The C{Uid}, C{Gid} or C{Groups} line of C{/proc/PID/status} (real,
    effective, saved, filesystem).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return tuple(int(v) for v in line.split()[1:])
    raise KeyError(key)


_IN_CREATE = 0x100
_EVENT = struct.Struct("iIII")


class CreatedFiles:
    """
    Count the files created in directories, by name, through inotify:
    what the kernel saw, whatever became of the files.
    """

    def __init__(self):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches = {}
        self.created = {}

    def watch(self, directory):
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), _IN_CREATE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.watches[wd] = os.fsencode(directory)
        self.created[os.fsencode(directory)] = []

    def read(self):
        """
        Take the events so far; return C{created}: directory -> names.
        """
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return self.created
            at = 0
            while at < len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size:at + _EVENT.size + length].rstrip(b"\0")
                at += _EVENT.size + length
                if mask & _IN_CREATE and wd in self.watches:
                    self.created[self.watches[wd]].append(name)

    def close(self):
        os.close(self.fd)
