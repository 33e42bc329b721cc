"""
A real Postfix smtpd on the host's loopback, for the SMTP tests, that
changes nothing outside itself.

Postfix comes from the kernel tier's unpacked package cache
(L{tests.kernel.debcache}, set C{postfix}: Debian 12's package, never
installed on the host).  Its master runs inside a private mount
namespace (C{unshare --mount}) in which the package's C{/usr} is laid
over the host's (an overlay, read-only) and a password and group file
with its own C{postfix} user and C{postdrop} group are bind-mounted over
C{/etc/passwd} and C{/etc/group}.  Its configuration, queue, data and
log are in a temporary directory; it listens on 127.0.0.1 on an
ephemeral port and relays everything to C{relay_port} (the test's SMTP
sink), so the test sees exactly which messages Postfix took.  When the
master ends, the namespace and its mounts go with it.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERNEL = Path(__file__).resolve().parent.parent / "kernel"
if str(KERNEL) not in sys.path:
    sys.path.insert(0, str(KERNEL))

import debcache  # noqa: E402 (the kernel tier's module, found above)
import mta  # noqa: E402

QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
              "private", "saved", "trace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_tree():
    """
    The unpacked Postfix package, fetched the first time.

    @raise debcache.PackageFetchError: apt could not fetch it.
    """
    return debcache.fetch_set("postfix", log=lambda line: sys.stderr.write(line + "\n"))


class Postfix:
    """
    One Postfix with C{settings} (main.cf lines, C{{name: value}}) over
    Debian's defaults; L{port} is its smtpd's.
    """

    def __init__(self, tree, relay_port, settings=()):
        self.tree = Path(tree)
        self.base = Path(tempfile.mkdtemp(prefix="hlfs-postfix-", dir="/tmp"))
        self.base.chmod(0o755)  # Postfix's own processes walk to the queue as postfix
        self.port = free_port()
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        self.logfile = self.base / "postfix.log"
        self.proc = None
        try:
            self._configure(relay_port, dict(settings))
            self._start()
        except BaseException:
            self.close()
            raise

    def _configure(self, relay_port, settings):
        self.conf.mkdir()
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.base / "data"),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": str(self.tree / "etc" / "postfix"),
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "hlfs-smtp.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "local_recipient_maps": "",
            "smtputf8_enable": "no",
            "maillog_file": str(self.logfile),
            "maillog_file_prefixes": str(self.base),
            **settings,
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        master = (self.tree / "usr" / "share" / "postfix" / "master.cf.dist").read_text()
        master = re.sub(r"(?m)^smtp +inet .*$", f"127.0.0.1:{self.port} inet n - n - - smtpd",
                        master)
        # No chroot: the queue directory holds no copies of /etc.
        master = re.sub(r"(?m)^(\S+ +(?:unix|inet|unix-dgram|fifo|pass) +[-ny] +[-ny] +)y ",
                        r"\1n ", master)
        (self.conf / "master.cf").write_text(master)
        for name in QUEUE_DIRS:
            (self.queue / name).mkdir(parents=True)
            os.chown(self.queue / name, mta.POSTFIX_UID, -1)
            (self.queue / name).chmod(0o700)
        for name, mode in (("maildrop", 0o730), ("public", 0o710)):
            (self.queue / name).mkdir()
            os.chown(self.queue / name, mta.POSTFIX_UID, mta.POSTDROP_GID)
            (self.queue / name).chmod(mode)
        (self.queue / "pid").mkdir()
        (self.base / "data").mkdir()
        os.chown(self.base / "data", mta.POSTFIX_UID, -1)
        (self.base / "data").chmod(0o700)
        passwd = Path("/etc/passwd").read_text() + (
            f"postfix:x:{mta.POSTFIX_UID}:{mta.POSTFIX_UID}::/nonexistent:/usr/sbin/nologin\n")
        group = Path("/etc/group").read_text() + (
            f"postfix:x:{mta.POSTFIX_UID}:\npostdrop:x:{mta.POSTDROP_GID}:\n")
        (self.base / "passwd").write_text(passwd)
        (self.base / "group").write_text(group)

    def _start(self):
        script = (
            f"mount -t overlay overlay -o ro,lowerdir={self.tree}/usr:/usr /usr || exit 1\n"
            f"mount --bind {self.base}/passwd /etc/passwd || exit 1\n"
            f"mount --bind {self.base}/group /etc/group || exit 1\n"
            f"exec /usr/lib/postfix/sbin/master -c {self.conf} -d\n"
        )
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Postfix did not start: {self.proc.stdout.read()!r}\n"
                                     f"{self.log()}")
            time.sleep(0.1)

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
        shutil.rmtree(self.base, ignore_errors=True)
