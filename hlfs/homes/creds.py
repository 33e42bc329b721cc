"""
Per-thread filesystem credentials, for probing a home as its owner.

A threaded process must never change its process-wide uid: every thread
would change with it.  Linux keeps the filesystem uid and gid
(C{setfsuid}/C{setfsgid}) and the supplementary groups per thread, but
glibc's C{setgroups()} wrapper broadcasts the change to every thread of
the process (the same mechanism as C{setuid()}).  So this module calls
the raw system calls through C{syscall(2)}, which act on the calling
thread only.

The home checks call L{run_as} in their check processes, which are
single-threaded: the identity is then the process's file system identity
alone, its real, effective and saved uids staying 0.  L{run_as} and
L{as_user} always put the thread's previous credentials back when the
block ends, whatever happened in it.
"""

import ctypes
import os
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
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        return None, None
    # PyDLL keeps the GIL across the call: these system calls never
    # block, and letting go of the GIL a dozen times a check costs more
    # than the calls themselves.
    # The C library this Python already uses (dlopen(NULL)): finding it by
    # name (ctypes.util) would cost every check process 2.6 MB of imports.
    libc = ctypes.PyDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return syscall, numbers


_syscall, _NR = _load()
_local = threading.local()


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
    return _fsuid(_NO_ID), _fsgid(_NO_ID), tuple(os.getgroups())


def _apply(current, wanted, check):
    """
    Move this thread from credentials C{current} (L{None}: unknown) to
    C{wanted}, both C{(fsuid, fsgid, groups)}, making only the calls that
    change something: each costs a new credentials structure in the
    kernel.

    The groups and the gid go first: they need C{CAP_SETGID}, which the
    thread keeps whatever its fsuid (only the filesystem capabilities
    follow the fsuid).

    @param check: read the ids back (setfsuid and setfsgid report failure
        only by not changing the value).
    @raise CredentialsError: if a change did not take.
    """
    uid, gid, groups = wanted
    if current is None or current[2] != groups:
        _setgroups(groups)
    if current is None or current[1] != gid:
        _fsgid(gid)
        if check and _fsgid(_NO_ID) != gid:
            raise CredentialsError(1, f"setfsgid({gid}) did not take")
    if current is None or current[0] != uid:
        _fsuid(uid)
        if check and _fsuid(_NO_ID) != uid:
            raise CredentialsError(1, f"setfsuid({uid}) did not take")


def set_thread_credentials(uid, gid, groups):
    """
    Make this thread's filesystem uid C{uid}, filesystem gid C{gid} and
    supplementary groups C{groups}, checking that each change took.

    @raise CredentialsError: if a change did not take.
    """
    _apply(None, (uid, gid, tuple(groups)), True)


@contextmanager
def as_user(uid, gid, groups=()):
    """
    Run the block with this thread's filesystem identity set to C{uid},
    C{gid} and C{groups}; restore the thread's previous identity after it,
    in a C{finally}.

    A thread's first switch (there and back) reads every id back to
    check it took; later ones trust the kernel, which grants or refuses
    these calls by the thread's capabilities alone, which do not change.

    @raise CredentialsError: if the identity cannot be set.  A failure to
        restore it is also raised: a check must not go on running
        with a user's identity.
    """
    if _syscall is None:
        raise CredentialsError(38, f"per-thread credentials unsupported on {os.uname().machine}")
    base = getattr(_local, "base", None)
    if base is None:
        # A thread's own identity, read once: as_user always puts it back.
        base = _local.base = current()
    check = not getattr(_local, "checked", False)
    wanted = (uid, gid, tuple(groups))
    switched = False
    try:
        _apply(base, wanted, check)
        switched = True
        yield
    finally:
        # After a failed switch the thread's state is unknown: every call.
        _apply(wanted if switched else None, base, check or not switched)
    _local.checked = True


def run_as(uid, gid, groups, function, *args):
    """
    Return C{function(*args)} called with this thread's filesystem
    identity set to C{uid}, C{gid} and C{groups} (a tuple), as in an
    L{as_user} block, without the cost of a generator per call: a check
    process calls this for every job.

    @raise CredentialsError: as L{as_user}.
    """
    if _syscall is None:
        raise CredentialsError(38, f"per-thread credentials unsupported on {os.uname().machine}")
    local = _local
    base = getattr(local, "base", None)
    if base is None:
        base = local.base = current()
    check = not getattr(local, "checked", False)
    wanted = (uid, gid, groups if type(groups) is tuple else tuple(groups))
    switched = False
    try:
        _apply(base, wanted, check)
        switched = True
        result = function(*args)
    finally:
        _apply(wanted if switched else None, base, check or not switched)
    local.checked = True
    return result


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
