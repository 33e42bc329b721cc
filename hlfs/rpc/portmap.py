"""
Portmapper client (RFC 1833 version 2): GETPORT, and the SET/UNSET pair
that registers a server.
"""

import struct

from twisted.internet import defer

from hlfs.rpc.client import RPCClient, RPCError
from hlfs.rpc.message import AUTH_SYS, SUCCESS, Credential

PROGRAM = 100000
VERSION = 2
PORT = 111

SET = 1
UNSET = 2
GETPORT = 3
DUMP = 4

IPPROTO = {"tcp": 6, "udp": 17}
_MAPPING = struct.Struct(">IIII")

# rpcbind treats SET/UNSET from loopback as the owner "superuser" only with
# a credential; AUTH_SYS uid 0 is what the C library's pmap_set() sends.
_ROOT = Credential(AUTH_SYS, 0, 0, (), b"localhost")


def _bool_result(reply, what):
    if reply.stat != SUCCESS:
        raise RPCError(f"portmapper {what}: {reply.reject or reply.stat}")
    return reply.body.bool()


@defer.inlineCallbacks
def _call(reactor, proc, args, host="127.0.0.1", timeout=3.0):
    client = yield RPCClient.connect(reactor, host, PORT, "udp", timeout=timeout)
    try:
        reply = yield client.call(PROGRAM, VERSION, proc, args, _ROOT)
    finally:
        client.close()
    return reply


@defer.inlineCallbacks
def getport(reactor, prog, vers, transport, host="127.0.0.1", timeout=3.0):
    """
    Return the port registered for C{prog}/C{vers} over C{transport}, or 0.
    """
    reply = yield _call(
        reactor, GETPORT, _MAPPING.pack(prog, vers, IPPROTO[transport], 0), host, timeout
    )
    if reply.stat != SUCCESS:
        raise RPCError(f"portmapper GETPORT: {reply.reject or reply.stat}")
    return reply.body.uint()


@defer.inlineCallbacks
def set_mapping(reactor, prog, vers, transport, port, timeout=3.0):
    """
    Register C{prog}/C{vers}/C{transport} at C{port}, replacing whatever a
    previous instance left: rpcbind refuses a SET over an existing mapping.
    """
    args = _MAPPING.pack(prog, vers, IPPROTO[transport], port)
    yield _call(reactor, UNSET, args, timeout=timeout)
    ok = _bool_result((yield _call(reactor, SET, args, timeout=timeout)), "SET")
    return ok


@defer.inlineCallbacks
def unset_mapping(reactor, prog, vers, timeout=3.0):
    """
    Remove every mapping of C{prog}/C{vers}.
    """
    reply = yield _call(reactor, UNSET, _MAPPING.pack(prog, vers, 0, 0), timeout=timeout)
    return _bool_result(reply, "UNSET")
