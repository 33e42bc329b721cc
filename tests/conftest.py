"""
Fixtures every part of the suite shares: real hlfs servers on loopback
(L{tests.support.server}) and scratch directories for the mail tools.
"""

import os
import shutil
import subprocess

import pytest

from tests.support import debian
from tests.support.mail import scratch_dir
from tests.support.server import (
    _BASES, USERS, VERIFY_NEEDS_ROOT, RunningServer, make_base, write_passwd,
)


@pytest.fixture(scope="session", autouse=True)
def _remove_bases():
    yield
    for base in _BASES:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def debian_package(tmp_path_factory):
    """
    The Debian package, built from a clean copy of the checkout and
    installed on this machine with C{apt-get install ./hlfs_*.deb}
    (L{tests.support.debian}); purged at the end of the session.
    """
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode:
        pytest.skip("installing the package needs root, or sudo without a password")
    if debian.installed_version() is not None:
        pytest.fail("an hlfs package is installed on this machine already: the tests install "
                    "and purge their own (apt-get purge hlfs first)")
    package = debian.build(tmp_path_factory.mktemp("deb"))
    debian.install(package)
    yield package
    debian.purge()


def _verify_optional(request):
    return request.node.get_closest_marker("verify_optional") is not None


@pytest.fixture(scope="module")
def _module_server(tmp_path_factory):
    srv = RunningServer(make_base(tmp_path_factory), ["--insecure"], verify_optional=True).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.logtext(), srv.logtext()


@pytest.fixture
def server(request, _module_server):
    """
    A running C{twistd hlfs --insecure} on an ephemeral port, shared by the
    module.  Not root, it runs with C{--no-verify}, and only tests marked
    C{verify_optional} use it: the others are skipped with the reason.
    """
    if not _module_server.verify and not _verify_optional(request):
        pytest.skip(VERIFY_NEEDS_ROOT)
    return _module_server


@pytest.fixture
def make_server(request, tmp_path_factory):
    """
    Start servers with custom arguments (run under C{prefix}, a command
    such as C{nsenter ...}); all are stopped at the end.  Not root, see
    L{RunningServer}'s C{verify_optional} (the test's C{verify_optional}
    mark).
    """
    started = []
    optional = _verify_optional(request)

    def start(*args, users=USERS, prefix=()):
        base = make_base(tmp_path_factory)
        write_passwd(base / "passwd", base, users)
        srv = RunningServer(base, list(args), prefix=prefix, verify_optional=optional).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        assert "Traceback" not in srv.logtext(), srv.logtext()


def _reactor_state(rt):
    """
    What the session's reactor holds: its delayed calls, readers and
    writers (read in its thread).
    """
    def state():
        reactor = rt.reactor
        return (sorted(repr(c.func) for c in reactor.getDelayedCalls()),
                set(reactor.getReaders()), set(reactor.getWriters()))

    return rt.call(state)


@pytest.fixture(autouse=True)
def _reactor_left_clean():
    """
    The reactor the session shares (L{ReactorThread}) holds, after each
    test, what it held before: no timer, connection or process left
    behind for the next test to trip on.  A turn or two is allowed for
    connections closing.
    """
    from tests.support.probes import ReactorThread, wait_for

    rt = ReactorThread._instance
    before = _reactor_state(rt) if rt is not None else None
    yield
    rt = ReactorThread._instance
    if rt is None:
        return
    if before is None:
        # Started by this test: its own waker is all it held.
        before = ([], {r for r in _reactor_state(rt)[1] if "Waker" in type(r).__name__}, set())
    try:
        wait_for(lambda: _reactor_state(rt) == before, timeout=5)
    except TimeoutError:
        calls, readers, writers = _reactor_state(rt)
        left = {"timers": [c for c in calls if c not in before[0]],
                "readers": readers - before[1], "writers": writers - before[2]}
        pytest.fail(f"the test left the shared reactor holding {left}")


def pytest_collection_modifyitems(config, items):
    # Running as root matters for privileged source ports, mounts and
    # other users' identities: a non-root run skips those tests, each
    # with its mark's reason, instead of failing obscurely.
    for item in items:
        marker = item.get_closest_marker("root")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: a root mark needs a reason")
        if os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason=f"needs root: {reason}"))


@pytest.fixture
def world():
    with scratch_dir() as path:
        yield path
