"""
Packaging: C{python -m build} makes a wheel and an sdist from a copy of
the checkout; the wheel holds the twistd plugin, the manual pages and the
example units, and installed (not editable) into a fresh virtual
environment it gives working C{twistd hlfs}, C{hlfsd} and C{hlfs}
commands: a real server started from that environment answers a real
C{hlfs resolve} from it.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support.server import RunningServer, make_base

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

#: What the checkout holds besides the source: never copied to the build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".hypothesis", "dropin.cache", "cache",
)


#: The environment of what runs from the built or installed package: a
#: PYTHONPATH leading to the checkout (as in `PYTHONPATH=. pytest`) would
#: make pip find the checkout's hlfs installed already, and the commands
#: import it instead of the installed one.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(*cmd, **kwargs):
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=600, env=CLEAN_ENV, **kwargs,
    )
    assert result.returncode == 0, f"{cmd}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    source = tmp_path_factory.mktemp("source") / "hlfs"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, source)
    wheels = list(out.glob("hlfs-*.whl"))
    sdists = list(out.glob("hlfs-*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, list(out.iterdir())
    return wheels[0], sdists[0]


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    path = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", path)
    run(path / "bin" / "pip", "install", "-q", dist[0])
    return path


def shipped(kind):
    return sorted(p.relative_to(ROOT / kind).as_posix() for p in (ROOT / kind).rglob("*")
                  if p.is_file())


def test_wheel_holds_plugin_man_pages_and_examples(dist):
    names = zipfile.ZipFile(dist[0]).namelist()
    assert "twisted/plugins/hlfs_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names  # Twisted's own
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    pages = sorted(Path(n).name for n in data if n.startswith("share/man/man"))
    assert pages == shipped("man")
    for page in pages:
        assert f"share/man/man{page[-1]}/{page}" in data
    examples = sorted(n.removeprefix("share/doc/hlfs/examples/") for n in data
                      if n.startswith("share/doc/hlfs/examples/"))
    assert examples == shipped("etc")


def test_sdist_holds_man_pages_and_units(dist):
    with tarfile.open(dist[1]) as sdist:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in sdist.getnames()}
    for kind in ("man", "etc"):
        for name in shipped(kind):
            assert f"{kind}/{name}" in names


def test_installed_commands_start(venv, tmp_path):
    bin = venv / "bin"
    # Away from the checkout, so nothing is imported from it.
    assert "--probe-deadline" in run(bin / "twistd", "hlfs", "--help", cwd=tmp_path)
    assert "usage: hlfsd" in run(bin / "hlfsd", "-h", cwd=tmp_path)
    assert "lostmail" in run(bin / "hlfs", "--help", cwd=tmp_path)
    page = run("man", "-M", venv / "share" / "man", "-w", "hlfsd", cwd=tmp_path)
    assert page.strip() == str(venv / "share" / "man" / "man8" / "hlfsd.8")


def test_installed_server_answers_installed_client(venv):
    base = make_base()
    srv = RunningServer(base, ["--insecure", "--no-verify"], env=CLEAN_ENV, bin=venv / "bin").start()
    try:
        out = run(venv / "bin" / "hlfs", "resolve", "--uid", "1002",
                  "--server", f"127.0.0.1:{srv.port}", cwd=base)
    finally:
        assert srv.stop() == 0
    assert f"{base}/home/bob/.mailspool" in out
