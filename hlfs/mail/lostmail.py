"""
The remailer behind C{hlfs lostmail}: resend mail from the alternate
spool to its owners.

When a home is full or unreachable, hlfs points C{home} at the alternate
spool, so mail for that user lands in C{/var/alt_mail/USER}.  This
remailer, run a few times a day, gives that mail back:

  1. for each mailbox in the alternate spool, take the mailbox lock as a
     delivery agent does (L{hlfs.mail.dotlock}: dotlock plus C{fcntl}), rename
     the mailbox into the working directory C{.lostmail} under a unique
     name, and release the lock at once, so delivery continues into a
     fresh file;
  2. for each working file, oldest first, resend each message to its
     owner through C{sendmail} or SMTP, and after the MTA accepted it,
     record (atomically, in a state file) that the working file's
     messages up to its end are done; a working file is removed when all
     its messages are done.

A name the name service says does not exist is not resent to the
postmaster at once: its mail stays until that name has been reported
missing at runs spanning C{unknown-wait} seconds (L{hlfs.mail.missing}),
since sssd offline answers "no such user" for users it has not cached.

A crash at any point leaves each message either accepted by the MTA or
still on disk.  The only duplicate window is between the MTA accepting a
message and the state file recording it; see docs/lostmail.md.

L{Remailer} calls its C{checkpoint(step, count)} between the steps
(C{locked}, C{renamed}, C{released} with the number of mailboxes taken;
C{sent}, C{rewritten} with the number of messages resent), so that a
test can kill it exactly there; the command never sets one.
"""

import email.utils
import errno
import fcntl
import os
import re
import socket
import stat
import time

from hlfs.mail import mbox
from hlfs.mail.maillog import DEFAULT_SOCKET
from hlfs.mail.dotlock import DotLock, LockError, lock_fd, unlock_fd
from hlfs.mail.missing import MissingUsers, fsync_dir as _fsync_dir, write_atomically
from hlfs.mail.recipients import Recipients, show as _show, utc
from hlfs.mail.tally import Tally
from hlfs.mail.transports import SendFailure
from hlfs.homes.nss import NameServiceUnavailable

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_CONFIG = 78

WORK_DIR = b".lostmail"
CONFIG_SECTION = "lostmail"

DEFAULTS = {
    "alt-dir": "/var/alt_mail",
    "sendmail": "/usr/sbin/sendmail",
    "smtp": None,
    "domain": None,
    "postmaster": "postmaster",
    "password-file": None,
    "dry-run": False,
    "lock-timeout": 30.0,
    "stale-after": 300.0,
    "max-size": 1 << 30,
    "send-timeout": 300.0,
    "syslog-socket": DEFAULT_SOCKET,
    # A day: eight runs of the shipped timer, and longer than a directory
    # outage lasts overnight; mail for a user deleted for real only
    # reaches the postmaster a day later.
    "unknown-wait": 86400.0,
}

# Plausible user names: what useradd(8) and NSS accept, nothing that
# could be a path trick or an option.
_USER_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,255}\Z")
_SAFE_SENDER = re.compile(rb"[^\x00-\x20\x7f-\xff<>()\[\]\\,;:\"]+\Z")


def _no_checkpoint(step, count):
    pass


def plausible_user_name(name):
    """
    Whether a spool entry's name may name a mailbox.
    """
    return bool(_USER_NAME.match(name)) and not name.endswith(b".lock")


def redelivery_header(alt_dir, name, recipient, hostname, now):
    """
    The one header prepended to each resent message.
    """
    date = email.utils.formatdate(now, localtime=True)
    where = os.path.join(alt_dir, name)
    text = (
        f"X-Hlfs-Redelivered: from alternate spool {os.fsdecode(where)} "
        f"to {_show(recipient)} by hlfs lostmail on {hostname}; {date}\n"
    )
    return text.encode("utf-8", "surrogateescape")


class Remailer:
    """
    One run of the remailer over one alternate spool directory.
    """

    def __init__(self, options, users, transport, log, out, checkpoint=None, now=None,
                 by_uid=None):
        """
        @param users: answers C{by_name(name)} with an account, L{None}
            for no such user, or L{NameServiceUnavailable}.
        @param now: the clock (seconds since the epoch), C{time.time}
            unless given.
        @param by_uid: answers the same for a mailbox's owner uid, or
            L{None} to ask C{users.by_uid} (L{Recipients}).
        """
        self.options = options
        self.checkpoint = checkpoint if checkpoint is not None else _no_checkpoint
        self.now = now if now is not None else time.time
        self.users = users
        self.transport = transport
        self.log = log
        self.out = out
        self.alt_dir = os.fsencode(options.alt_dir)
        self.work_dir = os.path.join(self.alt_dir, WORK_DIR)
        self.tally = Tally()
        self.problems = 0
        self.taken = 0
        self.sent = 0
        self.hostname = socket.gethostname()
        self.missing = MissingUsers(self.work_dir, options.unknown_wait, self.now, log)
        self.recipients = Recipients(options, users, by_uid, self.missing, log)

    def recipient_for(self, name, st=None, what="its mail stays for the next run"):
        """
        Return the address to resend C{name}'s mail to, or L{None}
        (logged) while it waits: L{Recipients.recipient_for}.
        """
        return self.recipients.recipient_for(name, st, what)

    def ensure_work_dir(self):
        """
        Make or check C{.lostmail}: a directory of ours that nobody else
        can write, since the spool itself is world-writable.
        """
        try:
            os.mkdir(self.work_dir, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(self.work_dir)
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != os.geteuid()
            or st.st_mode & 0o077
        ):
            raise OSError(
                errno.EPERM,
                f"{os.fsdecode(self.work_dir)} is not a private directory owned "
                f"by uid {os.geteuid()}; refusing to use it",
            )

    def scan(self):
        """
        Return the mailbox names worth taking, logging the skipped ones.
        """
        names = []
        with os.scandir(self.alt_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            if name.startswith(b".") or name.endswith(b".lock"):
                continue
            shown = os.fsdecode(name)
            if not plausible_user_name(name):
                self.log(f"{shown!r}: not a user name; skipped")
                self.problems += 1
                continue
            try:
                st = os.lstat(entry.path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.log(f"{shown}: symbolic link; not followed, skipped")
                self.problems += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                self.log(f"{shown}: not a regular file; skipped")
                self.problems += 1
                continue
            if st.st_size == 0:
                continue
            if st.st_size > self.options.max_size:
                self.log(
                    f"{shown}: {st.st_size} bytes, over the {self.options.max_size}-byte "
                    "limit; skipped (resend it by hand or raise max-size)"
                )
                self.problems += 1
                continue
            if not self._owner_ok(name, st):
                continue
            names.append(name)
        return names

    def _owner_ok(self, name, st):
        if st.st_nlink != 1:
            self.log(f"{os.fsdecode(name)}: has {st.st_nlink} hard links; skipped")
            self.problems += 1
            return False
        user = self.recipients.user(name, "left for the next run")
        if user is False:
            return False
        if user is None:
            return self.recipients.goes_to_postmaster(name, st, "left for the next run")
        if st.st_uid not in (user.uid, 0):
            self.log(
                f"{os.fsdecode(name)}: owned by uid {st.st_uid}, not by {os.fsdecode(name)} "
                f"(uid {user.uid}); skipped, it may be forged"
            )
            self.problems += 1
            return False
        return True

    def take(self, name):
        """
        Lock mailbox C{name}, rename it into the working directory, unlock.

        @return: whether a working file was made.
        """
        path = os.path.join(self.alt_dir, name)
        shown = os.fsdecode(name)
        try:
            user = self.users.by_name(name)
        except NameServiceUnavailable:
            user = None  # the lock's owner only helps to break it
        lock = DotLock(
            path + b".lock",
            timeout=self.options.lock_timeout,
            stale_after=self.options.stale_after,
            log=lambda line: self.log(f"{shown}: {line}"),
            # Should we die holding it, the owner's delivery agent can break
            # it in the sticky spool.
            owner=user.uid if user is not None else None,
        )
        try:
            lock.acquire()
        except LockError as e:
            self.log(f"{shown}: {e}; left for the next run")
            self.problems += 1
            return False
        self.taken += 1
        try:
            self.checkpoint("locked", self.taken)
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
            except FileNotFoundError:
                return False
            except OSError as e:
                self.log(f"{shown}: cannot open: {e.strerror}; skipped")
                self.problems += 1
                return False
            try:
                st = os.fstat(fd)
                now = os.lstat(path)
                if (
                    not stat.S_ISREG(st.st_mode)
                    or (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino)
                    or not self._owner_ok(name, st)
                ):
                    self.log(f"{shown}: changed while locking; skipped")
                    return False
                lock_fd(fd, timeout=self.options.lock_timeout)
                work_name = b"W.%020d.%d." % (time.time_ns(), os.getpid()) + name
                os.rename(path, os.path.join(self.work_dir, work_name))
                _fsync_dir(self.work_dir)
                _fsync_dir(self.alt_dir)
                self.checkpoint("renamed", self.taken)
                unlock_fd(fd)
            except LockError as e:
                self.log(f"{shown}: {e}; left for the next run")
                self.problems += 1
                return False
            finally:
                os.close(fd)
        finally:
            lock.release()
        self.checkpoint("released", self.taken)
        return True

    def clean_work_dir(self):
        """
        Remove state files whose working file is gone and half-written
        state files, both left by crashes.
        """
        names = set(os.listdir(self.work_dir))
        for name in names:
            if name.startswith(b"T."):
                os.unlink(os.path.join(self.work_dir, name))
            elif name.startswith(b"S.") and b"W." + name[2:] not in names:
                os.unlink(os.path.join(self.work_dir, name))

    def work_files(self):
        return sorted(
            n for n in os.listdir(self.work_dir) if n.startswith(b"W.") and n.count(b".") >= 3
        )

    def _read_state(self, work_name):
        path = os.path.join(self.work_dir, b"S." + work_name[2:])
        try:
            with open(path, "rb") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            self.log(f"{os.fsdecode(path)}: unreadable state; starting the file over")
            return 0
        return int(text)

    def _write_state(self, work_name, offset):
        write_atomically(self.work_dir, b"T." + work_name[2:], b"S." + work_name[2:],
                         b"%d\n" % offset)

    def resend(self, work_name):
        """
        Resend every message of one working file not yet recorded as done.

        @return: whether the working file was finished and removed.
        """
        owner = work_name.split(b".", 3)[3]
        shown = os.fsdecode(owner)
        path = os.path.join(self.work_dir, work_name)
        recipient = self.recipient_for(owner, os.lstat(path))
        if recipient is None:
            return False
        if recipient != owner:
            self.log(
                f"{shown}: no such user; resending to {self.options.postmaster} "
                f"(missing since {utc(self.missing.missing(owner)[0])})"
            )
        offset = self._read_state(work_name)
        failure = None
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                self.log(f"{os.fsdecode(path)}: state past the end; starting the file over")
                offset = 0
            for message in mbox.iter_mbox(f, offset):
                self.tally.add(owner, found=1)
                if failure is not None:
                    continue
                try:
                    self._resend_one(owner, recipient, message)
                except SendFailure as e:
                    failure = e
                    self.tally.add(owner, failed=1)
                    self.log(
                        f"{shown}: message at offset {message.start} not accepted: {e}; "
                        "it and the rest stay for the next run"
                    )
                    continue
                self.sent += 1
                self.tally.add(owner, resent=1)
                self.checkpoint("sent", self.sent)
                self._write_state(work_name, message.end)
                self.checkpoint("rewritten", self.sent)
        if failure is not None:
            return False
        os.unlink(path)
        try:
            os.unlink(os.path.join(self.work_dir, b"S." + work_name[2:]))
        except FileNotFoundError:
            pass
        _fsync_dir(self.work_dir)
        return True

    def _resend_one(self, owner, recipient, message):
        shown = os.fsdecode(owner)
        sender = message.sender
        if message.from_line is None:
            self.log(
                f"{shown}: malformed mailbox: {len(message.content)} bytes before the "
                "first From_ line; resent with the null sender"
            )
        elif sender and (not _SAFE_SENDER.match(sender) or sender.startswith(b"-")):
            self.log(f"{shown}: unusable envelope sender {sender!r}; using the null sender")
            sender = b""
        data = (
            redelivery_header(self.alt_dir, owner, recipient, self.hostname, self.now())
            + message.content
        )
        self.transport.send(sender, recipient, data)
        self.out(
            f"{shown}: resent {len(message.content)} bytes from "
            f"<{os.fsdecode(sender)}> to {os.fsdecode(recipient)}"
        )

    def dry_run(self):
        """
        Report what a run would resend, changing nothing.
        """
        for name in self.scan():
            path = os.path.join(self.alt_dir, name)
            self._report_file(name, path)
        if os.path.isdir(self.work_dir):
            for work_name in self.work_files():
                owner = work_name.split(b".", 3)[3]
                path = os.path.join(self.work_dir, work_name)
                self._report_file(owner, path, self._read_state(work_name))

    def _report_file(self, owner, path, offset=0):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            self.log(f"{os.fsdecode(path)}: cannot open: {e.strerror}")
            return
        with os.fdopen(fd, "rb") as f:
            recipient = self.recipient_for(
                owner, os.fstat(fd), "its mail would stay for the next run"
            )
            if recipient is None:
                return
            for message in mbox.iter_mbox(f, offset):
                self.tally.add(owner, found=1)
                self.out(
                    f"{os.fsdecode(owner)}: would resend {len(message.content)} bytes from "
                    f"<{os.fsdecode(message.sender)}> to {os.fsdecode(recipient)}"
                )

    def run(self):
        """
        Take every mailbox, then resend every working file.

        @return: the exit status.
        """
        try:
            st = os.stat(self.alt_dir)
        except OSError as e:
            self.log(f"alternate spool {os.fsdecode(self.alt_dir)}: {e.strerror}")
            return EX_FAILED
        if not stat.S_ISDIR(st.st_mode):
            self.log(f"alternate spool {os.fsdecode(self.alt_dir)} is not a directory")
            return EX_FAILED
        if self.options.dry_run:
            if os.path.isdir(self.work_dir):
                self.missing.load()
            self.dry_run()
        else:
            self.ensure_work_dir()
            guard = os.open(self.work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                try:
                    # Two runs at once (a slow run overlapping the next
                    # timer) would resend the same working files twice.
                    fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.out("another hlfs lostmail run is in progress; nothing done")
                    return EX_OK
                self.missing.load()
                for name in self.scan():
                    self.take(name)
                self.clean_work_dir()
                try:
                    for work_name in self.work_files():
                        self.resend(work_name)
                finally:
                    self.transport.close()
                    self.missing.save()
            finally:
                os.close(guard)
        for line in self.tally.lines():
            self.out(line)
        problems = self.problems + self.recipients.problems
        return EX_FAILED if self.tally.failed() or problems else EX_OK
