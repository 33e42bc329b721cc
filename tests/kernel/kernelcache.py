"""
Fetch a Debian kernel package and keep what the test guest needs.

The package is fetched with C{apt-get download} (never installed) and
unpacked once into a cache directory: the uncompressed kernel (booting it
instead of the compressed image saves seconds under emulation), its
configuration, and the modules the guest loads, with their dependencies.
"""

import lzma
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

#: The meta package naming the current kernel of the release.
META_PACKAGE = "linux-image-amd64"

#: Modules the guest loads explicitly; their dependencies come along.
#: virtio and virtio_pci: the devices; virtio_net: eth0 for the NFS client;
#: 9p/9pnet_virtio: the host's root and the writable shares; overlay: a
#: writable root over the read-only host root; nfsv3/nfsv2: the client.
WANTED_MODULES = (
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "overlay",
    "nfsv3",
    "nfsv2",
)

CACHE_ENV = "HLFS_KERNEL_CACHE"


class KernelFetchError(Exception):
    """
    The kernel package could not be fetched or unpacked.
    """


@dataclass(frozen=True)
class Kernel:
    """
    An unpacked kernel ready to boot.

    @ivar package: the Debian package it came from.
    @ivar release: the kernel release (C{uname -r}).
    @ivar image: the file to pass to C{qemu -kernel}.
    @ivar modules: the modules to load, in load order.
    @ivar config: the kernel's build configuration.
    """

    package: str
    release: str
    image: Path
    modules: tuple
    config: Path


def default_cache_dir():
    """
    @return: C{$HLFS_KERNEL_CACHE}, else C{tests/kernel/cache} next to
        this file (ignored by git).
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(__file__).resolve().parent / "cache"


def module_dependencies(ko_bytes):
    """
    Read the C{depends=} entry of a module's C{.modinfo} section.

    @param ko_bytes: the content of an uncompressed C{.ko} file.
    @return: the module names it depends on.
    """
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko_bytes)
    if match is None or not match.group(1):
        return []
    return match.group(1).decode("ascii").split(",")


def load_order(wanted, dependencies):
    """
    Order modules so that each comes after everything it depends on.

    @param wanted: the modules asked for.
    @param dependencies: a callable from a module name to its direct
        dependencies.
    @return: a list of module names, dependencies first.
    """
    order = []
    seen = set()

    def visit(name, path):
        if name in seen:
            return
        if name in path:
            raise KernelFetchError(f"module dependency cycle: {' -> '.join(path + (name,))}")
        for dependency in dependencies(name):
            visit(dependency, path + (name,))
        seen.add(name)
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def decompress_bzimage(data):
    """
    Extract the uncompressed ELF kernel from a bzImage.

    @param data: the bzImage's bytes.
    @return: the ELF image's bytes, or L{None} if no supported payload
        (xz or gzip) holds an ELF file.
    """
    for magic, decompress in ((b"\xfd7zXZ\x00", _xz), (b"\x1f\x8b\x08\x00", _gzip)):
        offset = data.find(magic)
        while offset >= 0:
            try:
                elf = decompress(data[offset:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF"):
                return elf
            offset = data.find(magic, offset + 1)
    return None


def _xz(payload):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)


def _gzip(payload):
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(payload)


def current_kernel_package():
    """
    Ask apt which kernel package the meta package depends on now.

    @return: a package name such as C{linux-image-6.1.0-56-amd64}, or
        L{None} if apt does not know the meta package (no package lists).
    """
    try:
        out = subprocess.run(
            ["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Depends:\s*(linux-image-\S+)", out)
    return match.group(1) if match else None


def _cached(cache_dir):
    """
    @return: the unpacked kernels in the cache, newest first.
    """
    found = []
    for marker in sorted(cache_dir.glob("*/complete"), key=lambda p: p.stat().st_mtime, reverse=True):
        kernel = _load(marker.parent)
        if kernel is not None:
            found.append(kernel)
    return found


def _load(directory):
    try:
        package, release, image = (directory / "complete").read_text().split()
    except (OSError, ValueError):
        return None
    order = (directory / "modules" / "order").read_text().split()
    return Kernel(
        package=package,
        release=release,
        image=directory / image,
        modules=tuple(directory / "modules" / f"{name}.ko" for name in order),
        config=directory / "config",
    )


def fetch_kernel(cache_dir=None, log=print):
    """
    Return the current Debian kernel, downloading and unpacking it into
    the cache the first time.

    If apt cannot name or download the current package, the newest kernel
    already in the cache is used.

    @param cache_dir: where unpacked kernels live.
    @param log: called with a line for each slow step.
    @raise KernelFetchError: nothing usable could be found.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    package = current_kernel_package()
    if package is None and os.geteuid() == 0:
        log("kernel: apt has no package lists; running apt-get update")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        package = current_kernel_package()
    if package is not None:
        kernel = _load(cache_dir / package)
        if kernel is not None:
            return kernel
        try:
            return _unpack(_download(package, cache_dir, log), package, cache_dir / package, log)
        except KernelFetchError as e:
            log(f"kernel: {e}")
    cached = _cached(cache_dir)
    if cached:
        return cached[0]
    raise KernelFetchError(
        f"no Debian kernel package available: apt knows {package or 'no ' + META_PACKAGE}"
        f" and the cache {cache_dir} is empty"
    )


def _download(package, cache_dir, log):
    log(f"kernel: apt-get download {package}")
    downloads = cache_dir / "downloads"
    downloads.mkdir(exist_ok=True)
    # apt drops privileges to _apt for downloads; a directory it may write
    # avoids a warning, and a private copy keeps the cache root-owned.
    result = subprocess.run(
        ["apt-get", "download", "-q", package],
        cwd=downloads,
        capture_output=True,
        text=True,
        timeout=600,
    )
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise KernelFetchError(f"apt-get download {package} failed: {result.stderr.strip()}")
    return debs[-1]


def _unpack(deb, package, target, log):
    log(f"kernel: unpacking {deb.name}")
    scratch = Path(tempfile.mkdtemp(prefix="unpack-", dir=target.parent))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(scratch)], check=True, timeout=600)
        (release,) = [p.name for p in (scratch / "lib" / "modules").iterdir()]
        staging = Path(tempfile.mkdtemp(prefix="stage-", dir=target.parent))
        (staging / "modules").mkdir()
        shutil.copy(scratch / "boot" / f"config-{release}", staging / "config")

        bzimage = (scratch / "boot" / f"vmlinuz-{release}").read_bytes()
        elf = decompress_bzimage(bzimage)
        if elf is not None:
            image = "vmlinux"
            (staging / image).write_bytes(elf)
        else:
            image = "vmlinuz"
            (staging / image).write_bytes(bzimage)

        paths = {
            ko.name[: -len(".ko")].replace("-", "_"): ko
            for ko in (scratch / "lib" / "modules" / release / "kernel").rglob("*.ko")
        }
        builtin = {
            Path(line.strip()).name[: -len(".ko")].replace("-", "_")
            for line in (scratch / "lib" / "modules" / release / "modules.builtin").read_text().split()
        }

        def dependencies(name):
            if name in builtin:
                return []
            if name not in paths:
                raise KernelFetchError(f"module {name} is not in {package}")
            return [d.replace("-", "_") for d in module_dependencies(paths[name].read_bytes())]

        order = [name for name in load_order(WANTED_MODULES, dependencies) if name not in builtin]
        for name in order:
            shutil.copy(paths[name], staging / "modules" / f"{name}.ko")
        (staging / "modules" / "order").write_text("\n".join(order) + "\n")
        (staging / "complete").write_text(f"{package} {release} {image}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    deb.unlink()
    log(f"kernel: {package} ready: {target}")
    return _load(target)
