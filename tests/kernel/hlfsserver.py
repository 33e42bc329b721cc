"""
Run the real hlfs daemon (C{twistd -n hlfs}) on the host's loopback for
a guest to mount.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from world import HLFS_GID, SUBDIR


def venv_bin(name):
    """
    @return: the path of a script installed next to the running Python.
    """
    return str(Path(sys.executable).parent / name)


def free_port():
    """
    @return: a loopback port that is free for both TCP and UDP now.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class HlfsServer:
    """
    One C{twistd -n hlfs --no-mount} serving a L{world.World}, restartable
    on the same port (as after a crash).
    """

    def __init__(self, world, log_dir, port=None, extra=()):
        self.world = world
        self.port = port or free_port()
        self.log_dir = Path(log_dir)
        self.extra = list(extra)
        self.process = None
        self.starts = 0

    def argv(self):
        argv = [
            venv_bin("twistd"), "-n", "--pidfile=", "hlfs",
            "--no-mount",
            "--port", str(self.port),
            "--interface", "127.0.0.1",
            "--insecure",
            "--password-file", str(self.world.password_file),
            "--alt-dir", str(self.world.alt_dir),
            "--subdir", SUBDIR,
            "--group", str(HLFS_GID),
            "--no-portmap",
        ]
        return argv + self.extra

    @property
    def log_file(self):
        return self.log_dir / f"hlfs-{self.starts}.log"

    def start(self, timeout=60):
        """
        Start the daemon and wait until it accepts TCP connections.
        """
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "wb")
        self.process = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.log_dir, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hlfs exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"hlfs did not listen on port {self.port} within {timeout}s:\n{self.log()}")

    def kill(self, sig=signal.SIGKILL):
        """
        Send C{sig} and wait for the daemon to exit.

        @return: its exit status.
        """
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.kill(self.process.pid, sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def stop(self):
        """
        Stop the daemon as an administrator would (SIGTERM).
        """
        return self.kill(signal.SIGTERM)

    def log(self):
        """
        @return: the text of every log of this server so far.
        """
        parts = []
        for n in range(1, self.starts + 1):
            path = self.log_dir / f"hlfs-{n}.log"
            if path.exists():
                parts.append(f"--- start {n} ---\n" + path.read_text(errors="replace"))
        return "\n".join(parts)
