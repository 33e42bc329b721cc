"""
Bounds on what two server changes would gain, measured on the real server
with the change patched in at start-up (nothing in hlfs/ is modified):

  - C{rawsend}: UDP replies written with C{socket.sendto} directly instead
    of through Twisted's C{udp.Port.write} (which validates the address
    with C{isIPAddress}/C{isIPv6Address} on every datagram);
  - C{replycache}: an upper bound for a reply cache: any call whose bytes
    after the xid were seen before gets the same reply body without
    decoding or resolving anything.  Not a correct cache (it ignores link
    changes); it shows the cost of everything but the transport.

    WHAT_IF=rawsend,replycache .venv/bin/python benchmarks/what_if.py \\
        -n --pidfile= hlfs --no-mount --insecure --port P ...

takes C{twistd}'s arguments.
"""

import errno
import os
import sys

from hlfs.rpc import datagram, dispatch

CHANGES = set(filter(None, os.environ.get("WHAT_IF", "").split(",")))


def _raw_datagram_received(self, data, addr):
    reply = self.dispatcher.dispatch(data, addr)
    if reply is None:
        return
    if type(reply) is bytes:
        try:
            self.transport.socket.sendto(reply, addr)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOBUFS):
                raise
    else:
        reply.addCallback(self._send, addr)


def _with_reply_cache(dispatch_call):
    cache = {}

    def cached(self, data, peer):
        body = cache.get(data[4:])
        if body is not None:
            return data[:4] + body
        reply = dispatch_call(self, data, peer)
        if type(reply) is bytes and len(cache) < 100000:
            cache[data[4:]] = reply[4:]
        return reply

    return cached


def main():
    unknown = CHANGES - {"rawsend", "replycache"}
    if unknown:
        sys.exit(f"what_if.py: unknown change(s) {', '.join(sorted(unknown))}")
    if "rawsend" in CHANGES:
        datagram.RPCDatagramProtocol.datagramReceived = _raw_datagram_received
    if "replycache" in CHANGES:
        dispatch.Dispatcher.dispatch = _with_reply_cache(dispatch.Dispatcher.dispatch)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
