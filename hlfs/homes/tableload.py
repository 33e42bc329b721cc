"""
Load the user table in a child process, as hlfsd forked to reload it.

Parsing a million password entries makes millions of short-lived
objects and runs long C calls (sorting, splitting) that keep the GIL for
hundreds of milliseconds: done in a thread of the daemon, every request
would wait for them, and the daemon's memory would keep the garbage's
high-water mark.  A child process parses; the daemon receives only the
finished table's few arrays (a pickle of a handful of big buffers) and
unpickles them in a few tens of milliseconds.

L{load_in_subprocess} blocks: call it in a thread (it is the C{loader}
of L{hlfs.homes.reload.TableReloads.reload}).

Command line (what the child runs)::

    python -m hlfs.homes.tableload [--password-file FILE]

writes the table's pickle on stdout, after its length (8 bytes, big
endian).
"""

import argparse
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading

from hlfs.core.users import UserTable


_HEADER = struct.Struct(">Q")  # the pickle's length, before it


class TableLoadError(Exception):
    """
    The child could not load the table; the message says why.
    """


def load_in_subprocess(password_file=None, timeout=600.0, python=None):
    """
    Load the user table from C{password_file} (or NSS when L{None}) in a
    child process and return it.

    The pickle is read straight into one buffer of the announced size:
    every read lets go of the GIL, and no step copies the whole table
    but the unpickling itself.

    @raise TableLoadError: with the child's own error line, if it fails.
    """
    cmd = [python or sys.executable, "-m", "hlfs.homes.tableload"]
    if password_file is not None:
        cmd += ["--password-file", os.fsdecode(password_file)]
    env = dict(os.environ)
    # The child must import this very hlfs, wherever it was loaded from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env,
            )
        except OSError as e:
            raise TableLoadError(f"cannot run {cmd[0]}: {e.strerror}") from None
        # A loader stuck in the name service must not hold reloads forever.
        killed = threading.Event()

        def kill():
            killed.set()
            proc.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            with proc.stdout:
                data = _read_framed(proc.stdout)
            status = proc.wait()
        finally:
            watchdog.cancel()
        if status != 0 or data is None:
            if killed.is_set():
                raise TableLoadError(f"loading the user table took more than {timeout:g} s")
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise TableLoadError(lines[-1] if lines else f"the loader exited with status {status}")
    table = pickle.loads(data)
    if not isinstance(table, UserTable):
        raise TableLoadError("the loader sent something else than a user table")
    return table


def _read_framed(pipe):
    """
    Read one length-prefixed record from C{pipe}; L{None} if it ends
    early.
    """
    header = pipe.read(_HEADER.size)
    if len(header) != _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = pipe.readinto(view[done:])
        if not got:
            return None
        done += got
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m hlfs.homes.tableload",
        description="Load the hlfs user table and write it, pickled, on stdout.",
    )
    parser.add_argument("--password-file", default=None)
    args = parser.parse_args(argv)
    try:
        if args.password_file is None:
            table = UserTable.from_nss()
        else:
            table = UserTable.from_passwd_file(args.password_file)
    except OSError as e:
        sys.stderr.write(f"cannot read password file {args.password_file}: {e.strerror}\n")
        return 1
    data = pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.write(_HEADER.pack(len(data)))
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
