"""
The private Twisted internals hlfs relies on, pinned so that a Twisted
upgrade that changes one fails here, loudly, instead of changing the
daemon's behaviour quietly:

  - C{reactor._exitSignal}: twistd re-raises the signal that stopped the
    reactor at exit; hlfs clears it so SIGTERM exits 0, as hlfsd does and
    systemd expects (L{hlfs.daemon.service.HLFSService._after_shutdown}).
  - C{tcp.Port._logger}: a listening port logs failed accepts through its
    own logger, which L{hlfs.rpc.transport.listen_stream} replaces to count
    them and log one line per interval.
  - C{StreamServerEndpointService._raiseSynchronously} and
    C{_waitingForPort}: the manhole's port already in use fails start-up,
    as C{strports.service} makes it, and C{whenListening} tells the port
    (L{hlfs.console.manhole.ManholeService}).
  - C{_log} of conch's SSH factory, server transport and authentication
    service: the manhole gives each its throttled logger
    (L{hlfs.console.access.quiet_ssh_log}), so that connecting cannot
    flood the log.

(The probe pool's threads are hlfs's own, L{hlfs.homes.workers}: their
stop not waiting for a thread stuck in a hung home is tested there.)
"""

import inspect
import socket

import pytest
from twisted.application import app
from twisted.internet import epollreactor, tcp
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from hlfs.console.manhole import ManholeService
from tests.support.probes import ReactorThread


def test_twistd_reraises_the_reactors_exit_signal():
    reactor = epollreactor.EPollReactor()
    assert reactor._exitSignal is None, "Twisted's reactors no longer have _exitSignal"
    source = inspect.getsource(app.ApplicationRunner.startReactor)
    assert "reactor._exitSignal" in source, "twistd no longer reads reactor._exitSignal"


def test_a_listening_port_logs_accept_failures_through_its_own_logger():
    assert isinstance(tcp.Port._logger, Logger), "tcp.Port no longer has a _logger"
    source = inspect.getsource(tcp.Port.doRead)
    assert "self._logger" in source, "tcp.Port.doRead no longer logs through self._logger"


def test_the_manhole_service_fails_on_a_port_in_use_and_tells_its_port():
    rt = ReactorThread.get()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = ManholeService(
            TCP4ServerEndpoint(rt.reactor, taken.getsockname()[1], interface="127.0.0.1"), Factory()
        )
        with pytest.raises(CannotListenError):
            rt.call(busy.privilegedStartService)
    free = ManholeService(TCP4ServerEndpoint(rt.reactor, 0, interface="127.0.0.1"), Factory())
    rt.call(free.privilegedStartService)
    rt.call(free.startService)
    try:
        port = rt.call(free.whenListening)
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10):
            pass
    finally:
        rt.call(free.stopService)


def test_the_ssh_server_logs_through_each_objects_own_logger():
    from twisted.conch.ssh import factory, transport, userauth

    for cls in (factory.SSHFactory, transport.SSHServerTransport, userauth.SSHUserAuthServer):
        assert isinstance(inspect.getattr_static(cls, "_log"), Logger), cls
    for method in (factory.SSHFactory.buildProtocol, transport.SSHTransportBase.connectionLost,
                   userauth.SSHUserAuthServer.tryAuth):
        assert "self._log." in inspect.getsource(method), method
