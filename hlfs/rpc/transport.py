"""
RPC over UDP datagrams and over TCP with record marking (RFC 5531
section 11), both feeding one L{hlfs.rpc.dispatch.Dispatcher}.
"""

import struct

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

_MARK = struct.Struct(">I")
LAST_FRAGMENT = 0x80000000

# No call to this server needs more; a bigger record is an attack or a bug.
MAX_RECORD = 64 * 1024


def frame(reply):
    """
    Return C{reply} as one last fragment of a record.
    """
    return _MARK.pack(LAST_FRAGMENT | len(reply)) + reply


class RPCDatagramProtocol(DatagramProtocol):
    """
    Each datagram is one call; each reply goes back to its sender.
    """

    noisy = False

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._sendto = None

    def startProtocol(self):
        # Write on the socket itself: the port's write checks the address
        # of every datagram, and ours come straight from recvfrom.
        self._sendto = self.transport.socket.sendto

    def datagramReceived(self, data, addr):
        reply = self.dispatcher.dispatch(data, addr)
        if reply is None:
            return
        if type(reply) is bytes:
            self._send(reply, addr)
        else:
            reply.addCallback(self._send, addr)

    def _send(self, reply, addr):
        if reply is None or self.transport is None:
            return
        try:
            self._sendto(reply, addr)
        except OSError:
            # A full socket buffer or a client gone: the reply is lost as a
            # datagram may be, and the client retransmits.
            pass


class RPCStreamProtocol(Protocol):
    """
    Records made of one or more fragments, each a call.  The replies of all
    the calls in one read leave in one write.
    """

    log = Logger()

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._buffer = b""
        self._fragments = []
        self._record_size = 0

    def connectionMade(self):
        self._peer = self.transport.getPeer()
        self._addr = (self._peer.host, self._peer.port)

    def dataReceived(self, data):
        buffer = self._buffer + data if self._buffer else data
        replies = []
        pos = 0
        end = len(buffer)
        closing = False
        while end - pos >= 4:
            (mark,) = _MARK.unpack_from(buffer, pos)
            length = mark & ~LAST_FRAGMENT
            if self._record_size + length > MAX_RECORD:
                self.log.warn(
                    "closing the connection from {peer}: a {size}-byte record "
                    "exceeds the {limit}-byte limit",
                    peer=self._addr, size=self._record_size + length, limit=MAX_RECORD,
                )
                closing = True
                break
            if end - pos - 4 < length:
                break
            fragment = buffer[pos + 4 : pos + 4 + length]
            pos += 4 + length
            if not mark & LAST_FRAGMENT:
                self._fragments.append(fragment)
                self._record_size += length
                continue
            if self._fragments:
                self._fragments.append(fragment)
                fragment = b"".join(self._fragments)
                self._fragments = []
                self._record_size = 0
            reply = self.dispatcher.dispatch(fragment, self._addr)
            if reply is None:
                continue
            if type(reply) is bytes:
                replies.append(frame(reply))
            else:
                reply.addCallback(self._send)
        self._buffer = b"" if closing else buffer[pos:]
        if replies:
            self.transport.writeSequence(replies)
        if closing:
            self._fragments = []
            self.transport.loseConnection()

    def _send(self, reply):
        if reply is not None and self.transport.connected:
            self.transport.write(frame(reply))


class RPCStreamFactory(Factory):
    noisy = False

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def buildProtocol(self, addr):
        p = RPCStreamProtocol(self.dispatcher)
        p.factory = self
        return p
