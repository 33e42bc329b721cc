"""
The directory scenario's check (benchmarks/directory.py, check_lookups):
it reads a real server's C{hlfs status} on the wire and fails loudly
when the lookups it vouches for did not happen.  The server here takes
its users from a password file, so it looks nobody up: the check must
pass for 0 users asked and fail for any other count.
"""

import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import directory  # noqa: E402
import run as bench  # noqa: E402


@pytest.fixture(scope="module")
def server():
    bench.build_loadgen()
    workdir = tempfile.mkdtemp(prefix="hlfs-bench-dircheck-")
    users = bench.write_users(workdir, 3)
    srv = bench.Server(bench.twistd_path(), workdir, users)
    yield srv
    srv.stop()


def test_status_pairs_come_from_the_server(server):
    pairs = directory.server_status(server)
    assert pairs["users_looked_up"] == "0"
    assert pairs["directory_errors"] == "0"


def test_check_passes_when_the_counts_match(server, capsys):
    directory.check_lookups(server, 0, "a pass")
    assert "0 users looked up" in capsys.readouterr().out


def test_check_fails_when_users_were_not_looked_up(server):
    with pytest.raises(bench.BenchError, match="users_looked_up.: 0"):
        directory.check_lookups(server, 2000, "the first-access pass")
