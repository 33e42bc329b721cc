"""
The mbox format as local delivery agents write it (mboxrd).

Each message starts with a C{From_} line carrying the envelope sender and
the delivery date, body lines matching C{^>*From } get one more C{>}, and
a blank line ends the message.  Reading removes one C{>} again, so a
message goes in and comes out byte for byte.

Pure logic: no file system access beyond the file objects handed in.
"""

import re
import time
from typing import NamedTuple

NULL_SENDER = b"MAILER-DAEMON"

_QUOTED_FROM = re.compile(rb">*From ")
_UNSAFE_SENDER = re.compile(rb"[\x00-\x20\x7f]")


def clean_sender(sender):
    """
    Return C{sender} as it may appear on a C{From_} line: no whitespace or
    control characters (they would split the line); the null sender is
    written C{MAILER-DAEMON}.
    """
    if sender in (b"", b"<>"):
        return NULL_SENDER
    if sender.startswith(b"<") and sender.endswith(b">"):
        sender = sender[1:-1] or NULL_SENDER
    return _UNSAFE_SENDER.sub(b"_", sender)


def from_line(sender, when):
    """
    Return the C{From_} line (with its newline) for envelope sender
    C{sender} (C{bytes}) and Unix time C{when}, in ctime(3) format.
    """
    date = time.asctime(time.localtime(when)).encode("ascii")
    return b"From " + clean_sender(sender) + b" " + date + b"\n"


def quote_line(line):
    """
    mboxrd quoting of one body line.
    """
    if _QUOTED_FROM.match(line):
        return b">" + line
    return line


def unquote_line(line):
    """
    Undo L{quote_line}.
    """
    if line.startswith(b">") and _QUOTED_FROM.match(line):
        return line[1:]
    return line


def message_chunks(first_line, lines):
    """
    Yield the bytes that store one message in a mailbox.

    @param first_line: the C{From_} line, from L{from_line}.
    @param lines: the message's lines, each with its newline except maybe
        the last.
    """
    yield first_line
    last = b"\n"
    for line in lines:
        if line:
            yield quote_line(line)
            last = line
    if not last.endswith(b"\n"):
        yield b"\n"
    yield b"\n"


def separator_needed(tail):
    """
    Given the last (up to) two bytes of a mailbox, return what must be
    written before a new C{From_} line so that it starts after a blank
    line (a mailbox whose last message lost its ending, say).
    """
    if tail in (b"", b"\n") or tail.endswith(b"\n\n"):
        return b""
    if tail.endswith(b"\n"):
        return b"\n"
    return b"\n\n"


class MboxMessage(NamedTuple):
    """
    One message read from a mailbox.

    @ivar start: file offset of its C{From_} line.
    @ivar end: file offset just after it (after its blank line).
    @ivar from_line: the C{From_} line, or L{None} for data found before
        the first C{From_} line of a malformed mailbox.
    @ivar sender: envelope sender (C{b""} for the null sender or unknown).
    @ivar content: the message, unquoted, without the separating blank line.
    """

    start: int
    end: int
    from_line: bytes | None
    sender: bytes
    content: bytes


def sender_of(line):
    """
    Return the envelope sender named by a C{From_} line, C{b""} for the
    null sender.
    """
    fields = line.split()
    if len(fields) < 2:
        return b""
    sender = fields[1]
    if sender in (NULL_SENDER, b"<>", b"MAILER_DAEMON"):
        return b""
    if sender.startswith(b"<") and sender.endswith(b">"):
        sender = sender[1:-1]
    return sender


#: The longest envelope line read from the top of the input.
MAX_ENVELOPE_LINE = 4096


def read_envelope(stream):
    """
    Read the input's first line if it is an envelope C{From_} line, as
    Postfix's C{mailbox_command} and Exim's pipe transport put there.

    @return: C{(sender, rest)}: the line's sender (C{b""} for the null
        sender) or L{None} when there is no such line, and the bytes read
        that belong to the message.
    """
    head = b""
    while len(head) < 5 or (head.startswith(b"From ") and b"\n" not in head):
        chunk = stream.read(1 if len(head) < 5 else 512)
        if not chunk:
            break
        head += chunk
        if not b"From ".startswith(head[:5]) or len(head) > MAX_ENVELOPE_LINE:
            return None, head
    if not head.startswith(b"From ") or b"\n" not in head:
        return None, head
    line, _, rest = head.partition(b"\n")
    return sender_of(line.rstrip(b"\r")), rest


def _is_blank(line):
    return line in (b"\n", b"\r\n")


def iter_mbox(f, start=0):
    """
    Split a mailbox into L{MboxMessage}s.

    A C{From } line starts a message when it is the first line read or
    follows a blank line, so an unquoted C{From } inside a paragraph
    (written by a careless agent) does not split a message.  Data before
    the first C{From_} line is returned as a message whose C{from_line}
    is L{None}, so that nothing is silently dropped.

    @param f: binary file object positioned anywhere; reading starts at
        C{start}.
    """
    f.seek(start)
    offset = start
    msg_start = start
    header = None
    lines = []
    previous_blank = True
    have_message = False

    def finish(end):
        body = lines[:-1] if lines and _is_blank(lines[-1]) else lines
        return MboxMessage(
            msg_start,
            end,
            header,
            sender_of(header) if header is not None else b"",
            b"".join(unquote_line(line) for line in body),
        )

    while True:
        line = f.readline()
        if not line:
            break
        if previous_blank and line.startswith(b"From "):
            if have_message:
                yield finish(offset)
            msg_start = offset
            header = line
            lines = []
            have_message = True
        else:
            lines.append(line)
            have_message = True
        previous_blank = _is_blank(line)
        offset += len(line)
    if have_message:
        yield finish(offset)
