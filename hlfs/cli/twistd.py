"""
C{hlfs twistd [twistd options] hlfs [options]}: Twisted's twistd, run in
this process by this Python.

Debian calls Twisted's command C{twistd3}, pip puts a C{twistd} next to
the interpreter it installed into, and a C{PATH} may lead to another
Python's: running twistd in process always finds the plugin of the hlfs
that runs, whatever the command is called where.  The units, C{hlfsd} and
C{hlfs demo} start the daemon this way.

It is twistd, but for what it reports (L{hlfs.daemon.startup}):
  - a start-up error is one line on standard error and a non-zero exit
    status, never a traceback, and leaves no pid file behind;
  - without C{-n}, the command returns once the daemon serves and has
    mounted itself, or with the one line saying why it could not, and
    never waits for a daemon that died silently;
  - another daemon on the same pid file is one line.
"""

import argparse
import os
import sys

from twisted.application import app, service
from twisted.python import log
from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner

from hlfs.daemon import startup

#: Bytes of its start-up error a daemon sends its waiting parent.
STATUS_BYTES = 1024


class Runner(UnixApplicationRunner):
    """
    twistd's Unix runner, reporting as described above.

    @cvar print_pid: whether the parent of a daemon prints its pid once it
        serves (C{hlfsd -p}).
    """

    print_pid = False
    #: Whether the start-up error went to the daemon's log.
    logged = False

    @property
    def logs_to_terminal(self):
        """
        Whether the log is standard output (C{-n} without C{--logfile} or
        C{--syslog}): a start-up error is then said once, on standard error.
        """
        config = self.config
        return bool(config["nodaemon"]) and not config.get("logfile") and not config.get("syslog")

    def preApplication(self):
        try:
            UnixApplicationRunner.preApplication(self)
        except SystemExit as e:
            # checkPID: another daemon holds the pid file, or it is garbage.
            if isinstance(e.code, str):
                first = e.code.strip().splitlines()[0]
                raise startup.StartupError(f"{first} (pid file {self.config['pidfile']})") from None
            raise

    def setupEnvironment(self, chroot, rundir, nodaemon, umask, pidfile):
        try:
            UnixApplicationRunner.setupEnvironment(self, chroot, rundir, nodaemon, umask, pidfile)
        except OSError as e:
            if pidfile and e.filename == pidfile:
                raise startup.StartupError(f"cannot write the pid file {pidfile}: {e.strerror}") from None
            raise

    def postApplication(self):
        # As twistd's, but the waiting parent hears once the service is
        # ready (serving, and mounted), not as soon as it started.
        try:
            self.startApplication(self.application)
        except Exception as e:
            if getattr(e, "logged", False):
                self.logged = True
            elif not self.logs_to_terminal:
                log.msg(f"cannot start: {startup.describe(e)}", isError=True)
                self.logged = True
            self._tell_parent(b"1 " + _encoded(e))
            self.removePID(self.config["pidfile"])
            raise
        self._report_when_ready()
        self.startReactor(None, self.oldstdout, self.oldstderr)
        self.removePID(self.config["pidfile"])

    def _report_when_ready(self):
        if self.config.get("statusPipe") is None:
            return
        ready = [s.whenReady for s in service.IServiceCollection(self.application, [])
                 if hasattr(s, "whenReady")]
        if not ready:
            self._tell_parent(b"0 %d" % os.getpid())
            return
        ready[0]().addCallbacks(
            lambda _: self._tell_parent(b"0 %d" % os.getpid()),
            lambda failure: self._tell_parent(b"1 " + _encoded(failure.value)),
        )

    def _tell_parent(self, message):
        pipe = self.config.get("statusPipe")
        if pipe is None:
            return
        self.config["statusPipe"] = None
        try:
            os.write(pipe, message[:STATUS_BYTES])
            os.close(pipe)
        except OSError:
            pass

    def daemonize(self, reactor):
        # twistd's double fork, with the parent's copy of the write end
        # closed: a daemon that dies before it reports is an end of file,
        # not a parent waiting for ever.
        r, w = os.pipe()
        if os.fork():
            os.close(w)
            code = self._waitForStart(r)
            os.close(r)
            os._exit(code)
        os.close(r)
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in range(3):
            os.dup2(null, fd)
        os.close(null)
        return w

    def _waitForStart(self, readPipe):
        data = b""
        while len(data) <= STATUS_BYTES:
            try:
                chunk = os.read(readPipe, STATUS_BYTES)
            except InterruptedError:
                continue
            if not chunk:
                break
            data += chunk
        status, _, rest = data.partition(b" ")
        if status == b"0":
            if self.print_pid:
                print(rest.decode("ascii", "replace"), flush=True)
            return 0
        message = rest.decode("utf-8", "replace").strip()
        startup.say(message or "the daemon ended while starting; its log says why")
        return 1

    def removePID(self, pidfile):
        # Never written (the start failed before), or removed already: nothing
        # to say, unlike twistd, which logs a traceback.
        if not pidfile:
            return
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.msg(f"cannot remove the pid file {pidfile}: {e.strerror}")


def _encoded(error):
    return startup.describe(error).encode("utf-8", "backslashreplace")


def run(argv, print_pid=False):
    """
    Run twistd with C{argv} (its arguments, without a program name) in
    this process.

    @return: the exit status, for a twistd that ran in the foreground
        or whose start failed; a daemon's parent exits in L{Runner}.
    """
    sys.argv = ["twistd", *argv]
    Runner.print_pid = print_pid
    runners = []

    def run_app(config):
        runner = Runner(config)
        runners.append(runner)
        runner.run()
        if runner._exitSignal is not None:
            app._exitWithSignal(runner._exitSignal)

    try:
        app.run(run_app, ServerOptions)
    except Exception as e:
        if not startup.is_startup_error(e):
            raise
        syslog = bool(runners and runners[0].logged and runners[0].config.get("syslog"))
        return startup.report(e, logged_to_syslog=syslog)
    return 0


def main(argv, prog="hlfs twistd"):
    # Every argument is twistd's, in order: the parser only names the
    # command (twistd's --help describes them, and the plugin's).
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    _, arguments = parser.parse_known_args(argv)
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
