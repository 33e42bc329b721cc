"""
RPC over UDP datagrams, feeding one L{hlfs.rpc.dispatch.Dispatcher}:
each datagram is one call, and a reply that cannot be sent is lost as a
datagram may be, for the client to retransmit.  L{hlfs.rpc.transport} is
the TCP side.
"""

from twisted.internet.protocol import DatagramProtocol


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
