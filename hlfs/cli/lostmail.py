"""
C{hlfs lostmail [options]}: the command line and configuration file of
the remailer in L{hlfs.mail.lostmail}.
"""

import argparse
import configparser
import os
import sys
import time

from hlfs.cli import lostmail_textfile
from hlfs.cli.args import ArgumentParser, UsageError
from hlfs.core.users import UserTable
from hlfs.daemon.config import ConfigError, check_uid, login_defs_uid_min
from hlfs.homes.nss import NameService, account_by_uid
from hlfs.mail.accounts import plausible_user_name
from hlfs.mail.lostmail import (
    CONFIG_SECTION, DEFAULTS, EX_CONFIG, EX_FAILED, EX_OK, EX_USAGE, Remailer,
)
from hlfs.mail.maillog import DEFAULT_SOCKET, LOG_WARNING, MailLog, show
from hlfs.mail.transports import SMTPTransport, SendmailTransport


def build_parser(prog):
    parser = ArgumentParser(
        prog=prog,
        description="Resend mail from the hlfs alternate spool to its owners.",
    )
    parser.add_argument("--config", metavar="FILE",
                        help=f"ini file with a [{CONFIG_SECTION}] section using the option names")
    parser.add_argument("--alt-dir", metavar="DIR",
                        help=f"alternate spool directory (default {DEFAULTS['alt-dir']})")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="private directory of root's for the working copies and records, "
                        "one subdirectory per alternate spool; refused unless only root can "
                        f"change it (default {DEFAULTS['state-dir']})")
    parser.add_argument("--sendmail", metavar="PATH",
                        help=f"sendmail-compatible program (default {DEFAULTS['sendmail']})")
    parser.add_argument("--smtp", metavar="HOST:PORT", help="resend by SMTP instead of sendmail")
    parser.add_argument("--domain", metavar="DOMAIN",
                        help="domain appended to bare user names for SMTP recipients")
    parser.add_argument("--postmaster", metavar="ADDR",
                        help="recipient for mail of users that no longer exist "
                        f"(default {DEFAULTS['postmaster']})")
    parser.add_argument("--password-file", metavar="FILE",
                        help="read users from this passwd(5) file (default: NSS)")
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="report what would be resent; change nothing")
    parser.add_argument("--lock-timeout", type=float, metavar="SECONDS")
    parser.add_argument("--stale-after", type=float, metavar="SECONDS")
    parser.add_argument("--max-size", type=int, metavar="BYTES",
                        help="skip mailboxes larger than this")
    parser.add_argument("--send-timeout", type=float, metavar="SECONDS")
    parser.add_argument("--unknown-wait", type=float, metavar="SECONDS",
                        help="keep the mail of a name the name service says does not exist "
                        "until it has been missing this long at runs with no answer that it "
                        "exists, then resend it to the postmaster (default "
                        f"{DEFAULTS['unknown-wait']:g}: a directory cache offline says "
                        '"no such user" for users it has not cached)')
    parser.add_argument("--uid-min", metavar="UID",
                        help="the daemon's --uid-min: accounts under it but root (system "
                        "accounts), like users whose home is / or relative, have the alternate "
                        "spool as their mailbox, and their mail is left there (default: "
                        "UID_MIN of /etc/login.defs, else 1000)")
    parser.add_argument("--textfile", metavar="FILE",
                        help="after each run, write its figures for Prometheus to FILE in "
                        "node_exporter's textfile-collector format (a .prom file in its "
                        "--collector.textfile.directory); default: none")
    parser.add_argument("--syslog-socket", metavar="PATH",
                        help=f"syslog socket (default {DEFAULT_SOCKET}; empty: stderr only)")
    return parser


#: Settings of the command line itself, beside the remailer's.
CLI_DEFAULTS = {"textfile": None}


def _convert(key, value):
    default = {**DEFAULTS, **CLI_DEFAULTS}[key]
    if isinstance(default, bool):
        if value.strip().lower() in ("1", "yes", "true", "on"):
            return True
        if value.strip().lower() in ("0", "no", "false", "off"):
            return False
        raise UsageError(f"{key}: expected yes or no, not {value!r}")
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{key}: expected a number, not {value!r}") from None
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{key}: expected an integer, not {value!r}") from None
    return value.strip()


def resolve_options(args):
    """
    Merge command line, configuration file and defaults.

    @raise UsageError: the configuration is unreadable or invalid.
    """
    values = {**DEFAULTS, **CLI_DEFAULTS}
    if args.config:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(args.config, encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, UnicodeDecodeError, configparser.Error) as e:
            raise UsageError(f"cannot read {args.config}: {e}") from None
        if parser.has_section(CONFIG_SECTION):
            for key, value in parser.items(CONFIG_SECTION):
                if key not in values:
                    raise UsageError(f"{args.config}: unknown key {key!r}")
                values[key] = _convert(key, value)
    for key in values:
        given = getattr(args, key.replace("-", "_"))
        if given is not None:
            values[key] = given
    options = argparse.Namespace(**{k.replace("-", "_"): v for k, v in values.items()})
    if options.smtp:
        host, sep, port = options.smtp.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"smtp: expected HOST:PORT, not {options.smtp!r}")
        options.smtp_host, options.smtp_port = host.strip("[]"), int(port)
    try:
        options.uid_min = (login_defs_uid_min() if options.uid_min is None
                           else check_uid("uid-min", options.uid_min))
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if not options.unknown_wait >= 0:
        raise UsageError(f"unknown-wait: expected seconds >= 0, not {options.unknown_wait!r}")
    if not plausible_user_name(os.fsencode(options.postmaster).partition(b"@")[0]):
        raise UsageError(f"postmaster: {options.postmaster!r} is not an address")
    return options


def _make_log(prog, socket_path):
    mail_log = MailLog(prog, "hlfs-lostmail", socket_path)

    def log(line):
        sys.stderr.flush()
        mail_log(line, LOG_WARNING)

    return log


def _out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv, prog="hlfs lostmail", checkpoint=None, now=None):
    """
    Run the remailer; C{checkpoint} and C{now} (the clock) are
    L{Remailer}'s test seams.
    """
    parser = build_parser(prog)
    try:
        options = resolve_options(parser.parse_args(argv))
    except UsageError as e:
        sys.stderr.write(f"{prog}: {e}\n{parser.format_usage()}")
        return EX_USAGE
    except SystemExit as e:  # --help
        return EX_OK if not e.code else EX_USAGE
    log = _make_log(prog, options.syslog_socket)
    by_uid = None
    try:
        if options.password_file:
            users = UserTable.from_passwd_file(options.password_file)
            for problem in users.problems:
                log(f"{problem}; line ignored")
        else:
            users, by_uid = NameService(), account_by_uid
    except OSError as e:
        log(f"cannot read {options.password_file}: {e.strerror}")
        return EX_CONFIG
    if options.smtp:
        transport = SMTPTransport(
            options.smtp_host, options.smtp_port, options.domain, options.send_timeout
        )
    else:
        transport = SendmailTransport(options.sendmail, options.send_timeout)
    remailer = Remailer(options, users, transport, log, _out, checkpoint, now, by_uid)
    clock = now or time.time
    started = clock()
    try:
        status = remailer.run()
    except OSError as e:
        # A file given by descriptor has an int for its name.
        where = e.filename if isinstance(e.filename, (str, bytes)) else None
        log(f"{where and show(where) + ': ' or ''}{e.strerror}")
        status = EX_FAILED
    if options.textfile and not options.dry_run:
        lostmail_textfile.after_run(options.textfile, remailer, options.alt_dir, status, started,
                                    clock(), log)
    return status

