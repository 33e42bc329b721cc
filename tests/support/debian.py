"""
The Debian package, built and installed as CI does: C{dpkg-buildpackage
-us -uc} in a clean copy of the checkout (its tracked files and new ones,
nothing ignored), with a plain Debian environment (no virtual environment
or other Python on C{PATH}), then C{apt-get install ./hlfs_*.deb} on this
machine.  The session fixture that does it (C{tests/conftest.py}) purges
the package at the end, restoring the machine.

The kernel tier's guests boot on this machine's root file system, so
what the package installed is in every guest too: scenario 7 uses it.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A Debian build's environment: nothing of the test run's.
BUILD_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}

@dataclass
class Package:
    deb: Path
    changes: Path
    build_log: str
    installed: bool


def run(argv, cwd=None, timeout=900, check=True, env=None):
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env=env,
    )
    if check:
        assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def source_files():
    """
    The checkout's files as a clean clone would hold them, with any not
    committed yet: tracked and untracked, never ignored ones.
    """
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=ROOT).stdout
        return [name for name in out.split("\0") if name and (ROOT / name).exists()]
    ignored = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "cache"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not ignored & set(p.relative_to(ROOT).parts)]


def build(directory):
    """
    Build the package in C{directory}/hlfs; return the L{Package}.
    dpkg-buildpackage checks debian/control's build dependencies first
    (scripts/run-tests installs them).
    """
    source = directory / "hlfs"
    for name in source_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    (source / "debian" / "rules").chmod(0o755)
    result = run(["dpkg-buildpackage", "-us", "-uc"], cwd=source,
                 env={**BUILD_ENV, "HOME": str(directory)})
    [deb] = directory.glob("hlfs_*_all.deb")
    [changes] = directory.glob("hlfs_*.changes")
    return Package(deb, changes, result.stdout + result.stderr, False)


def as_root(argv):
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def installed_version():
    result = run(["dpkg-query", "-W", "-f=${Status} ${Version}", "hlfs"], check=False)
    fields = result.stdout.split()
    return fields[-1] if result.returncode == 0 and "installed" in fields[:3] else None


def install(package):
    """
    C{apt-get install ./hlfs_*.deb}, as the README says.
    """
    run(as_root(["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", "-q",
                 "--no-install-recommends", f"./{package.deb.name}"]),
        cwd=package.deb.parent, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    package.installed = True


def purge():
    run(as_root(["apt-get", "-o", "DPkg::Lock::Timeout=900", "purge", "-y", "-q", "hlfs"]),
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
