"""
The manhole: a Python console inside the running daemon, over SSH.

Off unless asked for.  Public-key authentication only, against an
authorized_keys file whose keys are accepted for any login name; the host
key is generated on first start and must not be writable by anyone but
its owner.  Every login attempt is logged with the login name, the peer
and the key's fingerprint (as C{ssh-keygen -l} prints it).

The console runs in the reactor thread: an exception typed there is
printed in the session and the daemon goes on, but a call that blocks
stops NFS service until it returns.  The helpers in
L{hlfs.console.namespace} never block.  Who may log in is
L{hlfs.console.access}.
"""

import struct

from twisted.application.internet import StreamServerEndpointService
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole import Manhole, ManholeInterpreter
from twisted.conch.manhole_ssh import TerminalRealm, TerminalSession, TerminalSessionTransport
from twisted.conch.ssh import factory
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from hlfs.console.access import (
    ATTEMPT_LINES, AuthorizedKeysChecker, LoggingUserAuth, check_not_writable_by_others,
    fingerprint, load_or_create_host_key, quiet_ssh_log, read_authorized_keys,
)
from hlfs.console.namespace import build_namespace
from hlfs.console.options import ManholeConfigError, listen_description
from hlfs.rpc.limits import LogThrottle

__all__ = [
    "ManholeService",
    "makeManholeService",
    "manhole_service_from_options",
]

log = Logger(namespace="hlfs.manhole")


# The console.


class ConsoleInterpreter(ManholeInterpreter):
    """
    The manhole interpreter, except that C{exit()} or C{raise SystemExit}
    ends the session instead of unwinding into the reactor.
    """

    def runcode(self, *args, **kwargs):
        try:
            ManholeInterpreter.runcode(self, *args, **kwargs)
        except SystemExit:
            self.handler.leave()


class Console(Manhole):
    """
    The line-editing Python console the operator talks to.
    """

    greeted = False

    def connectionMade(self):
        Manhole.connectionMade(self)
        self.interpreter = ConsoleInterpreter(self, self.namespace)

    def terminalSize(self, width, height):
        # Twisted clears the screen here, which the SSH session does right
        # after connecting: greet the operator after that.
        self.terminal.eraseDisplay()
        self.terminal.cursorHome()
        self.width = width
        self.height = height
        if not self.greeted:
            self.greeted = True
            self.terminal.write(b"hlfs manhole: help() lists what is here; Ctrl-D leaves.")
            self.terminal.nextLine()
        self.drawInputLine()

    def leave(self):
        """
        End this session; the daemon keeps running.
        """
        self.terminal.loseConnection()


class ConsoleTransport(TerminalSessionTransport):
    """
    Twisted's glue between the SSH channel and the console, except that
    the channel closes with exit status 0, so C{ssh} exits 0 when the
    operator leaves.
    """

    def __init__(self, proto, chainedProtocol, avatar, width, height):
        TerminalSessionTransport.__init__(self, proto, chainedProtocol, avatar, width, height)
        channel = proto.session

        def close():
            avatar.conn.sendRequest(channel, b"exit-status", struct.pack(">L", 0))
            avatar.conn.sendClose(channel)

        proto.transport.loseConnection = close


class ConsoleSession(TerminalSession):
    """
    A terminal session that follows window size changes and closes on EOF
    (Twisted's raises for both).
    """

    width = 80
    height = 24

    def openShell(self, proto):
        self.terminal = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            IConchUser(self.original),
            self.width,
            self.height,
        )

    def windowChanged(self, newWindowSize):
        # Only the line editor's idea of the width changes: redrawing the
        # whole screen on every resize would erase the operator's output.
        self.height, self.width = newWindowSize[:2]
        terminal = getattr(self, "terminal", None)
        if terminal is not None:
            console = terminal.chainedProtocol.terminalProtocol
            console.width, console.height = self.width, self.height

    def eofReceived(self):
        terminal = getattr(self, "terminal", None)
        if terminal is not None:
            terminal.proto.loseConnection()


class ConsoleRealm(TerminalRealm):
    sessionFactory = ConsoleSession
    transportFactory = ConsoleTransport

    def __init__(self, namespace):
        TerminalRealm.__init__(self)
        self.chainedProtocolFactory = lambda: insults.ServerProtocol(Console, namespace)


class ManholeSSHFactory(factory.SSHFactory):
    """
    An SSH server factory with its own host keys (Twisted's
    C{ConchFactory} keeps them on the class, shared by every instance) and
    the logging user authentication service.  What it and its connections
    log before a login succeeds goes through throttles (L{LogThrottle}):
    the login attempts' lines (L{LoggingUserAuth}) and Twisted's own
    (L{quiet_ssh_log}), since anyone who can connect makes them log.
    """

    def __init__(self, portal, host_key, clock):
        self.portal = portal
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.services = {**factory.SSHFactory.services, b"ssh-userauth": LoggingUserAuth}
        self.throttle = LogThrottle(clock, log=log, burst=ATTEMPT_LINES)
        self.ssh_log = self._log = quiet_ssh_log(LogThrottle(clock, log=log))

    def buildProtocol(self, addr):
        transport = factory.SSHFactory.buildProtocol(self, addr)
        transport._log = self.ssh_log
        return transport


class ManholeService(StreamServerEndpointService):
    """
    The listening manhole.  L{whenListening} tells where it listens, for
    callers that asked for port 0.  Both rest on private attributes of
    L{StreamServerEndpointService}, pinned by
    C{tests/daemon/test_twisted_internals.py}.
    """

    # As strports.service does: a port already in use fails twistd's
    # startup instead of being logged later.
    _raiseSynchronously = True

    def whenListening(self):
        """
        Return a Deferred that fires with the listening port once the
        service has started.
        """
        d = defer.Deferred()

        def fire(port):
            d.callback(port)
            return port

        def fail(reason):
            d.errback(reason)
            return reason

        self._waitingForPort.addCallbacks(fire, fail)
        return d


def makeManholeService(portspec, authorized_keys_path, host_key_path, namespace, reactor=None):
    """
    Make the manhole service: an SSH server giving a Python console on
    C{namespace} to holders of a key in C{authorized_keys_path}.

    The host key is loaded (or generated) now, so configuration errors
    surface before the daemon starts.

    @param portspec: a port number (loopback only) or a server endpoint
        description (C{tcp:2222:interface=127.0.0.1}).
    @param namespace: the console's names, see L{build_namespace}; each
        session starts from a copy.
    @param reactor: the reactor to listen with; the global one if L{None}.
    @raise ManholeConfigError: for a bad port spec, an unusable host key or
        an unreadable or unprotected authorized keys file.
    @rtype: L{twisted.application.service.IService}
    """
    if reactor is None:
        from twisted.internet import reactor
    description = listen_description(portspec)
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise ManholeConfigError(f"bad --manhole endpoint {portspec!r}: {e}") from None
    check_not_writable_by_others(authorized_keys_path, "manhole authorized keys file")
    try:
        authorized = read_authorized_keys(authorized_keys_path)
    except OSError as e:
        raise ManholeConfigError(
            f"cannot read manhole authorized keys {authorized_keys_path}: {e.strerror}"
        ) from None
    if not authorized:
        log.warn(
            "manhole authorized keys {path} lists no key: nobody can log in",
            path=authorized_keys_path,
        )
    host_key = load_or_create_host_key(host_key_path)
    portal = Portal(ConsoleRealm(namespace), [AuthorizedKeysChecker(authorized_keys_path)])
    service = ManholeService(endpoint, ManholeSSHFactory(portal, host_key, reactor))
    service.setName("manhole")
    log.info(
        "manhole configured on {description}, host key {fingerprint}",
        description=description,
        fingerprint=fingerprint(host_key.public().blob()),
    )
    return service


def manhole_service_from_options(options, service, reactor=None):
    """
    Build the manhole for the daemon's parsed options, with the console
    namespace of C{service}; L{None} when C{--manhole} was not given.

    @raise ManholeConfigError: see L{makeManholeService}.
    """
    if options.get("manhole") is None:
        return None
    return makeManholeService(
        options["manhole"],
        options["manhole-keys"],
        options["manhole-host-key"],
        build_namespace(service, reactor),
        reactor,
    )
