"""
The home-check process: C{python -m hlfs.homes.checker --progress FD}, run by
L{hlfs.homes.checkers.CheckerProcesses}.  It reads jobs (L{HomeProbe.job})
on its standard input and writes one answer per job on its standard
output, in frames of L{encode}.

Each check makes a dozen system calls.  In a thread of the daemon, each
of them let go of the GIL and took it back from the reactor thread: in a
storm, most of the daemon's time went to those hand-offs (futex wake-ups
and the scheduler), not to the checks.  A process of its own runs them
on the other CPU, with no GIL to share, and the reactor reads many
answers at a time.

The process is single-threaded; it still takes each user's identity
for the filesystem only (L{hlfs.homes.creds.run_as}), as the threads did.
It ends at the end of its input (the daemon closed it or died).
"""

import marshal
import mmap
import os
import signal
import struct
import sys
import time

_LENGTH = struct.Struct(">I")

#: The longest frame either side accepts: a frame is a list of jobs or
#: answers, each under a few KiB (paths are at most PATH_MAX).
MAX_FRAME = 1 << 24


class FrameError(Exception):
    """
    A frame too long, or not the data a frame should hold.
    """


def encode(items):
    """
    Return one frame holding the list C{items} (tuples of ints, bytes,
    str, booleans and L{None}).
    """
    body = marshal.dumps(items)
    return _LENGTH.pack(len(body)) + body


def decode(buffer):
    """
    Return C{(frames, rest)}: the lists held by the complete frames at the
    start of C{buffer}, and what follows them.

    @raise FrameError: if a frame is too long or does not hold a list.
    """
    frames = []
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
            items = marshal.loads(view[at + 4:at + 4 + length])
        except (EOFError, ValueError, TypeError) as e:
            raise FrameError(f"a frame that is not data: {e}") from None
        if type(items) is not list:
            raise FrameError("a frame that is not a list")
        frames.append(items)
        at += 4 + length
    return frames, bytes(view[at:])


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _die_with_parent():
    # A daemon killed with SIGKILL closes our input, but a check stuck in
    # a dead filesystem would not read it: the kernel ends us as well.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Progress:
    """
    When this process started the job it is on: 8 bytes of memory shared
    with the daemon (C{time.monotonic_ns()}, 0 between jobs), one store
    each, so that the daemon tells a slow check from a late reader.
    """

    def __init__(self, fd=None, memory=None):
        if memory is None:
            memory = mmap.mmap(fd, PROGRESS_SIZE)
        self.memory = memory
        self.slot = memoryview(memory).cast("q")

    def since(self):
        """
        Return when the current job started (monotonic ns), or 0.
        """
        return self.slot[0]


#: How much lower the processes' priority is than the daemon's.
NICE = 5

#: The size of L{Progress}'s memory.
PROGRESS_SIZE = 8


def serve(probe, infd=0, outfd=1, progress=None):
    """
    Answer the jobs read from C{infd} until its end: for each job
    C{(id, *job)}, write C{(id, ok, errno, path, reason, kept, ns, cpu_ns)}
    at once (how long it took, and of CPU),
    so that a check stuck behind it delays no answer already found.  An
    empty frame first says the process is ready.
    """
    _write_all(outfd, encode([]))  # ready
    buffer = b""
    while True:
        data = os.read(infd, 1 << 16)
        if not data:
            return
        frames, buffer = decode(buffer + data)
        slot = progress.slot if progress is not None else [0]
        for jobs in frames:
            for job_id, *job in jobs:
                slot[0] = began = time.monotonic_ns()
                cpu = time.thread_time_ns()
                result, kept = probe.run_job(tuple(job))
                slot[0] = 0
                _write_all(outfd, encode([(job_id, result.ok, result.errno, result.path,
                                           result.reason, kept, time.monotonic_ns() - began,
                                           time.thread_time_ns() - cpu)]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # The daemon's Ctrl-C reaches its whole process group: the daemon
    # stops us by closing our input, and a traceback here would say
    # nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon answers every caller, cached ones too: when CPUs are
    # short, it goes first, and checks take what it leaves.  The shipped
    # unit's seccomp filter (~@resources) refuses setpriority: there the
    # checks run at the daemon's priority, a little more latency in a
    # storm (BENCHMARKS.md), nothing else.
    try:
        os.nice(NICE)
    except OSError:
        pass
    _die_with_parent()
    from hlfs.homes.probe import HomeProbe

    try:
        progress = Progress(int(argv[argv.index("--progress") + 1])) if "--progress" in argv else None
        serve(HomeProbe(), progress=progress)
    except BrokenPipeError:
        return 0  # the daemon went away: nothing to say, nobody to say it to
    except FrameError as e:
        sys.stderr.write(f"hlfs home-check process: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
