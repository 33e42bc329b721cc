"""
Test-only NFS load: READLINK the home link over and over, on the wire
(UDP), for a given time, and report every answer and every failure.

    python tests/support/nfs_readlink_loop.py PORT UID SECONDS READY_FILE

Touches READY_FILE once the first READLINK has been answered.  Prints one
line per call, C{ok <elapsed> <target>} or C{fail <elapsed> <error>}, then
C{done <ok> <failed>}.
"""

import sys

from twisted.internet import defer, task

from hlfs.cli.query import HomeLinkClient, credential
from hlfs.rpc.client import RPCClient


@defer.inlineCallbacks
def main(reactor, port, uid, seconds, ready):
    rpc = yield RPCClient.connect(reactor, "127.0.0.1", int(port), "udp", timeout=2.0)
    client = HomeLinkClient(rpc)
    cred = credential(int(uid), int(uid))
    exports = yield client.exports()
    root = yield client.mnt(exports[0], cred)
    fh = yield client.lookup(root, b"home", cred)
    start = reactor.seconds()
    ok = failed = 0
    while reactor.seconds() - start < float(seconds):
        elapsed = reactor.seconds() - start
        try:
            target = yield client.readlink(fh, cred)
        except Exception as e:
            failed += 1
            print(f"fail {elapsed:.3f} {e}", flush=True)
        else:
            ok += 1
            print(f"ok {elapsed:.3f} {target.decode(errors='replace')}", flush=True)
            if ok == 1:
                open(ready, "w").close()
        yield task.deferLater(reactor, 0.01, lambda: None)
    rpc.close()
    print(f"done {ok} {failed}", flush=True)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
