"""
One home-check process's two pipe ends, as the daemon holds them:
L{CheckProcess} writes its jobs (L{_Writer} when the pipe is full) and
decodes its records; L{AnswerPipe} is the one pipe every check process
writes its answers to.  Which process runs what is the engine's
(L{hlfs.homes.engine}); starting and replacing them is
L{hlfs.homes.processes}'.
"""

import os
import signal

from twisted.internet import main
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from hlfs.homes.records import VERSION, FrameError, Hello, Unchunker, decode

log = Logger(namespace="hlfs.probe")

#: The most bytes of answers the daemon reads in one reactor turn: about
#: two answers (a check's is 100-150 bytes).  The rest waits in the pipe
#: for the next turn, after the calls that came meanwhile.  Each answer
#: taken costs the reactor about 0.1 ms (its callers' replies, the next
#: job's write, and the calls those replies bring); a turn that took all N
#: answers waiting took a millisecond or more, and every call that came
#: meanwhile, a cached user's too, waited for it (cached users' p99 in a
#: storm: 6-9 ms; BENCHMARKS.md).
ANSWER_BYTES_PER_TURN = 256


class CheckProcess:
    """
    One check process: the daemon's end of its job pipe, and what it said
    on the answer pipe.

    @ivar number: the number it tags its answers with.
    @ivar pid: its pid, from its L{Hello} (L{None} before).
    @ivar flight: the job it is on (L{hlfs.homes.flights.Flight}), or
        L{None} while idle.
    """

    def __init__(self, owner, number, jobs, peer_fd):
        self.owner = owner
        self.number = number
        self.pid = None
        self.flight = None
        self.ready = False
        self.ended = False
        self.buffer = b""
        self.jobs = jobs  # the write end of its job pipe
        self._peer_fd = peer_fd  # the read end, until the forker has forked
        self._writer = None

    def send(self, frame):
        """
        Write one job.  The pipe is empty (the process answered its last
        job, so it read all of it): the write takes all of a small job at
        once; what does not fit waits for the pipe to take it.
        """
        if self._writer is not None:
            self._writer.pending += frame
            return
        try:
            sent = os.write(self.jobs, frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # it is gone: the forker says so
        if sent < len(frame):
            self._writer = _Writer(self, frame[sent:])
            self.owner.reactor.addWriter(self._writer)

    def received(self, data):
        """
        Take what the process wrote on the answer pipe.
        """
        try:
            records, self.buffer = decode(self.buffer + data if self.buffer else data)
        except FrameError as e:
            self.buffer = b""
            log.error("home-check process {pid}: {error}; ending it", pid=self.pid, error=str(e))
            self.kill()
            return
        for rec in records:
            if self.ended:
                return
            if not self.ready:
                self._greeted(rec)
            else:
                self.owner.answered(self, rec)

    def _greeted(self, hello):
        self.close_peer()
        if type(hello) is not Hello or hello.version != VERSION or hello.role != "check":
            self.owner.refused(self, hello)
            return
        self.pid = hello.pid
        self.ready = True
        self.owner.ready(self)

    def close_peer(self):
        if self._peer_fd is not None:
            os.close(self._peer_fd)
            self._peer_fd = None

    def close(self):
        """
        Close the daemon's ends: the process reads the end of its jobs.
        """
        if self._writer is not None:
            self.owner.reactor.removeWriter(self._writer)
            self._writer = None
        if self.jobs is not None:
            os.close(self.jobs)
            self.jobs = None
        self.close_peer()

    def kill(self):
        """
        End it now (a process stuck in a dead filesystem never reads the
        end of its pipe); the forker reports its end.
        """
        if self.pid is not None and self.jobs is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        self.close()


@implementer(IWriteDescriptor)
class _Writer:
    """
    The rest of a job that did not fit in a check process's pipe.
    """

    def __init__(self, process, pending):
        self.process = process
        self.pending = pending

    def fileno(self):
        return self.process.jobs

    def logPrefix(self):
        return "hlfs-check"

    def doWrite(self):
        try:
            sent = os.write(self.process.jobs, self.pending)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        self.pending = self.pending[sent:]
        if not self.pending:
            self.connectionLost()
        return None

    def connectionLost(self, reason=None):
        self.process.owner.reactor.removeWriter(self)
        self.process._writer = None


@implementer(IReadDescriptor)
class AnswerPipe:
    """
    The read end of the pipe every check process writes its answers to,
    read straight from the reactor, L{ANSWER_BYTES_PER_TURN} at a time
    (C{read_size}).  The daemon keeps a write end open (each new process
    gets a copy of it), so it never ends.
    """

    read_size = ANSWER_BYTES_PER_TURN

    def __init__(self, owner):
        self.owner = owner
        self.read, self.write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read, False)
        self.chunks = Unchunker()

    def fileno(self):
        return self.read

    def logPrefix(self):
        return "hlfs-check"

    def doRead(self):
        try:
            data = os.read(self.read, self.read_size)
        except BlockingIOError:
            return None
        processes = self.owner.numbered
        for number, piece in self.chunks.feed(data):
            process = processes.get(number)
            if process is not None:
                process.received(piece)
        return None

    def connectionLost(self, reason=None):
        pass

    def close(self):
        os.close(self.read)
        os.close(self.write)
