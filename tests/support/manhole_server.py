"""
Test-only daemon for tests/console/test_manhole.py: runs a real reactor with the
real manhole service (real SSH, real keys, real console) around a stand-in
for the hlfs service.

The stand-in is not the daemon's service: it has the same attribute
contract (C{fs}, C{resolver}, C{stats}, C{config}, C{reload()}) over the
real policy objects (L{hlfs.core.users.UserTable}, L{hlfs.probe.ProbingResolver} (no verify),
L{hlfs.core.linkfs.HomeLinkFS}); its resolver adds a probe cache whose "probe"
is a timer, standing in for the probing resolver so the console's
non-blocking paths can be driven.  A UDP counter on loopback shows that
the reactor keeps serving while console sessions run.

    python tests/support/manhole_server.py --manhole SPEC --keys FILE --host-key FILE
        --passwd FILE --ready FILE

On start it writes C{{"ssh_port": N, "udp_port": M}} to the ready file.
A manhole configuration error prints one line on stderr and exits 2, as
the daemon does.
"""

import argparse
import os
import json
import sys
import time
from typing import NamedTuple

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.console.access import ManholeConfigError
from hlfs.console.namespace import build_namespace
from hlfs.console.manhole import makeManholeService
from hlfs.homes.cache import ProbingResolver
from hlfs.core.resolver import SpoolRules
from hlfs.core.users import UserTable

PROBE_SECONDS = 0.5


class Flight(NamedTuple):
    """
    One probe in flight, shaped as the probing resolver reports it.
    """

    key: int
    path: bytes
    age: float
    running: float | None


class StandInProbingResolver:
    """
    A no-verify L{ProbingResolver} behind a cache that a timed "probe" fills: a uid not
    in the cache resolves through a Deferred after L{PROBE_SECONDS}.
    C{probes} counts the probes started, so a test can see one happen.
    """

    def __init__(self, resolver):
        self.inner = resolver
        self.rules = resolver.rules
        self.cache = {}
        self.pending = {}
        self.probes = 0
        self.pool = "stand-in pool: probes run as reactor timers"

    @property
    def table(self):
        return self.inner.table

    def set_table(self, table):
        self.inner.set_table(table)

    def resolve(self, uid):
        if uid in self.cache:
            return self.cache[uid]
        if uid in self.pending:
            started, waiting = self.pending[uid]
        else:
            started, waiting = reactor.seconds(), []
            self.pending[uid] = (started, waiting)
            self.probes += 1
            reactor.callLater(PROBE_SECONDS, self._finish, uid)
        d = defer.Deferred()
        waiting.append(d)
        return d

    def _finish(self, uid):
        _, waiting = self.pending.pop(uid)
        self.cache[uid] = self.inner.resolve(uid)
        for d in waiting:
            d.callback(self.cache[uid])

    def peek(self, uid):
        return self.cache.get(uid) or self.inner.peek(uid)

    def mailbox(self, name):
        return self.inner.mailbox(name)

    def flush(self, uid=None):
        if uid is None:
            dropped = len(self.cache)
            self.cache.clear()
        else:
            dropped = int(self.cache.pop(uid, None) is not None)
        return dropped

    def in_flight(self):
        now = reactor.seconds()
        flights = []
        for uid, (started, _) in self.pending.items():
            path = self.rules.spool_of(self.table.by_uid(uid)) or b"?"
            flights.append(Flight(uid, path, now - started, now - started))
        return flights

    def hung(self):
        return [flight for flight in self.in_flight() if flight.age > 10]

    def stats_dict(self):
        return {"probes": self.probes, "cached": len(self.cache)}


class StandInService:
    """
    The attributes the console expects of the hlfs service.
    """

    def __init__(self, passwd_path):
        self.passwd_path = passwd_path
        table = UserTable.from_passwd_file(passwd_path)
        rules = SpoolRules(b".mailspool", b"/var/alt_mail")
        self.resolver = StandInProbingResolver(ProbingResolver(table, rules, reactor, None, verify=False))
        self.fs = HomeLinkFS(LinkConfig(b"/mail", b"home", None), self.resolver, time.time_ns())
        self.stats = {"READLINK": 0, "GETATTR": 0}
        self.config = {"passwd": passwd_path, "manhole": "test"}

    def reload(self):
        d = threads.deferToThread(UserTable.from_passwd_file, self.passwd_path)
        d.addCallback(self.resolver.set_table)
        return d


class Counter(DatagramProtocol):
    """
    Answers each datagram with the number of datagrams seen so far.
    """

    count = 0

    def datagramReceived(self, data, addr):
        self.count += 1
        self.transport.write(b"%d" % self.count, addr)


def main(argv):
    parser = argparse.ArgumentParser()
    for name in ("--manhole", "--keys", "--host-key", "--passwd", "--ready"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service = StandInService(args.passwd)
    try:
        manhole = makeManholeService(
            args.manhole, args.keys, args.host_key, build_namespace(service, reactor), reactor
        )
    except ManholeConfigError as e:
        sys.stderr.write(f"manhole_server: {e}\n")
        return 2
    udp = reactor.listenUDP(0, Counter(), interface="127.0.0.1")
    manhole.startService()

    def ready(port):
        with open(args.ready + ".tmp", "w") as f:
            json.dump({"ssh_port": port.getHost().port, "udp_port": udp.getHost().port}, f)
        os.rename(args.ready + ".tmp", args.ready)

    def failed(reason):
        sys.stderr.write(f"manhole_server: cannot listen: {reason.getErrorMessage()}\n")
        reactor.stop()

    manhole.whenListening().addCallbacks(ready, failed)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
