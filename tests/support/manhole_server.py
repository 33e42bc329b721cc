"""
Test-only daemon for tests/console/test_manhole.py: runs a real reactor with the
real manhole service (real SSH, real keys, real console) around the
daemon's real policy objects.

The service object is not the daemon's service, but what the console
reaches through it is real: the L{hlfs.homes.resolver.HomeResolver} and
its L{hlfs.homes.engine.CheckEngine} (real check processes), over a
L{hlfs.core.users.UserTable} and a L{hlfs.core.linkfs.HomeLinkFS}.  Two
things are injected where the code takes them:

  - the check processes are stand-ins (L{tests.support.standin_checker},
    mode C{gated}): each check blocks its process until the test releases
    it with the outcome it wants (as a home on a dead filesystem would,
    then recovers), and touches no home;
  - the resolver's and the engine's clock is a L{task.Clock} the test
    advances, so deadlines, ages and the "stuck" threshold move only
    when the test says so.

The test drives both through a UDP control socket on loopback, which
also shows that the reactor keeps serving while console sessions run:

    ping                 -> the number of datagrams seen so far
    advance SECONDS      -> ok (after clock.advance(SECONDS))
    entered UID          -> how many checks for UID have begun in a process
    release UID OUTCOME  -> ok; the next (or running) check for UID ends
                            with OUTCOME: "ok" or an errno name (EACCES)

    python tests/support/manhole_server.py --manhole SPEC --keys FILE --host-key FILE
        --passwd FILE --ready FILE

On start it writes C{{"ssh_port": N, "udp_port": M}} to the ready file.
A manhole configuration error prints one line on stderr and exits 2, as
the daemon does.
"""

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogBeginner, textFileLogObserver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))

from hlfs.core.linkfs import HomeLinkFS, LinkConfig  # noqa: E402
from hlfs.console.options import ManholeConfigError  # noqa: E402
from hlfs.console.namespace import build_namespace  # noqa: E402
from hlfs.console.manhole import makeManholeService  # noqa: E402
from hlfs.homes.engine import CheckEngine  # noqa: E402
from hlfs.homes.resolver import HomeResolver  # noqa: E402
from hlfs.core.resolver import SpoolRules  # noqa: E402
from hlfs.core.users import UserTable  # noqa: E402
from tests.support.standin_checker import gated_entered, gated_release  # noqa: E402

# The probe deadline (and so the engine's "stuck" threshold), in seconds
# of the test's clock.
DEADLINE = 2.0
CACHE_INTERVAL = 300.0
EPOCH = 1.7e9


class ConsoleTestService:
    """
    The attributes the console expects of the hlfs service, over the real
    resolver and engine.
    """

    def __init__(self, passwd_path, clock):
        self.passwd_path = passwd_path
        table = UserTable.from_passwd_file(passwd_path)
        rules = SpoolRules(b".mailspool", b"/var/alt_mail")
        self.checks = CheckEngine(4, reactor, clock=clock, stuck_after=DEADLINE,
                                  argv=[sys.executable, "-m", "tests.support.standin_checker"])
        self.resolver = HomeResolver(
            table, rules, clock, self.checks, cache_interval=CACHE_INTERVAL, deadline=DEADLINE,
            reactor=reactor,
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

    def __init__(self, clock, gates):
        self.clock = clock
        self.gates = gates

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
                answer = b"%d" % gated_entered(self.gates, int(words[1]))
            elif words[0] == "release":
                gated_release(self.gates, int(words[1]), words[2])
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
    gates = tempfile.mkdtemp(prefix="hlfs-console-gates-")
    os.environ.update(HLFS_STANDIN="gated", HLFS_STANDIN_DIR=gates)
    service = ConsoleTestService(args.passwd, clock)
    try:
        manhole = makeManholeService(
            args.manhole, args.keys, args.host_key, build_namespace(service, reactor), reactor
        )
    except ManholeConfigError as e:
        sys.stderr.write(f"manhole_server: {e}\n")
        return 2
    udp = reactor.listenUDP(0, Control(clock, gates), interface="127.0.0.1")

    def ready(port):
        with open(args.ready + ".tmp", "w") as f:
            json.dump({"ssh_port": port.getHost().port, "udp_port": udp.getHost().port}, f)
        os.rename(args.ready + ".tmp", args.ready)

    def failed(reason):
        sys.stderr.write(f"manhole_server: cannot start: {reason.getErrorMessage()}\n")
        reactor.stop()

    def serve(_):
        manhole.startService()
        return manhole.whenListening()

    reactor.callWhenRunning(
        lambda: service.checks.start().addCallback(serve).addCallbacks(ready, failed))
    reactor.addSystemEventTrigger("before", "shutdown", service.checks.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
