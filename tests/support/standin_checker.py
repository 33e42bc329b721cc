"""
Stand-ins for the home-check forker and its processes, for what no real
one does on demand: run as the engine's C{argv},
C{python -m tests.support.standin_checker --control FD}, with
C{HLFS_STANDIN} saying how it differs from the real one
(L{hlfs.homes.checker}):

  - C{marker}: a home holding C{.hlfs-test-errno} (a number) fails its
    next check with that errno, as the real check reports an OSError, and
    the file goes; every other check is the real one.  Errnos such as
    ENOMEM or EINTR cannot be made to happen to one check on demand.
  - C{garbage}: each check process says hello, then answers every job
    with bytes that are no frame.
  - C{other-version}: the forker and its processes speak the next
    protocol version.
  - C{never-ready}: the check processes never say hello (a start that
    takes for ever).
"""

import os
import sys

from hlfs.homes import checker, records


def _marker_handlers():
    run = _real_handlers()
    check = run[records.CheckHome]

    def failing(job):
        marker = os.path.join(job.home, b".hlfs-test-errno")
        try:
            with open(marker) as f:
                code = int(f.read())
            os.unlink(marker)
        except FileNotFoundError:
            return check(job)
        return records.CheckDone(False, code, job.spool, os.strerror(code), None)

    run[records.CheckHome] = failing
    return run


def _garbage_serve(jobs, answers, number, run=None):
    hello = records.Hello(records.VERSION, os.getpid(), "check")
    checker._write_all(answers, records.chunks(number, records.encode(hello))[0])
    while os.read(jobs, 1 << 16):
        checker._write_all(answers, records.chunks(number, b"\xff" * 16)[0])


def _never_ready(jobs, answers, number, run=None):
    while os.read(jobs, 1 << 16):
        pass


_real_handlers = checker.handlers
_MODE = os.environ.get("HLFS_STANDIN", "")
if _MODE == "marker":
    checker.handlers = _marker_handlers
elif _MODE == "garbage":
    checker.serve = _garbage_serve
elif _MODE == "other-version":
    checker.VERSION = records.VERSION + 1
elif _MODE == "never-ready":
    checker.serve = _never_ready
else:
    raise SystemExit(f"HLFS_STANDIN={_MODE!r}: no such stand-in")

if __name__ == "__main__":
    sys.exit(checker.main())
