"""
A mail reader's locking, for the concurrent-delivery tests: take the
dotlock C{MAILBOX.lock}, then an C{fcntl} lock on the open mailbox, as
mail readers do, and check that the snapshot holds only whole messages
(each test message of L{tests.support.mail.message} ends with its own
end marker); again and again, until the stop file exists and at least
one snapshot was taken.  Prints the number of snapshots.

    python locking_reader.py MAILBOX STOP_FILE [LOCK_TIMEOUT]

Run as a file (not a module) so it runs wherever C{hlfs} is importable,
in the kernel tier's guest too.
"""

import os
import sys
import time

from hlfs.mail import mbox
from hlfs.mail.dotlock import DotLock, lock_fd


def snapshot(path, timeout):
    """
    Check one locked snapshot of C{path}.

    @return: whether the mailbox existed.
    """
    with DotLock(path + ".lock", timeout=timeout):
        try:
            f = open(path, "r+b")
        except FileNotFoundError:
            return False
        with f:
            lock_fd(f.fileno(), timeout=timeout)
            for m in mbox.iter_mbox(f):
                n = m.content.split(b"Subject: test message ")[1].split(b"\n")[0]
                assert m.content.endswith(b"END-OF-MESSAGE-" + n + b"\n"), m
    return True


def main(path, stop, timeout=30.0):
    snapshots = 0
    while not (snapshots and os.path.exists(stop)):
        if snapshot(path, timeout):
            snapshots += 1
        time.sleep(0.005)
    print(snapshots)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(float, sys.argv[3:4]))
