"""
hlfs's private status program (the paper's future work, "an RPC interface
for querying hlfsd's status"): one procedure returning name/value pairs.

    program HLFS_STATUS 0x20004846, version 1:
        0  NULL
        1  STATUS  -> pair<>  where pair = { string name<>; string value<>; }
"""

from hlfs.nfs.attrs import FALSE, TRUE
from hlfs.xdr import pack_opaque

PROGRAM = 0x20004846
VERSION = 1

NFS2_PROCEDURES = (
    "NULL GETATTR SETATTR ROOT LOOKUP READLINK READ WRITECACHE WRITE CREATE "
    "REMOVE RENAME LINK SYMLINK MKDIR RMDIR READDIR STATFS"
).split()
NFS3_PROCEDURES = (
    "NULL GETATTR SETATTR LOOKUP ACCESS READLINK READ WRITE CREATE MKDIR SYMLINK "
    "MKNOD REMOVE RMDIR RENAME LINK READDIR READDIRPLUS FSSTAT FSINFO PATHCONF COMMIT"
).split()
MOUNT_PROCEDURES = "NULL MNT DUMP UMNT UMNTALL EXPORT".split()
STATUS_PROCEDURES = "NULL STATUS".split()

PROGRAMS = {100003: "nfs", 100005: "mount", PROGRAM: "status"}
PROCEDURES = {
    (100003, 2): NFS2_PROCEDURES,
    (100003, 3): NFS3_PROCEDURES,
    (100005, 1): MOUNT_PROCEDURES,
    (100005, 3): MOUNT_PROCEDURES,
    (PROGRAM, VERSION): STATUS_PROCEDURES,
}


def call_labels(prog, vers, proc):
    """
    Return C{(program, version, procedure)} names for a counter key's
    numbers, e.g. C{("nfs", "3", "READLINK")}; C{""} for L{None} (not
    served).
    """
    program = "" if prog is None else PROGRAMS.get(prog, str(prog))
    version = "" if vers is None else str(vers)
    procedure = ""
    if proc is not None:
        names = PROCEDURES.get((prog, vers), ())
        procedure = names[proc] if proc < len(names) else str(proc)
    return program, version, procedure


def request_counts(stats):
    """
    Return C{(name, count)} pairs from the dispatcher's counters:
    C{("requests.nfs3.READLINK", 12)} for calls that reached a procedure,
    C{("requests.auth_tooweak.nfs3.READLINK", 1)} or
    C{("requests.prog_unavail", 2)} for error replies.
    """
    pairs = []
    for key, count in sorted(stats.items(), key=lambda kv: str(kv[0])):
        if isinstance(key, str):
            pairs.append((f"requests.{key}", count))
            continue
        outcome = key[0] if isinstance(key[0], str) else None
        program, version, procedure = call_labels(*(key[1:] if outcome else key))
        parts = [outcome] if outcome else []
        if program:
            parts.append(program + version)
        if procedure:
            parts.append(procedure)
        pairs.append(("requests." + ".".join(parts), count))
    return pairs


def encode_pairs(pairs):
    parts = []
    for name, value in pairs:
        parts.append(TRUE + pack_opaque(str(name).encode()) + pack_opaque(str(value).encode()))
    parts.append(FALSE)
    return b"".join(parts)


def decode_pairs(body):
    pairs = []
    while body.bool():
        pairs.append((body.opaque(1024).decode(), body.opaque(4096).decode()))
    return pairs


class StatusProgram:
    """
    The procedure table; C{report} is a callable returning the pairs.

    The program is open to every caller, and its reply is the dearest the
    daemon makes (tens of pairs, and a count of the open descriptors), so
    a reply is made again only when something may have changed: in a new
    reactor turn, or after a call to anything but this procedure
    (C{calls}, a callable, counts those).  Calls pipelined by the hundred
    then cost one report a turn, and the turn's other callers do not wait
    behind them; a client that asks, calls, and asks again, even within
    one turn, sees its call in the second report.
    """

    def __init__(self, report, clock, calls):
        self.report = report
        self.clock = clock
        self.calls = calls
        self.procedures = (self.null, self.status)
        self._reply = None
        self._made_after = None

    def null(self, args, call):
        return b""

    def status(self, args, call):
        calls = self.calls()
        if self._reply is None or calls != self._made_after:
            if self._reply is None:
                self.clock.callLater(0, self._turn_over)
            self._reply = encode_pairs(self.report())
            self._made_after = calls
        return self._reply

    def _turn_over(self):
        self._reply = None


