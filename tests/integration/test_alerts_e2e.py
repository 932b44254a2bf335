"""Alerts end to end: the real Prometheus scrapes the real services, evaluates the production
alert expressions of infra/prometheus/alerts.yml, and the real Alertmanager delivers them to
`clickagg alert-log`, whose JSON-lines file the test reads.

Only the `for:` durations are shortened (to 1s) in a generated copy of alerts.yml, so a test
takes seconds instead of the production minutes; every `expr` is loaded from alerts.yml as is.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from clickagg_platform import kafka_admin
from tests.conftest import wait_until
from tests.helpers import capture_server, free_port, private_kafka
from tests.integration.test_capture import make_links
from tests.integration.test_capture_faults import Load

pytestmark = [pytest.mark.integration, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"


def fast_rules(out: Path) -> Path:
    """alerts.yml with every `for:` set to 1s; expressions, labels, annotations untouched."""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    out.write_text(yaml.safe_dump(doc))
    return out


@contextmanager
def prometheus(tmp_path: Path, targets: dict[str, str]):
    """infra/prometheus.sh with this test's own dir and ports, 1s scrape/evaluation."""
    local = tmp_path / "prom"
    ports = {k: free_port() for k in ("PROMETHEUS", "ALERTMANAGER", "ALERT_LOG")}
    env = dict(
        os.environ,
        CLICKAGG_LOCAL_DIR=str(local),
        CLICKAGG_PROMETHEUS_INTERVAL="1s",
        CLICKAGG_ALERTMANAGER_GROUP_WAIT="1s",
        CLICKAGG_PROMETHEUS_RULES=str(fast_rules(tmp_path / "alerts_fast.yml")),
        CLICKAGG_PROMETHEUS_TARGETS=" ".join(f"{k}={v}" for k, v in targets.items()),
        **{f"CLICKAGG_{k}_PORT": str(v) for k, v in ports.items()},
    )
    script = str(ROOT / "infra" / "prometheus.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{ports['PROMETHEUS']}", local / "alerts.log"
    finally:
        subprocess.run([script, "stop"], env=env, check=True, timeout=120)


def prom_alerts(url: str, name: str) -> list[str]:
    """States of the alert `name` as Prometheus sees it (pending/firing), from its API."""
    data = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a["state"] for a in data if a["labels"]["alertname"] == name]


def delivered(log: Path, name: str) -> list[str]:
    """Statuses of `name` that Alertmanager delivered to `clickagg alert-log`, in order."""
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line]
    return [r["status"] for r in rows if r["alertname"] == name]


def test_capture_spooling_fires_when_kafka_stops_under_load_and_resolves(settings, tmp_path):
    name = "ClickAggCaptureSpooling"
    links = make_links(settings, 600, seed=5)
    with private_kafka(tmp_path / "kafka") as (bootstrap, kafka):
        s = settings.model_copy(update={"kafka_bootstrap": bootstrap, "produce_timeout_ms": 500})
        kafka_admin.wait_for_broker(s)
        kafka_admin.ensure_topic(s)
        with capture_server(s, tmp_path / "capture.log") as (base, _):
            target = base.removeprefix("http://")
            with prometheus(tmp_path, {"capture": target}) as (prom, log):
                wait_until(
                    lambda: httpx.get(
                        f"{prom}/api/v1/query", params={"query": "up"}, timeout=5
                    ).json()["data"]["result"],
                    30,
                    "the first scrape",
                )
                load = Load(base, links[:200], concurrency=8)
                load.start().join(timeout=60)
                assert prom_alerts(prom, name) == []  # healthy broker: no alert
                load = Load(base, links[200:], concurrency=8)
                thread = load.start()
                wait_until(lambda: len(load.statuses) >= 50, 60, "traffic before the outage")
                kafka("stop")
                wait_until(lambda: prom_alerts(prom, name) == ["firing"], 60, f"{name} firing")
                wait_until(lambda: "firing" in delivered(log, name), 30, "delivery via AM")
                thread.join(timeout=120)
                assert load.done.is_set()
                assert set(load.statuses.values()) == {302}  # spooled, not lost
                kafka("start")
                wait_until(lambda: prom_alerts(prom, name) == [], 120, f"{name} to resolve")
                wait_until(lambda: delivered(log, name)[-1:] == ["resolved"], 60, "resolved via AM")
