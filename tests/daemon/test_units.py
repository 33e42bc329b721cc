"""
The systemd units in etc/: C{systemd-analyze verify} accepts every unit
and timer (their commands pointed at this environment's, their
documentation found among man/'s pages), and the exposure scores the
README records for the hardened daemon and lostmail units are what
C{systemd-analyze security} computes from them.
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
        # The units name hlfs bare: systemd finds it in /usr/bin (the
        # Debian package) or /usr/local/bin (pip).
        text = re.sub(r"(?m)^ExecStart=hlfs ", f"ExecStart={BIN}/hlfs ", (ETC / name).read_text())
        (units / name).write_text(text)
    manpath = tmp_path / "man"
    for page in (ROOT / "man").iterdir():
        section = manpath / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section)
    return units, manpath


def test_units_exist():
    assert UNITS == ["hlfs-lostmail.service", "hlfs-lostmail.timer", "hlfs.service", "hlfs@.service"]


def test_no_unit_names_where_the_commands_are():
    for name in UNITS:
        for line in (ETC / name).read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                assert line.split("=", 1)[1].split()[0] == "hlfs", line


def service_section(name):
    text = (ETC / name).read_text()
    return text[text.index("[Service]"):].splitlines()


def test_template_is_the_daemon_but_for_its_instance():
    """
    hlfs@.service has hlfs.service's sandbox and limits, line for line:
    only its run directory, command and comments differ.
    """
    def settings(name):
        return [line for line in service_section(name)
                if line and not line.startswith(("#", "RuntimeDirectory=", "WorkingDirectory=",
                                                 "ExecStart="))]

    assert settings("hlfs@.service") == settings("hlfs.service")
    template = "\n".join(service_section("hlfs@.service"))
    assert "RuntimeDirectory=hlfs-%i" in template and "WorkingDirectory=/run/hlfs-%i" in template
    command = next(l for l in service_section("hlfs@.service") if l.startswith("ExecStart="))
    assert command.split() == [
        "ExecStart=hlfs", "twistd", "-n", "--syslog", "--prefix", "hlfsd-%i",
        "--pidfile=/run/hlfs-%i/hlfsd.pid", "hlfs", "--config", "/etc/hlfs/%i.conf", "--name", "%i",
    ]


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
    assert exposure(ETC / "hlfs@.service") == score
    readme = (ROOT / "README.md").read_text()
    assert f"from 9.6 to {score}" in readme
    assert f"9.6 without\n# it, {score} with it" in (ETC / "hlfs.service").read_text()


#: The most systemd-analyze may find exposed in hlfs-lostmail.service: a
#: root service that runs the MTA's sendmail (Postfix's set-group-ID
#: postdrop, Exim's deliveries into homes) cannot go much lower.
LOSTMAIL_BOUND = 3.5


def test_lostmail_unit_is_sandboxed():
    """
    hlfs-lostmail.service scores what its comment and the README record,
    within the bound; it keeps the state directory systemd makes for it,
    and never the options that would break Postfix's postdrop
    (C{NoNewPrivileges=}) or Exim's deliveries into homes
    (C{ProtectHome=}, C{ProtectSystem=strict}).
    """
    score = exposure(ETC / "hlfs-lostmail.service")
    assert float(score) <= LOSTMAIL_BOUND
    text = (ETC / "hlfs-lostmail.service").read_text()
    assert f"scores 9.2\n# without it, {score} with it." in text
    assert f"`systemd-analyze security` goes from 9.2 to {score}." in \
        " ".join((ROOT / "README.md").read_text().split())
    settings = [line for line in service_section("hlfs-lostmail.service")
                if line and not line.startswith("#")]
    assert "StateDirectory=hlfs/lostmail" in settings and "StateDirectoryMode=0700" in settings
    assert "ProtectSystem=full" in settings
    for forbidden in ("NoNewPrivileges=", "ProtectHome=", "ProcSubset=", "PrivateNetwork=",
                      "IPAddressDeny=", "MemoryDenyWriteExecute=", "ReadOnlyPaths="):
        assert not [line for line in settings if line.startswith(forbidden)], forbidden


def test_logrotate_signals_only_pid_files_a_daemon_writes():
    """
    The logrotate snippet sends SIGHUP through hlfsd's pid file, the one
    daemon that writes /var/log/hlfsd.log itself; the units log to syslog
    and write their pid files where the snippet says.
    """
    from hlfs.cli.hlfsd import PIDFILE

    text = (ETC / "logrotate-hlfsd").read_text()
    signalled = set(re.findall(r'kill -HUP "\$\(cat (\S+)\)"', text))
    assert signalled == {PIDFILE}
    assert "rsyslog-rotate" in text
    for unit, pidfile in (("hlfs.service", "/run/hlfs/hlfsd.pid"),
                          ("hlfs@.service", "/run/hlfs-%i/hlfsd.pid")):
        command = next(l for l in service_section(unit) if l.startswith("ExecStart="))
        assert f"--pidfile={pidfile}" in command.split() and "--syslog" in command.split()
        assert pidfile.replace("%i", "NAME") in text
