"""
Run C{hlfs lostmail} (the real command, in a process of its own) with
its test seams set: its clock, and what happens at one of its
checkpoints (locked, copied, truncated, released, sent, rewritten).

    python tests/support/lostmail_at.py [--now SECONDS]
        [--kill STEP[:N]] [--run STEP[:N] COMMAND...] -- [lostmail options]

C{--now} fixes the remailer's clock.  C{--kill} ends the process with
SIGKILL at STEP, as a crash would; C{--run} runs COMMAND there (the
first time) and waits for it, as if another process acted at exactly
that moment.  With N, only when the step's count is N (mailboxes are
taken in name order).
"""

import argparse
import os
import signal
import subprocess
import sys

from hlfs.cli import lostmail


def at(spec, action):
    step, _, n = spec.partition(":")
    done = []

    def checkpoint(name, count):
        if name == step and (not n or n == str(count)) and not done:
            done.append(True)
            action()

    return checkpoint


def main(argv):
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--now", type=float)
    parser.add_argument("--kill", metavar="STEP")
    parser.add_argument("--run", nargs=argparse.REMAINDER, metavar="STEP COMMAND")
    seams = parser.parse_args(argv[:split])
    checkpoint = None
    if seams.kill:
        checkpoint = at(seams.kill, lambda: os.kill(os.getpid(), signal.SIGKILL))
    elif seams.run:
        command = seams.run[1:]
        checkpoint = at(seams.run[0], lambda: subprocess.run(command, timeout=60))
    now = (lambda: seams.now) if seams.now is not None else None
    return lostmail.main(argv[split + 1:], checkpoint=checkpoint, now=now)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
