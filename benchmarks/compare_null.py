"""
Drive an RPC server's NULL procedure with every client this machine has,
to show that C{loadgen} is not the bottleneck of the benchmarks.

Clients: C{loadgen} (UDP/TCP, window W); a stock asyncio datagram client
and a Twisted datagram client, each keeping W calls outstanding; the
libtirpc client (C{clnt_call} in a loop: one call at a time, so run as 1
process and as W processes); and Debian's C{rpcinfo} started once per call.

    .venv/bin/python benchmarks/compare_null.py [--port 111] [--window 32] [--seconds 3]

Each Python client runs in its own interpreter (a reactor cannot be
restarted).  Every client verifies the xid and accept status of every reply.
"""

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")

_CALL = struct.Struct(">10I")
_REPLY_HEAD = struct.Struct(">5I")


def null_call(xid, prog, vers):
    """
    Encode a NULL call with AUTH_NONE credentials.

    @return: the call message (RFC 5531, no record mark).
    """
    return _CALL.pack(xid, 0, 2, prog, vers, 0, 0, 0, 0, 0)


def reply_ok(data):
    """
    Check a NULL reply: MSG_ACCEPTED, empty verifier, SUCCESS.

    @return: C{(xid, ok)}, or C{(None, False)} for a message too short.
    """
    if len(data) < 24:
        return None, False
    xid, mtype, stat, _flavor, vlen = _REPLY_HEAD.unpack_from(data)
    if mtype != 1 or stat != 0 or vlen != 0:
        return xid, False
    return xid, struct.unpack_from(">I", data, 20)[0] == 0


class _Counter:
    """
    Keep C{window} NULL calls outstanding on a datagram transport.
    """

    def __init__(self, send, window, prog, vers, seconds):
        self.send = send
        self.window = window
        self.prog = prog
        self.vers = vers
        self.end = time.monotonic() + seconds
        self.next_xid = 1
        self.outstanding = set()
        self.ok = 0
        self.errors = 0
        self.done = None

    def start(self):
        for _ in range(self.window):
            self._one()

    def _one(self):
        xid = self.next_xid
        self.next_xid += 1
        self.outstanding.add(xid)
        self.send(null_call(xid, self.prog, self.vers))

    def received(self, data):
        xid, ok = reply_ok(data)
        if xid not in self.outstanding:
            self.errors += 1
            return
        self.outstanding.discard(xid)
        if ok:
            self.ok += 1
        else:
            self.errors += 1
        if time.monotonic() < self.end:
            self._one()
        elif not self.outstanding and self.done:
            self.done()


def run_asyncio(port, window, prog, vers, seconds):
    """
    The stock asyncio datagram transport.

    @return: C{(ok, errors, elapsed)}
    """
    import asyncio

    class Proto(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            counter.received(data)

    async def main():
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        transport, proto = await loop.create_datagram_endpoint(
            Proto, remote_addr=("127.0.0.1", port)
        )
        global counter
        counter = _Counter(transport.sendto, window, prog, vers, seconds)
        counter.done = lambda: finished.done() or finished.set_result(None)
        start = time.monotonic()
        counter.start()
        try:
            await asyncio.wait_for(finished, seconds + 5)
        except asyncio.TimeoutError:
            counter.errors += len(counter.outstanding)
        elapsed = time.monotonic() - start
        transport.close()
        return counter.ok, counter.errors, elapsed

    return asyncio.run(main())


def run_twisted(port, window, prog, vers, seconds):
    """
    A Twisted connected datagram protocol (epoll reactor).

    @return: C{(ok, errors, elapsed)}
    """
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    result = {}

    class Proto(DatagramProtocol):
        def startProtocol(self):
            self.transport.connect("127.0.0.1", port)
            self.counter = _Counter(self.transport.write, window, prog, vers, seconds)
            self.counter.done = self.finish
            self.start = time.monotonic()
            self.counter.start()

        def datagramReceived(self, data, addr):
            self.counter.received(data)

        def finish(self):
            if not result:
                result["r"] = (self.counter.ok, self.counter.errors, time.monotonic() - self.start)
                reactor.stop()

    proto = Proto()
    reactor.listenUDP(0, proto, interface="127.0.0.1")
    reactor.callLater(seconds + 5, lambda: (proto.finish()))
    reactor.run()
    return result["r"]


def _python_client(kind, port, window, seconds, prog=100000, vers=2):
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--port", str(port),
         "--window", str(window), "--seconds", str(seconds),
         "--prog", str(prog), "--vers", str(vers)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def build_tirpc():
    """
    Build the libtirpc comparison client.

    @return: its path, or C{None} if libtirpc's headers are missing.
    """
    exe = os.path.join(BUILD, "tirpc_null")
    src = os.path.join(HERE, "tirpc_null.c")
    if not os.path.exists("/usr/include/tirpc/rpc/rpc.h"):
        return None
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-I/usr/include/tirpc", "-o", exe, src, "-ltirpc"], check=True)
    return exe


def run_tirpc(exe, proto, procs, seconds, prog=100000, vers=2):
    """
    Run C{procs} libtirpc clients side by side (portmapper lookup included
    at start-up, so only port 111 programs are reachable).

    @return: C{(ok, errors, elapsed)}
    """
    start = time.monotonic()
    ps = [
        subprocess.Popen([exe, "127.0.0.1", str(prog), str(vers), proto, str(seconds)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    ok = errors = 0
    for p in ps:
        out, _ = p.communicate()
        a, b = out.split()
        ok += int(a)
        errors += int(b)
    return ok, errors, time.monotonic() - start


def run_rpcinfo(port, proto, seconds, prog=100000, vers=2):
    """
    Debian's C{rpcinfo}, one process per call, addressed to the port directly.

    @return: C{(ok, errors, elapsed)}
    """
    addr = f"127.0.0.1.{port >> 8}.{port & 255}"
    ok = errors = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        r = subprocess.run(["rpcinfo", "-a", addr, "-T", proto, str(prog), str(vers)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            ok += 1
        else:
            errors += 1
    return ok, errors, time.monotonic() - start


def run_loadgen(loadgen, port, proto, window, seconds):
    """
    Run C{loadgen} and return its JSON result.
    """
    cmd = [loadgen, "--port", str(port), "--proto", proto, "--window", str(window),
           "--duration", str(seconds), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _cpu_ticks(pid):
    """
    @return: utime + stime of process C{pid} in seconds, or C{None}.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(client, server_pid):
    """
    Run one client (a callable returning C{(ok, errors, elapsed)}, whose
    work happens in child processes) and account for CPU time.

    @return: dict with C{ops}, C{errors}, C{client_us} (client CPU per
        call) and C{server_pct} (server CPU, percent of one core).
    """
    s0 = _cpu_ticks(server_pid) if server_pid else None
    c0 = _children_cpu()
    ok, errors, elapsed = client()
    c1 = _children_cpu()
    s1 = _cpu_ticks(server_pid) if server_pid else None
    return {
        "ops": ok / elapsed if elapsed else 0.0,
        "errors": errors,
        "client_us": (c1 - c0) * 1e6 / ok if ok else 0.0,
        "server_pct": 100 * (s1 - s0) / elapsed if s0 is not None and s1 is not None else None,
    }


def compare(loadgen, port=111, window=32, seconds=3.0, server_pid=None, rounds=3):
    """
    Run every client against the NULL procedure of program 100000 v2,
    C{rounds} times in turn, and keep each client's median round.

    @return: rows C{(client, proto, window, result)} with result as from
        L{measure}.
    """

    def lg(proto):
        def run():
            r = run_loadgen(loadgen, port, proto, window, seconds)
            return r["ok"], r["errors"], r["elapsed_s"]
        return run

    clients = [("loadgen (C, this suite)", "udp", window, lg("udp")),
               ("loadgen (C, this suite)", "tcp", window, lg("tcp"))]
    for kind in ("asyncio", "twisted"):
        def py(kind=kind):
            r = _python_client(kind, port, window, seconds)
            return r["ok"], r["errors"], r["elapsed"]
        clients.append((f"Python {kind} datagram client", "udp", window, py))
    exe = build_tirpc() if port == 111 else None
    if exe:
        for proto in ("udp", "tcp"):
            clients.append(("libtirpc clnt_call loop", proto, 1,
                            lambda proto=proto: run_tirpc(exe, proto, 1, seconds)))
            clients.append((f"libtirpc clnt_call loop x{window} processes", proto, window,
                            lambda proto=proto: run_tirpc(exe, proto, window, seconds)))
    clients.append(("rpcinfo, one process per call", "udp", 1,
                    lambda: run_rpcinfo(port, "udp", min(seconds, 2.0))))
    results = {i: [] for i in range(len(clients))}
    for _ in range(rounds):
        for i, (_name, _proto, _win, run) in enumerate(clients):
            results[i].append(measure(run, server_pid))
    rows = []
    for i, (name, proto, win, _run) in enumerate(clients):
        runs = sorted(results[i], key=lambda r: r["ops"])
        rows.append((name, proto, win, runs[len(runs) // 2]))
    return rows


def format_rows(rows):
    """
    Format comparison rows as a Markdown table with ratios to loadgen.
    """
    best = {p: r["ops"] for (name, p, _w, r) in rows if name.startswith("loadgen")}
    lines = ["| client | transport | window | NULL calls/s | vs loadgen | client CPU us/call"
             " | rpcbind CPU % | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for name, proto, win, r in rows:
        ratio = r["ops"] / best[proto] if best.get(proto) else 0
        server = f"{r['server_pct']:.0f}" if r["server_pct"] is not None else "-"
        lines.append(f"| {name} | {proto} | {win} | {r['ops']:,.0f} | {ratio:.3f}x"
                     f" | {r['client_us']:.1f} | {server} | {r['errors']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=111)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--prog", type=int, default=100000)
    parser.add_argument("--vers", type=int, default=2)
    parser.add_argument("--server-pid", type=int, help="default: the rpcbind process")
    parser.add_argument("--rounds", type=int, default=3, help="runs per client; the median is kept")
    parser.add_argument("--loadgen", default=os.path.join(BUILD, "loadgen"))
    parser.add_argument("--client", choices=["asyncio", "twisted"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        run = run_asyncio if args.client == "asyncio" else run_twisted
        ok, errors, elapsed = run(args.port, args.window, args.prog, args.vers, args.seconds)
        print(json.dumps({"ok": ok, "errors": errors, "elapsed": elapsed}))
        return 0
    sys.path.insert(0, HERE)
    if not os.path.exists(args.loadgen):
        from run import build_loadgen

        args.loadgen = build_loadgen()
    if args.server_pid is None and args.port == 111:
        from run import find_pid

        args.server_pid = find_pid("rpcbind")
    rows = compare(args.loadgen, args.port, args.window, args.seconds, args.server_pid, args.rounds)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
