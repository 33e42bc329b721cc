"""
HLFSService: the whole daemon as one C{MultiService}, built from a
L{Config}.  Start-up follows hlfsd's order: look for a stale mount of ours,
prepare the mount point and spool, load users and serve, register with
the portmapper, mount.  Signals keep hlfsd's meanings.
"""

import gc
import os
import signal

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from hlfs import __version__
from hlfs.daemon import kernel, reports, resources
from hlfs.daemon.altspool import SpoolWatch
from hlfs.daemon.config import ConfigError, resolve_group
from hlfs.daemon.startup import StartupError
from hlfs.core.linkfs import HomeLinkFS, LinkConfig
from hlfs.nfs import status
from hlfs.core.resolver import SpoolRules
from hlfs.rpc.dispatch import Dispatcher, Program
from hlfs.rpc.registration import PortmapRegistration
from hlfs.rpc.replycache import ReplyCache
from hlfs.daemon.server import RPCServerService, build_programs
from hlfs.homes.locks import SpoolLocks
from hlfs.homes.mailboxes import MailboxFiles
from hlfs.homes.resolver import resolver_for
from hlfs.homes.tableload import TableLoadError, load_in_subprocess

DUMP_FILE = "hlfs-dump.txt"

#: Seconds the service waits for its home-check processes before it
#: serves without them.
CHECKS_START_TIMEOUT = 60.0


def load_table(password_file):
    """
    Load the user table from C{password_file}, or from NSS when L{None},
    in a child process (a million entries' parsing garbage and GIL time
    stay there).  Blocks: reloads call it in a thread.

    @raise ConfigError: if the table cannot be loaded.
    """
    try:
        return load_in_subprocess(password_file)
    except TableLoadError as e:
        raise ConfigError(str(e)) from None


class HLFSService(MultiService):
    """
    The Home-Link File System daemon.

    @ivar config: the L{Config}.
    @ivar fs: the L{HomeLinkFS} policy core.
    @ivar resolver: the L{hlfs.core.resolver.ILinkResolver} in use.
    @ivar dispatcher: the RPC L{Dispatcher}; C{stats} counts calls.
    @ivar server: the L{RPCServerService}; C{server.port} once started.
    @ivar exit_status: what the process exits with once stopped.
    @ivar mount_service: the L{kernel.MountService} the server and the
        portmapper registration run under, or L{None} with C{--no-mount}.
    """

    log = Logger()

    def __init__(self, config, reactor, table=None, log_output=None, pidfile=None):
        """
        @param table: the users, loaded from C{config.password_file} if
            L{None}.
        @param log_output: what SIGHUP reopens (C{reopen()}), or L{None}.
        @param pidfile: twistd's pid file, removed when the daemon gives up
            (it exits without returning to twistd), or L{None}.
        """
        MultiService.__init__(self)
        self.config = config
        self.reactor = reactor
        self.log_output = log_output
        self.pidfile = pidfile
        self._waiting = []
        self.ready = None
        self.serving = False
        self.checks_ready = False
        self._after = []
        self.started_at = reactor.seconds()
        self.exit_status = 0
        self.stopping = False
        self.last_reload = None
        self.reloads = self.reload_failures = 0
        self.hlfs_gid = resolve_group(config.group)
        if table is None:
            table = load_table(config.password_file)
        self.resolver = self._make_resolver(table)
        self.fs = HomeLinkFS(
            LinkConfig(config.export_path, os.fsencode(config.linkname), self.hlfs_gid),
            self.resolver,
            int(reactor.seconds() * 1e9),
            SpoolLocks(self.resolver),
            MailboxFiles(self.resolver),
        )
        self.replies = ReplyCache(
            self.resolver, reactor, size=config.reply_cache_entries, max_bytes=config.reply_cache_bytes
        )
        programs = build_programs(self.fs, replies=self.replies) + [
            Program(
                status.PROGRAM, "hlfs-status",
                {status.VERSION: status.StatusProgram(
                    self.status_report, reactor, self._calls_but_status).procedures},
                secure=False,
            )
        ]
        self.dispatcher = Dispatcher(
            programs, insecure=config.insecure, verbose=config.verbose, replies=self.replies,
            clock=reactor,
        )
        self.stats = self.dispatcher.stats
        self.server = RPCServerService(
            self.dispatcher, config.port, config.interface, reactor, config.stream_limits
        )
        self.nofile = None
        self.registration = None
        if config.portmap:
            mappings = [(p.number, v) for p in programs for v in sorted(p.versions)]
            self.registration = PortmapRegistration(reactor, mappings, lambda: self.server.port)
        self.kernel_mount = self.mount_service = None
        serving = self
        if not config.no_mount:
            self.kernel_mount = kernel.KernelMount(
                reactor, config.mount, config.mount, config.interface, config.mount_options
            )
            serving = self.mount_service = kernel.MountService(
                self.kernel_mount, lambda: self.server.port, self._fatal,
                allow_attribute_cache=config.allow_attribute_cache,
                prepare=self._prepare_mount,
            )
            self.mount_service.setServiceParent(self)
        self.server.setServiceParent(serving)
        if self.registration is not None:
            self.registration.setServiceParent(serving)
        self.spool_watch = None
        if config.alt_spool_interval:
            self.spool_watch = SpoolWatch(
                reactor, config.alt_dir, config.alt_spool_interval, self._mount_present,
                resident=self.rules.system_account,
            )
            self.spool_watch.setServiceParent(self)
        if config.reload_interval:
            self._reload_timer_fresh = True
            self.reload_timer = TimerService(config.reload_interval, self._periodic_reload)
            self.reload_timer.clock = reactor
            self.reload_timer.setServiceParent(self)

    def _prepare_mount(self):
        d = self._after_checks()
        if self.registration is not None:
            d.addCallback(lambda _: self.registration.register())
        return d

    def _make_resolver(self, table):
        rules = self.rules = SpoolRules(
            os.fsencode(self.config.subdir), os.fsencode(self.config.alt_dir), self.config.uid_min
        )
        resolver, self.checks = resolver_for(self.config, table, rules, self.reactor)
        self.lookups = resolver.lookups
        return resolver

    # -- start-up

    def startService(self):
        try:
            self._start()
        except ConfigError as e:
            # One clear line, not a traceback from inside twistd
            # (hlfs.daemon.startup); in the log as well, however started.
            self.log.error("cannot start: {error}", error=str(e))
            raise StartupError(str(e), status=2, logged=True) from None

    def whenReady(self):
        """
        Return a Deferred firing once the daemon serves (registered, and
        mounted unless C{--no-mount}), or failing with a L{StartupError}
        if it gives up first: what a daemon's waiting parent reports.
        """
        d = defer.Deferred()
        if self.exit_status:
            d.errback(StartupError(self._gave_up))
        elif self.serving:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d

    def _served(self, result):
        if not self.exit_status and not self.stopping:
            self.serving = True
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)
        return result

    def _start(self):
        config = self.config
        reused = False
        if self.kernel_mount is not None:
            # Step 0: before touching the mount point.
            stale = self.kernel_mount.current()
            if stale is not None:
                port = kernel.mounted_port(stale)
                if port and not config.port:
                    self.server.requested_port = port
                    reused = self.mount_service.reused = True
                    self.log.warn(
                        "an hlfs mount of {path} is still present (port {port}): serving on the "
                        "same port with the same handles, no remount",
                        path=config.mount, port=port,
                    )
                else:
                    raise ConfigError(
                        f"{config.mount} is still mounted from a previous hlfs on port {port}; "
                        f"unmount it or start without --port"
                    )
        try:
            kernel.prepare_spool(config.alt_dir, self.log)
        except OSError as e:
            raise ConfigError(f"cannot create the alternate spool {config.alt_dir}: {e.strerror}") from None
        if self.kernel_mount is not None and not reused and not config.fast_start:
            try:
                kernel.prepare_mountpoint(config.mount, config.linkname, config.alt_dir, self.log)
            except (OSError, kernel.MountError) as e:
                raise ConfigError(f"cannot prepare {config.mount}: {e}") from None
        self._reserve_fds()
        table = self.resolver.table
        self._report_problems(table)
        self.log.info("loaded {n} users from {source}", n=len(table), source=table.source)
        if self.lookups is not None:
            self.lookups.pool.start()
        if self.hlfs_gid is None:
            self.log.info(
                "group {group!r} does not exist: the HLFS_GID feature is off", group=config.group
            )
        # The ports are bound now, so that one in use is a start-up error
        # of one line, but nothing is read, registered or mounted before
        # the home-check processes have started: a start takes seconds on
        # a slow machine, and a check that waited for one would miss its
        # deadline.
        started = self.checks.start()
        started.addTimeout(CHECKS_START_TIMEOUT, self.reactor)
        started.addErrback(self._checks_late)
        started.addErrback(lambda f: self._fatal(f"start-up failed: {f.getErrorMessage()}"))
        started.addCallback(self._checks_started)
        self.server.held = self._after_checks()
        MultiService.startService(self)
        port = self.server.port
        self.log.info(
            "hlfs {version} serving {export} (link {link!r}, spool {subdir!r}, alternate {alt}) "
            "with NFS v2/v3 and MOUNT v1/v3 on {interface} port {port} (UDP and TCP){insecure}",
            version=__version__.public(), export=config.mount, link=config.linkname,
            subdir=config.subdir, alt=config.alt_dir, interface=config.interface, port=port,
            insecure=", unprivileged ports allowed" if config.insecure else "",
        )
        self._install_signals()
        self.reactor.addSystemEventTrigger("after", "shutdown", self._after_shutdown)
        # What is loaded by now (modules, the table, the services) lives as
        # long as the daemon: out of the collector's way.  A full
        # collection over it took 50-60 ms, a stall every caller saw.
        gc.collect()
        gc.freeze()
        if self.mount_service is not None:
            # It registers, then mounts, once the checks have started.
            self.ready = self.mount_service.ready
        else:
            d = self._after_checks()
            if self.registration is not None:
                d.addCallback(lambda _: self.registration.register())
            d.addErrback(lambda f: self._fatal(f"start-up failed: {f.getErrorMessage()}"))
            self.ready = d
        self.ready.addCallback(self._served)

    def _checks_late(self, failure):
        if failure.check(defer.CancelledError):
            return None  # stopped before they started
        failure.trap(defer.TimeoutError)
        self.log.error(
            "the home-check processes have not started after {seconds:g} s; serving without "
            "them: home checks wait for them, and their callers get the alternate spool",
            seconds=CHECKS_START_TIMEOUT,
        )

    def _checks_started(self, _):
        if self.stopping or self.exit_status:
            return
        self.checks_ready = True
        port_file = self.config.port_file
        if port_file:
            # Written once calls are read: what the tests wait for.
            with open(port_file + ".tmp", "w") as f:
                f.write(f"{self.server.port}\n")
            os.replace(port_file + ".tmp", port_file)
        waiting, self._after = self._after, []
        for d in waiting:
            d.callback(None)

    def _after_checks(self):
        """
        Return a Deferred firing once the home-check processes have
        started (or been given up on): what serving waits for.
        """
        if self.checks_ready:
            return defer.succeed(None)
        d = defer.Deferred()
        self._after.append(d)
        return d

    def _reserve_fds(self):
        config = self.config
        self.nofile = resources.raise_nofile()
        # What is open now (the log, the listeners to come) stays open.
        room = self.nofile - config.fd_reserve - (resources.open_fds() or 0)
        if room < 1:
            raise ConfigError(
                f"--fd-reserve {config.fd_reserve} leaves no file descriptor for connections "
                f"(the limit is {self.nofile})"
            )
        limits = self.server.limits = config.stream_limits.capped(room)
        if limits.max_connections < config.max_connections:
            self.log.warn(
                "the file descriptor limit ({nofile}) allows {n} TCP connections, fewer than "
                "--max-connections {max}: raise LimitNOFILE or ulimit -n",
                nofile=self.nofile, n=limits.max_connections, max=config.max_connections,
            )

    def _fatal(self, message):
        self.log.error("{message}; exiting", message=message)
        self.exit_status = 1
        self._gave_up = message
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(StartupError(message))
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _after_shutdown(self):
        if self.exit_status:
            # twistd never gets to remove its pid file after this.
            if self.pidfile:
                try:
                    os.unlink(self.pidfile)
                except OSError:
                    pass
            os._exit(self.exit_status)
        # A clean stop on SIGTERM exits 0, as hlfsd does (and as systemd
        # expects); twistd would otherwise re-raise the signal at exit.
        if getattr(self.reactor, "_exitSignal", None) is not None:
            self.reactor._exitSignal = None

    def _report_problems(self, table, shown=20):
        for problem in table.problems[:shown]:
            self.log.warn("password file: skipped {problem}", problem=str(problem))
        if len(table.problems) > shown:
            self.log.warn(
                "password file: {n} more malformed lines skipped", n=len(table.problems) - shown
            )

    # -- shutdown

    def stopService(self):
        self.stopping = True
        # The mount service unmounts before the server under it stops.
        d = MultiService.stopService(self)
        d.addBoth(lambda result: (self._stop_pools(), result)[1])
        return d

    def _stop_pools(self):
        self.checks.stop()
        if self.lookups is not None:
            self.lookups.pool.stop()

    # -- operations

    def _periodic_reload(self):
        # TimerService calls once as it starts; the users were loaded just
        # before, so the first reload is one interval later, as in hlfsd.
        if self._reload_timer_fresh:
            self._reload_timer_fresh = False
            return None
        return self.reload()

    def reload(self):
        """
        Reload the user table (in a child process, waited for in a thread)
        and swap it in; serving never waits for it.  Fires with the new
        table, or None if it failed (the resolver logs why).
        """
        started = self.reactor.seconds()

        def swapped(table):
            self.reloads += 1
            if table is None:
                self.reload_failures += 1
                return None
            now = self.reactor.seconds()
            seconds = now - started
            self.last_reload = (now, len(table), seconds)
            self.log.info(
                "reloaded {n} users from {source} in {seconds:.2f} s",
                n=len(table), source=table.source, seconds=seconds,
            )
            self._report_problems(table)
            return table

        return self.resolver.reload(lambda: load_table(self.config.password_file)).addCallback(swapped)

    def hangup(self):
        """
        SIGHUP: reload the table, flush the probe cache, reopen the log.
        """
        self.log.info("SIGHUP: reloading users, flushing the cache, reopening the log")
        flush = getattr(self.resolver, "flush", None)
        if flush is not None:
            flush()
        if self.log_output is not None:
            self.log_output.reopen()
        return self.reload()

    def dump(self, path=DUMP_FILE):
        """
        SIGUSR1: write the table and cache to C{path} (in the run
        directory): L{reports.dump}.
        """
        return reports.dump(self, path)

    def _install_signals(self):
        # Replaces twistd's SIGUSR1 (log rotation), if it installed one.
        def on(signum, action):
            signal.signal(signum, lambda *_: self.reactor.callFromThread(action))

        on(signal.SIGHUP, self.hangup)
        on(signal.SIGUSR1, self._safe_dump)

    def _safe_dump(self):
        try:
            self.dump()
        except OSError as e:
            self.log.error("SIGUSR1: cannot write the dump: {error}", error=e)

    def _mount_present(self):
        # In the spool watch's thread: whether /proc/mounts still shows the
        # mount this daemon made (L{None} while it has none to show).
        if self.mount_service is None or not self.mount_service.mounted:
            return None
        return self.kernel_mount.current() is not None

    @property
    def mounted(self):
        """
        Whether the kernel has this daemon mounted: mounted, and not found
        gone from /proc/mounts at the last look (someone unmounted it).
        """
        if self.mount_service is None or not self.mount_service.mounted:
            return False
        return self.spool_watch is None or self.spool_watch.mount_present is not False

    def _calls_but_status(self):
        # Every call counted but the status program's STATUS itself.
        stats = self.dispatcher.stats
        return sum(stats.values()) - stats.get((status.PROGRAM, status.VERSION, 1), 0)

    def status_report(self):
        """
        Name/value pairs for the status program and `hlfs status`:
        L{reports.status_pairs}.
        """
        return reports.status_pairs(self)
