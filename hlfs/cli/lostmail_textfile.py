"""
What a run of C{hlfs lostmail} did, for Prometheus: a file in
node_exporter's textfile-collector format (C{--textfile}), written after
each run, atomically.

  - C{hlfs_lostmail_last_run_timestamp_seconds}, C{..._last_run_success}
    (1 when the run exited 0), C{..._last_success_timestamp_seconds}
    (carried over from the file the last run wrote when this one failed),
    C{..._last_run_duration_seconds};
  - C{hlfs_lostmail_messages_resent}: messages the MTA accepted in the
    run;
  - C{hlfs_lostmail_problems}: what the run could not do (mailboxes
    skipped or left, messages not accepted, users not found);
  - C{hlfs_lostmail_mailboxes_left}: the mailboxes left once the run is
    over, in the spool and in the remailer's working copies, as the
    remailer counted them (C{Remailer.left}); after a run that ended before
    counting (a failure, another run in progress), the non-empty
    mailboxes of the spool alone, counted here as the daemon counts them
    (L{hlfs.daemon.altspool.count_spool}, bounded);
  - C{hlfs_lostmail_mailboxes_resident}: the mailboxes the run left in
    the spool because it is their owners' mailbox (system accounts, homes
    C{/} or relative: C{Remailer.resident}), not counted as left.

Each series has the label C{alt_dir}: runs over several spools write
several files.  The directory is node_exporter's, which its user may
write: the file is written under a fresh name made with C{O_EXCL} (never
through a link planted there) and renamed into place, so that a scrape
reads the old file or the new one, never half of one.
"""

import os
import tempfile

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hlfs.daemon.altspool import count_spool

PREFIX = "hlfs_lostmail"


def last_success(path, alt_dir):
    """
    The C{last_success_timestamp_seconds} of C{alt_dir} in the file at
    C{path}, or L{None}.
    """
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == f"{PREFIX}_last_success_timestamp_seconds"
                        and sample.labels.get("alt_dir") == alt_dir):
                    return sample.value
    except ValueError:
        return None
    return None


def render(alt_dir, started, ended, status, resent, problems, left, success_at, resident):
    """
    The file's text, in the exposition format.
    """
    registry = CollectorRegistry(auto_describe=True)

    def gauge(name, text, value):
        Gauge(f"{PREFIX}_{name}", text, ["alt_dir"], registry=registry).labels(alt_dir).set(value)

    gauge("last_run_timestamp_seconds", "When the last run of hlfs lostmail ended (Unix time).",
          ended)
    gauge("last_run_success", "1 if the last run exited 0, else 0.", int(status == 0))
    gauge("last_run_duration_seconds", "How long the last run took.", max(0.0, ended - started))
    if success_at is not None:
        gauge("last_success_timestamp_seconds",
              "When a run last ended with exit status 0 (Unix time).", success_at)
    gauge("messages_resent", "Messages the last run resent (accepted by the MTA).", resent)
    gauge("problems", "What the last run could not do: mailboxes skipped or left, messages "
          "not accepted, users not found.", problems)
    gauge("mailboxes_left", "Mailboxes left after the last run, in the alternate spool and in "
          "lostmail's working copies.", left)
    gauge("mailboxes_resident", "Mailboxes the last run left in the alternate spool because it "
          "is their owners' mailbox (system accounts under uid-min, homes / or relative).",
          resident)
    return generate_latest(registry)


def write(path, data):
    """
    Replace the file at C{path} with C{data} atomically: a fresh file
    beside it (C{O_EXCL}, mode 0644: node_exporter reads it as its own
    user), then C{rename}.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def after_run(path, remailer, alt_dir, status, started, ended, log):
    """
    Write the file for a run of C{remailer} that exited C{status}; a
    failure to write it is one log line, and never changes the status.
    Nothing is written while the file's directory does not exist
    (node_exporter is not installed).
    """
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return
    if remailer.left_in_spool is not None:
        left = remailer.left
    else:
        left = count_spool(alt_dir, resident=remailer.rules.system_account).mailboxes
    problems = remailer.problems + remailer.recipients.problems + remailer.tally.failed()
    success_at = ended if status == 0 else last_success(path, alt_dir)
    data = render(alt_dir, started, ended, status, remailer.sent, problems, left, success_at,
                  len(remailer.resident))
    try:
        write(path, data)
    except OSError as e:
        log(f"cannot write the metrics file {path}: {e.strerror}")
