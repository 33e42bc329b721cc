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
of L{hlfs.probe.ProbingResolver.reload}).

Command line (what the child runs)::

    python -m hlfs.tableload [--password-file FILE]   # pickle on stdout
"""

import argparse
import os
import pickle
import subprocess
import sys

from hlfs.users import UserTable


class TableLoadError(Exception):
    """
    The child could not load the table; the message says why.
    """


def load_in_subprocess(password_file=None, timeout=600.0, python=None):
    """
    Load the user table from C{password_file} (or NSS when L{None}) in a
    child process and return it.

    @raise TableLoadError: with the child's own error line, if it fails.
    """
    cmd = [python or sys.executable, "-m", "hlfs.tableload"]
    if password_file is not None:
        cmd += ["--password-file", os.fsdecode(password_file)]
    env = dict(os.environ)
    # The child must import this very hlfs, wherever it was loaded from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        raise TableLoadError(f"loading the user table took more than {timeout:g} s") from None
    except OSError as e:
        raise TableLoadError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise TableLoadError(lines[-1] if lines else f"the loader exited with status {done.returncode}")
    table = pickle.loads(done.stdout)
    if not isinstance(table, UserTable):
        raise TableLoadError("the loader sent something else than a user table")
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m hlfs.tableload",
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
    sys.stdout.buffer.write(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
