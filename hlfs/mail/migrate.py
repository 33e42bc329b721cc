"""
The working directory of earlier versions: C{.lostmail} in the alternate
spool, whose files a run moves into the state directory
(L{hlfs.mail.workarea}) once.

Earlier versions kept their working files in the spool itself, in a
directory of root's, mode 0700.  What is moved, and what is not:

  - C{.lostmail} must be a directory (not a link) of the remailer's uid,
    mode 0700: nobody else could have made or written it.  Anything else
    of that name was planted by a user; it is left alone with one log
    line, and nothing in it is read.
  - Each working file C{W.<time>.<pid>.<name>}, read through one
    descriptor, is copied into the state directory under a key with its
    owner uid (earlier versions renamed the mailbox, so it kept its
    owner), with how far it was resent, then removed.  One owned by
    root is left, as a root-owned mailbox is (see docs/lostmail.md).
    A crash while moving leaves the old file and its copy under the same
    key: the next run finds the copy and only removes the old file.
  - The record of missing users is merged into the state directory's.
  - Temporary files go.  Anything else stays, and the directory with it,
    with one log line; an empty directory is removed.
"""

import errno
import fcntl
import os
import stat

from hlfs.mail.maillog import show
from hlfs.mail.records import MAX_BYTES
from hlfs.mail.spoolfile import OPEN_FLAGS, Skip, copy_exactly, is_regular
from hlfs.mail.statedir import fsync_dir, read_small
from hlfs.mail.workarea import WorkKey

OLD_DIR = b".lostmail"


def _old_name(name):
    # (time, pid, user) of an earlier version's W./S. name, or None.
    fields = name[2:].split(b".", 2)
    if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit() or not fields[2]:
        return None
    return int(fields[0]), int(fields[1]), fields[2]


def open_old(alt_fd, alt_path, log):
    """
    Open the earlier versions' working directory, if there is one we may
    trust (logging why not otherwise).

    @return: its descriptor, or L{None}.
    """
    where = show(os.path.join(alt_path, OLD_DIR))
    try:
        fd = os.open(OLD_DIR, os.O_RDONLY | os.O_DIRECTORY | OPEN_FLAGS, dir_fd=alt_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = e.strerror
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_DIRECTORY answers ENOTDIR for a link too: say which.
            try:
                link = stat.S_ISLNK(os.stat(OLD_DIR, dir_fd=alt_fd, follow_symlinks=False).st_mode)
            except OSError:
                link = False
            why = "a symbolic link" if link else "not a directory"
        log(f"{where}: {why}, not the working directory of an earlier version; left alone")
        return None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        log(f"{where}: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}: not the "
            "working directory of an earlier version; left alone, nothing in it read")
        return None
    return fd


def old_work_files(old_fd):
    """
    The working files of an earlier version: C{[(name, (time, pid, user))]}.
    """
    found = []
    for name in sorted(os.fsencode(n) for n in os.listdir(old_fd)):
        if name.startswith(b"W."):
            parsed = _old_name(name)
            if parsed is not None:
                found.append((name, parsed))
    return found


def old_offset(old_fd, name):
    try:
        text = (read_small(old_fd, b"S." + name[2:], 64) or b"").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def migrate(alt_fd, alt_path, area, missing, log):
    """
    Move what an earlier version left in C{.lostmail} into C{area}
    (a L{hlfs.mail.workarea.WorkArea}), merging its record into
    C{missing}.

    @return: the number of working files left for an administrator.
    """
    old_fd = open_old(alt_fd, alt_path, log)
    if old_fd is None:
        return 0
    where = show(os.path.join(alt_path, OLD_DIR))
    moved = stuck = 0
    try:
        try:
            fcntl.flock(old_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{where}: in use by a run of an earlier version; moved at a later run")
            return 0
        for name, (time_ns, pid, user) in old_work_files(old_fd):
            if _move(old_fd, name, time_ns, pid, user, area, where, log):
                moved += 1
            else:
                stuck += 1
        try:
            data = read_small(old_fd, b"missing", MAX_BYTES)
        except FileNotFoundError:
            data = None
        if data is not None:
            missing.merge(data)
            os.unlink(b"missing", dir_fd=old_fd)
        for name in os.listdir(old_fd):
            if name.startswith("T."):
                os.unlink(name, dir_fd=old_fd)
        fsync_dir(old_fd)
        left = os.listdir(old_fd)
    finally:
        os.close(old_fd)
    if left:
        log(f"{where}: {len(left)} entries of an earlier version not moved; left there")
    else:
        try:
            os.rmdir(OLD_DIR, dir_fd=alt_fd)
            fsync_dir(alt_fd)
        except OSError:
            pass
    if moved:
        log(f"{where}: {moved} working files of an earlier version moved to {show(area.path)}")
    return stuck


def _move(old_fd, name, time_ns, pid, user, area, where, log):
    try:
        fd = os.open(name, os.O_RDONLY | OPEN_FLAGS, dir_fd=old_fd)
    except OSError as e:
        log(f"{where}/{show(name)}: cannot open: {e.strerror}; left there")
        return False
    try:
        st = os.fstat(fd)
        if not is_regular(st) or st.st_uid == 0:
            log(f"{where}/{show(name)}: {'owned by root' if is_regular(st) else 'not a file'}; "
                "not moved, left for an administrator")
            return False
        key = WorkKey(time_ns, pid, st.st_uid, user)
        exists = True
        try:
            os.stat(key.work, dir_fd=area.fd, follow_symlinks=False)
        except FileNotFoundError:
            exists = False
        if not exists:
            copying = key.name(b"C")
            out = os.open(copying, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | OPEN_FLAGS, 0o600,
                          dir_fd=area.fd)
            try:
                copy_exactly(fd, st.st_size, out)
                os.fsync(out)
            except (Skip, OSError) as e:
                os.unlink(copying, dir_fd=area.fd)
                log(f"{where}/{show(name)}: cannot copy it: {getattr(e, 'strerror', None) or e}; "
                    "left there")
                return False
            finally:
                os.close(out)
            area.write_offset(key, old_offset(old_fd, name))
            os.rename(copying, key.work, src_dir_fd=area.fd, dst_dir_fd=area.fd)
            fsync_dir(area.fd)
    finally:
        os.close(fd)
    os.unlink(name, dir_fd=old_fd)
    try:
        os.unlink(b"S." + name[2:], dir_fd=old_fd)
    except FileNotFoundError:
        pass
    fsync_dir(old_fd)
    return True
