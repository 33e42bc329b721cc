"""
Fixtures every part of the suite shares: real hlfs servers on loopback
(L{tests.support.server}) and scratch directories for the mail tools.
"""

import os
import shutil

import pytest

from tests.support.mail import scratch_dir
from tests.support.server import _BASES, USERS, RunningServer, make_base, write_passwd


@pytest.fixture(scope="session", autouse=True)
def _remove_bases():
    yield
    for base in _BASES:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """
    A running C{twistd hlfs --insecure} on an ephemeral port.
    """
    srv = RunningServer(make_base(tmp_path_factory), ["--insecure"]).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.logtext(), srv.logtext()


@pytest.fixture
def make_server(tmp_path_factory):
    """
    Start servers with custom arguments; all are stopped at the end.
    """
    started = []

    def start(*args, users=USERS):
        base = make_base(tmp_path_factory)
        write_passwd(base / "passwd", base, users)
        srv = RunningServer(base, list(args)).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        assert "Traceback" not in srv.logtext(), srv.logtext()


def pytest_collection_modifyitems(config, items):
    # Running as root matters for privileged source ports and mounts; say
    # so once instead of failing obscurely.
    if os.geteuid() != 0:
        for item in items:
            if "root" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs root"))


@pytest.fixture
def world():
    with scratch_dir() as path:
        yield path
