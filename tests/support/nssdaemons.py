"""
The name service daemons in front of the tests' slapd: nslcd (with
libnss-ldapd, C{passwd: files ldap}) and sssd (with libnss-sss,
C{passwd: files sss}), each run in a L{tests.support.directory.Namespace}
over bind-mounted copies of the paths compiled into them.

  - nslcd: C{/etc/nslcd.conf}, and a private C{/run} for its socket
    directory C{/run/nslcd} (which hides a machine-wide nscd's socket
    too).  No cache of its own: every lookup is a search of slapd.
  - sssd: its configuration comes by C{-c}; its state C{/var/lib/sss}
    (the ldb cache, the memory cache libnss-sss maps, the responders'
    sockets) and C{/var/log/sssd} are private directories; C{/run} is a
    private directory too, for its C{/run/sssd.pid} (which hides nscd).
    sssd keeps what it found in its own cache, answers from it while
    slapd is down (offline mode), and caches "no such user" for
    C{entry_negative_timeout} seconds.
"""

import subprocess
import time
from pathlib import Path
from tests.support.processes import stop_process

SSSD_LIB = Path("/var/lib/sss")
NSLCD_RUN = Path("/run/nslcd")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class NssDaemon:
    """
    One daemon in front of slapd for a world under C{base}.

    @cvar name: how tests name it (a parameter value).
    @cvar source: its word in C{nsswitch.conf}.
    @cvar parts: what must be installed, and the packages holding them.
    """

    name = source = None
    parts = ((), "")

    def __init__(self, base, etc, slapd, suffix):
        self.base = base
        self.etc = etc
        self.slapd = slapd
        self.suffix = suffix
        self.log = base / f"{self.name}.log"
        self.proc = None
        self._logfile = None

    @classmethod
    def missing(cls):
        paths, packages = cls.parts
        for path in paths:
            if not Path(path).exists():
                return f"{path} is not installed (apt packages {packages})"
        return None

    def argv(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def start(self, namespace):
        self._logfile = open(self.log, "ab")
        self.proc = namespace.popen(self.argv(), stdin=subprocess.DEVNULL,
                                    stdout=self._logfile, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ready() or self.proc.poll() is not None, 20, f"{self.name}'s socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.logtext()}")

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
        self.clean()

    def clean(self):
        """
        Remove what a stopped daemon leaves behind that would keep the
        next one from starting.
        """

    def logtext(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self):
        """
        After the namespace is gone: undo what was made outside it.
        """


class Nslcd(NssDaemon):
    name = "nslcd"
    source = "ldap"
    parts = (("/usr/sbin/nslcd", "/lib/x86_64-linux-gnu/libnss_ldap.so.2"), "nslcd, libnss-ldapd")

    def __init__(self, *args):
        super().__init__(*args)
        # nslcd's socket directory, /run/nslcd, is compiled in.  A private
        # /run holds it: making /run/nslcd on the machine for a bind mount
        # would let another world's cleanup remove it, and removing a
        # mount point detaches the mount in every namespace.  The private
        # /run also hides a machine-wide nscd's socket, which would answer
        # from its own configuration and cache.
        self.run_root = self.base / "run-nslcd"
        self.run_dir = self.run_root / NSLCD_RUN.name
        self.run_dir.mkdir(parents=True)

    def mounts(self):
        return [(self.etc / "nslcd.conf", "/etc/nslcd.conf"), (self.run_root, "/run")]

    def configure(self, enumerate=True):
        conf = (
            f"uri {self.slapd.uri}\nbase {self.suffix}\n"
            f"base passwd ou=people,{self.suffix}\nbase group ou=groups,{self.suffix}\n"
            # Find out soon that slapd is back, but do not spin meanwhile.
            "reconnect_sleeptime 1\nreconnect_retrytime 2\n"
            "bind_timelimit 5\n"
        )
        if not enumerate:
            conf += "nss_disable_enumeration yes\n"
        path = self.etc / "nslcd.conf"
        path.write_text(conf)
        path.chmod(0o600)

    def argv(self):
        # -d: in the foreground, every request and search logged.
        return ["/usr/sbin/nslcd", "-d"]

    def ready(self):
        return (self.run_dir / "socket").exists()

    def clean(self):
        for leftover in ("socket", "nslcd.pid"):
            try:
                (self.run_dir / leftover).unlink()
            except FileNotFoundError:
                pass


class Sssd(NssDaemon):
    """
    sssd with one LDAP domain, the nss responder only.

    @ivar negative_timeout: C{entry_negative_timeout} (sssd's default 15).
    @ivar offline_timeout: seconds before an offline back end tries
        slapd again (sssd's default 60, plus up to 30 at random; here 2
        and none, so that a test sees slapd back soon).  The LDAP
        timeouts are sssd's own (6 s network and search, 8 s for an
        operation).
    """

    name = "sssd"
    source = "sss"
    parts = (("/usr/sbin/sssd", "/usr/libexec/sssd/sssd_be", "/usr/libexec/sssd/sssd_nss",
              "/lib/x86_64-linux-gnu/libnss_sss.so.2"), "sssd-ldap, sssd-common, libnss-sss")
    negative_timeout = 15
    offline_timeout = 2

    def __init__(self, *args):
        super().__init__(*args)
        self.lib = self.base / "var-lib-sss"
        for sub in ("db", "pipes/private", "mc", "pubconf/krb5.include.d", "gpo_cache", "secrets",
                    "deskprofile"):
            (self.lib / sub).mkdir(parents=True)
        (self.lib / "pipes/private").chmod(0o700)
        self.run_dir = self.base / "run-sssd"
        self.run_dir.mkdir()
        self.log_dir = self.base / "log-sssd"
        self.log_dir.mkdir()
        self.conf = self.etc / "sssd.conf"

    def mounts(self):
        return [(self.run_dir, "/run"), (self.lib, SSSD_LIB), (self.log_dir, "/var/log/sssd")]

    def configure(self, enumerate=False):
        s = self.suffix
        self.conf.write_text(
            "[sssd]\nservices = nss\ndomains = test\n\n"
            f"[nss]\nentry_negative_timeout = {self.negative_timeout}\n\n"
            "[domain/test]\nid_provider = ldap\nauth_provider = none\n"
            f"ldap_uri = {self.slapd.uri}\nldap_search_base = {s}\n"
            f"ldap_user_search_base = ou=people,{s}\nldap_group_search_base = ou=groups,{s}\n"
            "ldap_schema = rfc2307\ncache_credentials = false\n"
            f"enumerate = {'true' if enumerate else 'false'}\n"
            f"offline_timeout = {self.offline_timeout}\noffline_timeout_random_offset = 0\n"
        )
        self.conf.chmod(0o600)

    def argv(self):
        return ["/usr/sbin/sssd", "-i", "--logger=stderr", "-d", "2", "-c", str(self.conf)]

    def ready(self):
        return (self.lib / "pipes" / "nss").exists()

    def clean(self):
        for leftover in (self.run_dir / "sssd.pid", self.lib / "pipes" / "nss"):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass

    def forget(self):
        """
        Empty sssd's caches (stopped): the next start knows no user.
        """
        for sub in ("db", "mc"):
            for path in (self.lib / sub).iterdir():
                path.unlink()


DAEMONS = {d.name: d for d in (Nslcd, Sssd)}
