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
  - C{gated}: a check touches no home: it says it began (the file
    C{entered-UID-N} in the directory C{HLFS_STANDIN_DIR}, N counting that
    user's checks from 1) and waits until the file C{release-UID-N} there
    holds its outcome: C{ok} or an errno name.  L{gated_release} writes
    it.
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


def _gated_handlers():
    import errno
    import time

    run = _real_handlers()
    where = os.environ["HLFS_STANDIN_DIR"]

    def gated(job):
        n = 1
        while True:
            try:
                os.close(os.open(os.path.join(where, f"entered-{job.uid}-{n}"),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                n += 1
        release = os.path.join(where, f"release-{job.uid}-{n}")
        while True:
            try:
                with open(release) as f:
                    outcome = f.read().strip()
                if outcome:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        if outcome == "ok":
            return records.CheckDone(True, 0, job.spool, "", None)
        return records.CheckDone(False, getattr(errno, outcome), job.spool, "the test said so",
                                 None)

    run[records.CheckHome] = gated
    return run


def gated_entered(where, uid):
    """
    How many checks of C{uid} have begun (mode C{gated}).
    """
    return sum(1 for name in os.listdir(where) if name.startswith(f"entered-{uid}-"))


def gated_release(where, uid, outcome):
    """
    End the next check of C{uid} not yet released (mode C{gated}), running
    or to come, with C{outcome}: C{ok} or an errno name.
    """
    import errno

    if outcome != "ok" and not isinstance(getattr(errno, outcome, None), int):
        raise ValueError(f"not an errno name: {outcome!r}")
    n = 1 + sum(1 for name in os.listdir(where) if name.startswith(f"release-{uid}-"))
    path = os.path.join(where, f"release-{uid}-{n}")
    with open(path + ".tmp", "w") as f:
        f.write(outcome)
    os.rename(path + ".tmp", path)


def _never_ready(jobs, answers, number, run=None):
    while os.read(jobs, 1 << 16):
        pass


_real_handlers = checker.handlers
_MODE = os.environ.get("HLFS_STANDIN", "")
if __name__ != "__main__":
    pass  # imported for its helpers
elif _MODE == "marker":
    checker.handlers = _marker_handlers
elif _MODE == "garbage":
    checker.serve = _garbage_serve
elif _MODE == "other-version":
    checker.VERSION = records.VERSION + 1
elif _MODE == "never-ready":
    checker.serve = _never_ready
elif _MODE == "gated":
    checker.handlers = _gated_handlers
else:
    raise SystemExit(f"HLFS_STANDIN={_MODE!r}: no such stand-in")

if __name__ == "__main__":
    sys.exit(checker.main())
