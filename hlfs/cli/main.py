"""
The C{hlfs} operator command: C{hlfs SUBCOMMAND [options]}.

Each subcommand lives in its own module with a C{main(argv) -> int}; this
front end only picks the module, so a subcommand's imports cost nothing
to the others.
"""

import importlib
import sys


# name: ("module[:function]", one-line summary); the function defaults to main.
SUBCOMMANDS = {
    "resolve": ("hlfs.cli.query", "ask a running server what `home` resolves to for a caller"),
    "status": ("hlfs.cli.query:status_main", "show a running server's status (requests, cache, probes)"),
    "demo": ("hlfs.cli.demo", "run a throwaway unprivileged server and show per-uid links"),
    "deliver": ("hlfs.cli.deliver", "local delivery agent: append stdin to mailboxes as each recipient"),
    "lostmail": ("hlfs.cli.lostmail", "resend mail found in the alternate spool to its owners"),
    "check": ("hlfs.cli.check", "warn about password, group, mount and spool problems"),
}

USAGE = """\
usage: hlfs SUBCOMMAND [options]

Operator tools for the Home-Link File System.  The server itself runs
under twistd: `twistd hlfs --help`.

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
    if not argv or argv[0] in ("-h", "--help", "help"):
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
    return main_of(argv[1:], prog=f"hlfs {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
