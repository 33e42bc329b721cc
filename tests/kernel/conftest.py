"""
Fixtures of the kernel-client tier: a Debian kernel booted under qemu as
an NFS client of hlfs.

The kernel package is fetched with apt and cached (see L{kernelcache});
the initramfs and the guest-side probe program are built once per
session.  Each scenario boots its own guest once.  The tier is skipped
only where qemu cannot run at all.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import debcache  # noqa: E402
import initramfs  # noqa: E402
import kernelcache  # noqa: E402
import vm  # noqa: E402
from world import World  # noqa: E402

REPO = HERE.parent.parent

#: Measurements printed at the end of the session.
MEASUREMENTS = []


def pytest_collection_modifyitems(items):
    # Every test that boots a guest is a kernel test, for `-m "not kernel"`.
    for item in items:
        if "guest" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel)


def pytest_terminal_summary(terminalreporter):
    if MEASUREMENTS:
        terminalreporter.section("kernel client measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def measure():
    """
    @return: a callable recording one line for the end-of-session summary.
    """
    return MEASUREMENTS.append


@pytest.fixture(scope="session")
def kernel_workdir():
    """
    A session directory under the system's temporary directory, readable
    by every guest user (pytest's own temporary directories are private to
    the user running the tests, and guest processes of other uids walk
    through these paths).  Kept if C{$HLFS_KEEP_GUEST} is set.
    """
    path = Path(tempfile.mkdtemp(prefix="hlfs-kernel-"))
    os.chmod(path, 0o755)
    yield path
    if not os.environ.get("HLFS_KEEP_GUEST"):
        shutil.rmtree(path, ignore_errors=True)


def _ensure_qemu():
    qemu = vm.find_qemu()
    if qemu is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "qemu-system-x86"],
            capture_output=True,
            timeout=900,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
        qemu = vm.find_qemu()
    if qemu is None:
        pytest.skip(f"{vm.QEMU} is not installed and could not be installed (install qemu-system-x86)")
    try:
        subprocess.run([qemu, "--version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"{qemu} cannot run here: {e}")
    return qemu


@pytest.fixture(scope="session")
def guest(kernel_workdir, measure):
    """
    A bootable L{vm.Guest}: qemu, the cached Debian kernel, a fresh
    initramfs.
    """
    if os.geteuid() != 0:
        pytest.skip("the kernel tier needs root: the test users' homes belong to their own uids")
    qemu = _ensure_qemu()
    started = time.monotonic()
    kernel = kernelcache.fetch_kernel(log=lambda line: sys.stderr.write(line + "\n"))
    fetched = time.monotonic() - started
    initrd = initramfs.build_initramfs(kernel, kernel_workdir / "initramfs")
    guest = vm.Guest(qemu, kernel, initrd)
    measure(
        f"kernel {kernel.release} ({kernel.package}), image {kernel.image.name},"
        f" accelerator {guest.accelerator}, fetch/cache {fetched:.1f}s,"
        f" initramfs {initrd.stat().st_size // 1024} KiB"
    )
    return guest


@pytest.fixture(scope="session")
def probe(kernel_workdir):
    """
    The guest-side probe program (C{hlfsprobe.c}), built static so it runs
    in the guest whatever the host's libraries.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the guest probe program (install gcc)")
    target = kernel_workdir / "hlfsprobe"
    result = subprocess.run(
        [gcc, "-static", "-O2", "-Wall", "-o", str(target), str(HERE / "hlfsprobe.c")],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"building hlfsprobe failed:\n{result.stderr}")
    return target


@pytest.fixture(scope="session")
def precompiled():
    """
    Compile the bytecode of the virtual environment and the repository on
    the host: Python runs many times slower under emulation, and the
    guest's own writes vanish when it powers off.
    """
    for tree in (sys.prefix, REPO / "hlfs", REPO / "twisted"):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", str(tree)],
            capture_output=True,
            timeout=900,
        )


@pytest.fixture
def world(kernel_workdir, request):
    """
    Users, homes and spools for one test (see L{World}).
    """
    return World(kernel_workdir / request.node.name.replace("/", "_")).create()


@pytest.fixture
def run_dir(kernel_workdir, request):
    """
    The directory shared with this test's guest, for its scenario and
    results.
    """
    path = kernel_workdir / f"{request.node.name.replace('/', '_')}-run"
    path.mkdir()
    return path


def _package_sets(*names):
    """
    The unpacked package sets C{names} (L{debcache}), by name, fetched the
    first time.  A set apt cannot fetch fails the test: the tier's mail
    scenarios are never skipped.
    """
    log = lambda line: sys.stderr.write(line + "\n")  # noqa: E731
    try:
        return {name: debcache.fetch_set(name, log=log) for name in names}
    except debcache.PackageFetchError as e:
        pytest.fail(f"the packages of {', '.join(names)} could not be fetched: {e}")


@pytest.fixture(scope="module")
def postfix_tree():
    """
    Debian 12's Postfix, unpacked (never installed).
    """
    return _package_sets("postfix")["postfix"]


@pytest.fixture(scope="module")
def exim_tree():
    """
    Debian 12's Exim, unpacked (never installed).
    """
    return _package_sets("exim")["exim"]


@pytest.fixture(scope="session")
def package_sets():
    """
    @return: a callable giving the unpacked package sets named, by name.
    """
    return _package_sets
