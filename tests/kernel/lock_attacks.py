"""
Run in a test guest as root: an unprivileged local user attacks root's
lock files (C{NAME.lock} in hlfs's directory) and the home checks, and
root does through the kernel NFS client what a delivery agent running as
root does: C{lstat} (LOOKUP, GETATTR), C{open(O_CREAT|O_EXCL)} (CREATE)
and C{unlink} (REMOVE) of C{MOUNT/NAME.lock}, and C{readlink} of
C{MOUNT/NAME}.  The users act through C{hlfsprobe as}, as real processes
of theirs.

Prints C{R KEY VALUE} lines.  Every root operation has a time bound (an
alarm): a hang is a result, never a stuck guest.  The standard library
only: it runs under the host's Python, seen in the guest.

    python3 lock_attacks.py PROBE MOUNT HOMES ALT ALICE BOB CAROL ERIN FRANK

MOUNT is hlfs mounted read-write (root's view); the five are uids whose
names are alice, bob (the victim), carol (home C{/}: her mailbox is in
the alternate spool ALT), erin and frank (never checked before).  Users
gina and hana, never checked before either, have their lock files made
before the guest started, a FIFO and a file dated 1960 (qemu's 9p server
makes no special files for a guest and takes no time before 1970 from
it); so is frank's spool, a FIFO.
"""

import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time

PROBE, MOUNT, HOMES, ALT = sys.argv[1:5]
ALICE, BOB, CAROL, ERIN, FRANK = (int(u) for u in sys.argv[5:10])
SPOOL = ".mailspool"
ROOT_BOUND = 20  # seconds any one root operation may take


class Hung(Exception):
    pass


def alarm(signum, frame):
    raise Hung()


signal.signal(signal.SIGALRM, alarm)


def result(key, *values):
    print("R", key, *values, flush=True)


def spool(name):
    return os.path.join(HOMES, name, SPOOL)


def as_user(uid, *command):
    """
    Run C{command} as C{uid} (an unprivileged process of that user's);
    return its exit status.
    """
    done = subprocess.run(
        [PROBE, "as", str(uid), str(uid), str(uid), *command], capture_output=True, timeout=60
    )
    return done.returncode


def kind(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "link"),
                       (stat.S_ISFIFO, "fifo")):
        if test(mode):
            return name
    return "other"


def root(op, name):
    """
    Root's operation C{op} on C{MOUNT/name} (bytes), through the kernel
    client: C{ok} (with what C{stat} saw), the errno's name, or C{hung}.
    """
    path = os.path.join(os.fsencode(MOUNT), name)
    signal.alarm(ROOT_BOUND)
    try:
        if op == "create":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return "ok"
        if op == "remove":
            os.unlink(path)
            return "ok"
        if op == "readlink":
            return os.fsdecode(os.readlink(path))
        st = os.lstat(path)
        return f"{kind(st.st_mode)}:{st.st_uid}:{st.st_mtime_ns // 10**9}"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except Hung:
        return "hung"
    finally:
        signal.alarm(0)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def planted_lock(label, plant, lock_dir=None, name="alice"):
    """
    alice plants something at her own lock file's place (C{plant} L{None}:
    planted before the guest started); root looks, makes and removes
    C{alice.lock}, as its delivery agent would.
    """
    lock = os.path.join(lock_dir or spool(name), f"{name}.lock")
    status = "before" if plant is None else plant(lock)
    lock_name = f"{name}.lock".encode()
    seen = root("stat", lock_name)
    made = root("create", lock_name)
    removed = root("remove", lock_name)
    result(f"lock.{label}", f"plant={status}", f"stat={seen}", f"create={made}", f"remove={removed}",
           f"left={kind(os.lstat(lock).st_mode) if os.path.lexists(lock) else 'none'}")
    if os.path.isdir(lock) and not os.path.islink(lock):
        as_user(ALICE, "rm", "-rf", lock)
    elif os.path.lexists(lock):
        as_user(ALICE, "rm", "-f", lock)


def main():
    bob_box = os.path.join(spool("bob"), "bob")
    before = digest(bob_box)
    alice = spool("alice")
    # Her home is checked (and cached) before the attacks, as in use.
    result("alice.link", root("stat", b"alice"))

    planted_lock("symlink", lambda lock: as_user(ALICE, "ln", "-s", bob_box, lock))
    planted_lock("hardlink", lambda lock: as_user(ALICE, "ln", bob_box, lock))
    planted_lock("fifo", None, name="gina")
    planted_lock("dir", lambda lock: as_user(ALICE, "mkdir", lock))
    planted_lock("time.before1970", None, name="hana")
    planted_lock("time.after2106", lambda lock: as_user(
        ALICE, "sh", "-c", f': > "{lock}" && touch -d 2200-01-01 "{lock}"'))
    # carol's mailbox (and lock) is in the alternate spool, mode 1777:
    # alice takes the lock's name there, as a file and as a directory.
    planted_lock("alt.file", lambda lock: as_user(ALICE, "sh", "-c", f': > "{lock}"'),
                 lock_dir=ALT, name="carol")
    planted_lock("alt.dir", lambda lock: as_user(ALICE, "mkdir", lock), lock_dir=ALT, name="carol")

    # Her spool swapped for a link to bob's, after her home was checked.
    as_user(ALICE, "sh", "-c", f'mv "{alice}" "{alice}.real" && ln -s "{spool("bob")}" "{alice}"')
    result("swapped", f"create={root('create', b'alice.lock')}",
           f"remove={root('remove', b'alice.lock')}", f"link={root('stat', b'alice')}")
    as_user(ALICE, "sh", "-c", f'rm "{alice}" && mv "{alice}.real" "{alice}"')

    # The same swap over and over while root makes and removes the lock.
    stop = "/tmp/stop-swapping"
    swapper = subprocess.Popen([PROBE, "as", str(ALICE), str(ALICE), str(ALICE), "sh", "-c", f"""
        cd "{os.path.dirname(alice)}"
        while [ ! -e {stop} ]; do
            mv {SPOOL} {SPOOL}.real; ln -s "{spool('bob')}" {SPOOL}; rm {SPOOL}; mv {SPOOL}.real {SPOOL}
        done"""])
    outcomes = {}
    started = time.monotonic()
    for _ in range(100):
        for op in ("create", "remove"):
            outcome = root(op, b"alice.lock")
            outcomes[f"{op}:{outcome}"] = outcomes.get(f"{op}:{outcome}", 0) + 1
    open(stop, "w").close()
    swapper.wait(60)
    root("remove", b"alice.lock")
    result("race", f"{time.monotonic() - started:.1f}s",
           *(f"{k}={v}" for k, v in sorted(outcomes.items())))

    # Never checked before: erin's spool is a link to bob's, frank's a
    # FIFO.  Their own links and root's lead to the alternate spool.
    for uid, name, plant in ((ERIN, "erin", ["ln", "-s", spool("bob")]), (FRANK, "frank", None)):
        target = spool(name)
        if plant is not None:
            as_user(uid, "sh", "-c", f'rm -rf "{target}" && {" ".join(plant)} "{target}"')
        signal.alarm(ROOT_BOUND)
        own = subprocess.run([PROBE, "as", str(uid), str(uid), str(uid), "readlink", "/mail/home"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
        signal.alarm(0)
        result(f"home.{name}", f"own={own}", f"root={root('stat', name.encode())}",
               f"create={root('create', f'{name}.lock'.encode())}",
               f"remove={root('remove', f'{name}.lock'.encode())}")

    # Many names, and names with odd bytes.
    started = time.monotonic()
    counts = {}
    for i in range(2000):
        for name in (b"u%d.lock" % i, b"u%d" % i):
            outcome = root("stat", name)
            counts[outcome] = counts.get(outcome, 0) + 1
    result("names", f"{time.monotonic() - started:.1f}s", *(f"{k}={v}" for k, v in sorted(counts.items())))
    odd = [b"a\nb.lock", b"\x01.lock", b"-oQ.lock", b"\xff\xfe.lock", b"x" * 250 + b".lock",
           b"..lock", b".lock", b"alice .lock", b"ALICE.lock"]
    result("odd", *(f"{root('create', name)}/{root('remove', name)}" for name in odd))
    result("bob.mailbox", "same" if digest(bob_box) == before else "changed")


main()
