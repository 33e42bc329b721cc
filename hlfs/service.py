"""
HLFSService: the whole daemon as one C{MultiService}, built from a
L{Config}: the user table, the link resolver, the policy core, and the
RPC programs listening on UDP and TCP.
"""

import os
import time

from twisted.application.service import MultiService
from twisted.logger import Logger

from hlfs.config import ConfigError, resolve_group
from hlfs.linkfs import HomeLinkFS, LinkConfig
from hlfs.resolver import HomeResolver, SpoolRules
from hlfs.rpc.dispatch import Dispatcher
from hlfs.server import RPCServerService, build_programs
from hlfs.users import UserTable


def load_table(password_file):
    """
    Load the user table from C{password_file}, or from NSS when L{None}.

    @raise ConfigError: if the file cannot be read.
    """
    if password_file is None:
        return UserTable.from_nss()
    try:
        return UserTable.from_passwd_file(password_file)
    except OSError as e:
        raise ConfigError(f"cannot read password file {password_file}: {e.strerror}") from None


class HLFSService(MultiService):
    """
    The Home-Link File System daemon.

    @ivar config: the L{Config}.
    @ivar fs: the L{HomeLinkFS} policy core.
    @ivar resolver: the L{hlfs.resolver.ILinkResolver} in use.
    @ivar dispatcher: the RPC L{Dispatcher}; its C{stats} count calls.
    @ivar server: the L{RPCServerService}; C{server.port} once started.
    """

    log = Logger()

    def __init__(self, config, reactor):
        MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        self.hlfs_gid = resolve_group(config.group)
        table = load_table(config.password_file)
        self.resolver = HomeResolver(
            table,
            SpoolRules(os.fsencode(config.subdir), os.fsencode(config.alt_dir)),
            reactor,
        )
        self.fs = HomeLinkFS(
            LinkConfig(config.export_path, os.fsencode(config.linkname), self.hlfs_gid),
            self.resolver,
            time.time_ns(),
        )
        self.dispatcher = Dispatcher(build_programs(self.fs), insecure=config.insecure)
        self.stats = self.dispatcher.stats
        self.server = RPCServerService(self.dispatcher, config.port, config.interface, reactor)
        self.server.setServiceParent(self)

    def _report_table(self, table):
        for problem in table.problems[:20]:
            self.log.warn("password file: skipped {problem}", problem=str(problem))
        if len(table.problems) > 20:
            self.log.warn(
                "password file: {n} more malformed lines skipped", n=len(table.problems) - 20
            )
        self.log.info("loaded {n} users from {source}", n=len(table), source=table.source)

    def startService(self):
        self._report_table(self.resolver.table)
        if self.hlfs_gid is None:
            self.log.info(
                "group {group!r} does not exist: the HLFS_GID feature is off",
                group=self.config.group,
            )
        MultiService.startService(self)
        port = self.server.port
        if self.config.port_file:
            with open(self.config.port_file + ".tmp", "w") as f:
                f.write(f"{port}\n")
            os.replace(self.config.port_file + ".tmp", self.config.port_file)
        self.log.info(
            "hlfs serving {export} (link {link!r}, spool {subdir!r}, alternate {alt}) "
            "with NFS v2/v3 and MOUNT v1/v3 on {interface} port {port} (UDP and TCP)"
            "{insecure}",
            export=self.config.mount,
            link=self.config.linkname,
            subdir=self.config.subdir,
            alt=self.config.alt_dir,
            interface=self.config.interface,
            port=port,
            insecure=", unprivileged ports allowed" if self.config.insecure else "",
        )
