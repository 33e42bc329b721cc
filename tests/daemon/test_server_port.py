"""
L{hlfs.daemon.server.RPCServerService}: one port number for UDP and TCP.
With port 0 the UDP port comes first and TCP must get the same number; if
another socket holds it for TCP, the service tries another number.

The service runs on the real reactor with real sockets.  The competing
socket is bound at the one moment the race can be lost, right after the
UDP listener got its number, by a reactor that otherwise passes every
call through.
"""

import errno
import socket

import pytest

from hlfs.daemon.startup import StartupError
from hlfs.daemon.server import RPCServerService
from hlfs.rpc.dispatch import Dispatcher
from tests.support.probes import ReactorThread, wait_for
from tests.support.rpcsock import NFS, call

PROG_UNAVAIL = 1


class CompetingReactor:
    """
    The real reactor, except that after each of the first C{collisions}
    UDP listens another socket takes the same port number for TCP.
    """

    def __init__(self, reactor, collisions):
        self._reactor = reactor
        self.collisions = collisions
        self.udp_ports = []
        self.competitors = []

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        listener = self._reactor.listenUDP(port, protocol, interface, maxPacketSize)
        number = listener.getHost().port
        self.udp_ports.append(number)
        if len(self.competitors) < self.collisions:
            competitor = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                competitor.bind((interface, number))
            except OSError as e:
                # Another process has the number for TCP already (a busy
                # machine's loopback connections): a collision all the same.
                if e.errno != errno.EADDRINUSE:
                    raise
                competitor.close()
            else:
                competitor.listen(1)
            self.competitors.append(competitor)
        return listener

    def close(self):
        for competitor in self.competitors:
            competitor.close()


@pytest.fixture
def rt():
    return ReactorThread.get()


def udp_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            assert e.errno == errno.EADDRINUSE
            return False
        return True


def test_a_port_taken_for_tcp_makes_the_service_try_another(rt):
    reactor = CompetingReactor(rt.reactor, collisions=2)
    service = RPCServerService(Dispatcher([]), 0, "127.0.0.1", reactor)
    try:
        rt.call(service.startService)
        assert len(reactor.udp_ports) == 3
        assert service.port == reactor.udp_ports[2]
        # The numbers given up are closed for UDP too (on the reactor's
        # next turn: Twisted closes a UDP port asynchronously).
        wait_for(lambda: udp_free(reactor.udp_ports[0]) and udp_free(reactor.udp_ports[1]))
        assert call(service.port, NFS, 3, 0).stat == PROG_UNAVAIL
        assert call(service.port, NFS, 3, 0, transport="tcp").stat == PROG_UNAVAIL
    finally:
        rt.call(service.stopService)
        reactor.close()


def test_a_requested_port_taken_for_tcp_is_an_error(rt):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        number = probe.getsockname()[1]
    reactor = CompetingReactor(rt.reactor, collisions=1)
    service = RPCServerService(Dispatcher([]), number, "127.0.0.1", reactor)
    try:
        # One line for the administrator (hlfs.daemon.startup).
        with pytest.raises(StartupError, match=f"cannot serve NFS on 127.0.0.1 port {number}: "):
            rt.call(service.startService)
        assert reactor.udp_ports == [number]
        wait_for(lambda: udp_free(number))
    finally:
        reactor.close()


def test_no_port_free_for_both_is_an_error(rt):
    reactor = CompetingReactor(rt.reactor, collisions=RPCServerService.EPHEMERAL_TRIES)
    service = RPCServerService(Dispatcher([]), 0, "127.0.0.1", reactor)
    try:
        with pytest.raises(StartupError) as e:
            rt.call(service.startService)
        assert "no port free for both UDP and TCP" in str(e.value)
        assert len(reactor.udp_ports) == RPCServerService.EPHEMERAL_TRIES
        wait_for(lambda: all(udp_free(port) for port in reactor.udp_ports))
    finally:
        reactor.close()
