"""
C{hlfs lostmail}'s SMTP transport against a real Postfix smtpd (Debian
12's, from the kernel tier's package cache, run on loopback in a private
mount namespace: L{tests.support.postfix}), with and without
C{smtpd_forbid_bare_newline}.  Postfix relays everything it accepts to
an SMTP sink in this process, so the test sees exactly which messages
Postfix took, to whom, and their bytes.

What Debian 12's Postfix 3.7.11 does, shown by the first test with a raw
client: it has C{smtpd_forbid_bare_newline} (backported; default C{no},
with C{smtpd_forbid_bare_newline_exclusions = $mynetworks}, emptied
here since the client is 127.0.0.1).  With C{no}, a "." line ended by a
bare LF ends the data, and what follows is taken as a second message
with its own envelope: the smuggling.  With C{yes}, only CRLF.CRLF ends
it.  A bare CR ends nothing in either.

A mailbox whose messages try every such sequence (bare LF, bare CR,
CRLF, lone dots, dot lines with a CR) is then resent through Postfix by
the real command: each message arrives once, whole, to its user alone,
with exactly the lines it had, each line break of any kind made CRLF.
"""

import socket
import time

import pytest

from hlfs.mail.transports import smtp_lines
from tests.support.lostmail_world import ALICE, AttackWorld
from tests.support.mail import needs_root

pytestmark = [needs_root, pytest.mark.slow]

SMUGGLED = (b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nSMUGGLED\r\n.\r\n")

#: Bodies that try to end DATA early, each followed by a smuggled message.
ATTEMPTS = [
    b"bare LF dot\n.\n",
    b"CRLF dot\r\n.\r\n",
    b"bare CR dot\r.\r",
    b"CRLF dot CR\r\n.\r",
    b"LF dot CRLF\n.\r\n",
    b"CR dot CRLF\r.\r\n",
    b"dots\n..\n.\n...\n. \n",
]


class Sink:
    """
    An SMTP server that records every message relayed to it.
    """

    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK"

    def wait(self, count, timeout=60):
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # and then nothing more
        return list(self.received)


@pytest.fixture(scope="module")
def tree():
    from tests.support.postfix import debcache, package_tree

    try:
        return package_tree()
    except debcache.PackageFetchError as e:
        pytest.fail(f"the Postfix package could not be fetched: {e}")


@pytest.fixture(params=["no", "yes"])
def postfix(request, tree):
    from aiosmtpd.controller import Controller

    from tests.support.postfix import Postfix, free_port

    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    server = None
    try:
        server = Postfix(tree, port, {"smtpd_forbid_bare_newline": request.param,
                                      "smtpd_forbid_bare_newline_exclusions": ""})
        server.forbid = request.param
        server.sink = sink
        yield server
    finally:
        if server is not None:
            server.close()
        controller.stop()


def raw_client(port, body):
    """
    Send one message whose data is C{body}, as is, then read replies
    until the server is quiet.
    """
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line

        reply()
        for command in (b"EHLO attacker\r\n", b"MAIL FROM:<a@example.org>\r\n",
                        b"RCPT TO:<alice@example.org>\r\n", b"DATA\r\n"):
            s.sendall(command)
            reply()
        s.sendall(body)
        replies = [reply()]
        s.settimeout(2)
        try:
            while True:
                replies.append(reply())
        except OSError:
            pass
        return replies


def test_postfix_ends_data_at_a_bare_lf_dot_unless_forbidden(postfix):
    """
    The harness sees smuggling where Postfix allows it: a raw client's
    bare-LF dot line ends the data under C{smtpd_forbid_bare_newline =
    no}, and the smuggled envelope reaches the sink; under C{yes} it does
    not.
    """
    raw_client(postfix.port, b"Subject: raw\r\n\r\nhello\n.\n" + SMUGGLED)
    received = postfix.sink.wait(2 if postfix.forbid == "no" else 1, timeout=20)
    recipients = sorted(r for _, rcpts, _ in received for r in rcpts)
    if postfix.forbid == "no":
        assert recipients == ["alice@example.org", "victim@example.org"], postfix.log()
    else:
        assert recipients == ["alice@example.org"], postfix.log()


def test_lostmail_smuggles_nothing_through_postfix(postfix):
    """
    Every message of a mailbox full of early ends is resent once, whole,
    to alice alone, with its lines as they were (every line break CRLF,
    so no lone CR or LF reaches Postfix at all).
    """
    world = AttackWorld()
    try:
        # Every header Postfix would otherwise add, so it adds only Received.
        bodies = [b"From: a@example.org\nTo: alice@example.org\nDate: Mon, 23 Nov 2026 "
                  b"01:00:00 +0000\nMessage-Id: <try-%d@example.org>\nSubject: try %d\n\n"
                  % (n, n) + attempt + SMUGGLED + b"END-%d\n" % n
                  for n, attempt in enumerate(ATTEMPTS)]
        world.mailbox(ALICE, bodies)
        result = world.run("--smtp", f"127.0.0.1:{postfix.port}", "--domain", "example.org")
        assert result.returncode == 0, result.stderr
        received = postfix.sink.wait(len(bodies))
        assert [r for _, r, _ in received] == [["alice@example.org"]] * len(bodies), \
            postfix.log()
        assert {sender for sender, _, _ in received} == {"sender@example.org"}
        # Postfix relays them in parallel: in any order.
        got = sorted(c[c.index(b"X-Hlfs-Redelivered: "):].split(b"\r\n", 1)[1]
                     for _, _, c in received)
        assert got == sorted(smtp_lines(body) for body in bodies)
        for _, _, content in received:
            assert b"\r" not in content.replace(b"\r\n", b"")
            assert b"\n" not in content.replace(b"\r\n", b"")
    finally:
        world.close()
