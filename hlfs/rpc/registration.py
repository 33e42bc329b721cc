"""
Registration of a server's programs with the local portmapper, as a
service: SET on start (after UNSET, so a stale registration of a previous
instance is replaced), UNSET on stop.  No portmapper is a warning, not a
failure: the server keeps serving clients that know its port.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from hlfs.rpc.client import RPCError
from hlfs.rpc.portmap import Portmapper


class PortmapRegistration(Service):
    """
    @ivar mappings: C{(prog, vers)} pairs to register over UDP and TCP.
    @ivar port: a callable returning the port to register.
    """

    log = Logger()

    def __init__(self, reactor, mappings, port, timeout=3.0):
        self.reactor = reactor
        self.mappings = mappings
        self.port = port
        self.timeout = timeout
        self.registered = []

    @defer.inlineCallbacks
    def register(self):
        port = self.port()
        pm = None
        try:
            pm = yield Portmapper.connect(self.reactor, timeout=self.timeout)
            for prog, vers in self.mappings:
                # Replace whatever a previous instance left: rpcbind refuses
                # a SET over an existing mapping.
                yield pm.unset(prog, vers)
                for transport in ("udp", "tcp"):
                    if (yield pm.set(prog, vers, transport, port)):
                        self.registered.append((prog, vers, transport))
                    else:
                        self.log.warn(
                            "the portmapper refused {prog}/{vers}/{transport} on port {port}",
                            prog=prog, vers=vers, transport=transport, port=port,
                        )
        except (RPCError, OSError) as e:
            self.log.warn(
                "no portmapper answered on 127.0.0.1:111 ({error}); serving without "
                "registration: clients must be given port={port}",
                error=e, port=port,
            )
            return False
        finally:
            if pm is not None:
                pm.close()
        self.log.info(
            "registered {n} program/version/transport mappings on port {port} with the portmapper",
            n=len(self.registered), port=port,
        )
        return True

    @defer.inlineCallbacks
    def unregister(self):
        versions = sorted({(prog, vers) for prog, vers, _ in self.registered})
        self.registered = []
        if not versions:
            return
        pm = None
        try:
            pm = yield Portmapper.connect(self.reactor, timeout=self.timeout)
            for prog, vers in versions:
                yield pm.unset(prog, vers)
        except (RPCError, OSError) as e:
            self.log.warn("could not unregister from the portmapper: {error}", error=e)
            return
        finally:
            if pm is not None:
                pm.close()
        self.log.info("unregistered from the portmapper")

    def stopService(self):
        Service.stopService(self)
        return self.unregister()
