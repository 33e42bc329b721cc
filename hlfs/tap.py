"""
C{twistd hlfs}: command-line options and the service they build.
"""

import ipaddress
import sys

from twisted.python import usage

from hlfs.config import (
    Config,
    ConfigError,
    check_absolute,
    check_component,
    check_port,
)

DESCRIPTION = """\
Serve the Home-Link File System: a read-only NFS filesystem holding one
symbolic link whose value depends on who reads it.  With the usual set-up,

    /var/spool/mail -> /mail/home -> ~user/.mailspool

mail is delivered into each user's home directory.  A caller whose home is
unknown or unusable gets the alternate spool directory instead; a caller
whose group is HLFS_GID (comsat, from, finger) gets `home -> .` and one
link per user name, NAME -> ~NAME/<subdir>/NAME.

Serves NFS versions 2 and 3 and MOUNT versions 1 and 3 on one port, over
UDP and TCP.  Like an NFS server's `secure` export option, only calls from
privileged source ports (< 1024) are served unless --insecure is given.

Signals: SIGTERM and SIGINT stop the server.

Example, an unprivileged demonstration on an ephemeral port:

    twistd -n hlfs --no-mount --insecure --port 0 \\
        --password-file ./passwd --alt-dir /tmp/alt_mail
"""


class Options(usage.Options):
    synopsis = "[twistd options] hlfs [options]"
    longdesc = DESCRIPTION

    optParameters = [
        ["mount", "m", "/mail",
         "Directory to mount on; also the exported path and the path MOUNT clients ask for."],
        ["linkname", None, "home", "Name of the link in the mount directory."],
        ["subdir", None, ".mailspool", "Spool subdirectory of each home."],
        ["alt-dir", "a", "/var/alt_mail",
         "Alternate spool directory, for callers whose home is unknown or unusable."],
        ["password-file", "P", None,
         "Read users from this passwd(5)-format file instead of the name service."],
        ["group", "g", "hlfs",
         "HLFS_GID: name or number of the group whose members see every mailbox "
         "(the feature is off if the group does not exist)."],
        ["port", "p", "0", "Port for NFS and MOUNT, UDP and TCP (0: any free port)."],
        ["interface", None, "127.0.0.1", "Address to listen on."],
        ["port-file", None, None,
         "Write the port in use to this file once listening (for scripts)."],
    ]

    optFlags = [
        ["no-mount", None, "Serve only: do not mount the kernel NFS client."],
        ["insecure", None, "Serve calls from unprivileged source ports too."],
    ]

    def parseOptions(self, options=None):
        # One clear line and status 2 for a bad value, as daemons do,
        # instead of twistd's full usage dump.
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            sys.stderr.write(f"hlfs: {e}\n")
            raise SystemExit(2)

    def postOptions(self):
        try:
            self.config = self._config()
        except ConfigError as e:
            raise usage.UsageError(str(e))

    def _config(self):
        interface = self["interface"]
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise ConfigError(f"--interface must be an IP address, not {interface!r}") from None
        return Config(
            mount=check_absolute("mount", self["mount"]),
            linkname=check_component("linkname", self["linkname"]),
            subdir=check_component("subdir", self["subdir"]),
            alt_dir=check_absolute("alt-dir", self["alt-dir"]),
            port=check_port("port", self["port"]),
            interface=interface,
            password_file=self["password-file"],
            group=self["group"],
            insecure=bool(self["insecure"]),
            no_mount=bool(self["no-mount"]),
            port_file=self["port-file"],
        )


def makeService(options):
    from twisted.internet import reactor

    from hlfs.service import HLFSService

    try:
        return HLFSService(options.config, reactor)
    except ConfigError as e:
        sys.stderr.write(f"hlfs: {e}\n")
        raise SystemExit(2)
