"""
Test-only daemon for tests/console/test_manhole.py: runs a real reactor with the
real manhole service (real SSH, real keys, real console) around the
daemon's real policy objects.

The service object is not the daemon's service, but what the console
reaches through it is real: the L{hlfs.homes.cache.ProbingResolver} and
its L{hlfs.homes.pool.ProbePool} (real threads), over a
L{hlfs.core.users.UserTable} and a L{hlfs.core.linkfs.HomeLinkFS}.  Two
things are injected where the code takes them:

  - the home check is a L{GatedCheck}: each check blocks its probe
    thread until the test releases it with the outcome it wants (as a
    home on a dead filesystem would, then recovers);
  - the resolver's and the pool's clock is a L{task.Clock} the test
    advances, so deadlines, ages and the "stuck" threshold move only
    when the test says so.

The test drives both through a UDP control socket on loopback, which
also shows that the reactor keeps serving while console sessions run:

    ping                 -> the number of datagrams seen so far
    advance SECONDS      -> ok (after clock.advance(SECONDS))
    entered UID          -> how many checks for UID have begun in a thread
    release UID OUTCOME  -> ok; the next (or running) check for UID ends
                            with OUTCOME: "ok" or an errno name (EACCES)

    python tests/support/manhole_server.py --manhole SPEC --keys FILE --host-key FILE
        --passwd FILE --ready FILE

On start it writes C{{"ssh_port": N, "udp_port": M}} to the ready file.
A manhole configuration error prints one line on stderr and exits 2, as
the daemon does.
"""

import argparse
import collections
import errno
import json
import os
import sys
import threading
import time

from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.console.access import ManholeConfigError
from hlfs.console.namespace import build_namespace
from hlfs.console.manhole import makeManholeService
from hlfs.homes.cache import ProbingResolver
from hlfs.homes.pool import ProbePool
from hlfs.homes.probe import ProbeResult
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

# The probe deadline (and so the pool's "stuck" threshold), in seconds of
# the test's clock.
DEADLINE = 2.0
CACHE_INTERVAL = 300.0
EPOCH = 1.7e9


class GatedCheck:
    """
    A home check that waits, in its probe thread, until the test
    releases it with an outcome.
    """

    def __init__(self):
        self._lock = threading.Condition()
        self._outcomes = collections.defaultdict(collections.deque)
        self.entered = collections.Counter()

    def __call__(self, user, spool):
        with self._lock:
            self.entered[user.uid] += 1
            self._lock.notify_all()
            while not self._outcomes[user.uid]:
                self._lock.wait()
            outcome = self._outcomes[user.uid].popleft()
        if outcome == "ok":
            return ProbeResult(True, 0, spool, "")
        return ProbeResult(False, getattr(errno, outcome), spool, "the test said so")

    def release(self, uid, outcome):
        if outcome != "ok" and not isinstance(getattr(errno, outcome, None), int):
            raise ValueError(f"not an errno name: {outcome!r}")
        with self._lock:
            self._outcomes[uid].append(outcome)
            self._lock.notify_all()


class ConsoleTestService:
    """
    The attributes the console expects of the hlfs service, over the real
    probing resolver.
    """

    def __init__(self, passwd_path, clock, check):
        self.passwd_path = passwd_path
        table = UserTable.from_passwd_file(passwd_path)
        rules = SpoolRules(b".mailspool", b"/var/alt_mail")
        self.pool = ProbePool(threads=4, reactor=reactor, clock=clock)
        self.resolver = ProbingResolver(
            table, rules, clock, self.pool, cache_interval=CACHE_INTERVAL, deadline=DEADLINE,
            probe=check, reactor=reactor,
        )
        self.fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), self.resolver, time.time_ns())
        self.stats = {"READLINK": 0, "GETATTR": 0}
        self.config = {"passwd": passwd_path, "manhole": "test"}

    def reload(self):
        return self.resolver.reload(lambda: UserTable.from_passwd_file(self.passwd_path))


class Control(DatagramProtocol):
    """
    The test's control socket (see the module's documentation).
    """

    count = 0

    def __init__(self, clock, check):
        self.clock = clock
        self.check = check

    def datagramReceived(self, data, addr):
        self.count += 1
        words = data.decode().split()
        try:
            if words == ["ping"]:
                answer = b"%d" % self.count
            elif words[0] == "advance":
                self.clock.advance(float(words[1]))
                answer = b"ok"
            elif words[0] == "entered":
                answer = b"%d" % self.check.entered[int(words[1])]
            elif words[0] == "release":
                self.check.release(int(words[1]), words[2])
                answer = b"ok"
            else:
                answer = b"error: unknown command"
        except (IndexError, ValueError) as e:
            answer = f"error: {e}".encode()
        self.transport.write(answer, addr)


def main(argv):
    parser = argparse.ArgumentParser()
    for name in ("--manhole", "--keys", "--host-key", "--passwd", "--ready"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    clock = task.Clock()
    clock.advance(EPOCH)
    check = GatedCheck()
    service = ConsoleTestService(args.passwd, clock, check)
    try:
        manhole = makeManholeService(
            args.manhole, args.keys, args.host_key, build_namespace(service, reactor), reactor
        )
    except ManholeConfigError as e:
        sys.stderr.write(f"manhole_server: {e}\n")
        return 2
    udp = reactor.listenUDP(0, Control(clock, check), interface="127.0.0.1")
    service.pool.start()
    manhole.startService()

    def ready(port):
        with open(args.ready + ".tmp", "w") as f:
            json.dump({"ssh_port": port.getHost().port, "udp_port": udp.getHost().port}, f)
        os.rename(args.ready + ".tmp", args.ready)

    def failed(reason):
        sys.stderr.write(f"manhole_server: cannot listen: {reason.getErrorMessage()}\n")
        reactor.stop()

    manhole.whenListening().addCallbacks(ready, failed)
    reactor.addSystemEventTrigger("before", "shutdown", service.pool.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
