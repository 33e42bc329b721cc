"""
L{CheckProcesses}: the daemon's home-check processes, as the daemon sees
them.  One forker (C{python -m hlfs.homes.checker}, see there) is started
with the service, and forks C{size} check processes; one that ends is
forked again.  What runs in them, and when, is the engine's
(L{hlfs.homes.engine}).

Each check process reads its jobs from a pipe of its own, and writes its
answers to the pipe all of them share, in chunks a pipe keeps whole,
tagged with the number the daemon gave it (L{hlfs.homes.records.chunks}).
The daemon takes a few answers a turn (L{AnswerPipe}), and only when the
reactor turns to that pipe, never in the middle of a call: the calls that
come meanwhile, cached users' among them, are answered in between.  The
forker reports each process that ends.

Each side's first record is a L{Hello}: a forker or a check process of
another protocol version (hlfs upgraded under a running daemon) is
refused with one log line, and the forker started again at most once a
minute.
"""

import os
import socket
import sys

from twisted.internet import protocol
from twisted.logger import Logger

from hlfs.homes.checkprocess import AnswerPipe, CheckProcess
from hlfs.homes.records import (
    VERSION, Ended, Fork, ForkFailed, FrameError, Hello, decode, encode,
)

log = Logger(namespace="hlfs.probe")

#: Seconds between two starts of a forker that ended or was refused, at
#: most; the first restart is at once.
RESTART_LIMIT = 60.0


class _Control(protocol.Protocol):
    """
    The daemon's end of the forker's control socket.
    """

    def __init__(self, owner):
        self.owner = owner
        self.buffer = b""
        self.greeted = False

    def logPrefix(self):
        return "hlfs-check-forker"

    def dataReceived(self, data):
        try:
            records, self.buffer = decode(self.buffer + data)
        except FrameError as e:
            self.buffer = b""
            log.error("home-check forker: {error}; ending it", error=str(e))
            self.transport.abortConnection()
            return
        for rec in records:
            if not self.greeted:
                self.greeted = True
                self.owner.forker_greeted(self, rec)
            elif type(rec) is Ended:
                self.owner.process_ended(rec.number, rec.status)
            elif type(rec) is ForkFailed:
                self.owner.fork_failed(rec)

    def connectionLost(self, reason=None):
        self.owner.forker_ended(self)


class _Forker(protocol.ProcessProtocol):
    """
    The forker's process: reaped when it ends.
    """

    def processEnded(self, reason):
        pass


class _Factory(protocol.Factory):
    def __init__(self, proto):
        self.proto = proto

    def buildProtocol(self, addr):
        return self.proto


def checker_argv():
    """
    The forker's command: this Python, running L{hlfs.homes.checker}.
    """
    return [sys.executable, "-m", "hlfs.homes.checker"]


class CheckProcesses:
    """
    C{size} check processes forked by one forker, for an owner (the
    engine) told of each one ready (idle), each answer, and each one that
    ended.

    @ivar started: check processes started in all (replacements
        included).
    @ivar alive: the processes that said hello and have not ended.
    @ivar numbered: number -> the process, from its fork to its end.
    """

    def __init__(self, size, reactor, owner, argv=None):
        if size < 1:
            raise ValueError("home checks need at least one process")
        self.size = size
        self.reactor = reactor
        self.owner = owner
        self.argv = argv or checker_argv()
        self.started = 0
        self.alive = []
        self.numbered = {}
        self._answers = None
        self._control = None
        self._numbers = 0
        self._running = False
        self._restart_call = None
        self._restart_delay = 0.0
        self._refusal_logged = False
        self._calls = set()  # forks asked for again later

    # -- life cycle

    def start(self):
        """
        Start the forker and ask it for C{size} processes.
        """
        self._running = True
        self._answers = AnswerPipe(self)
        self.reactor.addReader(self._answers)
        self._start_forker()

    def stop(self):
        """
        End every process: the forker at the end of its control socket
        (it kills the check processes it forked), and each check process
        by its pipe and SIGKILL (it may be stuck).
        """
        self._running = False
        for call in (self._restart_call, *self._calls):
            if call is not None and call.active():
                call.cancel()
        self._restart_call = None
        self._calls.clear()
        for child in list(self.numbered.values()):
            child.ended = True
            child.kill()
        self.numbered.clear()
        self.alive = []
        if self._control is not None:
            control, self._control = self._control, None
            control.transport.loseConnection()
        if self._answers is not None:
            self.reactor.removeReader(self._answers)
            self._answers.close()
            self._answers = None

    def _start_forker(self):
        self._restart_call = None
        daemon_end, forker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        env = dict(os.environ)
        # The forker must import this very hlfs, wherever it was loaded from.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.reactor.spawnProcess(
                _Forker(), self.argv[0], [*self.argv, "--control", "3"], env=env,
                childFDs={0: devnull, 1: devnull, 2: 2, 3: forker_end.fileno()})
        except OSError as e:
            daemon_end.close()
            log.error("cannot start the home-check processes: {error}", error=e.strerror or e)
            self._restart_later()
            return
        finally:
            forker_end.close()
            os.close(devnull)
        daemon_end.setblocking(False)
        control = _Control(self)
        self.reactor.adoptStreamConnection(daemon_end.fileno(), socket.AF_UNIX, _Factory(control))
        daemon_end.close()
        self._control = control
        control.transport.write(encode(Hello(VERSION, os.getpid(), "daemon")))
        for _ in range(self.size - len(self.numbered)):
            self._fork()

    def _restart_later(self):
        if not self._running or self._restart_call is not None:
            return
        delay, self._restart_delay = self._restart_delay, min(
            RESTART_LIMIT, max(1.0, self._restart_delay * 2))
        self._restart_call = self.reactor.callLater(delay, self._start_forker)

    # -- the forker

    def forker_greeted(self, control, hello):
        if control is not self._control:
            return
        if type(hello) is Hello and hello.version == VERSION and hello.role == "forker":
            self._refusal_logged = False
            return
        self._refuse(getattr(hello, "version", "?"), "forker")
        self._forker_gone()
        control.transport.abortConnection()
        self._restart_later()

    def forker_ended(self, control):
        if control is not self._control:
            return
        self._forker_gone()
        if not self._running:
            return
        log.error("the home-check forker ended; starting it again")
        self._restart_later()

    def _forker_gone(self):
        # Its check processes end with it (PR_SET_PDEATHSIG); each is
        # forked again by the next forker.
        self._control = None
        for child in list(self.numbered.values()):
            self._ended(child)

    def fork_failed(self, failed):
        child = self.numbered.pop(failed.number, None)
        if child is not None:
            child.ended = True
            child.close()
        log.error("cannot start a home-check process: {error}", error=os.strerror(failed.errno))
        self._fork_later()

    def _refuse(self, version, role):
        if not self._refusal_logged:
            self._refusal_logged = True
            log.error(
                "a home-check {role} speaks protocol version {theirs}, this daemon {ours} "
                "(hlfs changed under a running daemon?): refused; restart hlfs; until then "
                "every home check waits and its caller gets the alternate spool",
                role=role, theirs=version, ours=VERSION)
        self._restart_delay = RESTART_LIMIT

    # -- check processes

    def _fork(self):
        # The forker gets the read end of the new process's job pipe and a
        # copy of the answer pipe's write end.
        job_read, job_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(job_write, False)
        self._numbers += 1
        child = CheckProcess(self, self._numbers, job_write, job_read)
        self.numbered[child.number] = child
        transport = self._control.transport
        transport.sendFileDescriptor(job_read)
        transport.sendFileDescriptor(self._answers.write)
        transport.write(encode(Fork(child.number)))

    def _fork_later(self, delay=1.0):
        def again():
            self._calls.discard(call)
            if self._running and self._control is not None \
                    and len(self.numbered) < self.size:
                self._fork()

        call = self.reactor.callLater(delay, again)
        self._calls.add(call)

    def ready(self, child):
        if not self._running or self.numbered.get(child.number) is not child:
            child.kill()
            return
        self.started += 1
        self._restart_delay = 0.0
        self.alive.append(child)
        self.owner.ready(child)

    def refused(self, child, hello):
        self._refuse(getattr(hello, "version", "?"), "check process")
        child.kill()

    def answered(self, child, answer):
        self.owner.answered(child, answer)

    def process_ended(self, number, status):
        child = self.numbered.get(number)
        if child is not None:
            self._ended(child)

    def _ended(self, child):
        del self.numbered[child.number]
        if child in self.alive:
            self.alive.remove(child)
        was_ready = child.ready
        child.close()
        if child.ended or not self._running:
            return
        child.ended = True
        self.owner.ended(child)
        if self._control is not None:
            if was_ready:
                self._fork()
            else:
                # It ended before it said hello: again in a second, not in
                # a loop.
                self._fork_later()

    def pids(self):
        """
        Return the pids of the check processes that said hello.
        """
        return [child.pid for child in self.alive]
