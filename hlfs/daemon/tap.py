"""
C{twistd hlfs}: command-line options and the service they build.
"""

import configparser
import getopt
import ipaddress
import os
import sys

from twisted.python import usage

from hlfs.daemon.config import (
    Config,
    ConfigError,
    check_absolute,
    check_component,
    check_count,
    check_mount_options,
    check_name,
    check_port,
    check_seconds,
    check_uid,
    login_defs_uid_min,
)
from hlfs.console.namespace import build_namespace
from hlfs.console.options import ManholeConfigError, ManholeOptions, check_manhole_options
from hlfs.daemon import logs, startup
from hlfs.daemon.logs import LOGGER, LogSettings

#: The section of a C{--config} file: its keys are the long options.
CONFIG_SECTION = "hlfs"

DESCRIPTION = """\
Serve the Home-Link File System: a read-only NFS filesystem holding one
symbolic link whose value depends on who reads it.  With the usual set-up,

    /var/spool/mail -> /mail/home -> ~user/.mailspool

mail is delivered into each user's home directory.  A caller whose home is
unknown or unusable, and a system account (uid under --uid-min, root
excepted), gets the alternate spool directory instead; root, and a caller
whose group is HLFS_GID (comsat, from, finger), get `home -> .` and one
link per user name, NAME -> ~NAME/<subdir>/NAME, checked like NAME's own;
root's dotlock NAME.lock there is the real lock file next to NAME's mailbox,
which hlfs makes and removes as NAME: the one change it takes.

Serves NFS versions 2 and 3 and MOUNT versions 1 and 3 on one port, over
UDP and TCP, plus a status program (`hlfs status`).  Like an NFS server's
`secure` export option, only calls from privileged source ports (< 1024)
are served unless --insecure is given.

START-UP, in this order, each step logged:
  0. read /proc/mounts (never the mount point: a stale mount of ours would
     hang until this process serves).  If an hlfs mount is still there, reuse
     its port and handles and skip steps 1 and 4.
  1. create the mount point (mode at least 0555) and the alternate spool
     (mode 1777), and plant the fixed link <mount>/<linkname> -> <alt-dir>
     so the spool path leads to a real directory while hlfs is down.
  2. load the users, serve NFS and MOUNT on UDP and TCP.
  3. register every program/version/transport with the portmapper
     (replacing a stale registration); no portmapper is only a warning.
  4. mount:  mount -t nfs -o rw,sync,lookupcache=none,nolock,vers=3,proto=tcp,
     mountproto=tcp,retry=0,port=P,mountport=P[,<-o options>] ADDR:DIR DIR
     then read /proc/mounts back: without lookupcache=none the kernel could
     hand one user's link to another, so hlfs unmounts and exits unless -C.
  --no-mount skips steps 1 and 4; -f (fast start) skips step 1's checks.

SIGNALS:
  SIGHUP   reload the users, flush the probe cache, reopen the log file.
  SIGUSR1  dump the users and cache to hlfs-dump.txt in the run directory
           (instead of twistd's log rotation: rotate with logrotate + SIGHUP).
  SIGTERM, SIGINT  unmount (retrying a busy mount, then lazily) while still
           serving, unregister from the portmapper, exit 0.

HOME CHECKS: before the link points into a home, one of hlfs's home-check
processes checks, as the user (file system credentials only; no process
changes its uid), that ~user/<subdir> is a directory it can create, write
and remove a file in.  The --home-checks processes start before hlfs
serves, each runs one check (or root's lock-file operation) at a time, and
one user's jobs run one at a time, so a hung home holds one process.
Results, good and bad, are kept for --cache-interval seconds.  A caller
never waits more than --probe-deadline for a check: past it, or when every
home-check process is stuck on a hung home, the answer is the alternate
spool.  -n turns checks off.

LIMITS: the port is open to every local user (NULL and the status program
must stay reachable from unprivileged ports), so everything a caller can
make hlfs hold is bounded.  A TCP connection holds at most one record of
--max-record bytes, is not read while more than 64 KiB of its replies wait
unsent (a turn stops answering once its replies fill that much) or while
--max-pending of its calls wait for a home check or a lock file, answers
--calls-per-turn calls before other connections get their turn, and is
closed after --record-timeout holding part of a record,
--stall-timeout leaving its replies unread or --idle-timeout sending
nothing (the kernel client reconnects).  At most --max-connections are open,
--max-unprivileged-connections of them from unprivileged ports; a
privileged client finding every slot taken closes the idlest unprivileged
one instead of being refused.  At start-up hlfs raises its soft file
descriptor limit to the hard one and keeps --fd-reserve descriptors from
connections.  Each limit and how often it refused shows in `hlfs status`.

OPERATOR CONSOLE: --manhole offers a Python console inside the daemon over
SSH (public keys only), with helpers resolve(user_or_uid), flush(user=None),
reload() and hung().  It runs in the reactor thread: an exception there is
harmless, but a call that blocks stops NFS service until it returns; use
the helpers, which never block.

LOGGING: with twistd's --syslog or --logfile, through hlfs's own observer
(twistd --logger hlfs.daemon.logs.observer, implied unless --logger is given):
`twistd --syslog --prefix hlfsd` logs to syslog with facility daemon and the
pid; a --logfile is reopened on SIGHUP and never rotated on SIGUSR1.

Example, an unprivileged demonstration on an ephemeral port:

    twistd -n hlfs --no-mount --insecure --port 0 \\
        --password-file ./passwd --alt-dir /tmp/alt_mail
"""


class Options(ManholeOptions, usage.Options):
    synopsis = "[twistd options] hlfs [options]"
    longdesc = DESCRIPTION

    optParameters = [
        ["mount", "m", "/mail",
         "Directory to mount on; also the exported path and the path MOUNT clients ask for."],
        ["linkname", None, "home", "Name of the link in the mount directory."],
        ["subdir", None, ".mailspool", "Spool subdirectory of each home."],
        ["alt-dir", "a", "/var/alt_mail",
         "Alternate spool directory, for callers whose home is unknown or unusable."],
        ["cache-interval", "c", "300",
         "Seconds a home check's result (good or bad) is cached (hlfsd -c)."],
        ["reload-interval", "i", "900",
         "Seconds between reloads of the users (hlfsd -i; 0: only on SIGHUP)."],
        ["password-file", "P", None,
         "Read users from this passwd(5)-format file instead of the name service."],
        ["group", "g", "hlfs",
         "HLFS_GID: name or number of the group whose members see every mailbox "
         "(the feature is off if the group does not exist)."],
        ["mount-options", "o", "", "Extra mount options, comma separated (hlfsd -o)."],
        ["probe-deadline", None, "1.0",
         "Seconds a READLINK waits for a home check before it is answered "
         "with the alternate spool."],
        ["home-checks", None, str(Config.home_checks),
         "Home-check processes, started before serving: the most checks and lock-file "
         "operations running at once (a hung home holds one)."],
        ["uid-min", None, None,
         "Lowest uid of a login account (default: UID_MIN of /etc/login.defs, else 1000). "
         "Accounts under it, root excepted, are system accounts: their link is the "
         "alternate spool and their homes are never checked or given a spool."],
        ["lookup-threads", None, "4",
         "Threads asking the name service for users the table lacks, one at a time "
         "(a hung directory holds these, never the home checks')."],
        ["user-cache", None, "100000",
         "Most users kept from per-user lookups, found and not found each."],
        ["port", "p", "0", "Port for NFS and MOUNT, UDP and TCP (0: any free port)."],
        ["interface", None, "127.0.0.1", "Address to listen on."],
        ["port-file", None, None,
         "Write the port in use to this file once listening (for scripts)."],
        ["max-connections", None, str(Config.max_connections),
         "TCP connections open at once, all clients together (at most what the file "
         "descriptor limit leaves past --fd-reserve)."],
        ["max-unprivileged-connections", None, str(Config.max_unprivileged),
         "TCP connections from unprivileged source ports; the idlest is closed for a new one."],
        ["idle-timeout", None, f"{Config.idle_timeout:g}",
         "Seconds a TCP connection may send nothing before it is closed."],
        ["record-timeout", None, f"{Config.record_timeout:g}",
         "Seconds a TCP connection may hold part of a record."],
        ["stall-timeout", None, f"{Config.stall_timeout:g}",
         "Seconds a TCP connection may leave its replies unread (it is not read meanwhile)."],
        ["max-record", None, str(Config.max_record),
         "Bytes of one TCP record, each fragment with its 4-byte header."],
        ["calls-per-turn", None, str(Config.calls_per_turn),
         "Calls one TCP connection has answered before the others get their turn."],
        ["max-pending", None, str(Config.max_pending),
         "Calls of one TCP connection still being answered (home checks, lock files); past "
         "it the connection is not read until some are."],
        ["reply-cache-entries", None, str(Config.reply_cache_entries),
         "Replies the reply cache holds."],
        ["reply-cache-bytes", None, str(Config.reply_cache_bytes),
         "Bytes of calls and replies the reply cache holds."],
        ["fd-reserve", None, str(Config.fd_reserve),
         "File descriptors kept from TCP connections, for home checks, reloads and logs."],
        ["retry-interval", None, f"{Config.retry_interval:g}",
         "Seconds before a home check that failed for hlfs's own want of resources "
         "(EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR) is made again."],
        ["metrics", None, None,
         "Serve Prometheus metrics at /metrics on PORTSPEC: a port number (loopback "
         "only) or an endpoint such as tcp:9436:interface=127.0.0.1.  Off by default."],
        ["alt-spool-interval", None, f"{Config.alt_spool_interval:g}",
         "Seconds between counts of the mailboxes waiting in the alternate spool (and "
         "looks at the mount) for --metrics and hlfs status; 0: never."],
        ["name", None, None,
         "Name of this daemon among several on the host (hlfs@NAME.service): the "
         "label name=NAME on every metric."],
        ["config", None, None,
         "Read settings from this file first: an ini [hlfs] section whose keys are "
         "these long options (flags take yes or no); the command line wins."],
    ]

    optFlags = [
        ["no-mount", None, "Serve only: do not mount the kernel NFS client."],
        ["no-portmap", None, "Do not register with the portmapper."],
        ["insecure", None, "Serve calls from unprivileged source ports too."],
        ["no-verify", "n", "Do not check that homes are usable (hlfsd -n)."],
        ["fast", "f", "Fast start: skip the mount point checks of start-up step 1."],
        ["allow-attribute-cache", "C",
         "Run even if the kernel keeps a cache that could hand one user's link to another."],
        ["verbose", "D", "Log every refused or malformed call (debugging): the first 100 of "
         "each kind, then one line a minute with their count."],
    ]

    def opt_probe_threads(self, count):
        """
        The old name of --home-checks, still accepted.
        """
        self["home-checks"] = count

    def getUsage(self, width=None):
        # Keep the description's own layout: twistd would reflow it into
        # one paragraph.
        longdesc, self.longdesc = self.longdesc, ""
        try:
            text = usage.Options.getUsage(self, width)
        finally:
            self.longdesc = longdesc
        return text + "\n" + longdesc

    #: The reactor the endpoints are made for; the global one if L{None}.
    reactor = None

    #: The long options the command line gave (L{parseOptions}).
    given = frozenset()

    def parseOptions(self, options=None):
        if options is None:
            options = sys.argv[1:]
        try:
            opts, _ = getopt.getopt(options, self.shortOpt, self.longOpt)
        except getopt.error:
            opts = []  # usage.Options says what is wrong
        given = set()
        for opt, _ in opts:
            name = opt.lstrip("-")
            given.add(self.synonyms.get(name) or self.synonyms.get(name.replace("-", "_"), name))
        self.given = frozenset(given)
        usage.Options.parseOptions(self, options)

    def _read_config(self):
        """
        Apply the settings of C{--config} that the command line left out.
        """
        path = self["config"]
        if path is None:
            return
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, UnicodeDecodeError, configparser.Error) as e:
            reason = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
            raise usage.UsageError(f"cannot read {path}: {reason}") from None
        if not parser.has_section(CONFIG_SECTION):
            raise usage.UsageError(f"{path}: no [{CONFIG_SECTION}] section")
        flags = {flag[0] for flag in self.optFlags}
        for key, value in parser.items(CONFIG_SECTION):
            if key == "config" or (key not in flags and key not in self.defaults):
                raise usage.UsageError(f"{path}: unknown setting {key!r}")
            if key in self.given:
                continue
            if key in flags:
                word = value.strip().lower()
                if word not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
                    raise usage.UsageError(f"{path}: {key} must be yes or no, not {value!r}")
                self[key] = 1 if word in ("yes", "true", "on", "1") else 0
            else:
                self[key] = value.strip()

    def _check_privileges(self):
        """
        Refuse what this process is not allowed to do, before anything
        starts (L{TwistdOptions}); nothing to check in process.
        """

    def postOptions(self):
        """
        Check every value and load what the service needs, so that a bad
        one is a L{usage.UsageError} before anything starts; sets
        C{config}, C{table}, C{metrics_endpoint}, C{manhole},
        C{manhole_namespace} and C{log_settings}.
        """
        from hlfs.daemon.metrics import metrics_endpoint
        from hlfs.daemon.service import load_table

        self._read_config()
        self._check_privileges()
        check_manhole_options(self)
        reactor = self._reactor()
        try:
            self.config = self._config()
            self.metrics_endpoint = None
            if self["metrics"] is not None:
                self.metrics_endpoint = metrics_endpoint(self["metrics"], reactor)
            self.manhole_namespace = {}
            self.manhole = None
            if self["manhole"] is not None:
                # Only now: the SSH code is most of a daemon's imports.
                from hlfs.console.manhole import makeManholeService

                # Filled in by makeService, once the service exists.
                self.manhole = makeManholeService(
                    self["manhole"], self["manhole-keys"], self["manhole-host-key"],
                    self.manhole_namespace, reactor,
                )
            self.table = load_table(self.config.password_file)
        except (ConfigError, ManholeConfigError) as e:
            raise usage.UsageError(str(e)) from None
        self._log_through_hlfs()

    def _reactor(self):
        if self.reactor is None:
            from twisted.internet import reactor

            return reactor
        return self.reactor

    def _log_through_hlfs(self):
        # twistd --logfile or --syslog without a --logger of one's own:
        # log through hlfs's observer (facility daemon, the log file
        # reopened on SIGHUP, no rotation on SIGUSR1).
        parent = getattr(self, "parent", None)
        self.log_settings = LogSettings.from_twistd(parent)
        if parent is not None and parent.get("logger") is None and self.log_settings.ours:
            parent["logger"] = LOGGER

    def _config(self):
        interface = self["interface"]
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise ConfigError(f"--interface must be an IP address, not {interface!r}") from None
        password_file = self["password-file"]
        if password_file is not None:
            password_file = check_absolute("password-file", _absolute(password_file))
        return Config(
            mount=check_absolute("mount", self["mount"]),
            linkname=check_component("linkname", self["linkname"]),
            subdir=check_component("subdir", self["subdir"]),
            alt_dir=check_absolute("alt-dir", self["alt-dir"]),
            port=check_port("port", self["port"]),
            interface=interface,
            password_file=password_file,
            group=self["group"],
            insecure=bool(self["insecure"]),
            no_mount=bool(self["no-mount"]),
            port_file=None if self["port-file"] is None else _absolute(self["port-file"]),
            cache_interval=check_seconds("cache-interval", self["cache-interval"]),
            reload_interval=check_seconds("reload-interval", self["reload-interval"]),
            verify=not self["no-verify"],
            probe_deadline=check_seconds("probe-deadline", self["probe-deadline"], 0.01),
            home_checks=check_count("home-checks", self["home-checks"]),
            lookup_threads=check_count("lookup-threads", self["lookup-threads"]),
            user_cache=check_count("user-cache", self["user-cache"], maximum=10_000_000),
            mount_options=check_mount_options(self["mount-options"]),
            fast_start=bool(self["fast"]),
            allow_attribute_cache=bool(self["allow-attribute-cache"]),
            portmap=not self["no-portmap"],
            verbose=bool(self["verbose"]),
            max_connections=check_count("max-connections", self["max-connections"], 1, 10**6),
            max_unprivileged=check_count(
                "max-unprivileged-connections", self["max-unprivileged-connections"], 0, 10**6
            ),
            idle_timeout=check_seconds("idle-timeout", self["idle-timeout"], 1),
            record_timeout=check_seconds("record-timeout", self["record-timeout"], 1),
            stall_timeout=check_seconds("stall-timeout", self["stall-timeout"], 1),
            max_record=check_count("max-record", self["max-record"], 1024, 2**24),
            calls_per_turn=check_count("calls-per-turn", self["calls-per-turn"], 1, 10**6),
            max_pending=check_count("max-pending", self["max-pending"], 1, 10**6),
            reply_cache_entries=check_count(
                "reply-cache-entries", self["reply-cache-entries"], 0, 10**8
            ),
            reply_cache_bytes=check_count("reply-cache-bytes", self["reply-cache-bytes"], 0, 2**40),
            fd_reserve=check_count("fd-reserve", self["fd-reserve"], 16, 10**6),
            retry_interval=check_seconds("retry-interval", self["retry-interval"], 0.1),
            uid_min=(login_defs_uid_min() if self["uid-min"] is None
                     else check_uid("--uid-min", self["uid-min"])),
            alt_spool_interval=check_seconds("alt-spool-interval", self["alt-spool-interval"]),
            name=None if self["name"] is None else check_name(self["name"]),
        )


def _absolute(path):
    # twistd may chdir to its run directory; relative paths mean the
    # directory the command was started in.
    return os.path.abspath(path)


class TwistdOptions(Options):
    """
    L{Options} as C{twistd hlfs} parses them: a bad value is one clear line
    on stderr and exit status 2, as daemons do, instead of twistd's usage
    dump and status 1.
    """

    def parseOptions(self, options=None):
        try:
            Options.parseOptions(self, options)
        except usage.UsageError as e:
            startup.say(str(e), sys.stderr)
            raise SystemExit(2)
        except startup.StartupError as e:
            startup.say(str(e), sys.stderr)
            raise SystemExit(e.status)

    def _check_privileges(self):
        # Before the pid file, the log, the users or any port: mount.nfs
        # mounts for root only (as a user it asks /etc/fstab, and fails
        # with "failed to apply fstab options" after a wait).
        if not self["no-mount"] and (os.getuid() != 0 or os.geteuid() != 0):
            raise startup.StartupError(
                f"mounting on {self['mount']} needs root; run as root, or give --no-mount "
                "to serve without mounting"
            )


def makeService(options, reactor=None):
    """
    Compose the service from options L{Options.postOptions} checked and
    loaded: the daemon, its metrics and manhole children, the log.
    """
    if reactor is None:
        from twisted.internet import reactor

    from hlfs.daemon.metrics import metrics_service
    from hlfs.daemon.service import HLFSService

    logs.observer.use(options.log_settings)
    # A start-up error ending a plain `twistd hlfs` is one line too.
    startup.install_excepthook()
    parent = getattr(options, "parent", None)
    service = HLFSService(
        options.config, reactor, table=options.table, log_output=logs.observer,
        pidfile=parent.get("pidfile") if parent is not None else None,
    )
    if options.metrics_endpoint is not None:
        metrics = metrics_service(options.metrics_endpoint, service, options.config.name)
        startup.listening(metrics, "metrics").setServiceParent(service)
    if options.manhole is not None:
        options.manhole_namespace.update(build_namespace(service, reactor))
        startup.listening(options.manhole, "the manhole").setServiceParent(service)
    return service
