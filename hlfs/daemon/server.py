"""
The RPC programs hlfs serves, assembled around one L{HomeLinkFS}, and the
service that listens for them on one port number over UDP and TCP.
"""

import errno

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from hlfs.daemon.startup import StartupError, listen_error
from hlfs.nfs import mount, v2, v3
from hlfs.nfs.attrs import AttrEncoder
from hlfs.rpc.dispatch import Program
from hlfs.rpc.limits import StreamLimits, TransportStats
from hlfs.rpc.datagram import RPCDatagramProtocol
from hlfs.rpc.transport import RPCStreamFactory, listen_stream


def build_programs(fs, mount_state=None, replies=None):
    """
    Return the L{Program}s serving C{fs}: NFS 2 and 3, MOUNT 1 and 3.

    @param replies: a L{hlfs.rpc.replycache.ReplyCache} the NFS procedures
        offer their answers to, or L{None}.
    """
    encoder = AttrEncoder(fs.handles.fingerprint)
    mounts = mount.Mount(fs, mount_state)
    return [
        Program(
            v3.PROGRAM,
            "nfs",
            {
                2: v2.NFSv2(fs, encoder, replies).procedures,
                3: v3.NFSv3(fs, encoder, replies).procedures,
            },
        ),
        Program(mount.PROGRAM, "mountd", {1: mounts.v1, 3: mounts.v3}),
    ]


class RPCServerService(Service):
    """
    Listen for one L{Dispatcher} on one port number, UDP and TCP alike.
    Port 0 picks a number free for both.

    @ivar port: the port number in use, once started.
    @ivar limits: the L{StreamLimits} of TCP connections; may be changed
        until started.
    @ivar stats: the L{TransportStats} of TCP connections.
    @ivar held: L{None}, or a Deferred (set before starting) until which
        the ports, bound at start, read nothing: calls wait in the
        sockets' queues meanwhile.
    """

    log = Logger()
    EPHEMERAL_TRIES = 20

    def __init__(self, dispatcher, port, interface, reactor, limits=None, stats=None):
        self.dispatcher = dispatcher
        self.requested_port = port
        self.interface = interface
        self.reactor = reactor
        self.limits = limits or StreamLimits()
        self.stats = stats or TransportStats()
        self.port = None
        self.held = None
        self._listeners = []
        self._factories = []

    def startService(self):
        try:
            self._listen()
        except CannotListenError as e:
            raise StartupError(f"cannot serve NFS on {listen_error(e)}") from None
        Service.startService(self)
        if self.held is not None:
            for listener in self._listeners:
                listener.stopReading()
            self.held.addBoth(self._read)

    def _read(self, result):
        if self.running:
            for listener in self._listeners:
                listener.startReading()
        return result

    def _listen(self):
        tries = 1 if self.requested_port else self.EPHEMERAL_TRIES
        for attempt in range(tries):
            udp = self.reactor.listenUDP(
                self.requested_port,
                RPCDatagramProtocol(self.dispatcher),
                interface=self.interface,
                maxPacketSize=65536,
            )
            port = udp.getHost().port
            factory = RPCStreamFactory(self.dispatcher, self.reactor, self.limits, self.stats)
            self._factories.append(factory)
            try:
                tcp = listen_stream(self.reactor, port, factory, self.interface)
            except CannotListenError as e:
                udp.stopListening()
                if self.requested_port or getattr(e.socketError, "errno", None) != errno.EADDRINUSE:
                    raise
                continue
            self._listeners = [udp, tcp]
            self.port = port
            break
        else:
            raise CannotListenError(self.interface, 0, "no port free for both UDP and TCP")

    def stopService(self):
        Service.stopService(self)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.stopListening()
        self.dispatcher.stop()
        factories, self._factories = self._factories, []
        for factory in factories:
            factory.throttle.stop()
