"""
The alerting rules of C{etc/prometheus/hlfs.rules.yml}: Prometheus's own
C{promtool} accepts them and passes the cases of C{alert_rules_test.yml},
in which every alert both fires and stays quiet; and every metric they
read is one hlfs exports (the daemon's families, or the file of C{hlfs
lostmail --textfile}), so that renaming one fails here.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "etc" / "prometheus" / "hlfs.rules.yml"
CASES = Path(__file__).resolve().parent / "alert_rules_test.yml"
EXPORTERS = [ROOT / "hlfs" / "daemon" / "metrics.py", ROOT / "hlfs" / "cli" / "lostmail_textfile.py"]


def promtool(*args):
    program = shutil.which("promtool")
    if program is None:
        pytest.fail("promtool is missing: scripts/run-tests installs prometheus")
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=120,
                          cwd=CASES.parent)


def alerts():
    return re.findall(r"(?m)^\s*- alert: (\w+)$", RULES.read_text())


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_passes_every_case():
    result = promtool("test", "rules", CASES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_and_stays_quiet_in_some_case():
    text = CASES.read_text()
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text)
    fired = {name for name, quiet in cases if not quiet}
    quiet = {name for name, q in cases if q}
    assert set(alerts()) == fired == quiet


def test_the_rules_read_metrics_hlfs_exports():
    exported = set()
    for path in EXPORTERS:
        exported |= set(re.findall(r"hlfs_[a-z_]+", path.read_text()))
    exported |= {f"hlfs_lostmail_{name}" for name in re.findall(
        r'gauge\("([a-z_]+)"', EXPORTERS[1].read_text())}
    expressions = "\n".join(re.findall(r"(?ms)expr: (.*?)\n\s+(?:for|labels):", RULES.read_text()))
    used = set(re.findall(r"hlfs_[a-z_]+", expressions))
    assert used
    # Counters gain _total, info families _info, in the exposition.
    missing = {name for name in used if name not in exported
               and name.removesuffix("_total") not in exported
               and name.removesuffix("_info") not in exported}
    assert missing == set()
