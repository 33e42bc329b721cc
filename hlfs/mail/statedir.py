"""
The remailer's state directory: where only root can create files.

C{hlfs lostmail} keeps its working copies of mailboxes, how far each has
been resent, and its records (names missing from the name service, locks
seen held) in a directory of its own, by default
C{/var/lib/hlfs/lostmail} (the unit's C{StateDirectory=}), never in the
world-writable spool.  It refuses one that anybody else could change:
the directory must belong to the remailer's uid with no group or other
permission, and every directory above it must belong to root (or that
uid) and be writable by nobody else, unless sticky (as C{/tmp} is: there
nobody else may rename or remove what root made).  It is opened one
component at a time with C{O_NOFOLLOW}, so no symbolic link is followed
on the way.

Each alternate spool gets a subdirectory named after its path, escaped
as C{systemd-escape --path} does (C{/var/alt_mail} is C{var-alt_mail}),
so two instances with different spools never share state.

Everything here works on directory descriptors: a name is looked up in a
directory already checked, never by a path walked again.
"""

import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ESCAPE_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


class StateDirError(Exception):
    """
    The state directory cannot be used; the message is one log line.
    """


def spool_key(path):
    """
    The name of an alternate spool's subdirectory: its absolute path
    (C{bytes}) escaped as C{systemd-escape --path} does.
    """
    path = os.path.normpath(os.path.abspath(path)).strip(b"/")
    if not path:
        return b"-"
    out = bytearray()
    for i, byte in enumerate(path):
        if byte == ord("/"):
            out += b"-"
        elif byte in _ESCAPE_KEEP and not (i == 0 and byte == ord(".")):
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out)


def _trusted_parent(st, euid):
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid in (0, euid)
        and (not st.st_mode & 0o022 or st.st_mode & stat.S_ISVTX)
    )


def _private(st, euid):
    return stat.S_ISDIR(st.st_mode) and st.st_uid == euid and not st.st_mode & 0o077


def _describe(path, st):
    return (f"{os.fsdecode(path)} (mode {stat.S_IMODE(st.st_mode):04o}, "
            f"owner uid {st.st_uid})")


def open_private_dir(path, create=False):
    """
    Open the state directory C{path}, checking it and every directory
    above it as described above; with C{create}, missing directories are
    made (those above it mode 0755, it mode 0700).

    @return: its descriptor, or L{None} when it does not exist (only
        without C{create}).
    @raise StateDirError: it may not be used (the message says why).
    """
    path = os.fsencode(path)
    if not path.startswith(b"/"):
        raise StateDirError(f"state directory {os.fsdecode(path)} is not an absolute path")
    euid = os.geteuid()
    parts = [p for p in path.split(b"/") if p]
    if any(p in (b".", b"..") for p in parts):
        raise StateDirError(f"state directory {os.fsdecode(path)} has . or .. in it")
    fd = os.open(b"/", _DIR_FLAGS)
    done = b""
    try:
        for i, part in enumerate(parts):
            st = os.fstat(fd)
            if not _trusted_parent(st, euid):
                raise StateDirError(
                    f"{_describe(done or b'/', st)} may be changed by others: every directory "
                    "above the state directory must belong to root and be writable by no one "
                    "else; refusing to use it")
            last = i == len(parts) - 1
            try:
                child = _open_child(fd, part, create, 0o700 if last else 0o755)
            except OSError as e:
                where = os.fsdecode(done + b"/" + part)
                if e.errno == errno.ENOTDIR and _is_link(fd, part):
                    e.errno = errno.ELOOP  # O_DIRECTORY answers ENOTDIR for a link
                if e.errno == errno.ELOOP:
                    raise StateDirError(f"{where} is a symbolic link: give the state "
                                        "directory's real path") from None
                if e.errno == errno.ENOTDIR:
                    raise StateDirError(f"{where} is not a directory") from None
                raise StateDirError(f"state directory {where}: {e.strerror}") from None
            os.close(fd)
            fd = child
            done += b"/" + part
            if fd is None:
                return None
        check_private(fd, path)
        return fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


def _is_link(dir_fd, name):
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_child(dir_fd, name, create, mode):
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            return None
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        os.fchmod(fd, mode)  # whatever the umask
        return fd
    except FileExistsError:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def check_private(fd, path):
    """
    @raise StateDirError: the directory open as C{fd} is not private to
        this process's uid.
    """
    st = os.fstat(fd)
    if not _private(st, os.geteuid()):
        raise StateDirError(
            f"state directory {_describe(path, st)} is not private: it must be a directory "
            f"of uid {os.geteuid()} that no one else may use (mode 0700); refusing to use it")


def open_subdir(dir_fd, name, path, create=False):
    """
    Open (or with C{create} make) the private subdirectory C{name} of the
    checked directory C{dir_fd}; C{path} names it in messages.

    @return: its descriptor, or L{None} when it does not exist.
    @raise StateDirError: it is not a private directory.
    """
    try:
        fd = _open_child(dir_fd, name, create, 0o700)
    except OSError as e:
        raise StateDirError(f"{os.fsdecode(path)}: {e.strerror}") from None
    if fd is not None:
        try:
            check_private(fd, path)
        except BaseException:
            os.close(fd)
            raise
    return fd


def fsync_dir(fd):
    """
    Make the renames and removals in the directory open as C{fd} durable;
    best effort.
    """
    try:
        os.fsync(fd)
    except OSError:
        pass


def write_atomically(dir_fd, temporary, final, data):
    """
    Replace C{final} in the directory C{dir_fd} by C{data}: a reader, or
    the next run after a crash, sees the old contents or the new, never
    a mixture.
    """
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _FILE_FLAGS, 0o600,
                 dir_fd=dir_fd)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    fsync_dir(dir_fd)


def read_small(dir_fd, name, limit):
    """
    Read the regular file C{name} of the directory C{dir_fd}, without
    following a link or blocking on a FIFO.

    @return: its bytes, L{None} if it is not a regular file or longer
        than C{limit} bytes.
    @raise FileNotFoundError: there is no such file.
    @raise OSError: it cannot be read.
    """
    fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data if len(data) <= limit else None
