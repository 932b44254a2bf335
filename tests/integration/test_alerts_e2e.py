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
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
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


def test_asset_check_alert_fires_after_the_drift_gate_fails(settings, ch_database, tmp_path):
    """The real drift_report asset on a real Dagster instance: the hot path counted 9 clicks of a
    minute the batch counted 10, the blocking drift gate fails, `clickagg dagster-metrics` exports
    it and ClickAggAssetCheckFailing reaches the alert log through Alertmanager."""
    import dagster as dg

    from assets.drift import drift_report
    from clickagg_platform import clickhouse as chm
    from resources.clickhouse import ClickHouseResource
    from tests.helpers import settings_env, wait_http

    name = "ClickAggAssetCheckFailing"
    hour = datetime(2026, 1, 1, 6, tzinfo=UTC)
    c = chm.client(settings)
    try:
        db = settings.clickhouse_database
        c.execute(
            f"INSERT INTO {db}.minute_aggregates_batch (hour, window_start, advertiser_id, "
            "campaign_id, ad_id, clicks, fraud_clicks, stream_too_late, reconciled_at, run_id) "
            "VALUES",
            [(hour, hour, "a1", "c1", "ad1", 10, 0, 0, hour, "r")],
        )
        c.execute(
            f"INSERT INTO {db}.hot_clicks (window_start, campaign_id, ad_id, source, "
            "source_partition, clicks, version) VALUES",
            [(hour, "c1", "ad1", 0, 0, 9, 1)],
        )
    finally:
        c.disconnect()
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        res = dg.materialize(
            [drift_report],
            instance=instance,
            partition_key="2026-01-01-06:00",
            resources={"clickhouse": ClickHouseResource.from_settings(settings)},
            raise_on_error=False,
        )
    gate = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert gate["drift_within_threshold"] is False  # ground truth: 9 hot vs 10 batch
    port = free_port()
    env = settings_env(settings, DAGSTER_HOME=str(home))
    cmd = [sys.executable, "-m", "clickagg_platform.cli", "dagster-metrics", "--port", str(port)]
    with open(tmp_path / "dagster-metrics.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc=proc, timeout=60)
        with prometheus(tmp_path, {"dagster": f"127.0.0.1:{port}"}) as (prom, log):
            wait_until(lambda: prom_alerts(prom, name) == ["firing"], 60, f"{name} firing")
            wait_until(lambda: "firing" in delivered(log, name), 30, "delivery via AM")
            rows = [json.loads(line) for line in log.read_text().splitlines()]
            fired = [r for r in rows if r["alertname"] == name]
            assert {r["labels"]["check"] for r in fired} == {"drift_within_threshold"}
            assert fired[0]["annotations"]["runbook"] == (
                "docs/operations.md#clickaggassetcheckfailing"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.usefixtures("stream_internal_topics")
def test_worker_down_fires_when_the_stream_worker_stops_under_load(
    settings, kafka_topic, ch_database, tmp_path, unique
):
    """A stopped worker takes its lag metrics with it, so the lag alerts cannot fire: the
    `up`-based ClickAggStreamWorkerDown does, while clicks keep arriving; it resolves on restart."""
    from tests.helpers import wait_http
    from tests.integration.stream_harness import Placed, Worker, now_ms, produce, totals
    from tests.unit.stream_sim import make_events

    name = "ClickAggStreamWorkerDown"
    events = make_events(seed=21, n=4000, start_ms=now_ms() - 600_000)
    produce(settings, events[:2000], Placed())
    worker = Worker(settings, tmp_path / "w", f"t{unique}").start()
    try:
        target = f"127.0.0.1:{worker.port}"
        wait_http(f"http://{target}/metrics", timeout=90, proc=worker.proc)
        with prometheus(tmp_path, {"stream": target}) as (prom, log):
            wait_until(lambda: sum(totals(settings).values()) > 0, 90, "hot rows")
            assert prom_alerts(prom, name) == []
            worker.stop()
            produce(settings, events[2000:], Placed())  # traffic goes on without a consumer
            wait_until(lambda: prom_alerts(prom, name) == ["firing"], 60, f"{name} firing")
            wait_until(lambda: "firing" in delivered(log, name), 30, "delivery via AM")
            worker.start()
            wait_until(lambda: prom_alerts(prom, name) == [], 120, f"{name} to resolve")
            wait_until(lambda: delivered(log, name)[-1:] == ["resolved"], 60, "resolved via AM")
    finally:
        worker.stop()


@pytest.mark.usefixtures("stream_internal_topics")
def test_watermark_lag_fires_for_a_backlog_left_by_a_stopped_worker(
    settings, kafka_topic, ch_database, tmp_path, unique
):
    """Clicks that waited in Kafka while no worker ran (event times 30 min old) put the hot
    aggregates 30 min behind real time once a worker is back: ClickAggWatermarkLagHigh fires
    (production threshold 300 s) and is delivered through Alertmanager."""
    from tests.helpers import wait_http
    from tests.integration.stream_harness import Placed, Worker, now_ms, produce
    from tests.unit.stream_sim import make_events

    name = "ClickAggWatermarkLagHigh"
    produce(settings, make_events(seed=22, n=2000, start_ms=now_ms() - 1_800_000), Placed())
    worker = Worker(settings, tmp_path / "w", f"t{unique}")
    target = f"127.0.0.1:{worker.port}"
    with prometheus(tmp_path, {"stream": target}) as (prom, log):
        assert prom_alerts(prom, name) == []  # no worker yet: no lag series, no alert
        worker.start()
        try:
            wait_http(f"http://{target}/metrics", timeout=90, proc=worker.proc)
            wait_until(lambda: prom_alerts(prom, name) == ["firing"], 90, f"{name} firing")
            wait_until(lambda: "firing" in delivered(log, name), 30, "delivery via AM")
            lag = httpx.get(
                f"{prom}/api/v1/query",
                params={"query": "max(clickagg_stream_watermark_lag_seconds)"},
                timeout=5,
            ).json()["data"]["result"]
            assert 1500 < float(lag[0]["value"][1]) < 2400  # ~30 min behind, give or take
        finally:
            worker.stop()
