"""
Log lines of the mail tools: to stderr for whoever ran us (the MTA puts
a delivery agent's stderr into its logs and bounces) and to syslog,
facility C{mail}, where mail administrators look.

Syslog is the standard library's L{logging.handlers.SysLogHandler} on a
Unix datagram socket whose path can be chosen (tests listen on their
own); it connects when the log is made, so before a delivery agent forks
and drops privileges.  It lacks only two things we need, both supplied
here: the sending process's pid at send time (a delivery child logs its
own result), and silence when syslog is gone (stderr already has the
line; a traceback there would reach the MTA's bounce).
"""

import logging
import logging.handlers
import os
import socket

LOG_MAIL = logging.handlers.SysLogHandler.LOG_MAIL
LOG_ERR = logging.handlers.SysLogHandler.LOG_ERR
LOG_WARNING = logging.handlers.SysLogHandler.LOG_WARNING
LOG_INFO = logging.handlers.SysLogHandler.LOG_INFO

DEFAULT_SOCKET = "/dev/log"

_LEVELS = {LOG_ERR: logging.ERROR, LOG_WARNING: logging.WARNING, LOG_INFO: logging.INFO}


class _MailSysLogHandler(logging.handlers.SysLogHandler):
    append_nul = False

    def handleError(self, record):
        # No syslog daemon (or it went away): stderr still got the line.
        pass


class MailLog:
    """
    Writes each line to stderr as C{PROG: LINE} and to syslog as
    C{IDENT[PID]: LINE}.
    """

    def __init__(self, prog, ident, socket_path=DEFAULT_SOCKET, stderr_fd=2):
        self.prog = prog
        self.ident = ident
        self.stderr_fd = stderr_fd
        self._syslog = None
        if socket_path:
            handler = _MailSysLogHandler(socket_path, LOG_MAIL, socket.SOCK_DGRAM)
            handler.setFormatter(logging.Formatter(f"{ident}[%(process)d]: %(message)s"))
            self._syslog = handler

    def __call__(self, line, priority=LOG_INFO):
        # os.write: a delivery child leaves with os._exit, so nothing may
        # wait in a Python buffer.
        try:
            os.write(self.stderr_fd, f"{self.prog}: {line}\n".encode("utf-8", "replace"))
        except OSError:
            pass
        if self._syslog is not None:
            level = _LEVELS.get(priority, logging.INFO)
            self._syslog.handle(logging.LogRecord(self.ident, level, __file__, 0, line, None, None))
