"""
Per-thread filesystem credentials, for probing a home as its owner.

A threaded process must never change its process-wide uid: every thread
would change with it.  Linux keeps the filesystem uid and gid
(C{setfsuid}/C{setfsgid}) and the supplementary groups per thread, but
glibc's C{setgroups()} wrapper broadcasts the change to every thread of
the process (the same mechanism as C{setuid()}).  So this module calls
the raw system calls through C{syscall(2)}, which act on the calling
thread only.

Use L{as_user} in a pool thread; it always puts the thread's previous
credentials back when the block ends, whatever happened in it.
"""

import ctypes
import ctypes.util
import os
import platform
import threading
from contextlib import contextmanager

# System call numbers; the 32-bit-id variants on architectures that have
# both.
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152},
}

NGROUPS_MAX = 65536
_NO_ID = 0xFFFFFFFF  # (uid_t)-1: setfsuid/setfsgid then only report


class CredentialsError(OSError):
    """
    The thread's credentials could not be set or restored.
    """


def _load():
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None, None
    # PyDLL keeps the GIL across the call: these system calls never
    # block, and letting go of the GIL a dozen times a probe makes probe
    # threads queue for it behind each other.
    libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return syscall, numbers


_syscall, _NR = _load()
_base = threading.local()


def supported():
    """
    Return whether per-thread credentials are available on this machine.
    """
    return _syscall is not None


def _fsuid(uid):
    return _syscall(_NR["setfsuid"], ctypes.c_uint(uid)) & 0xFFFFFFFF


def _fsgid(gid):
    return _syscall(_NR["setfsgid"], ctypes.c_uint(gid)) & 0xFFFFFFFF


def _setgroups(groups):
    groups = list(groups)
    array = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _syscall(_NR["setgroups"], ctypes.c_size_t(len(groups)), array) != 0:
        err = ctypes.get_errno()
        raise CredentialsError(err, f"setgroups: {os.strerror(err)}")


def current():
    """
    Return this thread's C{(fsuid, fsgid, groups)}.
    """
    return _fsuid(_NO_ID), _fsgid(_NO_ID), os.getgroups()


def set_thread_credentials(uid, gid, groups):
    """
    Make this thread's filesystem uid C{uid}, filesystem gid C{gid} and
    supplementary groups C{groups}.

    The order matters: the groups and gid need C{CAP_SETGID}, which a
    thread keeps when its fsuid changes (only the filesystem capabilities
    follow the fsuid), but set them first anyway so a failure leaves the
    thread's uid alone.

    @raise CredentialsError: if a change did not take (setfsuid and
        setfsgid report failure only by not changing the value).
    """
    _setgroups(groups)
    _fsgid(gid)
    if _fsgid(_NO_ID) != gid:
        raise CredentialsError(1, f"setfsgid({gid}) did not take")
    _fsuid(uid)
    if _fsuid(_NO_ID) != uid:
        raise CredentialsError(1, f"setfsuid({uid}) did not take")


@contextmanager
def as_user(uid, gid, groups=()):
    """
    Run the block with this thread's filesystem identity set to C{uid},
    C{gid} and C{groups}; restore the thread's previous identity after it,
    in a C{finally}.

    @raise CredentialsError: if the identity cannot be set.  A failure to
        restore it is also raised: a pool thread must not go on running
        with a user's identity.
    """
    if _syscall is None:
        raise CredentialsError(38, f"per-thread credentials unsupported on {platform.machine()}")
    saved = getattr(_base, "credentials", None)
    if saved is None:
        # A thread's own identity, read once: as_user always puts it back.
        saved = _base.credentials = current()
    try:
        set_thread_credentials(uid, gid, groups)
        yield
    finally:
        set_thread_credentials(*saved)


def thread_status(tid=None):
    """
    Return the C{Uid}, C{Gid} and C{Groups} lines of
    C{/proc/self/task/TID/status} as a dict of tuples of ints (the
    kernel's view of a thread: real, effective, saved, filesystem).
    """
    tid = threading.get_native_id() if tid is None else tid
    fields = {}
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                fields[key] = tuple(int(v) for v in value.split())
    return fields
