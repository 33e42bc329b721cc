"""
The benchmark load generator (benchmarks/loadgen.c), built with the system
compiler and run against Debian's rpcbind: a real C RPC server on
127.0.0.1:111.  These tests check that every reply is counted and verified
(ok, accept_stat errors, timeouts), not how fast anything is.
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_runner():
    spec = importlib.util.spec_from_file_location(
        "hlfs_benchmarks_run", os.path.join(ROOT, "benchmarks", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_runner()


@pytest.fixture(scope="module")
def loadgen():
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the load generator")
    return bench.build_loadgen()


@pytest.fixture(scope="module")
def rpcbind(loadgen):
    """
    rpcbind answering on 127.0.0.1:111; started here (and stopped after)
    if it was not running.
    """
    try:
        pid, started = bench.ensure_rpcbind()
    except bench.BenchError as e:
        pytest.skip(f"rpcbind unavailable: {e}")
    yield pid
    if started and pid:
        os.kill(pid, signal.SIGTERM)


def run(loadgen, *args, expect_status=0):
    r = subprocess.run([loadgen, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert r.returncode == expect_status, r.stderr
    if expect_status:
        return r.stderr
    result = json.loads(r.stdout)
    assert "ops/s" in r.stderr
    return result


def error_kinds_except(result, *kinds):
    return {k: v for k, v in result["error_kinds"].items() if k not in kinds and v}


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_null_calls_all_verified(loadgen, rpcbind, proto):
    """
    Every one of N NULL calls is sent, answered, matched and verified.
    """
    r = run(loadgen, "--proto", proto, "--window", 32, "--calls", 3000)
    assert (r["sent"], r["replies"], r["ok"], r["errors"]) == (3000, 3000, 3000, 0)
    assert error_kinds_except(r) == {}
    assert r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["max"]
    assert r["proto"] == proto and r["window"] == 32


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_wrong_program_counted_as_errors(loadgen, rpcbind, proto):
    """
    rpcbind does not serve program 100003: each reply is PROG_UNAVAIL,
    counted as an error without stopping the run.
    """
    r = run(loadgen, "--proto", proto, "--prog", 100003, "--vers", 3, "--calls", 500)
    assert (r["sent"], r["replies"], r["ok"], r["errors"]) == (500, 500, 0, 500)
    assert r["error_kinds"]["prog_unavail"] == 500
    assert error_kinds_except(r, "prog_unavail") == {}
    assert r["ops_per_s"] == 0


def test_wrong_version_and_procedure(loadgen, rpcbind):
    r = run(loadgen, "--vers", 9, "--calls", 100)
    assert r["error_kinds"]["prog_mismatch"] == 100 and r["ok"] == 0
    r = run(loadgen, "--proc", 99, "--calls", 100)
    assert r["error_kinds"]["proc_unavail"] == 100 and r["ok"] == 0


def test_rotating_auth_unix_uids(loadgen, rpcbind):
    """
    AUTH_UNIX credentials for 1,000 rotating uids are accepted by rpcbind.
    """
    r = run(loadgen, "--auth", "unix", "--uids", "1000-1999", "--calls", 2000, "--window", 8)
    assert (r["ok"], r["errors"], r["uids"], r["auth"]) == (2000, 0, 1000, "unix")


def test_duration_and_server_cpu(loadgen, rpcbind):
    r = run(loadgen, "--duration", 0.3, "--server-pid", rpcbind, "--window", 4)
    assert r["ok"] == r["sent"] > 0 and r["errors"] == 0
    assert r["server_pid"] == rpcbind and isinstance(r["server_cpu_s"], float)


def test_server_cpu_counts_every_process_under_the_server(loadgen, rpcbind):
    """
    The server's CPU includes its grandchildren's: hlfs's check processes
    are forked by a forker child of the daemon.  Here only a grandchild of
    the given pid works, for the whole run.
    """
    busy = "import time\nend = time.monotonic() + 3\nwhile time.monotonic() < end: pass"
    spawn = "import subprocess, sys; subprocess.run([sys.executable, '-c', *sys.argv[1:]])"
    # The given pid runs a child that runs the busy grandchild.
    tree = subprocess.Popen([sys.executable, "-c", spawn, spawn, busy])
    try:
        r = run(loadgen, "--duration", 1.0, "--server-pid", tree.pid, "--window", 4)
    finally:
        tree.wait(10)
    assert r["server_pid"] == tree.pid
    assert r["server_cpu_s"] >= 0.5


def test_lost_calls_counted_as_timeouts(loadgen):
    """
    Calls to a UDP port nobody listens on end as timeouts, not a hang.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run(loadgen, "--port", port, "--calls", 5, "--timeout-ms", 200)
    assert (r["replies"], r["ok"], r["errors"]) == (0, 0, 5)
    assert r["error_kinds"]["timeout"] == 5


@pytest.mark.parametrize("args, message", [
    (["--host", "192.0.2.1", "--calls", 1], "only loopback"),
    (["--window", 0, "--calls", 1], "--window"),
    (["--proto", "sctp"], "--proto"),
    (["--uids", "5-1", "--auth", "unix"], "--uids"),
    (["--call", "readlink", "--auth", "none"], "needs --auth unix"),
    (["--call", "getattr", "--fh", "xyz", "--calls", 1], "--fh"),
])
def test_bad_options_one_line(loadgen, args, message):
    err = run(loadgen, *args, expect_status=2)
    assert message in err
    assert len(err.strip().splitlines()) == 1


# Against a real hlfs server (the conftest's twistd fixture): the NFS calls
# and the per-uid handles of the setup phase.


@pytest.mark.verify_optional
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("call", ["readlink", "getattr", "lookup"])
def test_nfs_calls_per_uid_handles(loadgen, server, proto, call):
    """
    MNT, one LOOKUP per uid (each uid gets its own link handle), then every
    call answered NFS3_OK for uids 1000-1005, present in the table or not.
    """
    r = run(loadgen, "--port", server.port, "--proto", proto, "--call", call,
            "--uids", "1000-1005", "--calls", 600, "--window", 16)
    assert (r["sent"], r["ok"], r["errors"], r["uids"]) == (600, 600, 0, 6)
    assert (r["prog"], r["vers"]) == (100003, 3)


@pytest.mark.verify_optional
def test_nfs_error_status_counted(loadgen, server):
    """
    A handle the server never made gets NFS3ERR_STALE (or BADHANDLE):
    accepted, SUCCESS at the RPC level, counted as an NFS error.
    """
    r = run(loadgen, "--port", server.port, "--call", "getattr", "--uid", 1001,
            "--fh", "00" * 8, "--calls", 50)
    assert (r["replies"], r["ok"], r["error_kinds"]["nfs_error"]) == (50, 0, 50)


@pytest.mark.verify_optional
def test_setup_failure_is_one_line(loadgen, server):
    err = run(loadgen, "--port", server.port, "--call", "readlink", "--uid", 1001,
              "--name", "nosuch", "--calls", 1, expect_status=2)
    assert "LOOKUP" in err and len(err.strip().splitlines()) == 1
    err = run(loadgen, "--port", server.port, "--call", "readlink", "--uid", 1001,
              "--export", "/not-exported", "--calls", 1, expect_status=2)
    assert "MNT" in err and len(err.strip().splitlines()) == 1


def _row(scenario, uids, cpu, ratio=1.0, proto="udp", window=32):
    result = {"ops_per_s": 1000.0, "errors": 0, "server_cpu_us_per_op": cpu,
              "latency_us": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}}
    return {"scenario": scenario, "call": "readlink", "uids": uids, "proto": proto,
            "window": window, "hlfs": result, "rpcbind": dict(result), "ratio": ratio,
            "ratios": [ratio]}


def test_uid_cost_compares_within_a_scenario():
    """
    The rotating-uid cost is one scenario's 10,000-uid row over the same
    scenario's one-uid row, never another scenario's.
    """
    rows = [_row("readlink", 1, 20.0), _row("readlink", 10000, 22.0),
            _row("what-if: as is", 1, 2.0)]
    notes = bench.uid_cost_note(rows)
    assert notes == ["readlink udp w32: server CPU per call with 10000 uids = 1.10x one uid"
                     " (target <= 1.1x at w32)"]


def test_results_table_marks_targets():
    row = _row("readlink", 1, 20.0, ratio=1.2)
    row["target"] = 1.5
    table = bench.format_table([row, _row("getattr", 1, None)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert ">= 1.5x missed" in lines[2] and "| 1.20x (1.20) |" in lines[2]
    assert "| - |" in lines[3]
