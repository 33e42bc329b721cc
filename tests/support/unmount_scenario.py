"""
Test-only: L{hlfs.daemon.kernel.KernelMount.unmount} against a real mount
and the real umount(8), in a mount namespace of its own.

    unshare --mount --propagation private \\
        python tests/support/unmount_scenario.py DIRECTORY STATE TRIES

STATE is C{idle} (a tmpfs on DIRECTORY), C{busy} (a tmpfs with a process
inside it), C{absent} (nothing mounted) or C{gone} (nothing mounted, and
nothing listed).  The host kernel has no NFS client, so the list of
mounts KernelMount reads is a file standing in for /proc/mounts that
lists DIRECTORY as our NFS mount (unless C{gone}); the mount, the busy
process and umount are real.  Prints one JSON object: C{result}, the
C{log} lines, and whether DIRECTORY is C{still_mounted} in the real
/proc/self/mounts.
"""

import json
import os
import subprocess
import sys

from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from hlfs.daemon.kernel import KernelMount
from hlfs.daemon.mounts import find_mount, parse_proc_mounts


@defer.inlineCallbacks
def main(reactor, directory, state, tries):
    lines = []
    globalLogPublisher.addObserver(
        lambda event: lines.append(formatEvent(event))
        if event.get("log_namespace", "").startswith("hlfs") else None
    )
    listed = os.path.join(os.path.dirname(directory), "mounts")
    with open(listed, "w") as f:
        if state != "gone":
            f.write(f"127.0.0.1:/mail {directory} nfs ro,vers=3,port=2049,lookupcache=none 0 0\n")
    busy = None
    if state in ("idle", "busy"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
    if state == "busy":
        busy = subprocess.Popen(["sleep", "120"], cwd=directory)
    mount = KernelMount(reactor, directory, "/mail", "127.0.0.1", proc_mounts=listed)
    try:
        result = yield mount.unmount(tries=int(tries), delay=0.01)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    with open("/proc/self/mounts") as f:
        still = find_mount(parse_proc_mounts(f.read()), directory)
    print(json.dumps({"result": result, "log": lines, "still_mounted": still is not None}))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
