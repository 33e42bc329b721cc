"""
The manhole: a Python console inside the running daemon, over SSH.

Off unless asked for.  Public-key authentication only, against an
authorized_keys file whose keys are accepted for any login name; the host
key is generated on first start and must not be writable by anyone but
its owner.  Every login attempt is logged with the login name, the peer
and the key's fingerprint (as C{ssh-keygen -l} prints it).

The console runs in the reactor thread: an exception typed there is
printed in the session and the daemon goes on, but a call that blocks
stops NFS service until it returns.  The helpers in L{hlfs.console} never
block.
"""

import base64
import hashlib
import os
import re
import stat
import struct

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.internet import StreamServerEndpointService
from twisted.conch import error as conch_error
from twisted.conch.checkers import readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole import Manhole, ManholeInterpreter
from twisted.conch.manhole_ssh import TerminalRealm, TerminalSession, TerminalSessionTransport
from twisted.conch.ssh import factory, keys, userauth
from twisted.conch.ssh.common import getNS
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from hlfs.console import build_namespace

__all__ = [
    "ManholeConfigError",
    "ManholeOptions",
    "build_namespace",
    "check_manhole_options",
    "makeManholeService",
    "manhole_service_from_options",
]

log = Logger(namespace="hlfs.manhole")


class ManholeConfigError(Exception):
    """
    The manhole cannot start as configured; the message says why, in one
    line, for the operator.
    """


# Configuration: listening address and key files.


def listen_description(portspec):
    """
    Turn C{--manhole PORTSPEC} into a server endpoint description: a bare
    port number, or a TCP description without C{interface=}, listens on
    loopback only.  Any other interface must be given explicitly.

    @raise ManholeConfigError: for an empty or malformed spec.
    """
    spec = portspec.strip()
    if not spec:
        raise ManholeConfigError("--manhole needs a port number or an endpoint description")
    if spec.isdigit():
        return f"tcp:{int(spec)}:interface=127.0.0.1"
    kind = spec.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and not re.search(r"(^|[^\\]):interface=", spec):
        return spec + (":interface=127.0.0.1" if kind == "tcp" else r":interface=\:\:1")
    return spec


def check_not_writable_by_others(path, what):
    """
    Refuse C{path} (and its directory) if group or others may write it:
    whoever can replace the host key or the authorized keys can get into
    the daemon.

    @raise ManholeConfigError: if either is group- or other-writable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    for checked, label in ((directory, f"directory of the {what}"), (path, what)):
        try:
            mode = os.stat(checked).st_mode
        except FileNotFoundError:
            if checked == path:
                continue
            raise ManholeConfigError(f"{label} {checked} does not exist") from None
        except OSError as e:
            raise ManholeConfigError(f"cannot inspect {label} {checked}: {e.strerror}") from None
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ManholeConfigError(
                f"refusing to start the manhole: {label} {checked} is writable by group or "
                f"others (mode {stat.S_IMODE(mode):04o}); use chmod go-w"
            )


def load_or_create_host_key(path):
    """
    Load the manhole's SSH host key from C{path}, generating an ed25519 key
    there (mode 0600) if the file does not exist.

    @raise ManholeConfigError: if the file or its directory is writable by
        group or others, or the key cannot be read or written.
    @rtype: L{twisted.conch.ssh.keys.Key}
    """
    check_not_writable_by_others(path, "manhole host key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = keys.Key.fromFile(path)
        except (OSError, keys.BadKeyError, ValueError) as e:
            raise ManholeConfigError(f"cannot load the manhole host key {path}: {e}") from None
        if key.isPublic():
            raise ManholeConfigError(f"manhole host key {path} holds a public key, not a private one")
        return key
    except OSError as e:
        raise ManholeConfigError(f"cannot create the manhole host key {path}: {e.strerror}") from None
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    with os.fdopen(fd, "wb") as f:
        # The umask may have narrowed the mode further, never widened it;
        # set it exactly anyway so the file reads as 0600.
        os.fchmod(f.fileno(), 0o600)
        f.write(key.toString("openssh"))
    log.info(
        "generated manhole host key {path} ({fingerprint})",
        path=path,
        fingerprint=fingerprint(key.public().blob()),
    )
    return key


def read_authorized_keys(path):
    """
    Return the keys listed in authorized_keys file C{path}.

    @raise OSError: if the file cannot be read.
    """
    with open(path, "rb") as f:
        return list(readAuthorizedKeyFile(f))


def fingerprint(blob):
    """
    The SHA256 fingerprint of a public key blob, as C{ssh-keygen -l}
    prints it.
    """
    digest = base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=")
    return "SHA256:" + digest.decode("ascii")


# Authentication.


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """
    Public-key checker over one authorized_keys file, whatever the login
    name.  The file is read at every attempt, so keys can be added or
    revoked without a restart.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, path):
        self.path = path

    def requestAvatarId(self, credentials):
        return defer.execute(self._check, credentials)

    def _check(self, credentials):
        try:
            offered = keys.Key.fromString(credentials.blob)
        except (keys.BadKeyError, ValueError):
            raise UnauthorizedLogin("unreadable public key") from None
        try:
            authorized = read_authorized_keys(self.path)
        except OSError as e:
            log.error(
                "manhole: cannot read authorized keys {path}: {error}",
                path=self.path,
                error=e.strerror,
            )
            raise UnauthorizedLogin("authorized keys unreadable") from None
        if offered.public() not in [key.public() for key in authorized]:
            raise UnauthorizedLogin("key not authorized")
        # A query without a signature only asks whether the key would do;
        # answering it for authorized keys alone tells an intruder nothing.
        if not credentials.signature:
            raise conch_error.ValidPublicKey()
        try:
            verified = offered.verify(credentials.signature, credentials.sigData)
        except Exception:
            verified = False
        if not verified:
            raise UnauthorizedLogin("bad signature")
        return credentials.username


class LoggingUserAuth(userauth.SSHUserAuthServer):
    """
    The standard user authentication service, with one log line per
    attempt: login name, peer, method, key fingerprint and outcome.
    """

    def tryAuth(self, kind, user, data):
        peer = self.transport.transport.getPeer()
        where = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        key = "-"
        if kind == b"publickey":
            try:
                key = fingerprint(getNS(data[1:], 2)[1])
            except Exception:
                key = "(malformed)"
        name = user.decode("utf-8", "backslashreplace")
        method = kind.decode("ascii", "replace")
        result = super().tryAuth(kind, user, data)

        def accepted(avatar):
            log.info(
                "manhole login: user {user!r} from {peer} with key {fingerprint} accepted",
                user=name,
                peer=where,
                fingerprint=key,
            )
            return avatar

        def refused(reason):
            if reason.check(conch_error.IgnoreAuthentication):
                outcome = "offered (authorized, awaiting signature)"
            elif method == "none":
                outcome = "asked for methods"
            else:
                outcome = f"refused: {reason.getErrorMessage()}"
            log.info(
                "manhole login attempt: user {user!r} from {peer} method {method} "
                "key {fingerprint}: {outcome}",
                user=name,
                peer=where,
                method=method,
                fingerprint=key,
                outcome=outcome,
            )
            return reason

        return result.addCallbacks(accepted, refused)


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
    the logging user authentication service.
    """

    def __init__(self, portal, host_key):
        self.portal = portal
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.services = {**factory.SSHFactory.services, b"ssh-userauth": LoggingUserAuth}


class ManholeService(StreamServerEndpointService):
    """
    The listening manhole.  L{whenListening} tells where it listens, for
    callers that asked for port 0.
    """

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
    service = ManholeService(endpoint, ManholeSSHFactory(portal, host_key))
    # As strports.service does: a port already in use fails twistd's
    # startup instead of being logged later.
    service._raiseSynchronously = True
    service.setName("manhole")
    log.info(
        "manhole configured on {description}, host key {fingerprint}",
        description=description,
        fingerprint=fingerprint(host_key.public().blob()),
    )
    return service


# Command line.

MANHOLE_HELP = (
    "The manhole console runs in the daemon's reactor thread: an exception there "
    "is harmless, but a call that blocks stops NFS service until it returns; use "
    "the console's helpers (resolve, flush, reload, hung), which never block."
)


class ManholeOptions:
    """
    Options for the manhole, to mix into the daemon's
    L{twisted.python.usage.Options} (list it before C{usage.Options} in
    the bases, and call L{check_manhole_options} from C{postOptions}).
    """

    optParameters = [
        [
            "manhole",
            None,
            None,
            "Serve an SSH Python console into the running daemon on PORTSPEC: a port "
            "number (loopback only) or an endpoint such as tcp:2222:interface=127.0.0.1; "
            "other interfaces only when given explicitly.  Off by default.  "
            + MANHOLE_HELP,
        ],
        [
            "manhole-keys",
            None,
            None,
            "authorized_keys FILE for --manhole: its keys may log in under any name "
            "(public-key authentication only; each login is logged with its key "
            "fingerprint).  Must not be writable by group or others.",
        ],
        [
            "manhole-host-key",
            None,
            None,
            "SSH host key FILE for --manhole; an ed25519 key is generated there (mode "
            "0600) if missing.  The file and its directory must not be writable by "
            "group or others.",
        ],
    ]


def check_manhole_options(options):
    """
    Check the manhole options together; call from C{postOptions}.

    @raise usage.UsageError: if they are inconsistent.
    """
    portspec = options.get("manhole")
    keys_file = options.get("manhole-keys")
    host_key = options.get("manhole-host-key")
    if portspec is None:
        given = [f"--{name}" for name in ("manhole-keys", "manhole-host-key") if options.get(name)]
        if given:
            raise usage.UsageError(f"{' and '.join(given)} need --manhole PORTSPEC")
        return
    if not keys_file or not host_key:
        raise usage.UsageError("--manhole needs --manhole-keys FILE and --manhole-host-key FILE")
    try:
        listen_description(portspec)
    except ManholeConfigError as e:
        raise usage.UsageError(str(e)) from None


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
