"""
The remailer behind C{hlfs lostmail}: resend mail from the alternate
spool to its owners.

When a home is full or unreachable, hlfs points C{home} at the alternate
spool, so mail for that user lands in C{/var/alt_mail/USER}.  This
remailer, run as root a few times a day, gives that mail back:

  1. for each mailbox in the alternate spool, take the mailbox's locks as
     a delivery agent does (L{hlfs.mail.dotlock}: dotlock plus C{fcntl}),
     copy it into the remailer's private state directory and empty it
     (L{hlfs.mail.workarea}), and release the locks at once, so delivery
     continues into the same, now empty, file;
  2. for each working copy, oldest first, resend each message to its
     owner through C{sendmail} or SMTP, and after the MTA accepted it,
     record (atomically) that the copy's messages up to its end are done;
     a copy is removed when all its messages are done.

The spool is world-writable, so everything in it is hostile until
proved otherwise (L{hlfs.mail.spoolfile}): each file is opened once,
without following links or blocking, every decision comes from C{fstat}
of that descriptor, and its mail goes only to the user who owns it.  A
file owned by anyone else, root included, is never sent to the user it
is named after.  Nothing a user can put in the spool stops a run or
holds a lock longer than the stale period (L{hlfs.mail.records.HeldLocks});
one bad file costs one log line (at most L{EntryLog.LIMIT} a run) and
makes the exit status 1.

The alternate spool is the mailbox of some accounts for good: the
daemon gives system accounts (uid under C{uid-min}, root excepted) and
users whose home is C{/} or relative the alternate spool whatever their
home holds (L{SpoolRules}, the paper's Table 3).  Their mail is left where
it is, by the same rule and the same C{uid-min}: resent, the MTA would
deliver it straight back, at every run.  The run counts them in its
summary (L{Remailer.resident}), and says nothing else about them.

A name the name service says does not exist is not resent to the
postmaster at once: its mail stays until that name has been reported
missing at runs spanning C{unknown-wait} seconds (L{hlfs.mail.missing}),
since sssd offline answers "no such user" for users it has not cached.

A crash at any point leaves each message either accepted by the MTA or
still on disk.  The only duplicate window is between the MTA accepting a
message and the state file recording it; see docs/lostmail.md.

L{Remailer} calls its C{checkpoint(step, count)} between the steps
(C{locked}, C{copied}, C{truncated}, C{released} with the number of
mailboxes locked; C{sent}, C{rewritten} with the number of messages
resent), so that a test can kill it exactly there; the command never
sets one.
"""

import email.utils
import fcntl
import os
import re
import socket
import stat
import time

from hlfs.core.resolver import SpoolRules
from hlfs.mail import mbox
from hlfs.mail.accounts import plausible_user_name
from hlfs.mail.maillog import DEFAULT_SOCKET, show
from hlfs.mail.migrate import migrate
from hlfs.mail.missing import MissingUsers
from hlfs.mail.recipients import Recipients, utc
from hlfs.mail.records import HeldLocks
from hlfs.mail.report import report_dry_run
from hlfs.mail.spoolfile import Skip, is_regular
from hlfs.mail.statedir import StateDirError, open_private_dir, open_subdir, spool_key
from hlfs.mail.taking import Taking
from hlfs.mail.tally import Tally, resident_line
from hlfs.mail.transports import SendFailure
from hlfs.mail.workarea import WorkArea

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_CONFIG = 78

CONFIG_SECTION = "lostmail"

DEFAULTS = {
    "alt-dir": "/var/alt_mail",
    "state-dir": "/var/lib/hlfs/lostmail",
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
    # The daemon's --uid-min; None: as the daemon's default, UID_MIN of
    # /etc/login.defs, else 1000 (the command line reads it).
    "uid-min": None,
}

_SAFE_SENDER = re.compile(rb"[^\x00-\x20\x7f-\xff<>()\[\]\\,;:\"]+\Z")


def _no_checkpoint(step, count):
    pass


def redelivery_header(alt_dir, name, recipient, hostname, now):
    """
    The one header prepended to each resent message.
    """
    date = email.utils.formatdate(now, localtime=True)
    where = show(os.path.join(alt_dir, name))
    text = (
        f"X-Hlfs-Redelivered: from alternate spool {where} "
        f"to {show(recipient)} by hlfs lostmail on {hostname}; {date}\n"
    )
    return text.encode("utf-8", "surrogateescape")


class EntryLog:
    """
    Log lines about single spool entries: the first L{LIMIT} of a run are
    logged, the rest counted and summed up in one line, so a user who
    fills the spool with junk cannot flood the log.
    """

    LIMIT = 100

    def __init__(self, log):
        self.log = log
        self.count = 0

    def __call__(self, line):
        self.count += 1
        if self.count <= self.LIMIT:
            self.log(line)

    def close(self):
        if self.count > self.LIMIT:
            self.log(f"{self.count - self.LIMIT} more lines about single mailboxes not logged "
                     f"(at most {self.LIMIT} a run)")


class Remailer:
    """
    One run of the remailer over one alternate spool directory.

    @ivar taken: mailboxes copied into the work area in this run.
    @ivar sent: messages the MTA accepted in this run.
    @ivar problems: files skipped and other logged problems.
    @ivar tally: per-user counts (L{Tally}).
    @ivar left_in_spool: after L{run}, the mailboxes still in the spool
        (non-empty regular files named like users), L{None} before.
    @ivar left_in_work: after L{run}, the working copies not yet resent.
    @ivar resident: the mailboxes left because the alternate spool is
        their owner's mailbox, C{{name: reason}} (a L{SpoolRules} reason).
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
        self.by_uid = by_uid
        self.transport = transport
        self.log = log
        self.entry_log = EntryLog(log)
        self.out = out
        self.alt_dir = os.fsencode(options.alt_dir)
        self.state_path = os.path.join(os.fsencode(options.state_dir), spool_key(self.alt_dir))
        self.rules = SpoolRules(subdir=b"", alt_dir=self.alt_dir, uid_min=options.uid_min)
        self.resident = {}
        self.tally = Tally()
        self.problems = 0
        self.taken = 0
        self.sent = 0
        self.left_in_spool = None
        self.left_in_work = None
        self.hostname = socket.gethostname()
        self.alt_fd = None
        self.area = None
        self.taking = None
        self._records(None)

    def _records(self, dir_fd):
        where = self.state_path
        self.missing = MissingUsers(dir_fd, os.path.join(where, b"missing"),
                                    self.options.unknown_wait, self.now, self.log)
        self.locks = HeldLocks(dir_fd, os.path.join(where, HeldLocks.RECORD), self.now, self.log)
        self.recipients = Recipients(self.options, self.users, self.by_uid, self.missing,
                                     self.entry_log)

    @property
    def left(self):
        """
        Mailboxes left after the run, in the spool and the work area.
        """
        return (self.left_in_spool or 0) + (self.left_in_work or 0)

    def skip(self, name, why):
        self.entry_log(f"{show(name)}: {why}")
        self.problems += 1

    # -- deciding

    def names(self):
        """
        The entries of the spool that may be mailboxes, sorted.
        """
        found = (os.fsencode(n) for n in os.listdir(self.alt_fd))
        return sorted(n for n in found if not n.startswith(b".") and not n.endswith(b".lock"))

    def scan(self):
        """
        Return C{[(name, uid)]}: the mailboxes worth taking and the owner
        each must have, logging the skipped ones.
        """
        found = []
        for name in self.names():
            if not plausible_user_name(name):
                self.skip(name, "not a user name; skipped")
                continue
            try:
                st = os.stat(name, dir_fd=self.alt_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.skip(name, "symbolic link; not followed, skipped")
                continue
            uid = self.decide(name, st)
            if uid is not None:
                found.append((name, uid))
        return found

    def decide(self, name, st):
        """
        Whether the file C{name}, whose stat is C{st}, is a mailbox to
        resend: the uid its owner must be, or L{None} (logged, unless
        empty or its owner's own mailbox: L{resident}).
        """
        what = "its mail would stay" if self.options.dry_run else "left for the next run"
        if not is_regular(st):
            self.skip(name, "not a regular file; skipped")
            return None
        if st.st_size == 0:
            return None
        if st.st_uid == 0:
            self.skip(name, "owned by root, so never resent (it could be a hard link to a file "
                      "of root's); left for an administrator")
            return None
        user = self.recipients.user(name, what)
        if user is False:
            return None
        if user is not None:
            if st.st_uid != user.uid:
                self.skip(name, f"owned by uid {st.st_uid}, not by {show(name)} "
                          f"(uid {user.uid}); skipped, it may be forged")
                return None
            reason = self.rules.reason(user)
            if reason is not None:
                # The daemon's link for this account is the alternate spool
                # whatever its home holds: this is its mailbox, and a resend
                # would come straight back.
                self.resident[name] = reason
                return None
        if st.st_size > self.options.max_size:
            self.skip(name, f"{st.st_size} bytes, over the {self.options.max_size}-byte limit; "
                      "skipped (resend it by hand or raise max-size)")
            return None
        if user is None:
            return st.st_uid if self.recipients.goes_to_postmaster(name, st.st_uid, what) else None
        return user.uid

    # -- taking

    def take(self, name, uid):
        """
        Take mailbox C{name} (whose owner must be C{uid}) into the work
        area (L{Taking.take}), logging why not.

        @return: whether a working copy was made.
        """
        try:
            taken = self.taking.take(name, uid)
        except Skip as e:
            self.skip(name, str(e))
            return False
        self.taken += taken
        return taken

    def settle(self, pending):
        """
        Settle a take a crash interrupted (L{Taking.settle}).
        """
        try:
            self.taking.settle(pending)
        except Skip as e:
            self.skip(pending.key.user, f"a take interrupted earlier cannot be settled yet: {e}")

    # -- resending

    def resend(self, key):
        """
        Resend every message of one working copy not yet recorded as done.

        @return: whether the copy was finished and removed.
        """
        owner = key.user
        shown = show(owner)
        recipient = self.recipients.recipient_for(owner, key.uid)
        if recipient is None:
            return False
        if recipient != owner:
            self.log(f"{shown}: no such user; resending to {show(recipient)} "
                     f"(missing since {utc(self.missing.missing(owner)[0])})")
        offset = self.area.read_offset(key)
        failure = None
        try:
            f = self.area.open_work(key)
        except (Skip, OSError) as e:
            self.skip(owner, f"working copy {show(key.work)}: {getattr(e, 'strerror', None) or e}")
            return False
        with f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                self.log(f"{show(key.work)}: state past the end; starting the file over")
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
                    self.log(f"{shown}: message at offset {message.start} not accepted: "
                             f"{show(str(e))}; it and the rest stay for the next run")
                    continue
                self.sent += 1
                self.tally.add(owner, resent=1)
                self.checkpoint("sent", self.sent)
                self.area.write_offset(key, message.end)
                self.checkpoint("rewritten", self.sent)
        if failure is not None:
            return False
        self.area.finish(key)
        return True

    def _resend_one(self, owner, recipient, message):
        shown = show(owner)
        sender = message.sender
        if message.from_line is None:
            self.log(f"{shown}: malformed mailbox: {len(message.content)} bytes before the "
                     "first From_ line; resent with the null sender")
        elif sender and (not _SAFE_SENDER.match(sender) or sender.startswith(b"-")):
            self.log(f"{shown}: unusable envelope sender <{show(sender)}>; using the null sender")
            sender = b""
        data = (
            redelivery_header(self.alt_dir, owner, recipient, self.hostname, self.now())
            + message.content
        )
        self.transport.send(sender, recipient, data)
        self.out(f"{shown}: resent {len(message.content)} bytes from <{show(sender)}> "
                 f"to {show(recipient)}")

    # -- the run

    def _open(self, create):
        """
        Open the spool and the work area (made with C{create}); L{None}
        for a work area a dry run finds missing.

        @raise StateDirError: the state directory may not be used.
        """
        self.alt_fd = os.open(self.alt_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self.alt_fd)
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            self.log(f"alternate spool {show(self.alt_dir)} is world-writable but not sticky: "
                     "any user may replace anyone's mailbox; make it mode 1777")
            self.problems += 1
        top = open_private_dir(self.options.state_dir, create=create)
        if top is None:
            return None
        try:
            fd = open_subdir(top, spool_key(self.alt_dir), self.state_path, create=create)
        finally:
            os.close(top)
        if fd is None:
            return None
        self._records(fd)
        self.area = WorkArea(fd, self.state_path, self.log, self.checkpoint)
        self.taking = Taking(self.alt_dir, self.alt_fd, self.area, self.users, self.locks,
                             self.options, self.now, self.log, self.checkpoint)
        return self.area

    def run(self):
        """
        Take every mailbox, then resend every working copy.

        @return: the exit status.
        """
        try:
            self._open(create=not self.options.dry_run)
        except (StateDirError, OSError) as e:
            if self.alt_fd is not None:
                os.close(self.alt_fd)
            if isinstance(e, StateDirError):
                self.log(str(e))
                return EX_CONFIG
            where = f"alternate spool {show(self.alt_dir)}"
            if isinstance(e.filename, (str, bytes)) and os.fsencode(e.filename) != self.alt_dir:
                where = show(e.filename)
            self.log(f"{where}: {e.strerror}")
            return EX_FAILED
        try:
            if self.options.dry_run:
                self.missing.load()
                report_dry_run(self)
            elif not self._run():
                return EX_OK
            self.count_left()
        finally:
            self.entry_log.close()
            os.close(self.alt_fd)
            if self.area is not None:
                os.close(self.area.fd)
        for line in self.tally.lines():
            self.out(line)
        if self.resident:
            self.out(resident_line(self.resident, self.rules.uid_min))
        problems = self.problems + self.recipients.problems
        return EX_FAILED if self.tally.failed() or problems else EX_OK

    def _run(self):
        try:
            # Two runs at once (a slow run overlapping the next timer)
            # would resend the same working copies twice.
            fcntl.flock(self.area.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.out("another hlfs lostmail run is in progress; nothing done")
            return False
        self.missing.load()
        self.locks.load()
        try:
            self.problems += migrate(self.alt_fd, self.alt_dir, self.area, self.missing,
                                     self.log)
            self.area.clean()
            for pending in self.area.pending():
                self.settle(pending)
            for name, uid in self.scan():
                self.take(name, uid)
            for key in self.area.work_files():
                self.resend(key)
        finally:
            self.transport.close()
            self.missing.save()
            self.locks.save()
        return True

    def count_left(self):
        """
        Count the mailboxes left in the spool to resend (not those of
        L{resident}) and the work area.
        """
        left = 0
        for name in self.names():
            if name in self.resident:
                continue
            try:
                st = os.stat(name, dir_fd=self.alt_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            left += plausible_user_name(name) and is_regular(st) and st.st_size > 0
        self.left_in_spool = left
        self.left_in_work = self.area.count() if self.area is not None else 0
