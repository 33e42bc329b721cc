"""
The NFS-safe local delivery agent behind C{hlfs deliver} that writes as the
recipient.

Through hlfs, C{/var/spool/mail/USER} is C{~USER/.mailspool/USER} on a
file server that maps root to nobody, so only a process running with the
recipient's uid can write it.  This agent reads one message on stdin,
then for each recipient forks a child that switches to the recipient's
credentials and appends the message to the mailbox in mboxrd format,
under a dotlock and an C{fcntl} lock (L{hlfs.mail.dotlock}).  The parent
never changes its own credentials.

Exit status follows sysexits(3), as MTAs expect from a local delivery
agent: C{EX_TEMPFAIL} keeps the message queued for a retry.
"""

import errno
import os
import signal
import stat
import sys
import tempfile
import time

from hlfs.mail import accounts, mbox
from hlfs.mail.maillog import LOG_ERR, LOG_WARNING, show
from hlfs.mail.dotlock import DotLock, LockError, LockTimeout, lock_fd, unlock_fd

EX_OK = 0
EX_USAGE = 64
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77

DEFAULT_SPOOL = "/var/spool/mail"

WRITE_BATCH = 64 * 1024


class DeliveryFailure(Exception):
    """
    Delivery to one recipient failed.

    @ivar code: the sysexits code.
    @ivar reason: a short human-readable cause.
    """

    def __init__(self, code, reason):
        Exception.__init__(self, reason)
        self.code = code
        self.reason = reason


def spool_message(stream):
    """
    Copy the message from C{stream} to a private, already unlinked
    temporary file, so every recipient gets the same bytes.  An envelope
    C{From_} line at the top is not part of the message: it is left out,
    and its sender returned.

    @return: C{(fd, size, sender)}, C{sender} L{None} without such a line.
    @raise DeliveryFailure: the temporary file cannot be written.
    """
    try:
        sender, head = mbox.read_envelope(stream)
        f = tempfile.TemporaryFile()
        f.write(head)
        size = len(head)
        while True:
            chunk = stream.read(WRITE_BATCH)
            if not chunk:
                break
            f.write(chunk)
            size += len(chunk)
        f.flush()
        fd = os.dup(f.fileno())
        f.close()
        return fd, size, sender
    except OSError as e:
        raise DeliveryFailure(EX_TEMPFAIL, f"cannot spool the message: {e.strerror}") from None


def pread_lines(fd, size):
    """
    Yield the lines of the first C{size} bytes of C{fd}, reading with
    C{pread} so the shared file offset does not matter.
    """
    offset = 0
    pending = b""
    while offset < size:
        chunk = os.pread(fd, min(WRITE_BATCH, size - offset), offset)
        if not chunk:
            break
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def _reason(e):
    return e.strerror or str(e)


def _code_for(e):
    """
    Every file system error defers the mail: full disks, quotas and homes
    on a server that is down must be retried, and for anything stranger a
    queued message with a log line beats a bounce.
    """
    return EX_TEMPFAIL


def open_mailbox(path, uid):
    """
    Open (or create, mode 0600) the mailbox at C{path} for writing,
    refusing anything but a regular file with one link owned by C{uid}.

    @return: C{(fd, created)}.
    @raise DeliveryFailure: refused or failed.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    for _ in range(3):
        created = False
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
                # Whatever the umask, a new mailbox is private.
                os.fchmod(fd, 0o600)
            except FileExistsError:
                continue
            except OSError as e:
                raise DeliveryFailure(_code_for(e), f"cannot create mailbox: {_reason(e)}") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DeliveryFailure(EX_TEMPFAIL, "mailbox is a symbolic link; refused") from None
            if e.errno in (errno.ENXIO, errno.EISDIR):
                raise DeliveryFailure(EX_TEMPFAIL, "mailbox is not a regular file; refused") from None
            raise DeliveryFailure(_code_for(e), f"cannot open mailbox: {_reason(e)}") from None
        try:
            _check_mailbox(fd, path, uid)
        except BaseException:
            os.close(fd)
            raise
        return fd, created
    raise DeliveryFailure(EX_TEMPFAIL, "mailbox keeps appearing and vanishing")


def _check_mailbox(fd, path, uid):
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise DeliveryFailure(EX_TEMPFAIL, "mailbox is not a regular file; refused")
    if st.st_nlink != 1:
        raise DeliveryFailure(
            EX_TEMPFAIL, f"mailbox has {st.st_nlink} hard links; refused"
        )
    if st.st_uid != uid:
        raise DeliveryFailure(
            EX_TEMPFAIL, f"mailbox is owned by uid {st.st_uid}, not the recipient; refused"
        )
    try:
        now = os.lstat(path)
    except OSError as e:
        raise DeliveryFailure(EX_TEMPFAIL, f"mailbox vanished: {_reason(e)}") from None
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise DeliveryFailure(EX_TEMPFAIL, "mailbox was replaced while opening; refused")


def append_message(fd, chunks):
    """
    Append C{chunks} at the end of C{fd}; on a failure, truncate back so
    no partial message remains, but only while every byte past the
    start is one this delivery wrote.

    If the size found after the write is not the one expected, another
    writer changed the mailbox meanwhile (it ignored the locks, or this
    client's idea of the size was stale): what is past the start is not
    all ours, so the mailbox is left as it is, and the delivery is
    deferred.  The message may then be delivered twice; no other mail
    is erased, and a mailbox that shrank is never padded out again.

    @return: the number of bytes written.
    @raise DeliveryFailure: the write, fsync or size check failed.
    """
    start = os.fstat(fd).st_size
    tail = os.pread(fd, 2, max(start - 2, 0))
    written = attempted = 0
    try:
        separator = mbox.separator_needed(tail)
        batch = bytearray(separator)
        for chunk in chunks:
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                attempted = written + len(batch)
                written += _pwrite_all(fd, bytes(batch), start + written)
                batch.clear()
        if batch:
            attempted = written + len(batch)
            written += _pwrite_all(fd, bytes(batch), start + written)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    except BaseException as e:
        _truncate_back(fd, start, start + attempted)
        if isinstance(e, OSError):
            raise DeliveryFailure(_code_for(e), f"write failed: {_reason(e)}") from None
        raise
    if size != start + written:
        raise DeliveryFailure(
            EX_TEMPFAIL,
            f"mailbox size is {size}, expected {start + written}; "
            "another writer changed it meanwhile; left as it is",
        )
    return written


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n
    return done


def _truncate_back(fd, start, end):
    """
    Truncate C{fd} back to C{start} if its size is between C{start} and
    C{end} (what this delivery may have written): never past another
    writer's bytes, and never out (a shorter file would be padded).
    """
    try:
        size = os.fstat(fd).st_size
        if start < size <= end:
            os.ftruncate(fd, start)
            os.fsync(fd)
    except OSError:
        pass


def _remove_if_same(path, fd):
    """
    Remove the mailbox a failed delivery created, so a failure leaves no
    trace; only if C{path} is still the file we hold.
    """
    try:
        st = os.fstat(fd)
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and st.st_size == 0:
            os.unlink(path)
    except OSError:
        pass


def mailbox_path(spool, name):
    """
    Return C{spool}/C{name}, or the mailbox it names when it is one of
    hlfs's per-user links: root (and an HLFS_GID caller) sees the spool as
    hlfs's own directory, where C{NAME -> ~NAME/<subdir>/NAME}.  The lock
    must be made next to the real mailbox, where the user's reader looks
    for it; hlfs's directory is read-only.

    Such a link is followed once, and only when the link and its directory
    belong to root and nobody else may write the directory (as Postfix
    trusts a root-owned link): a link a user planted is still refused.
    """
    path = os.path.join(spool, name)
    try:
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode) or link.st_uid != 0:
            return path
        directory = os.stat(spool)
        if directory.st_uid != 0 or directory.st_mode & 0o022:
            return path
        target = os.readlink(path)
    except OSError:
        return path
    return target if target.startswith(b"/") else path


def deliver_to(spool, name, uid, message_fd, message_size, sender, when, options, log):
    """
    Deliver the spooled message into C{spool}/C{name}, with the current
    credentials, which must be the recipient's.

    @return: C{(path, bytes written)}.
    @raise DeliveryFailure: on any failure, with the mailbox unchanged.
    """
    spool = os.fsencode(spool)
    path = mailbox_path(spool, name)
    try:
        st = os.stat(spool)
    except OSError as e:
        raise DeliveryFailure(EX_TEMPFAIL, f"spool directory unreachable: {_reason(e)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DeliveryFailure(EX_TEMPFAIL, "spool path is not a directory")
    lock = DotLock(
        path + b".lock",
        timeout=options.lock_timeout,
        stale_after=options.stale_after,
        log=log,
    )
    try:
        lock.acquire()
    except LockTimeout as e:
        raise DeliveryFailure(EX_TEMPFAIL, str(e)) from None
    except LockError as e:
        raise DeliveryFailure(EX_TEMPFAIL, str(e)) from None
    try:
        fd, created = open_mailbox(path, uid)
        try:
            try:
                lock_fd(fd, timeout=options.lock_timeout)
            except LockError as e:
                raise DeliveryFailure(EX_TEMPFAIL, str(e)) from None
            chunks = mbox.message_chunks(
                mbox.from_line(sender, when), pread_lines(message_fd, message_size)
            )
            written = append_message(fd, chunks)
            unlock_fd(fd)
        except BaseException:
            if created:
                _remove_if_same(path, fd)
            raise
        finally:
            os.close(fd)
    finally:
        lock.release()
    return path, written


def switch_credentials(account, groups):
    """
    Become the recipient: groups first, then gid, then uid, so nothing
    of root's remains.
    """
    os.setgroups(groups)
    os.setgid(account.gid)
    os.setuid(account.uid)
    if os.getuid() != account.uid or os.geteuid() != account.uid:
        raise DeliveryFailure(EX_TEMPFAIL, "credential switch did not stick")


def _child(account, groups, must_switch, message_fd, message_size, sender, options, when, log):
    """
    Body of the per-recipient child; never returns.
    """
    display = show(account.name)
    path = show(os.path.join(os.fsencode(options.spool), account.name))
    code = EX_SOFTWARE
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if must_switch:
            switch_credentials(account, groups)
        path, written = deliver_to(
            options.spool, account.name, account.uid, message_fd, message_size,
            sender, when, options, log,
        )
        log(f"{display}: {show(path)}: {written} bytes: delivered")
        code = EX_OK
    except DeliveryFailure as e:
        log(f"{display}: {path}: 0 bytes: failed ({e.code}): {e.reason}", LOG_WARNING)
        code = e.code
    except BaseException as e:
        # Never a traceback into the MTA's bounce, and never a bounce for
        # our own fault: the MTA keeps the message.
        log(f"{display}: {path}: 0 bytes: failed ({EX_TEMPFAIL}): internal error: {e!r}",
            LOG_ERR)
        code = EX_TEMPFAIL
    finally:
        os._exit(code)


def _wait(pid, timeout, clock=time.monotonic, sleep=time.sleep):
    """
    Wait for child C{pid}; kill it after C{timeout} seconds.

    @return: its exit code, or L{None} when it had to be killed.
    """
    deadline = clock() + timeout
    delay = 0.002
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFEXITED(status):
                return os.WEXITSTATUS(status)
            return None
        if clock() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        sleep(delay)
        delay = min(delay * 2, 0.1)


def combine(codes):
    """
    The one exit status for several recipients: a temporary failure wins
    (the MTA retries), then the first other failure.
    """
    if EX_TEMPFAIL in codes:
        return EX_TEMPFAIL
    for code in codes:
        if code != EX_OK:
            return code
    return EX_OK


def deliver_all(options, stdin, log):
    try:
        message_fd, message_size, envelope = spool_message(stdin)
    except DeliveryFailure as e:
        log(f"failed ({e.code}): {e.reason}", LOG_WARNING)
        return e.code
    # -f wins over the input's envelope line; neither: the null sender.
    if options.sender is not None:
        sender = options.sender.encode("utf-8", "surrogateescape")
    else:
        sender = envelope or b""
    when = time.time()
    euid = os.geteuid()
    codes = []
    for raw in options.recipients:
        name = os.fsencode(raw)
        display = show(raw)
        if not accounts.valid_user_name(name):
            log(f"{display}: not a valid user name", LOG_WARNING)
            codes.append(EX_NOUSER)
            continue
        try:
            account = accounts.find_account(name, options.password_file)
        except accounts.NameServiceUnavailable as e:
            # The MTA keeps the message and tries again: a directory that
            # is down must not bounce a user's mail as "no such user".
            log(f"{display}: the name service could not be asked ({e.strerror}); deferred",
                LOG_WARNING)
            codes.append(EX_TEMPFAIL)
            continue
        except OSError as e:
            log(f"{display}: cannot read {options.password_file}: {e.strerror}", LOG_ERR)
            codes.append(EX_TEMPFAIL)
            continue
        if account is None:
            log(f"{display}: no such user", LOG_WARNING)
            codes.append(EX_NOUSER)
            continue
        if euid == 0:
            must_switch = True
        elif euid == account.uid:
            must_switch = False
        else:
            log(
                f"{display}: running as uid {euid}, neither root nor the recipient; refused",
                LOG_WARNING,
            )
            codes.append(EX_NOPERM)
            continue
        groups = accounts.supplementary_groups(account, options.password_file) if must_switch else []
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(account, groups, must_switch, message_fd, message_size, sender, options, when, log)
        code = _wait(pid, options.timeout)
        if code is None:
            log(
                f"{display}: {show(os.path.join(options.spool, raw))}: 0 bytes: "
                f"failed ({EX_TEMPFAIL}): delivery did not finish in {options.timeout:g}s",
                LOG_WARNING,
            )
            code = EX_TEMPFAIL
        codes.append(code)
    os.close(message_fd)
    return combine(codes)
