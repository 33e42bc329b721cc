"""
Start-up errors: one line each, and a non-zero exit status.

Whatever stops the daemon from starting (a port in use, no permission for
the pid file or a port, a log file that cannot be opened, a mount that
fails) is one L{StartupError}, or an error L{describe} turns into one
line.  The line reaches the administrator once, whichever way the daemon
was started:

  - C{hlfs twistd} (the units, C{hlfsd}, C{hlfs demo}) runs twistd in
    process and prints it (L{hlfs.cli.twistd});
  - a plain C{twistd hlfs} lets the exception end the process, and
    L{excepthook}, installed by the plugin, prints it instead of a
    traceback.
"""

import errno
import os
import sys

from twisted.internet.error import CannotListenError

PROGRAM = "hlfs"


class StartupError(Exception):
    """
    The daemon cannot start; the message says why, in one line.

    @ivar status: the exit status: 2 for a configuration the daemon cannot
        use, 1 otherwise.
    @ivar logged: whether the daemon's log has the line already.
    """

    def __init__(self, message, status=1, logged=False):
        Exception.__init__(self, message)
        self.status = status
        self.logged = logged


def _strerror(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def listen_error(error):
    """
    The reason of a L{CannotListenError}: C{127.0.0.1 port 2049: Address
    already in use}.
    """
    reason = error.socketError
    if isinstance(reason, OSError) and reason.errno is not None:
        reason = os.strerror(reason.errno)
    return f"{error.interface or '*'} port {error.port}: {reason}"


def describe(error):
    """
    One line for what stopped the start: the message of a
    L{StartupError}, or the file or port and the system's reason.
    """
    if isinstance(error, StartupError):
        return str(error)
    if isinstance(error, CannotListenError):
        return f"cannot listen on {listen_error(error)}"
    if isinstance(error, OSError):
        where = error.filename
        if where is not None:
            return f"{os.fsdecode(where)}: {_strerror(error)}"
        return _strerror(error)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def listening(service, what):
    """
    Make C{service}'s failure to listen a L{StartupError} naming C{what}
    (C{metrics}, C{manhole}), so that a daemon asked for something it
    cannot serve does not start.  The service must listen synchronously
    in C{privilegedStartService} (C{_raiseSynchronously}).
    """
    start = service.privilegedStartService

    def privilegedStartService():
        try:
            start()
        except CannotListenError as e:
            raise StartupError(f"cannot serve {what} on {listen_error(e)}") from None

    service.privilegedStartService = privilegedStartService
    return service


def _stderr_is_the_journal():
    # systemd says which stream of the journal it connected (device and
    # inode); a start-up error logged to syslog reaches it already.
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(n) for n in stream.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def say(line, stream=None):
    """
    Write C{hlfs: LINE} to the real standard error (twistd redirects
    C{sys.stderr} into the log).  Errors writing it are ignored: there is
    nowhere else to say it.
    """
    stream = stream or sys.__stderr__
    if stream is None:
        return
    try:
        stream.write(f"{PROGRAM}: {line}\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def report(error, logged_to_syslog=False):
    """
    Tell the administrator why the daemon did not start, in one line on
    standard error (unless standard error is the journal and the line went
    to syslog already).

    @return: the exit status.
    """
    if not (logged_to_syslog and _stderr_is_the_journal()):
        say(describe(error))
    return getattr(error, "status", 1)


#: What a file twistd opens at start-up (pid file, log file) can fail with.
_FILE_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS, errno.EISDIR, errno.ENOTDIR)


def is_startup_error(error):
    """
    Whether C{error}, ending a start, is one to report in one line: a
    L{StartupError}, a port twistd could not listen on, or a file it
    could not open.  Anything else is a bug, and keeps its traceback.
    """
    return isinstance(error, (StartupError, CannotListenError)) or (
        isinstance(error, OSError) and error.filename is not None and error.errno in _FILE_ERRORS
    )


def excepthook(kind, value, traceback, _default=sys.excepthook):
    """
    C{sys.excepthook} of a plain C{twistd hlfs}: a start-up error that
    ends the process is one line, not a traceback, and the exit status is
    the error's (twistd has removed its pid file by then; the log is
    written through).
    """
    if is_startup_error(value):
        os._exit(report(value))
    _default(kind, value, traceback)


def install_excepthook():
    sys.excepthook = excepthook
