"""
The version has one source, C{hlfs/_version.py}'s C{VERSION}: the
package metadata reads it (setup.cfg), the newest entry of
C{debian/changelog} agrees, and what the build requires is what Debian 12
has, so that an offline Debian build neither stops nor names the
package 0.0.0.
"""

import configparser
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import hlfs
from hlfs._version import VERSION

ROOT = Path(__file__).resolve().parent.parent


def test_one_source():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert hlfs.__version__.public() == VERSION
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: hlfs._version.VERSION"


def test_debian_changelog_agrees():
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"hlfs \(([^)]+)\) \S+; urgency=\w+", first)
    assert match, first
    # A native package: the version is the upstream version itself.
    assert match.group(1) == VERSION


def debian_version(package):
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.fail(f"{package} is missing: scripts/run-tests installs it")
    return re.match(r"(?:\d+:)?([\d.]+)", result.stdout).group(1)


def test_build_requirements_are_met_by_debian_12():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    packages = {"setuptools": "python3-setuptools", "incremental": "python3-incremental"}
    for text in requires:
        requirement = Requirement(text)
        have = debian_version(packages[requirement.name])
        assert requirement.specifier.contains(have), (text, have)
