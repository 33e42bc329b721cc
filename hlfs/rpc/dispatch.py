"""
The dispatcher: from a call message to a reply message, over a table of
programs.  Procedures may answer at once (C{bytes}) or later (a Deferred),
so replies may leave in any order.
"""

from collections import Counter

from twisted.logger import Logger
from twisted.python.failure import Failure

from hlfs.rpc import message
from hlfs.rpc.limits import PRIVILEGED_PORTS, LogThrottle
from hlfs.rpc.message import Drop, Rejected, Unpacker, decode_call, success_header
from hlfs.xdr import XDRError


class Program:
    """
    One RPC program: C{versions} maps a version number to its procedure
    table, a sequence indexed by procedure number whose items are callables
    C{(args: Unpacker, call: Call) -> bytes | Deferred[bytes]} returning the
    encoded result.

    @ivar secure: whether non-NULL calls must come from a privileged port
        (an NFS server's C{secure} export option).
    """

    def __init__(self, number, name, versions, secure=True):
        self.number = number
        self.name = name
        self.versions = versions
        self.secure = secure
        self.low = min(versions)
        self.high = max(versions)


class Dispatcher:
    """
    Answer calls for a set of L{Program}s.

    @ivar stats: call counts.  C{(prog, vers, proc)}: calls that reached
        the procedure, those answered from the reply cache included.
        C{(outcome, prog, vers, proc)}: calls answered with an error,
        C{outcome} naming the reply (C{prog_unavail}, C{prog_mismatch},
        C{proc_unavail}, C{garbage_args}, C{system_err}, C{rpc_mismatch},
        C{auth_badcred}, ...), with L{None} for whatever is not served
        (so a caller cannot make the counters grow without bound).
        C{"dropped"}: messages that got no reply.
    @ivar insecure: serve calls from unprivileged ports too.
    @ivar verbose: log each refused or malformed call (debugging), the
        first L{VERBOSE_LINES} of each kind, then a count a minute while
        they go on.

    Nothing a caller sends is logged per call otherwise: a procedure that
    fails is answered SYSTEM_ERR, and its traceback logged once a minute
    for each procedure and exception type, the others counted
    (L{LogThrottle}), so a caller who can make one fail cannot flood the
    log.
    """

    log = Logger()

    #: Lines of each kind C{verbose} logs before it counts.
    VERBOSE_LINES = 100

    def __init__(self, programs, insecure=False, verbose=False, replies=None, clock=None):
        """
        @param clock: the throttles' clock (the reactor unless given).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.programs = {p.number: p for p in programs}
        self.insecure = insecure
        self.verbose = verbose
        self.stats = Counter()
        self.replies = replies
        self.failures = LogThrottle(clock, log=self.log)
        self.chatter = LogThrottle(clock, log=self.log, burst=self.VERBOSE_LINES)

    def stop(self):
        """
        The server stops: the counts of its throttled log lines are
        logged now, and their timers cancelled.
        """
        self.failures.stop()
        self.chatter.stop()

    def dispatch(self, data, peer):
        """
        Return the reply to the call in C{data} from C{peer} (a C{(host,
        port)} pair): C{bytes}, a Deferred firing with C{bytes}, or L{None}
        when nothing is to be sent (a procedure, too, may answer L{None},
        now or later: the client sends its call again).
        """
        replies = self.replies
        # Whether the call counts as from a privileged port: it does, or
        # the server was told to trust every port (insecure).
        trusted = self.insecure or peer[1] < PRIVILEGED_PORTS
        # Replies are stored only for calls that passed the port check, so
        # only such a caller may be answered from them.
        if replies is not None and trusted:
            hit = replies.lookup(data)
            if hit is not None:
                self.stats[hit[0]] += 1
                return data[:4] + hit[1]
        try:
            call = decode_call(data, trusted)
        except Drop as e:
            self.stats["dropped"] += 1
            if self.verbose:
                self.chatter.info("dropped", "dropped a message from {peer}: {reason}",
                                  peer=peer, reason=e)
            return None
        except Rejected as e:
            self.stats[e.kind, None, None, None] += 1
            if self.verbose:
                self.chatter.info("rejected", "rejected a call from {peer}: {reason}",
                                  peer=peer, reason=e.reason)
            return e.reply
        program = self.programs.get(call.prog)
        if program is None:
            self.stats["prog_unavail", None, None, None] += 1
            return message.accepted(call.xid, message.PROG_UNAVAIL)
        table = program.versions.get(call.vers)
        if table is None:
            self.stats["prog_mismatch", call.prog, None, None] += 1
            return message.prog_mismatch(call.xid, program.low, program.high)
        if call.proc >= len(table):
            self.stats["proc_unavail", call.prog, call.vers, None] += 1
            return message.accepted(call.xid, message.PROC_UNAVAIL)
        if call.proc and program.secure and not trusted:
            self.stats["auth_tooweak", call.prog, call.vers, call.proc] += 1
            return message.auth_error(call.xid, message.AUTH_TOOWEAK)
        self.stats[call.prog, call.vers, call.proc] += 1
        try:
            result = table[call.proc](Unpacker(data, call.offset), call)
        except XDRError as e:
            return self._garbage(call, peer, e)
        except Exception:
            return self._failed(call, peer, Failure())
        if type(result) is not bytes:
            if result is None:
                return None  # the procedure sends no reply: the client retries
            return result.addCallbacks(
                lambda body: None if body is None else success_header(call.xid) + body,
                lambda f: self._late_failure(f, call, peer),
            )
        return success_header(call.xid) + result

    def _garbage(self, call, peer, reason):
        self.stats["garbage_args", call.prog, call.vers, call.proc] += 1
        if self.verbose:
            self.chatter.info(
                "garbage", "garbage arguments for {prog}/{vers}/{proc} from {peer}: {reason}",
                prog=call.prog, vers=call.vers, proc=call.proc, peer=peer, reason=reason,
            )
        return message.accepted(call.xid, message.GARBAGE_ARGS)

    def _failed(self, call, peer, failure):
        self.stats["system_err", call.prog, call.vers, call.proc] += 1
        # Served procedures and exception classes: a bounded set of kinds.
        self.failures.failure(
            (call.prog, call.vers, call.proc, failure.type),
            "procedure {prog}/{vers}/{proc} failed for a call from {peer}",
            failure, prog=call.prog, vers=call.vers, proc=call.proc, peer=peer,
        )
        return message.accepted(call.xid, message.SYSTEM_ERR)

    def _late_failure(self, failure, call, peer):
        if failure.check(XDRError):
            return self._garbage(call, peer, failure.value)
        return self._failed(call, peer, failure)
