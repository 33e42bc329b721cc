"""
A local user attacking C{hlfs lostmail} through the alternate spool, for
the attack tests: run as that user (setpriv), standard library only.

    python3 lostmail_attacker.py hold PATH
        Open PATH (the attacker's own mailbox), take an fcntl lock on it
        as a delivery agent or mail reader does, print "held", then
        obey one line on stdin:
          swap symlink TARGET | swap fifo | swap dir | swap file CONTENT
            put that in PATH's place (built aside, then renamed over it),
            then let go of the lock;
          release
            let go of the lock;
        print "done" and exit.
    python3 lostmail_attacker.py swap PATH KIND [TARGET]
        The same swap, without a lock.
    python3 lostmail_attacker.py link SOURCE TARGET
        Hard-link SOURCE as TARGET; print "linked" or the error's name.
    python3 lostmail_attacker.py lock PATH KIND [MTIME [PID HOST]]
        Plant a lock: KIND file (its content "PID HOST", its mtime
        MTIME), dir (not empty), fifo or symlink (to /etc/passwd).
    python3 lostmail_attacker.py freshen PATH SECONDS
        Keep PATH's change time fresh for SECONDS, as a live holder that
        touches its lock does (its mtime set to 2099 each time).
    python3 lostmail_attacker.py write PATH HEX
        Create or append to PATH the bytes HEX (hexadecimal).
    python3 lostmail_attacker.py replace PATH HEX
        Put a new file holding HEX in PATH's place by rename.
    python3 lostmail_attacker.py junk DIR COUNT NAME...
        Create COUNT files in DIR with a message each, named after the
        given NAMEs in turn and a number.
"""

import errno
import fcntl
import os
import sys
import time

Y2099 = 4_070_908_800


def aside(path, what):
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{what}.{os.getpid()}")


def hold(path):
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    words = sys.stdin.readline().split(" ", 2)
    if words[0] == "swap":
        swap(path, words[1].strip(), words[2].strip() if len(words) > 2 else "")
    os.close(fd)
    print("done", flush=True)


def swap(path, kind, target=""):
    new = aside(path, "swap")
    if kind == "symlink":
        os.symlink(target, new)
    elif kind == "fifo":
        os.mkfifo(new, 0o666)
    elif kind == "dir":
        os.mkdir(new)
        os.unlink(path)  # rename cannot put a directory over a file
    elif kind == "file":
        write(new, target)
    os.rename(new, path)


def swap_now(path, kind, target=""):
    swap(path, kind, target)
    print("swapped", flush=True)


def link(source, target):
    try:
        os.link(source, target)
    except OSError as e:
        print(errno.errorcode[e.errno], flush=True)
        return
    print("linked", flush=True)


def lock(path, kind, mtime=None, pid=None, host=None):
    if kind == "file":
        with open(path, "w") as f:
            f.write(f"{pid} {host}\n")
        os.utime(path, (float(mtime), float(mtime)))
    elif kind == "dir":
        os.mkdir(path)
        with open(os.path.join(path, "keep"), "w") as f:
            f.write("not empty\n")
    elif kind == "fifo":
        os.mkfifo(path, 0o666)
    elif kind == "symlink":
        os.symlink("/etc/passwd", path)
    print("planted", flush=True)


def freshen(path, seconds):
    end = time.monotonic() + float(seconds)
    print("freshening", flush=True)
    while time.monotonic() < end:
        try:
            os.utime(path, (Y2099, Y2099))
        except FileNotFoundError:
            pass
        time.sleep(0.1)


def write(path, hexdata):
    with open(path, "ab") as f:
        f.write(bytes.fromhex(hexdata))


def replace(path, hexdata):
    new = aside(path, "new")
    write(new, hexdata)
    os.rename(new, path)


def junk(directory, count, *names):
    for i in range(int(count)):
        name = f"{names[i % len(names)]}{i}"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"From junk@example.org Mon Nov 23 01:00:00 2026\nSubject: junk\n\nx\n\n")
    print("made", count, flush=True)


if __name__ == "__main__":
    commands = {"hold": hold, "swap": swap_now, "link": link, "lock": lock, "freshen": freshen, "write": write,
                "replace": replace, "junk": junk}
    commands[sys.argv[1]](*sys.argv[2:])
