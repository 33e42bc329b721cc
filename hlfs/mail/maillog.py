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

def show(text):
    """
    C{text} (C{bytes} or C{str}: a user name, an envelope sender, a path
    from a world-writable spool) as it may be written to a terminal or a
    log: every character that is not printable (control characters,
    escape sequences, line breaks, bidirectional overrides, bytes that are
    not UTF-8) as a Python-style escape, and a backslash doubled, so a
    line means what it shows and nothing a user chose can move the
    cursor, start a new line or retitle the administrator's terminal.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


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
