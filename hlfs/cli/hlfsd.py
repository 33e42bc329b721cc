"""
C{hlfsd}: the am-utils hlfsd command line, running C{twistd hlfs}.

    hlfsd [-fhnpvC] [-a alt_dir] [-c cache-interval] [-g group]
          [-i reload-interval] [-l logfile] [-o mount-options]
          [-x log-options] [-D debug-options] [-P password-file]
          [linkname [subdir]]
"""

import getopt
import os
import subprocess
import sys
from pathlib import Path

from hlfs.daemon.logs import LOGGER

USAGE = """\
usage: hlfsd [-fhnpvC] [-a alt_dir] [-c cache-interval] [-g group]
             [-i reload-interval] [-l logfile] [-o mount-options]
             [-x log-options] [-D debug-options] [-P password-file]
             [linkname [subdir]]

The Home-Link File System daemon, with the options of am-utils hlfsd(8).
It runs `twistd hlfs`; `twistd hlfs --help` describes the service in full.

  linkname          the link to serve: its directory is the mount point and
                    its base name the link's name (default /mail/home)
  subdir            spool subdirectory of each home (default .mailspool)
  -a alt_dir        alternate spool directory (default /var/alt_mail)
  -c secs           cache interval of home checks (default 300)
  -C                run even if the client's caches cannot be turned off
  -D opts           debug options, comma separated: nodaemon (stay in the
                    foreground), and anything else logs every refused call
  -f                fast start: skip the mount point checks
  -g group          HLFS_GID group (default hlfs; off if it does not exist)
  -h                this help
  -i secs           password map reload interval (default 900)
  -l logfile        log to this file, or to syslog when "syslog" (default)
  -n                do not verify that homes are usable
  -o opts           extra mount options
  -p                print the daemon's process id
  -P file           password file instead of the name service
  -v                print the version
  -x opts           log options: "debug" or "all" log every refused call

Signals: SIGHUP reloads the users, flushes the cache and reopens the log;
SIGUSR1 dumps the users and cache; SIGTERM unmounts and exits.
"""

PIDFILE = "/run/hlfsd.pid"


class CommandLineError(Exception):
    pass


def translate(argv):
    """
    Return C{(twistd argv, daemon, print_pid, pidfile)} for an hlfsd
    command line, or raise L{CommandLineError}.
    """
    try:
        opts, args = getopt.getopt(argv, "a:c:Cfg:hi:l:no:pP:vx:D:")
    except getopt.GetoptError as e:
        raise CommandLineError(str(e)) from None
    plugin = []
    daemon = True
    print_pid = False
    logging = ["--syslog", "--prefix", "hlfsd"]
    simple = {"-a": "--alt-dir", "-c": "--cache-interval", "-g": "--group",
              "-i": "--reload-interval", "-o": "--mount-options", "-P": "--password-file"}
    flags = {"-C": "--allow-attribute-cache", "-f": "--fast", "-n": "--no-verify"}
    for opt, value in opts:
        if opt in simple:
            plugin += [simple[opt], value]
        elif opt in flags:
            plugin.append(flags[opt])
        elif opt == "-h":
            return None, False, False, None
        elif opt == "-v":
            return "version", False, False, None
        elif opt == "-p":
            print_pid = True
        elif opt == "-l":
            logging = ["--syslog", "--prefix", "hlfsd"] if value == "syslog" else ["--logfile", value]
        elif opt in ("-x", "-D"):
            words = set(value.split(","))
            if "nodaemon" in words:
                daemon = False
                words.discard("nodaemon")
            if words & {"debug", "all", "trace"} or (opt == "-D" and words):
                plugin.append("--verbose")
    if len(args) > 2:
        raise CommandLineError(f"too many arguments: {' '.join(args)}")
    if args:
        linkname = os.path.normpath(args[0])
        mount, name = os.path.split(linkname)
        if not linkname.startswith("/") or not name or mount == "/":
            raise CommandLineError(f"linkname must be an absolute path like /mail/home, not {args[0]!r}")
        plugin += ["--mount", mount, "--linkname", name]
    if len(args) == 2:
        plugin += ["--subdir", args[1]]
    pidfile = PIDFILE
    twistd = [str(Path(sys.executable).parent / "twistd")]
    # hlfs's observer: facility daemon, the log reopened on SIGHUP.
    logging.append(f"--logger={LOGGER}")
    twistd += ([] if daemon else ["-n"]) + logging + [f"--pidfile={pidfile}", "hlfs"] + plugin
    return twistd, daemon, print_pid, pidfile


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        twistd, daemon, print_pid, pidfile = translate(argv)
    except CommandLineError as e:
        sys.stderr.write(f"hlfsd: {e}\n(hlfsd -h for help)\n")
        return 2
    if twistd is None:
        sys.stdout.write(USAGE)
        return 0
    if twistd == "version":
        from hlfs import __version__

        print(f"hlfsd (hlfs) {__version__.public()}")
        return 0
    if not daemon:
        if print_pid:
            print(os.getpid(), flush=True)
        os.execv(twistd[0], twistd)
    # twistd's parent returns once the daemon has started (or failed).
    code = subprocess.call(twistd)
    if code == 0 and print_pid:
        try:
            print(Path(pidfile).read_text().strip())
        except OSError as e:
            sys.stderr.write(f"hlfsd: cannot read {pidfile}: {e.strerror}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
