"""
Log lines of the mail tools: to stderr for whoever ran us (the MTA puts
a delivery agent's stderr into its logs and bounces) and to syslog,
facility C{mail}, where mail administrators look.

The syslog client is a few lines over a Unix datagram socket, rather
than the C{syslog} module, so that the socket path can be chosen (tests
listen on their own) and so that it is connected before a delivery
agent forks and drops privileges.
"""

import os
import socket
import time

LOG_MAIL = 2 << 3
LOG_ERR = 3
LOG_WARNING = 4
LOG_INFO = 6

DEFAULT_SOCKET = "/dev/log"


class MailLog:
    """
    Writes each line to stderr as C{PROG: LINE} and to syslog as
    C{IDENT[PID]: LINE}.
    """

    def __init__(self, prog, ident, socket_path=DEFAULT_SOCKET, stderr_fd=2):
        self.prog = prog
        self.ident = ident
        self.stderr_fd = stderr_fd
        self._socket = None
        if socket_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.connect(socket_path)
            except OSError:
                # No syslog daemon: stderr still gets every line.
                sock.close()
            else:
                self._socket = sock

    def __call__(self, line, priority=LOG_INFO):
        # os.write: a delivery child leaves with os._exit, so nothing may
        # wait in a Python buffer.
        try:
            os.write(self.stderr_fd, f"{self.prog}: {line}\n".encode("utf-8", "replace"))
        except OSError:
            pass
        if self._socket is not None:
            stamp = time.strftime("%b %e %H:%M:%S")
            record = f"<{LOG_MAIL | priority}>{stamp} {self.ident}[{os.getpid()}]: {line}"
            try:
                self._socket.send(record.encode("utf-8", "replace"))
            except OSError:
                pass
