"""
Registration of a server's programs with the local portmapper, as a
service, for one of several servers on a host.

  - On start, a mapping of another server that still answers (its port
    answers the program's NULL call) is never taken over: this server
    serves without registering, and says so once.  A mapping to a port
    nothing answers on (a server that died) is replaced.
  - On stop, a mapping is removed only while it is this server's (its
    port): PMAPPROC_UNSET removes every transport of a program version,
    whoever set it.
  - While running, the mappings are looked at every C{interval} seconds:
    a registration the portmapper lost (rpcbind restarted without its
    saved state) is made again; a server that deferred to another takes
    the programs once they have been free at two looks in a row, so that
    the server they were registered for, whose own look comes first after
    a restart of the portmapper, gets them back.

No portmapper is a warning, not a failure: the server keeps serving
clients that know its port, and registers when one answers.
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.error import ConnectError
from twisted.logger import Logger

from hlfs.rpc.client import RPCClient, RPCError
from hlfs.rpc.portmap import Portmapper

#: What the registration is: mappings set for this server; another live
#: server's found and left alone; none (no portmapper, or lost).
REGISTERED = "registered"
DEFERRED = "deferred"
UNREGISTERED = "unregistered"

TRANSPORTS = ("udp", "tcp")


class PortmapRegistration(Service):
    """
    @ivar mappings: C{(prog, vers)} pairs to register over UDP and TCP.
    @ivar port: a callable returning the port to register.
    @ivar state: L{REGISTERED}, L{DEFERRED} or L{UNREGISTERED}.
    @ivar holder: the port of the server the programs are registered for
        while L{DEFERRED}, else L{None}.
    @ivar registrations: how many times this server set its mappings (the
        first registration and each one made again).
    """

    log = Logger()

    def __init__(self, reactor, mappings, port, timeout=3.0, interval=5.0):
        self.reactor = reactor
        self.mappings = mappings
        self.port = port
        self.timeout = timeout
        self.interval = interval
        self.registered = []
        self.state = UNREGISTERED
        self.holder = None
        self.registrations = 0
        self._free_looks = 0
        self._warned = False
        self._watch = None
        self._busy = False

    # -- the portmapper's view

    @defer.inlineCallbacks
    def _current(self, pm):
        """
        Return C{{(prog, vers, transport): port}} of the mappings there are.
        """
        found = {}
        for prog, vers in self.mappings:
            for transport in TRANSPORTS:
                port = yield pm.getport(prog, vers, transport)
                if port:
                    found[prog, vers, transport] = port
        return found

    @defer.inlineCallbacks
    def _answers(self, prog, vers, transport, port):
        """
        Whether a server on C{port} answers C{prog}'s NULL call.
        """
        client = None
        try:
            client = yield RPCClient.connect(
                self.reactor, "127.0.0.1", port, transport, timeout=self.timeout
            )
            yield client.call(prog, vers, 0)
        except (RPCError, OSError, ConnectError):
            return False
        finally:
            if client is not None:
                client.close()
        return True

    @defer.inlineCallbacks
    def _live_holder(self, found, ours):
        """
        Return the port of another server that holds some of the mappings
        and answers, or L{None}.  Each port is asked once, over TCP when it
        has a TCP mapping: a port nothing listens on refuses a connection
        at once, where a datagram would wait for the whole timeout.
        """
        ask = {}
        for (prog, vers, transport), port in sorted(found.items()):
            if port != ours and (port not in ask or transport == "tcp"):
                ask[port] = (prog, vers, transport)
        for port, (prog, vers, transport) in sorted(ask.items()):
            if (yield self._answers(prog, vers, transport, port)):
                return port
        return None

    # -- registering

    @defer.inlineCallbacks
    def register(self, look=False):
        """
        Register unless another live server holds the programs.  With
        C{look} (the periodic look), a server that deferred registers only
        once the programs have been free at two looks in a row.

        @return: a Deferred firing with whether this server's mappings are
            in place.
        """
        ours = self.port()
        pm = None
        self._busy = True
        try:
            pm = yield Portmapper.connect(self.reactor, timeout=self.timeout)
            found = yield self._current(pm)
            wanted = [(p, v, t) for p, v in self.mappings for t in TRANSPORTS]
            if all(found.get(mapping) == ours for mapping in wanted):
                # Ours already: a restart on the same port (an hlfs mount
                # kept), or the portmapper kept them.  Removed at stop.
                self.registered = wanted
                if self.state != REGISTERED:
                    self.log.info("the portmapper has this server's mappings on port {port} "
                                  "already", port=ours)
                self._now(REGISTERED)
                return True
            holder = yield self._live_holder(found, ours)
            if holder is not None:
                self._defer_to(holder, ours)
                return False
            if look and self.state == DEFERRED:
                self._free_looks += 1
                if self._free_looks < 2:
                    return False
            yield self._set(pm, found, ours)
        except (RPCError, OSError) as e:
            if not self._warned:
                self._warned = True
                self.log.warn(
                    "no portmapper answered on 127.0.0.1:111 ({error}); serving without "
                    "registration: clients must be given port={port}",
                    error=e, port=ours,
                )
            if self.state == REGISTERED:
                self.registered = []
            self.state = UNREGISTERED
            return False
        finally:
            self._busy = False
            if pm is not None:
                pm.close()
        return self.state == REGISTERED

    @defer.inlineCallbacks
    def _set(self, pm, found, ours):
        again = self.registrations > 0
        self.registered = []
        for prog, vers in self.mappings:
            if any((prog, vers, t) in found for t in TRANSPORTS):
                # A stale mapping (its port answers nothing), or half of
                # ours: rpcbind refuses a SET over an existing mapping.
                yield pm.unset(prog, vers)
            for transport in TRANSPORTS:
                if (yield pm.set(prog, vers, transport, ours)):
                    self.registered.append((prog, vers, transport))
                else:
                    self.log.warn(
                        "the portmapper refused {prog}/{vers}/{transport} on port {port}",
                        prog=prog, vers=vers, transport=transport, port=ours,
                    )
        self.registrations += 1
        self._now(REGISTERED)
        self._warned = False
        if again:
            self.log.warn(
                "the portmapper had lost the registration (restarted?): registered "
                "{n} program/version/transport mappings on port {port} again",
                n=len(self.registered), port=ours,
            )
        else:
            self.log.info(
                "registered {n} program/version/transport mappings on port {port} with the "
                "portmapper", n=len(self.registered), port=ours,
            )

    def _defer_to(self, holder, ours):
        self._free_looks = 0
        if self.state == DEFERRED and self.holder == holder:
            return
        self.registered = []
        self.state, self.holder = DEFERRED, holder
        self.log.warn(
            "another live server holds the portmapper registration (port {holder}): serving "
            "on port {port} without registering; ask it with hlfs status --server "
            "127.0.0.1:{port}",
            holder=holder, port=ours,
        )

    def _now(self, state):
        self.state = state
        self.holder = None
        self._free_looks = 0

    # -- the periodic look

    def startService(self):
        Service.startService(self)
        if self.interval:
            self._watch = task.LoopingCall(self.look)
            self._watch.clock = self.reactor
            self._watch.start(self.interval, now=False).addErrback(
                lambda f: self.log.failure("portmapper look failed", f)
            )

    def look(self):
        """
        Make the registration again if the portmapper lost it, or take the
        programs once another server let them go.
        """
        if self._busy:
            # The last registration (the first one, or a look) still runs.
            return None
        d = self.register(look=True)
        d.addErrback(lambda f: self.log.failure("portmapper look failed", f))
        return d

    # -- unregistering

    @defer.inlineCallbacks
    def unregister(self):
        versions = sorted({(prog, vers) for prog, vers, _ in self.registered})
        self.registered = []
        self.state = UNREGISTERED
        if not versions:
            return
        ours = self.port()
        pm = None
        kept = 0
        try:
            pm = yield Portmapper.connect(self.reactor, timeout=self.timeout)
            for prog, vers in versions:
                ports = set()
                for transport in TRANSPORTS:
                    ports.add((yield pm.getport(prog, vers, transport)))
                ports.discard(0)
                if ports and ports != {ours}:
                    # Another server's now: UNSET would remove it too.
                    kept += 1
                    continue
                yield pm.unset(prog, vers)
        except (RPCError, OSError) as e:
            self.log.warn("could not unregister from the portmapper: {error}", error=e)
            return
        finally:
            if pm is not None:
                pm.close()
        if kept:
            self.log.warn(
                "left {n} program versions registered: they are another server's now", n=kept
            )
        self.log.info("unregistered from the portmapper")

    def stopService(self):
        Service.stopService(self)
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        return self.unregister()
