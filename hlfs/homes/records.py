"""
What the daemon and its home-check processes say to each other: small
typed records with named fields, one per frame, under one protocol
version.

A frame is a 4-byte big-endian length and a C{marshal}ed dict: the
record's C{kind} and its fields by name.  The check processes write their
frames to one pipe they share, cut in chunks a pipe keeps whole, each
tagged with the writer's number (L{chunks}, L{Unchunker}): the daemon
reads the answers of several processes with one read.  L{decode} gives back the
record's class, checking that the fields are exactly the declared ones,
each of a declared type, so that a process of another version, or a
confused one, is told apart from a slow one.  Each side's first record
is a L{Hello} with L{VERSION}; a peer of another version is refused (see
L{hlfs.homes.processes} and L{hlfs.homes.checker}).

A job is one record and its answer another (L{CheckHome} and
L{CheckDone}, L{LockFile} and L{LockDone}, L{MailboxFile} and
L{MailboxDone}); a process runs one job at a
time, so an answer needs no id.  To add a kind of job: declare its job
and answer records here with L{record}, give the check process a handler
for it (L{hlfs.homes.checker.HANDLERS}), and move L{VERSION} on.

Nothing of Twisted here: the check processes import this module.
"""

import marshal
import select
import struct
from typing import NamedTuple

#: The protocol version: both sides must speak the same one.
VERSION = 2

_LENGTH = struct.Struct(">I")

#: The longest frame either side accepts: a path is at most PATH_MAX, and
#: a job's data (root's mailbox reads and writes) at most an NFS transfer.
MAX_FRAME = 1 << 22

#: kind -> record class, filled by L{record}.
KINDS = {}


class FrameError(Exception):
    """
    A frame too long, not a record, or a record of no known kind or with
    other fields than its kind declares.
    """


def record(kind, answer=None):
    """
    Register a C{NamedTuple} class as the record of C{kind}: its fields
    and their annotated types are what a frame of that kind must hold.
    A job's record names the record class of its C{answer}.
    """

    def register(cls):
        types = []
        for name in cls._fields:
            annotation = cls.__annotations__[name]
            allowed = getattr(annotation, "__args__", (annotation,))
            types.append((name, tuple(type(None) if t is None else t for t in allowed)))
        cls.kind = kind
        cls.answer = answer
        cls.field_types = tuple(types)
        KINDS[kind] = cls
        return cls

    return register


def encode(rec):
    """
    Return the frame holding record C{rec}.
    """
    fields = dict(zip(rec._fields, rec))
    fields["kind"] = rec.kind
    body = marshal.dumps(fields)
    return _LENGTH.pack(len(body)) + body


def _from_fields(fields):
    if type(fields) is not dict:
        raise FrameError("a frame that is not a record")
    kind = fields.pop("kind", None)
    cls = KINDS.get(kind)
    if cls is None:
        raise FrameError(f"a record of unknown kind {kind!r}")
    try:
        rec = cls(**fields)
    except TypeError:
        raise FrameError(f"a {kind} record with fields {sorted(fields)}") from None
    for (name, allowed), value in zip(cls.field_types, rec):
        if type(value) not in allowed:
            raise FrameError(f"a {kind} record whose {name} is {type(value).__name__}")
    return rec


#: The most bytes one write to a pipe keeps whole among several writers.
PIPE_BUF = select.PIPE_BUF

_CHUNK = struct.Struct(">IH")  # the writer's number, the length of what follows
_PIECE = PIPE_BUF - _CHUNK.size


def chunks(number, frame):
    """
    Return C{frame} cut in chunks of at most L{PIPE_BUF} bytes, each
    tagged with the writer's C{number}: each one a single write.
    """
    if len(frame) <= _PIECE:
        return [_CHUNK.pack(number, len(frame)) + frame]
    return [_CHUNK.pack(number, len(frame[at:at + _PIECE])) + frame[at:at + _PIECE]
            for at in range(0, len(frame), _PIECE)]


class Unchunker:
    """
    The reader's side of L{chunks}: each writer's bytes, put back in
    order.
    """

    def __init__(self):
        self.buffer = b""

    def feed(self, data):
        """
        Return C{[(number, bytes), ...]}: what each writer's complete
        chunks in C{data} (after what came before) hold, in order.
        """
        buffer = self.buffer + data if self.buffer else data
        pieces = []
        at, end = 0, len(buffer)
        while end - at >= _CHUNK.size:
            number, length = _CHUNK.unpack_from(buffer, at)
            if end - at - _CHUNK.size < length:
                break
            start = at + _CHUNK.size
            pieces.append((number, buffer[start:start + length]))
            at = start + length
        self.buffer = buffer[at:]
        return pieces


def decode(buffer):
    """
    Return C{(records, rest)}: the records of the complete frames at the
    start of C{buffer}, and what follows them.

    @raise FrameError: if a frame is too long or holds no valid record.
    """
    records = []
    view = memoryview(buffer)
    at = 0
    end = len(buffer)
    while end - at >= 4:
        (length,) = _LENGTH.unpack_from(view, at)
        if length > MAX_FRAME:
            raise FrameError(f"a frame of {length} bytes")
        if end - at - 4 < length:
            break
        try:
            fields = marshal.loads(view[at + 4:at + 4 + length])
        except (EOFError, ValueError, TypeError) as e:
            raise FrameError(f"a frame that is not data: {e}") from None
        records.append(_from_fields(fields))
        at += 4 + length
    return records, bytes(view[at:])


# -- every side's first record


@record("hello")
class Hello(NamedTuple):
    """
    A side says who it is: its protocol L{VERSION}, its pid, and its
    C{role}: C{"daemon"}, C{"forker"} (the process the check processes are
    forked from) or C{"check"}.
    """

    version: int
    pid: int
    role: str


# -- between the daemon and the forker


@record("fork")
class Fork(NamedTuple):
    """
    The daemon asks for one more check process, reading its jobs from the
    first pipe sent with this record (C{SCM_RIGHTS}) and writing its
    answers, in chunks tagged with C{number}, to the second (the pipe all
    check processes share).  A number is never used twice.
    """

    number: int


@record("fork-failed")
class ForkFailed(NamedTuple):
    """
    The forker could not fork check process C{number}: C{errno} and why.
    """

    number: int
    errno: int
    reason: str


@record("ended")
class Ended(NamedTuple):
    """
    Check process C{number} ended, with C{status} (as C{waitpid} gives
    it): the forker reaped it.
    """

    number: int
    status: int


# -- jobs and their answers


class Identity(NamedTuple):
    """
    Whose filesystem identity a job runs with, as the daemon planned it
    without blocking (L{hlfs.homes.credentials.Credentials.plan}); the
    fields of every job record that runs as a user.

    @ivar groups_from: C{"known"}: C{gid} and C{groups} are the user's;
        C{"home"}: the gid of the home, no supplementary groups;
        C{"name-service"}: ask it, and take the home's gid if it does not
        know the user.
    @ivar keep: whether to send back what C{"home"} found, for the
        daemon to keep for the user's next jobs.
    """

    uid: int
    name: bytes
    home: bytes
    groups_from: str
    gid: int
    groups: tuple
    keep: bool


IDENTITY_FIELDS = Identity._fields


@record("check-done")
class CheckDone(NamedTuple):
    """
    A L{CheckHome}'s answer: the L{hlfs.homes.probe.ProbeResult} fields,
    and the identity found to keep for the user (C{(uid, gid, groups)})
    or L{None}.
    """

    ok: bool
    errno: int
    path: bytes
    reason: str
    kept: tuple | None


@record("lock-done")
class LockDone(NamedTuple):
    """
    A L{LockFile}'s answer: C{ok} with the lock's C{stat} (the fields of
    L{hlfs.core.locks.LockStat}, L{None} when there is no lock), or not
    with C{errno}; the identity to keep, as for L{CheckDone}; and
    C{squatter}, the owner of another user's file removed from the place
    of the lock in the alternate spool, or L{None}.
    """

    ok: bool
    errno: int
    stat: tuple | None
    kept: tuple | None
    squatter: int | None


@record("check-home", answer=CheckDone)
class CheckHome(NamedTuple):
    """
    Check that C{spool} (C{home/subdir}) can take mail, as the user.
    """

    uid: int
    name: bytes
    home: bytes
    groups_from: str
    gid: int
    groups: tuple
    keep: bool
    spool: bytes
    fsync: bool


@record("lock-file", answer=LockDone)
class LockFile(NamedTuple):
    """
    Root's dotlock C{path} (C{NAME.lock} next to NAME's mailbox), as
    NAME: C{op} is C{"stat"}, C{"create"} (exclusively, with C{mode}) or
    C{"remove"}.  C{alt_dir}, the alternate spool, is the one spool
    whose own link is followed.
    """

    uid: int
    name: bytes
    home: bytes
    groups_from: str
    gid: int
    groups: tuple
    keep: bool
    op: str
    path: bytes
    mode: int
    alt_dir: bytes


@record("mailbox-done")
class MailboxDone(NamedTuple):
    """
    A L{MailboxFile}'s answer: C{ok} with the mailbox's C{stat} after the
    operation (the fields of L{hlfs.core.mailfiles.FileStat}, L{None}
    when there is no mailbox) and, for a read, its C{data}; or not, with
    C{errno}.  C{kept} as for L{CheckDone}.
    """

    ok: bool
    errno: int
    stat: tuple | None
    data: bytes
    kept: tuple | None


@record("mailbox-file", answer=MailboxDone)
class MailboxFile(NamedTuple):
    """
    Root's view of user NAME's real mailbox C{path}, as NAME
    (L{hlfs.homes.mailboxio}): C{op} is C{"stat"}, C{"create"} (with
    C{mode}), C{"read"} (C{count} bytes at C{offset}), C{"write"}
    (C{data} at C{offset}), C{"truncate"} (to C{size}) or C{"sync"}.
    Nothing may start or end more than C{gap} bytes past the mailbox's
    end.  C{alt_dir}, the alternate spool, is the one spool whose own
    link is followed.
    """

    uid: int
    name: bytes
    home: bytes
    groups_from: str
    gid: int
    groups: tuple
    keep: bool
    op: str
    path: bytes
    alt_dir: bytes
    offset: int
    count: int
    mode: int
    size: int
    data: bytes
    gap: int


@record("refused")
class Refused(NamedTuple):
    """
    A check process could not run the job it was given (a kind it has no
    handler for): why.
    """

    reason: str


def identity_of(job):
    """
    Return the L{Identity} fields of a job record.
    """
    return Identity(*(getattr(job, name) for name in IDENTITY_FIELDS))
