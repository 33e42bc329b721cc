"""
A directory service for the tests: a real OpenLDAP slapd on 127.0.0.1
holding posixAccount users, and the real glibc name service in front of
it through nslcd and libnss-ldapd, or sssd and libnss-sss
(L{tests.support.nssdaemons}), seen only inside a private mount
namespace.

The name service switch is global (C{/etc/nsswitch.conf}); so are the
NSS daemon's configuration and its socket directory (paths compiled
into it).  L{Namespace} holds a mount
namespace open (a C{sleep} started by C{unshare --mount --propagation
private}) in which test copies are bind-mounted over those paths and
over C{/etc/passwd} and C{/etc/group}; every process of a test that
must see the directory (nslcd or sssd, C{twistd hlfs}, C{hlfs check}, C{hlfs
lostmail}, C{getent}) is started in it with C{nsenter}.  Outside it the
machine resolves as before, and when the namespace's last process ends
its mounts are gone: a test that fails half-way leaves nothing behind.

slapd itself needs no name service and runs outside, with its own
C{slapd.conf} and database in a temporary directory, logging at
C{stats} level so that L{Slapd.searches} can count the directory
queries.

Knobs: L{DirectoryWorld} C{nss} (C{"nslcd"} or C{"sssd"}) and
C{enumerate}, L{DirectoryWorld.restart_nss},
L{Slapd} C{size_limit}, and L{Slapd.stop}, L{Slapd.start},
L{Slapd.freeze}, L{Slapd.thaw}.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.nssdaemons import DAEMONS
from tests.support.nssdaemons import wait_for as _wait
from tests.support.processes import stop_process
from tests.support.server import BIN, HLFS_GID

SUFFIX = "dc=hlfs,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "hlfs-test"
FIRST_UID = 20001
DIRECTORY_GID = 20000  # every directory user's primary group, a directory group
EXTRA_GID = 20500  # a directory group with every directory user as a member
LOCAL_USERS = [
    # name, uid, gid: the test /etc/passwd (files) users.  Their homes are
    # under the world's base.
    ("root", 0, 0),
    ("daemon", 1, 1),
    ("alice", 1001, 1001),
    ("bob", 1002, 1002),
]
NOBODY = ("nobody", 65534, 65534)

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"


def directory_name(n):
    """
    The name of directory user C{n} (1-based): C{luser00001}.
    """
    return f"luser{n:05d}"


def directory_uid(n):
    return FIRST_UID + n - 1


def missing_parts(nss="nslcd"):
    """
    Return why a directory world with the NSS daemon C{nss} cannot be
    had here, or L{None}.
    """
    if os.geteuid() != 0:
        return f"a directory world needs root (mount namespaces, slapd, {nss})"
    for path in (SLAPD, SLAPADD, "/usr/bin/ldapsearch", "/usr/bin/ldapdelete"):
        if not os.path.exists(path):
            return f"{path} is not installed (apt packages slapd, ldap-utils)"
    why = DAEMONS[nss].missing()
    if why is not None:
        return why
    for tool in ("unshare", "nsenter", "getent"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return f"cannot make a private mount namespace: {probe.stderr.strip()}"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slapd:
    """
    A slapd serving C{SUFFIX} on 127.0.0.1 from a database of its own.

    @ivar size_limit: slapd's C{sizelimit}: entries a search may return
        to anyone but the root DN (slapd's own default is 500).
    """

    def __init__(self, base, size_limit="unlimited"):
        self.base = base
        self.dir = base / "slapd"
        self.dir.mkdir()
        (self.dir / "db").mkdir()
        self.conf = self.dir / "slapd.conf"
        self.log = self.dir / "slapd.log"
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}/"
        self.size_limit = size_limit
        self.proc = None
        self._logfile = None
        self.write_conf()

    def write_conf(self):
        schema = "/etc/ldap/schema"
        self.conf.write_text(
            f"include {schema}/core.schema\n"
            f"include {schema}/cosine.schema\n"
            f"include {schema}/nis.schema\n"
            f"include {schema}/inetorgperson.schema\n"
            f"pidfile {self.dir}/slapd.pid\n"
            f"argsfile {self.dir}/slapd.args\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            "loglevel stats\n"
            f"sizelimit {self.size_limit}\n"
            "database mdb\n"
            "maxsize 104857600\n"
            f"suffix \"{SUFFIX}\"\n"
            f"rootdn \"{ROOT_DN}\"\n"
            f"rootpw {ROOT_PW}\n"
            f"directory {self.dir}/db\n"
            "index objectClass,uid,uidNumber,gidNumber,memberUid eq\n"
            "access to * by * read\n"
        )

    def load(self, ldif):
        """
        Add C{ldif} (text) to the database, offline (slapd stopped).
        """
        path = self.dir / "load.ldif"
        path.write_text(ldif)
        subprocess.run(
            [SLAPADD, "-q", "-f", str(self.conf), "-l", str(path)],
            check=True, capture_output=True, timeout=120,
        )

    def start(self, timeout=20):
        if self.proc is not None:
            raise AssertionError("slapd is already running")
        self._logfile = open(self.log, "ab")
        # -d stats: stay in the foreground, log every operation on stderr.
        self.proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-h", self.uri, "-d", "stats"],
            stdin=subprocess.DEVNULL, stdout=self._logfile, stderr=subprocess.STDOUT,
        )

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"slapd exited {self.proc.returncode}:\n{self.logtext()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(answers, timeout, "slapd to listen")
        return self

    def stop(self):
        """
        Stop slapd (it can be started again on the same port).
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        stop_process(self.proc)
        self.proc = None
        self._logfile.close()

    def delete(self, dn):
        """
        Delete entry C{dn} from the running slapd, as its root DN.
        """
        subprocess.run(
            ["ldapdelete", "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW, dn],
            check=True, capture_output=True, timeout=30,
        )

    def freeze(self):
        """
        SIGSTOP slapd: connections stay open, nothing answers.
        """
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def logtext(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def searches(self, pattern=""):
        """
        Return the SRCH operations logged so far whose filter contains
        C{pattern} (as slapd logs it, e.g. C{(uidNumber=20001)}).
        """
        lines = re.findall(r"SRCH base=.* filter=\"(.*)\"", self.logtext())
        return [f for f in lines if pattern in f]


def users_ldif(count, homes):
    """
    The directory: C{count} posixAccount users C{luser00001}... with
    uids from C{FIRST_UID}, homes C{homes/<name>}, their primary group
    and a second group everyone is a member of.
    """
    out = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: hlfs test\ndc: hlfs\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: cn=lusers,ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: lusers\n"
        f"gidNumber: {DIRECTORY_GID}\n",
    ]
    members = "".join(f"memberUid: {directory_name(n)}\n" for n in range(1, count + 1))
    out.append(
        f"dn: cn=lclub,ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: lclub\n"
        f"gidNumber: {EXTRA_GID}\n{members}"
    )
    for n in range(1, count + 1):
        name = directory_name(n)
        out.append(
            f"dn: uid={name},ou=people,{SUFFIX}\n"
            "objectClass: account\nobjectClass: posixAccount\n"
            f"cn: {name}\nuid: {name}\nuidNumber: {directory_uid(n)}\n"
            f"gidNumber: {DIRECTORY_GID}\nhomeDirectory: {homes}/{name}\n"
            "loginShell: /bin/sh\n"
        )
    return "\n".join(out)


class Namespace:
    """
    A private mount namespace held open by a C{sleep}, with C{mounts}
    (C{(source, target)} pairs) bind-mounted in it.  L{command} prefixes
    a command line so that it runs inside.
    """

    def __init__(self, mounts):
        script = "".join(
            f"mount --bind '{src}' '{dst}' || exit 1\n" for src, dst in mounts
        )
        script += "echo ready\nexec sleep 100000\n"
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.wait()
            raise AssertionError(f"cannot set up the namespace: {self.proc.stderr.read().decode()}")
        self.mnt = f"/proc/{self.proc.pid}/ns/mnt"

    def command(self, argv, cwd=None):
        return ["nsenter", f"--mount={self.mnt}", f"--wd={cwd or os.getcwd()}", "--", *argv]

    def run(self, argv, cwd=None, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.command(argv, cwd), **kwargs)

    def popen(self, argv, cwd=None, **kwargs):
        return subprocess.Popen(self.command(argv, cwd), **kwargs)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class DirectoryWorld:
    """
    slapd with C{count} directory users, an NSS daemon (C{nss}: nslcd,
    or sssd) and a namespace whose name service is C{files ldap} (or
    C{files sss}).

    @ivar base: the temporary directory holding everything (homes under
        C{base/home}, the alternate spool C{base/alt_mail}).
    @ivar nss: the L{tests.support.nssdaemons.NssDaemon}.
    """

    def __init__(self, count=1000, size_limit="unlimited", enumerate=True, nss="nslcd"):
        self.base = Path(tempfile.mkdtemp(prefix="hlfs-ldap-", dir="/tmp"))
        self.base.chmod(0o755)
        self.count = count
        self.homes = self.base / "home"
        self.alt = self.base / "alt_mail"
        self.etc = self.base / "etc"
        self.slapd = Slapd(self.base, size_limit)
        self.namespace = None
        self.nss = None
        try:
            self.etc.mkdir()
            self.nss = DAEMONS[nss](self.base, self.etc, self.slapd, SUFFIX)
            self._build(enumerate)
        except BaseException:
            self.close()
            raise

    def _build(self, enumerate):
        self.homes.mkdir()
        self.alt.mkdir()
        self.alt.chmod(0o1777)
        passwd, group = [], []
        for name, uid, gid in LOCAL_USERS:
            home = self.homes / name
            home.mkdir()
            os.chown(home, uid, gid)
            passwd.append(f"{name}:x:{uid}:{gid}:{name}:{home}:/bin/sh")
            group.append(f"{name}:x:{gid}:")
        name, uid, gid = NOBODY
        passwd.append(f"{name}:x:{uid}:{gid}:{name}:/nonexistent:/usr/sbin/nologin")
        group.append(f"nogroup:x:{gid}:")
        # A local group alice is a supplementary member of, and HLFS_GID.
        group.append("staff:x:50:alice")
        group.append(f"hlfs:x:{HLFS_GID}:")
        (self.etc / "passwd").write_text("\n".join(passwd) + "\n")
        (self.etc / "group").write_text("\n".join(group) + "\n")
        (self.etc / "nsswitch.conf").write_text(
            f"passwd: files {self.nss.source}\ngroup: files {self.nss.source}\nshadow: files\n"
            "hosts: files\nservices: files\nprotocols: files\nrpc: files\n"
        )
        for n in range(1, self.count + 1):
            home = self.homes / directory_name(n)
            home.mkdir()
            os.chown(home, directory_uid(n), DIRECTORY_GID)
        self.nss.configure(enumerate)
        self.slapd.load(users_ldif(self.count, self.homes))
        self.slapd.start()
        mounts = [
            (self.etc / "nsswitch.conf", "/etc/nsswitch.conf"),
            (self.etc / "passwd", "/etc/passwd"),
            (self.etc / "group", "/etc/group"),
            *self.nss.mounts(),
        ]
        self.namespace = Namespace(mounts)
        self.nss.start(self.namespace)

    def delete_user(self, n):
        """
        Delete directory user C{n} from the (running) directory.
        """
        self.slapd.delete(f"uid={directory_name(n)},ou=people,{SUFFIX}")

    def restart_nss(self, enumerate=None):
        """
        Restart the NSS daemon, reconfigured if C{enumerate} is given.
        """
        self.nss.stop()
        if enumerate is not None:
            self.nss.configure(enumerate)
        self.nss.start(self.namespace)

    def getent(self, *args, inside=True):
        argv = ["getent", *args]
        if inside:
            return self.namespace.run(argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def close(self):
        if self.nss is not None:
            self.nss.stop()
        if self.namespace is not None:
            self.namespace.close()
            self.namespace = None
        self.slapd.stop()
        if self.nss is not None:
            self.nss.close()
        shutil.rmtree(self.base, ignore_errors=True)


class DirectoryServer:
    """
    A C{twistd hlfs} in the world's namespace, taking its users from the
    name service (no C{--password-file}), on an ephemeral loopback port.
    """

    def __init__(self, world, args=()):
        self.world = world
        self.base = world.base
        self.alt = world.alt
        self.log = world.base / "hlfs.log"
        self.portfile = world.base / "hlfs.port"
        self.args = list(args)
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        if self.portfile.exists():
            self.portfile.unlink()
        cmd = [
            str(BIN / "twistd"), "-n", "--pidfile=", f"--logfile={self.log}",
            "hlfs", "--no-mount", "--no-portmap", "--insecure",
            "--alt-dir", str(self.alt), "--group", str(HLFS_GID),
            "--port-file", str(self.portfile), *self.args,
        ]
        self.proc = self.world.namespace.popen(
            cmd, cwd=self.base, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

        def listening():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise AssertionError(f"twistd exited {self.proc.returncode}: {out}\n{self.logtext()}")
            return self.portfile.exists() and self.portfile.read_text().strip()

        _wait(listening, timeout, "hlfs to listen")
        self.port = int(self.portfile.read_text())
        return self

    def resolve(self, uid, gid=None, name=None, timeout=30):
        """
        Return what C{home} (or, with C{name}, an HLFS_GID caller's link
        C{name}) resolves to for C{uid}, through C{hlfs resolve} on the
        wire; C{hlfs resolve} needs no name service and runs outside.
        """
        cmd = [str(BIN / "hlfs"), "resolve", "--uid", str(uid), "--server", f"127.0.0.1:{self.port}"]
        if gid is not None:
            cmd += ["--gid", str(gid)]
        if name is not None:
            cmd += ["--name", name]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def signal(self, signum):
        # nsenter execs the command (no --fork): its pid is twistd's.
        self.proc.send_signal(signum)

    def logtext(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, text, timeout=30, start=0):
        """
        Wait until C{text} appears in the log after offset C{start}.
        """
        _wait(lambda: text in self.logtext()[start:], timeout, f"{text!r} in the hlfs log")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode if self.proc else None
