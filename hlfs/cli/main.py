"""
The C{hlfs} operator command: C{hlfs SUBCOMMAND [options]}.

Each subcommand lives in its own module with a C{main(argv) -> int}; this
front end only picks the module, so a subcommand's imports cost nothing
to the others.
"""

import importlib
import os
import select
import sys


# name: ("module[:function]", one-line summary); the function defaults to main.
SUBCOMMANDS = {
    "resolve": ("hlfs.cli.query", "ask a running server what `home` resolves to for a caller"),
    "status": ("hlfs.cli.query:status_main", "show a running server's status (requests, cache, probes)"),
    "demo": ("hlfs.cli.demo", "run a throwaway unprivileged server and show per-uid links"),
    "deliver": ("hlfs.cli.deliver", "local delivery agent: append stdin to mailboxes as each recipient"),
    "lostmail": ("hlfs.cli.lostmail", "resend mail found in the alternate spool to its owners"),
    "check": ("hlfs.cli.check", "warn about password, group, mount and spool problems"),
    "twistd": ("hlfs.cli.twistd", "run the daemon: Twisted's twistd, in this process (twistd hlfs)"),
}

USAGE = """\
usage: hlfs SUBCOMMAND [options]

Operator tools for the Home-Link File System.  The server itself runs
under twistd, in this process: `hlfs twistd -n hlfs --help`.

subcommands:
{}

`hlfs SUBCOMMAND --help` describes each one.
"""


def usage():
    width = max(map(len, SUBCOMMANDS))
    return USAGE.format(
        "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items())
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write(f"usage: hlfs {{{'|'.join(SUBCOMMANDS)}}} [options]  (hlfs --help says more)\n")
        return 2
    if argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from hlfs import __version__

        print(__version__.public())
        return 0
    entry = SUBCOMMANDS.get(argv[0])
    if entry is None:
        sys.stderr.write(f"hlfs: unknown subcommand {argv[0]!r}\n" + usage())
        return 2
    module, _, function = entry[0].partition(":")
    main_of = getattr(importlib.import_module(module), function or "main")
    prog = f"hlfs {argv[0]}"
    try:
        return main_of(argv[1:], prog=prog)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # `hlfs status | head`: the reader has all it wanted.
        sys.stderr.write(f"{prog}: standard output closed early (broken pipe)\n")
        return EX_PIPE


#: The status of a command killed by SIGPIPE, as the shell shows it.
EX_PIPE = 128 + 13


def _stdout_closed():
    """
    Whether standard output is a pipe nobody reads any more; if so, point
    it at /dev/null, so that the interpreter's final flush does not fail
    again.
    """
    poller = select.poll()
    poller.register(1, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return True

if __name__ == "__main__":
    sys.exit(main())
