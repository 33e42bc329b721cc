"""
A private rpcbind: Debian's rpcbind in a network and mount namespace of
the test's own (loopback up, a tmpfs on /run for its socket, lock and
saved state), held open by a C{sleep}.  Daemons, C{rpcinfo} and C{hlfs}
run inside through L{PrivateRpcbind.prefix} (C{nsenter}); the machine's
rpcbind, which other tests use at the same time, is never touched, and
this one can be killed and restarted at will.
"""

import os
import shutil
import subprocess
import time

import pytest

from tests.support.processes import stop_process

HLFS_PROGRAMS = ("100003", "100005", str(0x20004846))


def missing():
    """
    Why a private rpcbind cannot run here, or L{None}.
    """
    if os.geteuid() != 0:
        return "a network namespace of its own needs root"
    for tool in ("unshare", "nsenter", "rpcbind", "rpcinfo", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: scripts/run-tests installs it"
    return None


class PrivateRpcbind:
    def __init__(self):
        script = (
            "ip link set lo up && mount -t tmpfs tmpfs /run && mkdir /run/rpcbind "
            "&& echo ready && exec sleep 100000"
        )
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        if self.holder.stdout.readline().strip() != b"ready":
            self.holder.wait()
            raise AssertionError(f"cannot make the namespace: {self.holder.stderr.read().decode()}")
        pid = self.holder.pid
        self.prefix = ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--"]
        self.rpcbind = None
        self.start_rpcbind()

    def run(self, argv, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([*self.prefix, *map(str, argv)], **kwargs)

    def answers(self):
        return self.run(["rpcinfo", "-p", "127.0.0.1"], timeout=10).returncode == 0

    def start_rpcbind(self, timeout=10):
        """
        Start rpcbind (with C{-w}, as Debian's unit does: a warm start
        restores what a C{SIGTERM} saved; a C{SIGKILL} saves nothing).
        """
        self.rpcbind = subprocess.Popen(
            [*self.prefix, "rpcbind", "-f", "-w"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.rpcbind.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the private rpcbind did not start")
            time.sleep(0.1)

    def kill_rpcbind(self):
        """
        End rpcbind as a crash would: its mappings are lost.
        """
        self.rpcbind.kill()
        self.rpcbind.wait(10)
        self.run(["rm", "-f", "/run/rpcbind/rpcbind.xdr", "/run/rpcbind/portmap.xdr"])

    def registrations(self, port=None):
        """
        The C{(program, version, transport, port)} of hlfs's programs
        registered, or those on C{port}.
        """
        out = self.run(["rpcinfo", "-p", "127.0.0.1"], timeout=10).stdout
        found = set()
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] in HLFS_PROGRAMS:
                if port is None or int(fields[3]) == port:
                    found.add((int(fields[0]), int(fields[1]), fields[2], int(fields[3])))
        return found

    def close(self):
        stop_process(self.rpcbind)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()
        self.holder.stdout.close()
        self.holder.stderr.close()
