"""
Portmapper client (RFC 1833 version 2): GETPORT, SET and UNSET.

PMAPPROC_UNSET removes a program version's mappings for every transport
at once, so a registration unsets first and then sets each transport.
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

IPPROTO = {"tcp": 6, "udp": 17}
_MAPPING = struct.Struct(">IIII")

# rpcbind lets a loopback caller with AUTH_SYS uid 0 (what the C library's
# pmap_set() sends) replace mappings.
_ROOT = Credential(AUTH_SYS, 0, 0, (), b"localhost")


class Portmapper:
    """
    Calls to the portmapper on C{host}, over one UDP socket.
    """

    def __init__(self, client):
        self.client = client

    @classmethod
    @defer.inlineCallbacks
    def connect(cls, reactor, host="127.0.0.1", timeout=3.0):
        client = yield RPCClient.connect(reactor, host, PORT, "udp", timeout=timeout)
        return cls(client)

    def close(self):
        self.client.close()

    @defer.inlineCallbacks
    def _call(self, proc, args):
        reply = yield self.client.call(PROGRAM, VERSION, proc, args, _ROOT)
        if reply.stat != SUCCESS:
            raise RPCError(f"portmapper procedure {proc}: {reply.reject or reply.stat}")
        return reply.body

    @defer.inlineCallbacks
    def getport(self, prog, vers, transport):
        body = yield self._call(GETPORT, _MAPPING.pack(prog, vers, IPPROTO[transport], 0))
        return body.uint()

    @defer.inlineCallbacks
    def set(self, prog, vers, transport, port):
        body = yield self._call(SET, _MAPPING.pack(prog, vers, IPPROTO[transport], port))
        return body.bool()

    @defer.inlineCallbacks
    def unset(self, prog, vers):
        body = yield self._call(UNSET, _MAPPING.pack(prog, vers, 0, 0))
        return body.bool()


@defer.inlineCallbacks
def getport(reactor, prog, vers, transport, host="127.0.0.1", timeout=3.0):
    """
    Return the port registered for C{prog}/C{vers} over C{transport}, or 0.
    """
    pm = yield Portmapper.connect(reactor, host, timeout)
    try:
        port = yield pm.getport(prog, vers, transport)
    finally:
        pm.close()
    return port
