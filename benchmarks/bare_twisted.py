"""
The floor of a Twisted RPC server: a datagram and a stream protocol that
answer every call with a fixed successful empty reply (the call's xid, no
decoding).  What hlfs costs beyond this is its per-request work.

    .venv/bin/python benchmarks/bare_twisted.py PORT

Serves UDP and TCP on 127.0.0.1:PORT until SIGTERM.
"""

import struct
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol  # noqa: E402

# xid follows; REPLY, MSG_ACCEPTED, verifier AUTH_NONE (empty), SUCCESS
_TAIL = struct.pack(">IIIII", 1, 0, 0, 0, 0)


class Bare(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data[:4] + _TAIL, addr)


class BareStream(Protocol):
    _buf = b""

    def dataReceived(self, data):
        buf = self._buf + data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            n = int.from_bytes(buf[pos:pos + 4], "big") & 0x7FFFFFFF
            if len(buf) - pos - 4 < n:
                break
            out.append(b"\x80\x00\x00\x18" + buf[pos + 4:pos + 8] + _TAIL)
            pos += 4 + n
        self._buf = buf[pos:]
        if out:
            self.transport.writeSequence(out)


def main(port):
    reactor.listenUDP(port, Bare(), interface="127.0.0.1")
    reactor.listenTCP(port, Factory.forProtocol(BareStream), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
