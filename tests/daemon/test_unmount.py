"""
Unmounting at shutdown (L{hlfs.daemon.kernel.KernelMount.unmount}): the
retries while the mount is busy, the lazy unmount after them, and the
failure paths, with real mounts and umount(8) in a private mount
namespace (L{tests.support.unmount_scenario}).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

SCENARIO = os.path.join(os.path.dirname(__file__), os.pardir, "support", "unmount_scenario.py")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing"),
]


def unmount(tmp_path, state, tries=3):
    directory = tmp_path / "mail"
    directory.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         sys.executable, SCENARIO, str(directory), state, str(tries)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1]), str(directory)


def test_an_idle_mount_is_unmounted_at_once(tmp_path):
    got, directory = unmount(tmp_path, "idle")
    assert got["result"] is True and not got["still_mounted"]
    assert got["log"] == [f"unmounted {directory}"]


def test_a_busy_mount_is_retried_then_unmounted_lazily(tmp_path):
    got, directory = unmount(tmp_path, "busy", tries=3)
    assert got["result"] is True and not got["still_mounted"]
    retries = [line for line in got["log"] if line.startswith(f"unmount of {directory} failed")]
    assert len(retries) == 3 and all(line.endswith("; retrying") for line in retries), got["log"]
    assert "busy" in retries[0], got["log"]
    assert got["log"][3:] == [f"{directory} was busy: unmounted lazily"]


def test_a_mount_that_cannot_be_unmounted_is_one_error(tmp_path):
    got, directory = unmount(tmp_path, "absent", tries=2)
    assert got["result"] is False
    assert len(got["log"]) == 3, got["log"]
    assert got["log"][2].startswith(f"cannot unmount {directory}: ")
    assert "not mounted" in got["log"][2], got["log"]


def test_a_mount_already_gone_needs_no_umount(tmp_path):
    got, _ = unmount(tmp_path, "gone")
    assert got == {"result": True, "log": [], "still_mounted": False}
