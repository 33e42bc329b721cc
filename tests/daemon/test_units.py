"""
The systemd units in etc/: C{systemd-analyze verify} accepts every unit
and timer (their commands pointed at this environment's, their
documentation found among man/'s pages), and the exposure score the
README records for the hardened daemon unit is what
C{systemd-analyze security} computes from it.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"
UNITS = sorted(p.name for p in ETC.iterdir() if p.suffix in (".service", ".timer"))
BIN = Path(sys.executable).parent


def analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: scripts/run-tests installs systemd")
    return path


@pytest.fixture
def installed(tmp_path):
    """
    The units with their commands in this environment, and a manual tree
    holding man/'s pages, as an install puts them.
    """
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (ETC / name).read_text().replace("/usr/local/bin/", f"{BIN}/")
        (units / name).write_text(text)
    manpath = tmp_path / "man"
    for page in (ROOT / "man").iterdir():
        section = manpath / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section)
    return units, manpath


def test_units_exist():
    assert UNITS == ["hlfs-lostmail.service", "hlfs-lostmail.timer", "hlfs.service"]


def test_verify(installed):
    units, manpath = installed
    result = subprocess.run(
        [analyze(), "verify", *sorted(str(p) for p in units.iterdir())],
        capture_output=True, text=True, env={**os.environ, "MANPATH": str(manpath)},
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def exposure(unit):
    result = subprocess.run(
        [analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


def test_recorded_exposure_score_is_the_units():
    score = exposure(ETC / "hlfs.service")
    readme = (ROOT / "README.md").read_text()
    assert f"from 9.6 to {score}" in readme
    assert f"9.6 without\n# it, {score} with it" in (ETC / "hlfs.service").read_text()
