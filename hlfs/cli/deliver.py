"""
C{hlfs deliver [-f SENDER] USER...}: the command line of the local
delivery agent in L{hlfs.mail.deliver}.
"""

import sys

from hlfs.cli.args import ArgumentParser, UsageError
from hlfs.mail.deliver import DEFAULT_SPOOL, EX_OK, EX_USAGE, deliver_all
from hlfs.mail.maillog import DEFAULT_SOCKET, MailLog


def build_parser(prog):
    parser = ArgumentParser(
        prog=prog,
        description="Deliver one message from stdin to local mailboxes, "
        "writing as each recipient (NFS-safe).",
    )
    parser.add_argument("-f", "--from", dest="sender", default=None,
                        help="envelope sender (default: the sender of the input's first "
                        "line if it is a From_ line, which is then dropped; else the null sender)")
    parser.add_argument("--spool", default=DEFAULT_SPOOL,
                        help=f"mail spool directory (default {DEFAULT_SPOOL})")
    parser.add_argument("--password-file", metavar="FILE",
                        help="look users up in this passwd(5) file instead of NSS")
    parser.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up (EX_TEMPFAIL) after waiting this long for a lock")
    parser.add_argument("--stale-after", type=float, default=300.0, metavar="SECONDS",
                        help="break dotlocks older than this")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="give up on one recipient (a hung home server) after this")
    parser.add_argument("--syslog-socket", default=DEFAULT_SOCKET, metavar="PATH",
                        help=f"syslog socket (default {DEFAULT_SOCKET}; empty: stderr only)")
    parser.add_argument("recipients", nargs="+", metavar="USER")
    return parser


def main(argv, prog="hlfs deliver"):
    parser = build_parser(prog)
    try:
        options = parser.parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"{prog}: {e}\n{parser.format_usage()}")
        return EX_USAGE
    except SystemExit as e:  # --help
        return EX_OK if not e.code else EX_USAGE
    log = MailLog(prog, "hlfs-deliver", options.syslog_socket)
    return deliver_all(options, sys.stdin.buffer, log)

