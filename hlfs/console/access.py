"""
Who may reach the manhole console: its listening address, the host key
and authorized_keys files (never writable by anyone but their owner), and
the public-key check that logs login attempts with the login name, the
peer and the key's fingerprint (as C{ssh-keygen -l} prints it): every
accepted one, and the others within a bound a minute.
"""

import base64
import hashlib
import os
import stat

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import error as conch_error
from twisted.conch.checkers import readAuthorizedKeyFile
from twisted.conch.ssh import keys, userauth
from twisted.conch.ssh.common import getNS
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from hlfs.console.options import ManholeConfigError

log = Logger(namespace="hlfs.manhole")


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


#: Login attempts of each outcome logged in full each minute, before the
#: others are counted: anyone who can connect may make them.
ATTEMPT_LINES = 10


def quiet_ssh_log(throttle):
    """
    A logger for what Twisted's SSH server logs about a connection before
    a login succeeds (its factory, transport and authentication service),
    which anyone who can connect makes it log, a dozen lines each: its
    debugging lines are dropped, and the others go through C{throttle}
    (a L{LogThrottle}): each kind of line once a minute, then counted.
    """

    def observe(event):
        if event.get("log_level") is not LogLevel.debug:
            throttle.event(("ssh", event.get("log_format")), event)

    return Logger(namespace="hlfs.manhole.ssh", observer=observe)


class LoggingUserAuth(userauth.SSHUserAuthServer):
    """
    The standard user authentication service, with one log line per
    attempt: login name, peer, method, key fingerprint and outcome.  An
    accepted login is always logged; the other outcomes go through the
    factory's C{throttle}, L{ATTEMPT_LINES} of each a minute, then a count.
    """

    def serviceStarted(self):
        self.throttle = self.transport.factory.throttle
        self._log = self.transport.factory.ssh_log
        super().serviceStarted()

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
                outcome, kind = "offered (authorized, awaiting signature)", "offered"
            elif method == "none":
                outcome, kind = "asked for methods", "asked"
            else:
                outcome, kind = f"refused: {reason.getErrorMessage()}", "refused"
            self.throttle.info(
                ("attempt", kind),
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
