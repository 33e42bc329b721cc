"""
Files of a world-writable spool, handled as a root-run tool must handle
them.

Every file is opened once, relative to the spool's directory descriptor,
with C{O_NOFOLLOW | O_NONBLOCK | O_NOCTTY}: a symbolic link is not
followed, a FIFO or device does not block the open or become a
controlling terminal.  Every decision (type, owner, link count, size) is
taken from C{fstat} of that descriptor, data is read only from it, and
after anything done by name, the name is proved by device and inode to
be the same file before going on.  No user-changeable name is opened
twice.
"""

import errno
import os
import stat

OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

#: Bytes copied per system call.
CHUNK = 1 << 20

#: Room left free in the state directory's file system after a copy.
HEADROOM = 64 << 20


class Skip(Exception):
    """
    One file is left where it is; the message is the reason, for its one
    log line.
    """


def open_entry(dir_fd, name, writable=False):
    """
    Open C{name} in the directory C{dir_fd} once, as described above.

    @return: C{(fd, st)}: the descriptor and its C{fstat}.
    @raise FileNotFoundError: it is gone.
    @raise Skip: it cannot be opened (a symbolic link, a socket, no
        permission).
    """
    flags = (os.O_RDWR if writable else os.O_RDONLY) | OPEN_FLAGS
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Skip("symbolic link; not followed, skipped") from None
        if e.errno in (errno.ENXIO, errno.EISDIR):
            raise Skip("not a regular file; skipped") from None
        raise Skip(f"cannot open: {e.strerror}; skipped") from None
    return fd, os.fstat(fd)


def same_file(a, b):
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def still_named(dir_fd, name, st):
    """
    Whether C{name} in C{dir_fd} is still the file whose C{fstat} is
    C{st} (not followed if it is a link).
    """
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return same_file(now, st)


def is_regular(st):
    return stat.S_ISREG(st.st_mode)


def copy_exactly(src_fd, size, dst_fd):
    """
    Copy the first C{size} bytes of C{src_fd} (read with C{pread}, so its
    offset does not matter) to C{dst_fd}.

    @raise Skip: the source ended before C{size} bytes.
    @raise OSError: a read or write failed.
    """
    offset = 0
    while offset < size:
        chunk = os.pread(src_fd, min(CHUNK, size - offset), offset)
        if not chunk:
            raise Skip(f"shrank from {size} to {offset} bytes while it was being copied; "
                       "left for the next run")
        view = memoryview(chunk)
        while view:
            written = os.write(dst_fd, view)
            view = view[written:]
        offset += len(chunk)


def same_bytes(a_fd, b_fd, size):
    """
    Whether the first C{size} bytes of C{a_fd} and C{b_fd} are equal
    (both read with C{pread}).
    """
    offset = 0
    while offset < size:
        n = min(CHUNK, size - offset)
        a = os.pread(a_fd, n, offset)
        if not a or a != os.pread(b_fd, len(a), offset):
            return False
        offset += len(a)
    return True


def room_for(dir_fd, size):
    """
    Whether the file system of C{dir_fd} has room for C{size} more bytes,
    with L{HEADROOM} to spare.

    @return: C{(fits, free bytes)}.
    """
    vfs = os.statvfs(dir_fd)
    free = vfs.f_bavail * vfs.f_frsize
    return free >= size + HEADROOM, free
