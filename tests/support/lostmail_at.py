"""
Run C{hlfs lostmail} and, at one of its checkpoints, run a command and
wait for it, as if another process had acted at exactly that moment:

    python tests/support/lostmail_at.py STEP[:N] COMMAND... -- [lostmail options]

STEP is one of the remailer's checkpoints (locked, copied, truncated,
released, sent, rewritten); the command runs the first time it is
reached (with N, with its count N: mailboxes are taken in name order).  The remailer is the real one, in a real process of its own.
"""

import subprocess
import sys

from hlfs.cli import lostmail


def run_at(spec, command):
    step, _, n = spec.partition(":")
    done = []

    def checkpoint(name, count):
        if name == step and (not n or n == str(count)) and not done:
            done.append(subprocess.run(command, timeout=60).returncode)

    return checkpoint


if __name__ == "__main__":
    split = sys.argv.index("--")
    sys.exit(lostmail.main(sys.argv[split + 1:],
                           checkpoint=run_at(sys.argv[1], sys.argv[2:split])))
