"""
The manhole's command-line options and their checks, apart from the SSH
code: the daemon reads these at every start, and imports the console
itself (L{hlfs.console.manhole}, and conch and the cryptography library
under it: 11 MB of an idle daemon's 49) only when C{--manhole} asks
for it.
"""

import re

from twisted.python import usage


class ManholeConfigError(Exception):
    """
    The manhole cannot start as configured; the message says why, in one
    line, for the operator.
    """


# Configuration: listening address and key files.


def listen_description(portspec):
    """
    Turn C{--manhole PORTSPEC} into a server endpoint description: a bare
    port number, or a TCP description without C{interface=}, listens on
    loopback only.  Any other interface must be given explicitly.

    @raise ManholeConfigError: for an empty or malformed spec.
    """
    spec = portspec.strip()
    if not spec:
        raise ManholeConfigError("--manhole needs a port number or an endpoint description")
    if spec.isdigit():
        return f"tcp:{int(spec)}:interface=127.0.0.1"
    kind = spec.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and not re.search(r"(^|[^\\]):interface=", spec):
        return spec + (":interface=127.0.0.1" if kind == "tcp" else r":interface=\:\:1")
    return spec


# Command line.

MANHOLE_HELP = (
    "The manhole console runs in the daemon's reactor thread: an exception there "
    "is harmless, but a call that blocks stops NFS service until it returns; use "
    "the console's helpers (resolve, flush, reload, hung), which never block."
)


class ManholeOptions:
    """
    Options for the manhole, to mix into the daemon's
    L{twisted.python.usage.Options} (list it before C{usage.Options} in
    the bases, and call L{check_manhole_options} from C{postOptions}).
    """

    optParameters = [
        [
            "manhole",
            None,
            None,
            "Serve an SSH Python console into the running daemon on PORTSPEC: a port "
            "number (loopback only) or an endpoint such as tcp:2222:interface=127.0.0.1; "
            "other interfaces only when given explicitly.  Off by default.  "
            + MANHOLE_HELP,
        ],
        [
            "manhole-keys",
            None,
            None,
            "authorized_keys FILE for --manhole: its keys may log in under any name "
            "(public-key authentication only; each login is logged with its key "
            "fingerprint).  Must not be writable by group or others.",
        ],
        [
            "manhole-host-key",
            None,
            None,
            "SSH host key FILE for --manhole; an ed25519 key is generated there (mode "
            "0600) if missing.  The file and its directory must not be writable by "
            "group or others.",
        ],
    ]


def check_manhole_options(options):
    """
    Check the manhole options together; call from C{postOptions}.

    @raise usage.UsageError: if they are inconsistent.
    """
    portspec = options.get("manhole")
    keys_file = options.get("manhole-keys")
    host_key = options.get("manhole-host-key")
    if portspec is None:
        given = [f"--{name}" for name in ("manhole-keys", "manhole-host-key") if options.get(name)]
        if given:
            raise usage.UsageError(f"{' and '.join(given)} need --manhole PORTSPEC")
        return
    if not keys_file or not host_key:
        raise usage.UsageError("--manhole needs --manhole-keys FILE and --manhole-host-key FILE")
    try:
        listen_description(portspec)
    except ManholeConfigError as e:
        raise usage.UsageError(str(e)) from None
