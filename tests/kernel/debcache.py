"""
Debian packages for the guest, fetched with C{apt-get download} and
unpacked with C{dpkg-deb -x}, never installed on the host.

The guest's root is an overlay of the host's, so a scenario copies an
unpacked tree over C{/} and has the package's files without its
maintainer scripts (the scenario does what they would: accounts,
configuration, queue directories).  Packages that conflict on the host
(C{postfix} and the C{exim4-*} packages) live side by side in the cache,
each set in its own tree, and each guest copies only the one it runs.

Shared libraries a package needs that the host lacks come along: the
C{lib*} packages among its dependencies, recursively.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kernelcache import default_cache_dir

#: The package sets the MTA scenarios use, by name.  OpenSMTPD and
#: sendmail conflict with Postfix (and each other): each is a set of its
#: own, which a guest copies over its root only once Postfix has stopped
#: (sendmail's only for its C{mail.local}).
SETS = {
    "postfix": ("postfix", "s-nail"),
    "exim": ("exim4-base", "exim4-config", "exim4-daemon-light", "s-nail"),
    "agents": ("procmail", "dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "mutt"),
    "opensmtpd": ("opensmtpd",),
    "sendmail": ("sendmail-bin",),
}


class PackageFetchError(Exception):
    """
    A package could not be fetched or unpacked.
    """


def installed(package):
    """
    @return: whether the host has C{package} installed.
    """
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=60
    )
    return result.returncode == 0 and result.stdout.endswith("ok installed")


def library_dependencies(package):
    """
    @return: the shared-library packages (C{lib*}) C{package} depends on;
        of alternatives, the first.
    """
    out = subprocess.run(
        ["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-enhances",
         "--no-conflicts", "--no-breaks", "--no-replaces", package],
        capture_output=True, text=True, timeout=60,
    ).stdout
    found = []
    alternative = False
    for line in out.splitlines():
        match = re.match(r"\s*(\|?)(?:Pre)?Depends:\s*(\S+)", line)
        if match is None:
            continue
        name = match.group(2)
        if not alternative and name.startswith("lib") and not name.startswith("<"):
            found.append(name)
        alternative = bool(match.group(1))
    return found


def closure(packages):
    """
    @return: C{packages} and every library package they need that the host
        does not have, in a stable order.
    """
    wanted = list(packages)
    seen = set(wanted)
    i = 0
    while i < len(wanted):
        for dependency in library_dependencies(wanted[i]):
            if dependency not in seen:
                seen.add(dependency)
                if not installed(dependency):
                    wanted.append(dependency)
        i += 1
    return wanted


def fetch_set(name, cache_dir=None, log=print):
    """
    Return the unpacked tree of the package set C{name}, fetching and
    unpacking it the first time.

    @raise PackageFetchError: apt could not download a package.
    """
    cache_dir = Path(cache_dir or default_cache_dir()) / "packages"
    target = cache_dir / name
    marker = target / ".complete"
    if marker.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    packages = closure(SETS[name])
    downloads = Path(tempfile.mkdtemp(prefix="download-", dir=cache_dir))
    staging = Path(tempfile.mkdtemp(prefix="stage-", dir=cache_dir))
    os.chmod(staging, 0o755)
    try:
        # apt drops privileges to _apt for downloads.
        os.chmod(downloads, 0o777)
        log(f"packages: apt-get download {' '.join(packages)}")
        result = subprocess.run(
            ["apt-get", "download", "-q", *packages],
            cwd=downloads, capture_output=True, text=True, timeout=600,
        )
        if result.returncode != 0:
            raise PackageFetchError(f"apt-get download {' '.join(packages)} failed: {result.stderr.strip()}")
        debs = sorted(downloads.glob("*.deb"))
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=600)
        (staging / ".complete").write_text("".join(f"{deb.name}\n" for deb in debs))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    log(f"packages: {name} ready: {target}")
    return target


def versions(tree):
    """
    @return: the C{.deb} file names a tree was unpacked from.
    """
    return (Path(tree) / ".complete").read_text().split()
