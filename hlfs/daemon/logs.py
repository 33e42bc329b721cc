"""
Where C{twistd hlfs} logs: a C{twistd --logger} observer factory that owns
its log file and its syslog connection.

twistd's own observers log to syslog with facility user and no pid, and
rotate the log file on SIGUSR1.  A daemon's messages belong to facility
daemon, tagged with its pid; hlfsd's SIGUSR1 writes the dump, and SIGHUP
reopens the log file after logrotate moved it.  So C{twistd hlfs} logs
through L{observer}: given C{--logfile} or C{--syslog} and no C{--logger}
of the administrator's own, the plugin's options name it for twistd
(L{LOGGER}) and say where it writes (L{LogSettings}).
"""

import socket
import sys
import syslog as _syslog
from dataclasses import dataclass

from twisted.logger import LegacyLogObserverWrapper, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.python.syslog import SyslogObserver

from hlfs.daemon.startup import StartupError, say

#: The fully qualified name twistd's --logger takes.
LOGGER = "hlfs.daemon.logs.observer"


@dataclass(frozen=True)
class LogSettings:
    """
    twistd's logging options, as the plugin read them from its parent.

    @ivar logfile: the C{--logfile} path (C{"-"} for standard output), or
        L{None}.
    @ivar syslog_prefix: the C{--prefix} when C{--syslog} was given, else
        L{None}.
    @ivar nodaemon: whether C{-n} was given.
    """

    logfile: str | None = None
    syslog_prefix: str | None = None
    nodaemon: bool = False

    @classmethod
    def from_twistd(cls, options):
        """
        Read C{options}, twistd's L{ServerOptions} (the plugin's parent).
        """
        if options is None:
            return cls()
        prefix = options.get("prefix") or "twisted"
        return cls(
            logfile=options.get("logfile") or None,
            syslog_prefix=prefix if options.get("syslog") else None,
            nodaemon=bool(options.get("nodaemon")),
        )

    @property
    def stdout(self):
        """
        Whether twistd would log to standard output.
        """
        return self.logfile == "-" or (self.logfile is None and self.nodaemon)

    @property
    def ours(self):
        """
        Whether hlfs's observer is needed: syslog with facility daemon, or a
        log file (twistd's default in daemon mode is twistd.log) to reopen on
        SIGHUP.  Standard output needs neither.
        """
        return self.syslog_prefix is not None or not self.stdout


class DaemonLogObserver:
    """
    The observer factory twistd's C{--logger} calls (with no argument)
    once the service is made.

    @ivar settings: the L{LogSettings} in force; L{use} sets them.
    @ivar log_file: the L{LogFile} opened, or L{None}.
    @ivar facility: the syslog facility.
    """

    facility = _syslog.LOG_DAEMON
    syslog_options = _syslog.LOG_PID
    #: Where the C library's syslog(3) sends (glibc's _PATH_LOG).
    syslog_socket = "/dev/log"

    def __init__(self, settings=None, open_syslog=SyslogObserver):
        self.settings = settings or LogSettings()
        self.log_file = None
        self._open_syslog = open_syslog

    def use(self, settings):
        self.settings = settings

    def __call__(self):
        settings = self.settings
        if settings.syslog_prefix is not None:
            problem = syslog_problem(self.syslog_socket)
            if problem is not None:
                # syslog(3) would drop every line without a word.
                where = "standard error" if settings.nodaemon else (
                    "standard error, which a daemon closes: give --logfile or -n")
                say(f"no syslog at {self.syslog_socket} ({problem}): logging to {where}")
                return textFileLogObserver(sys.__stderr__)
            observer = self._open_syslog(
                settings.syslog_prefix, options=self.syslog_options, facility=self.facility
            )
            return LegacyLogObserverWrapper(observer.emit)
        if settings.stdout:
            if not settings.nodaemon:
                sys.exit("Daemons cannot log to stdout, exiting!")
            return textFileLogObserver(sys.stdout)
        path = settings.logfile or "twistd.log"
        try:
            self.log_file = LogFile.fromFullPath(path)
        except OSError as e:
            raise StartupError(f"cannot open the log file {path}: {e.strerror}") from None
        return textFileLogObserver(self.log_file)

    def reopen(self):
        """
        SIGHUP: reopen the log file under its name (logrotate moved it).
        """
        if self.log_file is not None:
            self.log_file.reopen()


def syslog_problem(path):
    """
    Why nothing would reach syslog through the socket at C{path}, or
    L{None} when something listens there (as syslog(3) tries it: datagram,
    then stream).
    """
    problem = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as s:
            try:
                s.connect(path)
            except OSError as e:
                problem = problem or e.strerror
            else:
                return None
    return problem


#: The factory twistd calls: C{twistd --logger hlfs.daemon.logs.observer}.
observer = DaemonLogObserver()
