"""Broker metrics: a private broker started by infra/kafka.sh with the Prometheus JMX exporter
agent (CLICKAGG_KAFKA_JMX_PORT), scraped by the real Prometheus (infra/prometheus.sh). The
records this test produces are the only ones the broker sees, so the count is exact."""

from __future__ import annotations

import json

import httpx
import pytest
from confluent_kafka import Producer

from clickagg_platform import kafka_admin
from tests.conftest import wait_until
from tests.helpers import free_port, private_kafka
from tests.integration.test_alerts_e2e import ROOT, prometheus

pytestmark = pytest.mark.integration


def query(prom: str, expr: str) -> list[dict]:
    res = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert res["status"] == "success", res
    return res["data"]["result"]


def messages_in(prom: str) -> float:
    rows = query(prom, "kafka_server_brokertopicmetrics_messagesinpersec_total")
    return float(rows[0]["value"][1]) if rows else -1.0


def test_broker_metrics_reach_prometheus_and_the_dashboard(settings, tmp_path):
    jmx = free_port()
    with private_kafka(tmp_path / "kafka", CLICKAGG_KAFKA_JMX_PORT=str(jmx)) as (bootstrap, _):
        s = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        kafka_admin.wait_for_broker(s)
        kafka_admin.ensure_topic(s)
        with prometheus(tmp_path, {"kafka": f"127.0.0.1:{jmx}"}) as (prom, _log):
            wait_until(lambda: messages_in(prom) == 0, 30, "a first scrape with 0 messages")
            n = 1234
            p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
            for i in range(n):
                p.produce(s.clicks_topic, value=b"x%d" % i, key=b"k%d" % (i % 7))
            assert p.flush(30) == 0
            wait_until(lambda: messages_in(prom) == n, 30, f"{n} messages in")
            assert float(query(prom, "kafka_controller_activecontrollercount")[0]["value"][1]) == 1
            dash = json.loads((ROOT / "infra/grafana/clickagg.json").read_text())
            panels = [p for p in dash["panels"] if p["title"].startswith("Kafka broker:")]
            assert len(panels) == 2
            for panel in panels:
                for target in panel["targets"]:
                    wait_until(lambda e=target["expr"]: query(prom, e), 30, target["expr"])
