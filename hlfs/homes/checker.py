"""
The home-check processes: C{python -m hlfs.homes.checker --control FD},
started by the daemon (L{hlfs.homes.processes}) before it serves.

That command is the I{forker}: it imports what a check needs, once, and
then forks one check process per request the daemon sends on its
control socket (a L{hlfs.homes.records.Fork} and, with it, two pipes:
the new process's own for its jobs, and the one every check process
writes its answers to), and reports each one that ends.  The check processes share the forker's memory
until they write to it: N of them cost little more than one, and a
process that ends is replaced by a fork, in milliseconds, not by a
Python start (seconds under emulation).

A check process is single-threaded.  It reads one job at a time from its
pipe, runs it with the user's filesystem identity (L{hlfs.homes.creds};
no process changes its uid) and writes the answer.  A check that hangs in
a dead filesystem holds this process and nothing else.  Why processes
and not threads of the daemon: each check makes a dozen system calls,
and in a thread each of them handed the GIL back and forth with the
reactor; a process of its own runs them on the other CPU.

Every side's first record is a L{Hello}; a peer of another protocol
version is refused with one line.  The forker ends at the end of its
control socket (the daemon stopped or died), killing its check
processes; a check process ends at the end of its job pipe, and with the
forker (C{PR_SET_PDEATHSIG}), as the forker does with the daemon.

Nothing of Twisted here: a lean process starts faster and forks smaller.
"""

import errno as errnos
import gc
import os
import select
import signal
import socket
import sys
import time

from hlfs.homes.lockfiles import run_lock
from hlfs.homes.mailboxio import run_mailbox
from hlfs.homes.probe import HomeProbe
from hlfs.homes.records import (
    VERSION, CheckHome, Ended, Fork, ForkFailed, FrameError, Hello, LockFile, MailboxFile, Refused,
    chunks, decode, encode,
)

#: How much lower the check processes' priority is than the daemon's.
NICE = 5


def handlers():
    """
    Return a check process's job handlers: job record class -> a
    function of the job returning its answer record.  Made after the
    fork: the home check names its test files for its own pid.
    """
    probe = HomeProbe()
    return {CheckHome: probe.run, LockFile: run_lock, MailboxFile: run_mailbox}


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _prctl():
    # Found once, in the forker: a check process only calls it.
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with_parent():
    # A parent killed with SIGKILL closes our pipes, but a check stuck in
    # a dead filesystem would not read them: the kernel ends us as well.
    if _PRCTL is not None:
        PR_SET_PDEATHSIG = 1
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ProtocolMismatch(Exception):
    """
    The daemon speaks another protocol version, or said something else
    first.
    """


def serve(jobs, answers, number, run=None):
    """
    Run the jobs read from pipe C{jobs} until its end, one at a time,
    writing each one's answer to pipe C{answers} (shared with the other
    check processes: in chunks tagged with C{number}) before reading the
    next.  A L{Hello} first says which process this is.
    """
    run = handlers() if run is None else run

    def send(answer):
        for piece in chunks(number, encode(answer)):
            _write_all(answers, piece)

    send(Hello(VERSION, os.getpid(), "check"))
    buffer = b""
    while True:
        data = os.read(jobs, 1 << 16)
        if not data:
            return
        received, buffer = decode(buffer + data)
        for job in received:
            handler = run.get(type(job))
            send(Refused(f"no handler for a {job.kind} record") if handler is None
                 else handler(job))


class Forker:
    """
    The forker's state: its control socket and the check processes it
    forked.
    """

    def __init__(self, control):
        self.control = control
        self.children = {}  # pid -> the number the daemon gave it
        self.fds = []  # pipes received, not yet given to a child
        self.greeted = False
        self._wakeup = None

    def send(self, rec):
        _write_all(self.control.fileno(), encode(rec))

    def reap(self):
        """
        Reap the check processes that ended, and tell the daemon.
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            number = self.children.pop(pid, None)
            if number is not None:
                self.send(Ended(number, status))

    def run(self):
        """
        Answer the daemon's requests until the end of the control socket.
        """
        control = self.control
        # SIGCHLD wakes the loop through this pipe (signal.set_wakeup_fd):
        # ended processes are reaped and reported between requests.
        wakeup, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (wakeup, wakeup_write)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.send(Hello(VERSION, os.getpid(), "forker"))
        buffer = b""
        while True:
            ready, _, _ = select.select([control, wakeup], [], [])
            if wakeup in ready:
                try:
                    os.read(wakeup, 512)
                except BlockingIOError:
                    pass
                self.reap()
            if control not in ready:
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, 1 << 16, 64)
            except ConnectionResetError:
                return  # the daemon closed its end with our reports unread
            self.fds.extend(fds)
            if not data:
                return
            requests, buffer = decode(buffer + data)
            for request in requests:
                self.handle(request)

    def handle(self, request):
        if not self.greeted:
            if type(request) is not Hello or request.version != VERSION:
                raise ProtocolMismatch(
                    f"the daemon speaks protocol version {getattr(request, 'version', '?')}, "
                    f"this process {VERSION} (hlfs changed under a running daemon?): exiting")
            self.greeted = True
            return
        if type(request) is not Fork:
            raise FrameError(f"a {request.kind} record on the control socket")
        if len(self.fds) < 2:
            raise FrameError("a fork request without its two pipes")
        pipes = self.fds[:2]
        del self.fds[:2]
        try:
            pid = os.fork()
        except OSError as e:
            for fd in pipes:
                os.close(fd)
            self.send(ForkFailed(request.number, e.errno or errnos.EIO, e.strerror or str(e)))
            return
        if pid == 0:
            self.become_check_process(*pipes, request.number)
        for fd in pipes:
            os.close(fd)
        self.children[pid] = request.number

    def become_check_process(self, jobs, answers, number):
        # In the new check process: never returns.
        status = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            parent = os.getppid()
            _die_with_parent()
            if os.getppid() != parent:  # the forker ended before the prctl
                os._exit(0)
            self.control.close()
            for fd in (*self.fds, *self._wakeup):
                os.close(fd)
            serve(jobs, answers, number)
        except BrokenPipeError:
            pass  # the daemon went away: nobody to tell
        except BaseException as e:
            sys.stderr.write(f"hlfs home-check process {os.getpid()}: {e}\n")
            status = 1
        finally:
            os._exit(status)

    def end(self, wait=2.0):
        """
        Kill the check processes still running (a check stuck in a dead
        filesystem would never read the end of its pipe), and reap them
        for at most C{wait} seconds.
        """
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.01)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # The daemon's Ctrl-C reaches its whole process group: the daemon
    # stops us by closing our socket, and a traceback here would say
    # nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon answers every caller, cached ones too: when CPUs are
    # short, it goes first, and checks take what it leaves.  SCHED_BATCH:
    # a check process the daemon wakes with a job never preempts it (in a
    # storm, one write in ten to a check process's pipe cost the daemon
    # 0.1-0.7 ms, the time the woken process ran in its place).  The
    # shipped unit's seccomp filter (~@resources) refuses both calls:
    # there the checks run as the daemon does.
    try:
        os.nice(NICE)
    except OSError:
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        pass
    _die_with_parent()
    try:
        fd = int(argv[argv.index("--control") + 1])
    except (ValueError, IndexError):
        sys.stderr.write("usage: python -m hlfs.homes.checker --control FD\n")
        return 2
    control = socket.socket(fileno=fd)
    forker = Forker(control)
    # What is loaded by now is shared with every check process: out of
    # the collector's way, so that no collection writes to those pages.
    gc.collect()
    gc.freeze()
    try:
        forker.run()
    except BrokenPipeError:
        return 0  # the daemon went away
    except (FrameError, ProtocolMismatch) as e:
        sys.stderr.write(f"hlfs home-check process: {e}\n")
        return 1
    finally:
        forker.end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
