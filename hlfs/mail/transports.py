"""
How the remailer hands a message back to the MTA: the local
C{sendmail -oi -f SENDER -- USER}, or SMTP.
"""

import re
import os
import smtplib
import subprocess


class SendFailure(Exception):
    """
    The MTA did not accept a message.
    """


class SendmailTransport:
    """
    Hand messages to the local MTA's C{sendmail -oi -f SENDER -- USER}.
    """

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout

    def describe(self):
        return f"sendmail {self.path}"

    def send(self, sender, recipient, data):
        argv = [
            self.path, "-oi", "-f", os.fsdecode(sender or b"<>"), "--",
            os.fsdecode(recipient),
        ]
        try:
            proc = subprocess.run(
                argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            raise SendFailure(f"{self.path} did not finish in {self.timeout:g}s") from None
        except OSError as e:
            raise SendFailure(f"cannot run {self.path}: {e.strerror}") from None
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SendFailure(
                f"{self.path} exited with status {proc.returncode}"
                + (f": {detail[-1]}" if detail else "")
            )

    def close(self):
        pass


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def smtp_lines(data):
    """
    C{data} with every line break it holds (CRLF, a bare LF, a bare CR)
    as CRLF, the only one SMTP knows.  The server then sees the lines we
    see: a lone CR or LF, which one server takes for a line's end and
    another does not, cannot make a C{.} line that ends the data early
    and smuggles in a second message after it; and every line starting
    with a dot gets the second dot SMTP asks for (C{smtplib} adds it to
    each line after a LF, which is now every line).
    """
    return _LINE_BREAK.sub(b"\r\n", data)


class SMTPTransport:
    """
    Hand messages to an SMTP server, one connection per run.
    """

    def __init__(self, host, port, domain, timeout):
        self.host = host
        self.port = port
        self.domain = domain
        self.timeout = timeout
        self._conn = None

    def describe(self):
        return f"SMTP {self.host}:{self.port}"

    def _address(self, name):
        address = os.fsdecode(name)
        if self.domain and "@" not in address:
            address += "@" + self.domain
        return address

    def send(self, sender, recipient, data):
        data = smtp_lines(data)
        try:
            if self._conn is None:
                # local_hostname given, so no name service lookup happens.
                self._conn = smtplib.SMTP(
                    self.host, self.port, local_hostname="localhost", timeout=self.timeout
                )
                self._conn.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if self._conn.has_extn("8bitmime") else []
            self._conn.sendmail(
                sender.decode("ascii") if sender else "",
                [self._address(recipient)], data, mail_options=options,
            )
        except smtplib.SMTPResponseException as e:
            self._reset()
            raise SendFailure(
                f"{self.host}:{self.port} refused: {e.smtp_code} "
                f"{e.smtp_error.decode('utf-8', 'replace')}"
            ) from None
        except smtplib.SMTPRecipientsRefused as e:
            self._reset()
            code, text = next(iter(e.recipients.values()))
            raise SendFailure(
                f"{self.host}:{self.port} refused the recipient: {code} "
                f"{text.decode('utf-8', 'replace')}"
            ) from None
        except (smtplib.SMTPException, OSError, UnicodeError) as e:
            self.close()
            raise SendFailure(f"{self.host}:{self.port}: {e}") from None

    def _reset(self):
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self):
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._conn = None
