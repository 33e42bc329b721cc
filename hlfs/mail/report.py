"""
C{hlfs lostmail --dry-run}: what a run would resend, changing nothing.

It looks at the same files a run would, the same way (one descriptor
each, opened without following links or blocking, decisions from its
C{fstat}), but takes no lock and writes nothing: not in the spool, not
in the state directory, which it does not make.  Every name and sender
it prints is escaped (L{hlfs.mail.maillog.show}).
"""

import os

from hlfs.mail import mbox
from hlfs.mail.maillog import show
from hlfs.mail.migrate import OLD_DIR, old_offset, old_work_files, open_old
from hlfs.mail.spoolfile import OPEN_FLAGS, Skip, is_regular, open_entry

WOULD_STAY = "its mail would stay for the next run"


def report_dry_run(remailer):
    """
    Report, through C{remailer}'s output, every message a run of
    C{remailer} (a L{hlfs.mail.lostmail.Remailer}) would resend now.
    """
    for name, uid in remailer.scan():
        try:
            fd, st = open_entry(remailer.alt_fd, name)
        except FileNotFoundError:
            continue
        except Skip as e:
            remailer.skip(name, str(e))
            continue
        with os.fdopen(fd, "rb") as f:
            if not is_regular(st) or st.st_uid != uid or st.st_size > remailer.options.max_size:
                remailer.skip(name, "changed while it was being looked at; skipped")
                continue
            _report(remailer, name, uid, f, 0)
    area = remailer.area
    if area is not None:
        for key in area.work_files():
            try:
                f = area.open_work(key)
            except (Skip, OSError) as e:
                remailer.skip(key.user, f"working copy {show(key.work)}: "
                              f"{getattr(e, 'strerror', None) or e}")
                continue
            with f:
                _report(remailer, key.user, key.uid, f, area.read_offset(key))
        for pending in area.pending():
            remailer.out(f"{show(pending.key.user)}: a take interrupted earlier would be "
                         "settled first")
    _report_old(remailer)


def _report_old(remailer):
    old_fd = open_old(remailer.alt_fd, remailer.alt_dir, remailer.log)
    if old_fd is None:
        return
    try:
        for name, (_, _, user) in old_work_files(old_fd):
            try:
                fd = os.open(name, os.O_RDONLY | OPEN_FLAGS, dir_fd=old_fd)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if is_regular(st) and st.st_uid != 0:
                    where = show(os.path.join(remailer.alt_dir, OLD_DIR, name))
                    remailer.out(f"{show(user)}: {where}, of an earlier version, would be moved")
                    _report(remailer, user, st.st_uid, f, old_offset(old_fd, name))
    finally:
        os.close(old_fd)


def _report(remailer, owner, uid, f, offset):
    recipient = remailer.recipients.recipient_for(owner, uid, WOULD_STAY)
    if recipient is None:
        return
    for message in mbox.iter_mbox(f, offset):
        remailer.tally.add(owner, found=1)
        remailer.out(f"{show(owner)}: would resend {len(message.content)} bytes from "
                     f"<{show(message.sender)}> to {show(recipient)}")
