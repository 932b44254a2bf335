"""Every metric an alert rule or a Grafana panel uses is exported by some process of ours: a
renamed metric must not silently blind an alert."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bclickagg_[a-z_]+")
SUFFIX = re.compile(r"_(bucket|count|sum|total|created)$")


def _base(name: str) -> str:
    return SUFFIX.sub("", name)


def _exported() -> set[str]:
    names = set()
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for literal in re.findall(r"[\"'](clickagg_[a-z_]+)[\"']", path.read_text()):
            names.add(_base(literal))
    return names


def _used_by_alerts() -> set[str]:
    text = (ROOT / "infra/prometheus/alerts.yml").read_text()
    exprs = re.findall(r"expr:\s*(.+)", text)
    return {_base(n) for e in exprs for n in NAME.findall(e)}


def _used_by_grafana() -> set[str]:
    dash = json.loads((ROOT / "infra/grafana/clickagg.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return {_base(n) for e in exprs for n in NAME.findall(e)}


def test_alert_metrics_are_exported():
    missing = _used_by_alerts() - _exported()
    assert not missing, f"alerts use metrics nobody exports: {sorted(missing)}"


def test_grafana_metrics_are_exported_and_panels_are_well_formed():
    missing = _used_by_grafana() - _exported()
    assert not missing, f"dashboard uses metrics nobody exports: {sorted(missing)}"
    dash = json.loads((ROOT / "infra/grafana/clickagg.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in dash["panels"])
