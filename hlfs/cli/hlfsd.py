"""
C{hlfsd}: the am-utils hlfsd command line, running C{twistd hlfs}.

    hlfsd [-fhnpvC] [-a alt_dir] [-c cache-interval] [-g group]
          [-i reload-interval] [-l logfile] [-o mount-options]
          [-x log-options] [-D debug-options] [-P password-file]
          [linkname [subdir]]
"""

import getopt
import os
import sys

from hlfs.daemon.logs import LOGGER

USAGE = """\
usage: hlfsd [-fhnpvC] [-a alt_dir] [-c cache-interval] [-g group]
             [-i reload-interval] [-l logfile] [-o mount-options]
             [-x log-options] [-D debug-options] [-P password-file]
             [linkname [subdir]]

The Home-Link File System daemon, with the options of am-utils hlfsd(8).
It runs `twistd hlfs` in this process; `hlfs twistd -n hlfs --help`
describes the service in full.  In the background, it returns once the
daemon serves and has mounted itself, or says in one line why it could not.

  linkname          the link to serve: its directory is the mount point and
                    its base name the link's name (default /mail/home)
  subdir            spool subdirectory of each home (default .mailspool)
  -a alt_dir        alternate spool directory (default /var/alt_mail)
  -c secs           cache interval of home checks (default 300)
  -C                run even if the client's caches cannot be turned off
  -D opts           debug options of am-utils, comma separated, each may be
                    prefixed with no: nodaemon stays in the foreground;
                    test also logs every refused call, as all, full and
                    trace do; unknown words are refused
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
  -x opts           log options of am-utils, comma separated (fatal, error,
                    user, warn, info, map, stats, all, debug, defaults; each
                    may be prefixed with no): all and debug also log every
                    refused call; unknown words are refused

Signals: SIGHUP reloads the users, flushes the cache and reopens the log;
SIGUSR1 dumps the users and cache; SIGTERM unmounts and exits.
"""

PIDFILE = "/run/hlfsd.pid"

#: The words of am-utils' -x (its log options, each also with a "no"
#: prefix).  hlfs logs every level; "all" and "debug" also log each
#: refused call (--verbose).
LOG_OPTIONS = frozenset({"all", "defaults", "debug", "error", "fatal", "info", "map", "stats",
                         "user", "warn", "warning"})
#: The words of am-utils' -D (its debug options).  "nodaemon" keeps hlfsd
#: in the foreground; "test" (no daemon, full debugging) does that and
#: logs each refused call, as "all", "full" and "trace" do; the others are
#: about am-utils' own internals and change nothing here.
DEBUG_OPTIONS = frozenset({"all", "defaults", "test", "amq", "daemon", "fork", "full", "hrtime",
                           "info", "mem", "mtab", "readdir", "str", "trace", "xdrtrace"})
VERBOSE = {"-x": {"all", "debug"}, "-D": {"all", "full", "trace", "test"}}


class CommandLineError(Exception):
    pass


def option_words(opt, value):
    """
    Return the C{{word: on}} of a C{-x} or C{-D} list, as am-utils reads
    it: comma separated, a "no" prefix turning a word off.

    @raise CommandLineError: for a word am-utils does not know.
    """
    known = LOG_OPTIONS if opt == "-x" else DEBUG_OPTIONS
    words = {}
    for word in value.split(","):
        if word in known:
            words[word] = True
        elif word.startswith("no") and word[2:] in known:
            words[word[2:]] = False
        else:
            raise CommandLineError(
                f"{opt}: unknown option {word!r} (known: {', '.join(sorted(known))}; "
                "each may be prefixed with no)"
            )
    return words


def translate(argv):
    """
    Return C{(twistd argv, daemon, print_pid)} for an hlfsd command line,
    or raise L{CommandLineError}.
    """
    try:
        opts, args = getopt.getopt(argv, "a:c:Cfg:hi:l:no:pP:vx:D:")
    except getopt.GetoptError as e:
        raise CommandLineError(str(e)) from None
    plugin = []
    daemon = True
    print_pid = False
    verbose = False
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
            return None, False, False
        elif opt == "-v":
            return "version", False, False
        elif opt == "-p":
            print_pid = True
        elif opt == "-l":
            logging = ["--syslog", "--prefix", "hlfsd"] if value == "syslog" else ["--logfile", value]
        elif opt in ("-x", "-D"):
            words = option_words(opt, value)
            if opt == "-D" and ("daemon" in words or "test" in words):
                daemon = words.get("daemon", daemon) and not words.get("test", False)
            verbose |= any(on for word, on in words.items() if word in VERBOSE[opt])
    if verbose:
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
    # hlfs's observer: facility daemon, the log reopened on SIGHUP.
    logging.append(f"--logger={LOGGER}")
    twistd = ([] if daemon else ["-n"]) + logging + [f"--pidfile={PIDFILE}", "hlfs"] + plugin
    return twistd, daemon, print_pid


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        twistd, daemon, print_pid = translate(argv)
    except CommandLineError as e:
        sys.stderr.write(f"hlfsd: {e} (hlfsd -h for help)\n")
        return 2
    if twistd is None:
        sys.stdout.write(USAGE)
        return 0
    if twistd == "version":
        from hlfs import __version__

        print(f"hlfsd (hlfs) {__version__.public()}")
        return 0
    if print_pid and not daemon:
        print(os.getpid(), flush=True)
    # twistd in this process: without -D nodaemon its parent returns once
    # the daemon serves and has mounted itself (printing its pid for -p),
    # or with the one line that says why it could not.
    from hlfs.cli.twistd import run

    return run(twistd, print_pid=print_pid and daemon)


if __name__ == "__main__":
    sys.exit(main())
