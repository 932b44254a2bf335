"""Prometheus alert rules: valid (`promtool check rules`) and behaving as meant on synthetic
series (`promtool test rules`). promtool comes from Debian's `prometheus` package, installed by
infra/bootstrap.sh."""

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: run infra/bootstrap.sh (apt-get install prometheus)"
    return subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_rules_are_valid():
    res = _promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_rules_fire_on_their_conditions_only():
    res = _promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
