"""
A small asynchronous RPC client over UDP (with retransmission) or TCP:
what the C{hlfs} command, portmapper registration and the tests use.
"""

import os
import struct

from twisted.internet import defer, protocol, task
from twisted.internet.protocol import DatagramProtocol

from hlfs.rpc.message import NO_CREDENTIAL, decode_reply, encode_call
from hlfs.rpc.transport import LAST_FRAGMENT, MAX_RECORD, frame
from hlfs.xdr import XDRError


class RPCError(Exception):
    """
    A call was answered with an error, or not at all.
    """


class _Pending:
    def __init__(self):
        self.calls = {}
        self.xid = struct.unpack(">I", os.urandom(4))[0]

    def next_xid(self):
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        return self.xid

    def deliver(self, data):
        try:
            reply = decode_reply(data)
        except XDRError:
            return
        d = self.calls.pop(reply.xid, None)
        if d is not None:
            d.callback(reply)

    def fail_all(self, reason):
        calls, self.calls = self.calls, {}
        for d in calls.values():
            d.errback(RPCError(reason))


class _UDPClient(DatagramProtocol):
    noisy = False

    def __init__(self, pending):
        self.pending = pending

    def datagramReceived(self, data, addr):
        self.pending.deliver(data)


class _TCPClient(protocol.Protocol):
    def __init__(self, pending):
        self.pending = pending
        self.buffer = b""
        self.fragments = []

    def dataReceived(self, data):
        self.buffer += data
        while len(self.buffer) >= 4:
            (mark,) = struct.unpack_from(">I", self.buffer)
            length = mark & ~LAST_FRAGMENT
            if length > MAX_RECORD:
                self.transport.loseConnection()
                return
            if len(self.buffer) < 4 + length:
                return
            self.fragments.append(self.buffer[4 : 4 + length])
            self.buffer = self.buffer[4 + length :]
            if mark & LAST_FRAGMENT:
                record, self.fragments = b"".join(self.fragments), []
                self.pending.deliver(record)

    def connectionLost(self, reason):
        self.pending.fail_all(f"connection lost: {reason.getErrorMessage()}")


class RPCClient:
    """
    Calls to one server address.  Use L{connect} to make one.

    @ivar timeout: seconds to wait for a reply; over UDP the call is sent
        again every C{retransmit} seconds meanwhile.
    """

    def __init__(self, reactor, host, port, transport, timeout=5.0, retransmit=1.0):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.transport = transport
        self.timeout = timeout
        self.retransmit = retransmit
        self.pending = _Pending()
        self._port = None
        self._proto = None

    @classmethod
    def connect(cls, reactor, host, port, transport="udp", **kw):
        """
        Return a Deferred firing with a ready L{RPCClient}.
        """
        client = cls(reactor, host, port, transport, **kw)
        if transport == "udp":
            client._proto = _UDPClient(client.pending)
            client._port = reactor.listenUDP(0, client._proto, interface="127.0.0.1" if host.startswith("127.") else "")
            return defer.succeed(client)
        if transport != "tcp":
            raise ValueError(f"unknown transport {transport!r}")
        d = protocol.ClientCreator(reactor, _TCPClient, client.pending).connectTCP(
            host, port, timeout=kw.get("timeout", 5.0)
        )

        def connected(proto):
            client._proto = proto
            return client

        return d.addCallback(connected)

    def call(self, prog, vers, proc, args=b"", cred=None):
        """
        Call a procedure; return a Deferred firing with the
        L{hlfs.rpc.message.Reply}, or failing with L{RPCError} on timeout.
        Cancelling it forgets the call.
        """
        xid = self.pending.next_xid()
        data = encode_call(xid, prog, vers, proc, cred or NO_CREDENTIAL, args)

        def forget(d):
            # Cancelled (by the timeout or the caller): a late reply finds
            # no call to answer.
            self.pending.calls.pop(xid, None)

        d = defer.Deferred(canceller=forget)
        self.pending.calls[xid] = d

        try:
            if self.transport == "udp":
                self._port.write(data, (self.host, self.port))
            else:
                self._proto.transport.write(frame(data))
        except OSError as e:
            self.pending.calls.pop(xid, None)
            return defer.fail(RPCError(f"cannot send to {self.host}:{self.port}: {e}"))

        def timed_out(result, timeout):
            raise RPCError(f"no reply from {self.host}:{self.port} in {timeout:g} s")

        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=timed_out)
        if self.transport == "udp":
            resend = task.LoopingCall(self._resend, data)
            resend.clock = self.reactor
            resend.start(self.retransmit, now=False)
            d.addBoth(lambda result: (resend.running and resend.stop(), result)[1])
        return d

    def _resend(self, data):
        try:
            self._port.write(data, (self.host, self.port))
        except OSError:
            # Like a datagram lost on the way: the timeout answers.
            pass

    def close(self):
        if self._port is not None:
            return self._port.stopListening()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.loseConnection()
        return None

