"""
Driving the manhole as an operator does: OpenSSH's ssh-keygen and ssh
client, under pexpect.
"""

import socket
import subprocess

import pexpect

PROMPT = ">>> "


def keygen(path, comment):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def key_fingerprint(public_key_path):
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_dir(path):
    path.mkdir(exist_ok=True)
    path.chmod(0o700)
    return path


def ssh_args(port, key, *options, host="127.0.0.1", user="operator"):
    return [
        "-F",
        "/dev/null",
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        *options,
        f"{user}@{host}",
    ]


def open_console(daemon, key, user="operator", timeout=15):
    """
    Log in to the manhole on C{daemon.ssh_port} and wait for the prompt.
    """
    console = pexpect.spawn(
        "ssh",
        ssh_args(daemon.ssh_port, key, "-o", "PreferredAuthentications=publickey", user=user),
        timeout=timeout,
        encoding="utf-8",
        codec_errors="replace",
    )
    console.expect_exact(PROMPT)
    return console


def run(console, line, pattern):
    """
    Type C{line}, wait for C{pattern} (a regex) after the echo, and return
    the match.
    """
    console.sendline(line)
    console.expect(pattern)
    return console.match


def close(console):
    console.sendcontrol("d")
    console.expect(pexpect.EOF)
    console.close()
    assert console.exitstatus == 0
