"""
Run C{hlfs lostmail} and kill it with SIGKILL at one step:

    python tests/support/lostmail_killed_at.py STEP[:N] [lostmail options]

STEP is one of the remailer's checkpoints (locked, renamed, released,
sent, rewritten); with N, only when its count is N.  The remailer is the
real one, in a real process that dies as a crash would kill it.
"""

import os
import signal
import sys

from hlfs.cli import lostmail


def kill_at(spec):
    name, _, n = spec.partition(":")

    def checkpoint(step, count):
        if step == name and (not n or n == str(count)):
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


if __name__ == "__main__":
    sys.exit(lostmail.main(sys.argv[2:], checkpoint=kill_at(sys.argv[1])))
