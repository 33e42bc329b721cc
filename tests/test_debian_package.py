"""
The Debian package (C{debian/}), built with C{dpkg-buildpackage -us -uc}
from a clean copy of the checkout with Debian 12's own Twisted,
dh-python and pybuild-plugin-pyproject, offline, and installed on this
machine with C{apt-get install ./hlfs_*.deb} (the C{debian_package}
fixture, which purges it at the end).

  - Its files: the units, the manual pages, the conffile, the examples,
    the plugin, C{/var/alt_mail} mode 1777, lostmail's state directory
    mode 0700; no plugin cache of the build's own.
  - lintian says nothing that its overrides do not explain.
  - Installed: the group, nothing enabled or started, Twisted's plugin
    cache made by python3-twisted's trigger, Debian's C{twistd3} finds the
    plugin without a warning, the commands and manual pages are found,
    and the daemon runs on Debian's Python and Twisted and answers over
    NFS.

The rest (the packaged unit under systemd, mail through Postfix, purge)
is scenario 7 of the kernel tier, in a guest booted on this machine's
root file system, where the package is installed too.
"""

import grp
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hlfs._version import VERSION
from tests.support.server import HLFS_GID, make_base

pytestmark = [pytest.mark.slow, pytest.mark.root(reason="installs the package on this machine")]

UNITS = ["hlfs-lostmail.service", "hlfs-lostmail.timer", "hlfs.service", "hlfs@.service"]
DEBIAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(*argv, check=True, **kwargs):
    kwargs.setdefault("env", DEBIAN_ENV)
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL, **kwargs)
    if check:
        assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result


def contents(deb):
    """
    C{{path: (mode, owner)}} of C{dpkg -c}.
    """
    found = {}
    for line in run("dpkg", "-c", deb).stdout.splitlines():
        fields = line.split()
        found[fields[5].removeprefix(".")] = (fields[0], fields[1])
    return found


def test_file_list(debian_package):
    files = contents(debian_package.deb)
    expected = [
        "/etc/hlfs/lostmail.conf",
        *(f"/lib/systemd/system/{unit}" for unit in UNITS),
        "/usr/bin/hlfs", "/usr/sbin/hlfsd",
        "/usr/share/man/man1/hlfs.1.gz", "/usr/share/man/man8/hlfsd.8.gz",
        "/usr/share/man/man8/twistd-hlfs.8.gz",
        "/usr/lib/python3/dist-packages/twisted/plugins/hlfs_plugin.py",
        "/usr/lib/python3/dist-packages/hlfs/cli/twistd.py",
        "/usr/share/doc/hlfs/README.Debian", "/usr/share/doc/hlfs/copyright",
        "/usr/share/doc/hlfs/examples/prometheus/hlfs.rules.yml",
        "/usr/share/doc/hlfs/examples/HLFS-GROUP.md",
    ]
    assert [path for path in expected if path not in files] == []
    assert files["/var/alt_mail/"] == ("drwxrwxrwt", "root/root")
    assert files["/var/lib/hlfs/lostmail/"] == ("drwx------", "root/root")
    assert not [p for p in files if p.endswith("dropin.cache") or "__pycache__" in p]
    assert not [p for p in files if p.startswith("/usr/local")]
    # The units are installed for real, not as examples too.
    assert not [p for p in files if p.startswith("/usr/share/doc/hlfs/examples/")
                and p.endswith((".service", ".timer"))]


def test_built_offline_with_debians_twisted(debian_package):
    log = debian_package.build_log
    assert "--no-isolation" in log and not re.findall(r"Collecting|Downloading", log)
    control = run("dpkg-deb", "-f", debian_package.deb, "Version", "Depends").stdout
    assert f"Version: {VERSION}\n" in control
    for dependency in ("python3-twisted", "python3-zope.interface", "python3-service-identity",
                       "python3-prometheus-client", "nfs-common", "rpcbind"):
        assert dependency in control


def test_lintian_says_nothing_unexplained(debian_package):
    if shutil.which("lintian") is None:
        pytest.fail("lintian is missing: scripts/run-tests installs it")
    result = run("lintian", "--pedantic", "-I", "--show-overrides", debian_package.changes,
                 check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line and "running with root privileges" not in line]
    unexplained = [line for line in lines if line[:2] in ("E:", "W:", "I:", "P:", "X:")]
    assert unexplained == [], "\n".join(lines)
    # Each override is said why (its comment, shown as N: lines before it).
    overridden = [line for line in lines if line.startswith("O:")]
    assert overridden
    overrides = Path(__file__).resolve().parent.parent / "debian" / "hlfs.lintian-overrides"
    for block in overrides.read_text().strip().split("\n\n"):
        assert block.startswith("#"), block


def test_installed_as_debian_installs_a_daemon(debian_package):
    group = grp.getgrnam("hlfs")
    assert group.gr_gid < 1000
    st = os.stat("/var/alt_mail")
    assert stat.S_IMODE(st.st_mode) == 0o1777
    st = os.stat("/var/lib/hlfs/lostmail")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "hlfs").stdout
    assert "/etc/hlfs/lostmail.conf" in conffiles
    config = Path("/etc/hlfs/lostmail.conf").read_text()
    assert "\ntextfile = /var/lib/prometheus/node-exporter/hlfs_lostmail.prom\n" in config
    # Nothing enabled: the mount is the administrator's step.
    for unit in UNITS:
        assert Path("/lib/systemd/system", unit).exists()
        enabled = list(Path("/etc/systemd/system").rglob(unit))
        assert enabled == [], enabled
    # Twisted's plugin cache, made by python3-twisted's trigger, knows it.
    cache = Path("/usr/lib/python3/dist-packages/twisted/plugins/dropin.cache")
    assert b"hlfs_plugin" in cache.read_bytes()


def test_debians_twistd3_and_the_commands(debian_package):
    help_text = run("twistd3", "hlfs", "--help")
    assert "--probe-deadline" in help_text.stdout
    # conch's CryptographyDeprecationWarning lines are gone.
    assert help_text.stderr == ""
    assert run("hlfs", "--version").stdout.strip() == VERSION
    assert run("hlfsd", "-v").stdout.strip() == f"hlfsd (hlfs) {VERSION}"
    assert run("man", "-w", "hlfsd").stdout.strip() == "/usr/share/man/man8/hlfsd.8.gz"
    assert run("man", "-w", "twistd-hlfs").stdout.strip() == "/usr/share/man/man8/twistd-hlfs.8.gz"


def test_the_units_verify_and_score(debian_package):
    result = run("systemd-analyze", "verify", *(f"/lib/systemd/system/{u}" for u in UNITS),
                 check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for unit in ("hlfs.service", "hlfs@.service"):
        out = run("systemd-analyze", "security", "--offline=yes", f"/lib/systemd/system/{unit}",
                  check=False).stdout
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out).group(1)
        assert f"from 9.6 to {score}" in readme


def test_the_packaged_daemon_serves_on_debians_python(debian_package, tmp_path):
    """
    The daemon as the units start it (hlfs twistd, Debian's python3 and
    Twisted 22.4), unprivileged options aside, answers over NFS.
    """
    base = make_base()
    proc = subprocess.Popen(
        ["/usr/bin/hlfs", "twistd", "-n", "--pidfile=", f"--logfile={base}/hlfs.log", "hlfs",
         "--no-mount", "--no-portmap", "--insecure", "--no-verify", "--port-file",
         f"{base}/port", "--password-file", f"{base}/passwd", "--alt-dir", f"{base}/alt_mail",
         "--group", str(HLFS_GID)],
        cwd=base, env=DEBIAN_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        port = base / "port"
        for _ in range(300):
            if port.exists() and port.read_text().strip():
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        out = run("/usr/bin/hlfs", "resolve", "--uid", "1002",
                  "--server", f"127.0.0.1:{port.read_text().strip()}").stdout
        assert out.strip() == f"{base}/home/bob/.mailspool"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == "", err
    log = (base / "hlfs.log").read_text()
    assert "twistd 22.4" in log and "Traceback" not in log
