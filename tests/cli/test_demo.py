"""
The README's quick start: `hlfs demo` shows, over NFS on the wire, that
different uids see different `home` targets.
"""

import re
import subprocess

from tests.support.server import BIN


def test_demo_shows_per_uid_targets():
    out = subprocess.run([str(BIN / "hlfs"), "demo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    targets = dict(re.findall(r"uid (\d+) \([^)]*\)\s+home -> (\S+)", out.stdout))
    assert targets["2001"].endswith("/home/alice/.mailspool")
    assert targets["2002"].endswith("/home/bob/.mailspool")
    assert targets["9999"].endswith("/alt_mail")
    assert re.search(r"gid HLFS_GID\s+home -> \.$", out.stdout, re.M)
    # A system account gets the alternate spool; root sees every mailbox.
    assert targets["120"].endswith("/alt_mail")
    assert targets["0"] == "."
    assert re.search(r"uid 0 \(root\), gid HLFS_GID\s+alice -> \S+/home/alice/\.mailspool/alice$", out.stdout, re.M)
