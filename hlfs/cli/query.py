"""
Ask a running hlfs, over NFS on the wire, what its link resolves to:
the C{hlfs resolve} command, and the client the tests use.
"""

import argparse
import os
import sys

from twisted.internet import defer
from twisted.python.failure import Failure

from hlfs.nfs import mount, status, v3
from hlfs.rpc.client import RPCClient, RPCError
from hlfs.rpc.message import AUTH_SYS, SUCCESS, Credential
from hlfs.rpc.portmap import getport
from hlfs.xdr import pack_opaque

NFS3_OK = 0
NFS3ERR_INVAL = 22


class NFSCallError(Exception):
    """
    The server answered with an RPC error or an NFS error status.
    """


def credential(uid, gid, machine=b"hlfs-query"):
    return Credential(AUTH_SYS, uid, gid, (gid,), machine)


def _accepted(reply, what):
    if reply.stat is None:
        raise NFSCallError(f"{what}: call denied {reply.reject}")
    if reply.stat != SUCCESS:
        raise NFSCallError(f"{what}: accept status {reply.stat}")
    return reply.body


class HomeLinkClient:
    """
    NFSv3 and MOUNTv3 calls against one hlfs server.
    """

    def __init__(self, rpc):
        self.rpc = rpc

    @defer.inlineCallbacks
    def exports(self):
        body = _accepted(
            (yield self.rpc.call(mount.PROGRAM, 3, 5)), "MOUNT EXPORT"
        )
        paths = []
        while body.bool():
            paths.append(body.opaque())
            while body.bool():
                body.opaque()
        return paths

    @defer.inlineCallbacks
    def mnt(self, export, cred):
        body = _accepted(
            (yield self.rpc.call(mount.PROGRAM, 3, 1, pack_opaque(export), cred)), "MOUNT MNT"
        )
        status = body.uint()
        if status:
            raise NFSCallError(f"MOUNT MNT {export!r}: status {status}")
        return body.opaque(64)

    @defer.inlineCallbacks
    def lookup(self, dirfh, name, cred):
        body = _accepted(
            (yield self.rpc.call(v3.PROGRAM, 3, 3, pack_opaque(dirfh) + pack_opaque(name), cred)),
            "NFS LOOKUP",
        )
        status = body.uint()
        if status != NFS3_OK:
            raise NFSCallError(f"NFS LOOKUP {name!r}: status {status}")
        return body.opaque(64)

    @defer.inlineCallbacks
    def readlink(self, fh, cred):
        body = _accepted(
            (yield self.rpc.call(v3.PROGRAM, 3, 5, pack_opaque(fh), cred)), "NFS READLINK"
        )
        status = body.uint()
        if status == NFS3ERR_INVAL:
            raise NFSCallError(
                "not a link: root from a privileged port sees each user's real mailbox as a "
                "regular file; give --gid HLFS_GID to read Table 2's link")
        if status != NFS3_OK:
            raise NFSCallError(f"NFS READLINK: status {status}")
        if body.bool():
            body.skip(84)
        return body.opaque(4096)

    @defer.inlineCallbacks
    def resolve(self, uid, gid, linkname=b"home", name=None, export=None):
        """
        Mount, look up C{linkname} (or the per-user link C{name}) and read
        it, all as the caller C{uid}/C{gid}.
        """
        cred = credential(uid, gid)
        if export is None:
            exports = yield self.exports()
            if not exports:
                raise NFSCallError("the server exports nothing")
            export = exports[0]
        root = yield self.mnt(export, cred)
        fh = yield self.lookup(root, name if name is not None else linkname, cred)
        return (yield self.readlink(fh, cred))


def parse_server(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def main(argv, prog="hlfs resolve"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Ask a running hlfs what its link resolves to for a caller, "
        "through MOUNT, LOOKUP and READLINK calls on the wire (NFSv3).",
    )
    parser.add_argument("--uid", type=int, required=True, help="caller's uid (AUTH_SYS)")
    parser.add_argument("--gid", type=int, default=None, help="caller's gid (default: the uid)")
    parser.add_argument(
        "--server", type=parse_server, default=("127.0.0.1", 0),
        help="HOST:PORT of the server (default: ask the local portmapper)",
    )
    parser.add_argument("--tcp", action="store_true", help="call over TCP instead of UDP")
    parser.add_argument("--linkname", default="home", help="the link's name (default: home)")
    parser.add_argument(
        "--name", default=None,
        help="resolve the per-user mailbox link NAME (root, and callers with gid HLFS_GID)",
    )
    parser.add_argument("--export", default=None, help="export path (default: the first one)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default: 5)")
    args = parser.parse_args(argv)
    gid = args.uid if args.gid is None else args.gid

    @defer.inlineCallbacks
    def resolve(reactor):
        host, port = args.server
        transport = "tcp" if args.tcp else "udp"
        if port == 0:
            port = yield getport(reactor, v3.PROGRAM, 3, transport, host=host)
            if not port:
                raise NFSCallError(f"hlfs is not registered with the portmapper on {host}")
        rpc = yield RPCClient.connect(reactor, host, port, transport, timeout=args.timeout)
        try:
            target = yield HomeLinkClient(rpc).resolve(
                args.uid,
                gid,
                linkname=os.fsencode(args.linkname),
                name=None if args.name is None else os.fsencode(args.name),
                export=None if args.export is None else os.fsencode(args.export),
            )
        finally:
            rpc.close()
        return target

    try:
        target = run_in_reactor(resolve)
    except (RPCError, NFSCallError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(target + b"\n")
    return 0


def status_main(argv, prog="hlfs status"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Show a running hlfs's status through its status RPC program: "
        "uptime, requests per procedure, cache and probe state, last reload.",
    )
    parser.add_argument(
        "--server", type=parse_server, default=("127.0.0.1", 0),
        help="HOST:PORT of the server (default: ask the local portmapper)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default: 5)")
    args = parser.parse_args(argv)

    @defer.inlineCallbacks
    def ask(reactor):
        host, port = args.server
        if port == 0:
            port = yield getport(reactor, status.PROGRAM, status.VERSION, "udp", host=host)
            if not port:
                raise NFSCallError(f"hlfs is not registered with the portmapper on {host}")
        rpc = yield RPCClient.connect(reactor, host, port, "udp", timeout=args.timeout)
        try:
            reply = yield rpc.call(status.PROGRAM, status.VERSION, 1)
        finally:
            rpc.close()
        return status.decode_pairs(_accepted(reply, "STATUS"))

    try:
        pairs = run_in_reactor(ask)
    except (RPCError, NFSCallError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        print(f"{name:<{width}}  {value}")
    return 0


def run_in_reactor(fn):
    """
    Run C{fn(reactor)} (which may return a Deferred) in the global reactor
    and return its result or raise its exception: for one-shot commands.
    """
    from twisted.internet import reactor

    outcome = []

    def go():
        d = defer.maybeDeferred(fn, reactor)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
