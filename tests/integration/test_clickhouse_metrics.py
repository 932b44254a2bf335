"""`clickagg clickhouse-metrics` against the real ClickHouse 18.16, scraped by the real
Prometheus (infra/prometheus.sh): rows this test inserts show up in system.events as seen through
Prometheus, and every ClickHouse panel of the Grafana dashboard returns data."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from clickagg_platform import clickhouse as chm
from tests.conftest import wait_until
from tests.helpers import free_port, settings_env, wait_http
from tests.integration.test_alerts_e2e import ROOT, prometheus

pytestmark = pytest.mark.integration


def query(prom: str, expr: str) -> list[dict]:
    res = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert res["status"] == "success", res
    return res["data"]["result"]


def inserted_rows(prom: str) -> float:
    rows = query(prom, 'clickagg_clickhouse_events_total{event="InsertedRows"}')
    return float(rows[0]["value"][1]) if rows else -1.0


def test_clickhouse_system_tables_reach_prometheus_and_the_dashboard(
    settings, ch_database, tmp_path
):
    port = free_port()
    cmd = [sys.executable, "-m", "clickagg_platform.cli", "clickhouse-metrics", "--port", str(port)]
    with open(tmp_path / "chm.log", "wb") as out:
        proc = subprocess.Popen(
            cmd, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc=proc)
        with prometheus(tmp_path, {"clickhouse": f"127.0.0.1:{port}"}) as (prom, _log):
            wait_until(lambda: inserted_rows(prom) >= 0, 30, "a first scrape")
            assert float(query(prom, "clickagg_clickhouse_up")[0]["value"][1]) == 1
            before = inserted_rows(prom)
            n = 5000  # the server is shared: others insert too, so the count grows by >= n
            c = chm.client(settings)
            try:
                c.execute(f"CREATE TABLE {ch_database}.probe (x UInt32) ENGINE = Memory")
                c.execute(f"INSERT INTO {ch_database}.probe (x) VALUES", [(i,) for i in range(n)])
                assert c.execute(f"SELECT count() FROM {ch_database}.probe")[0][0] == n
            finally:
                c.disconnect()
            wait_until(lambda: inserted_rows(prom) >= before + n, 30, f"{n} inserted rows")
            # every expression of the dashboard's ClickHouse panels answers with data (rates
            # need two scrapes: wait for them)
            dash = json.loads((ROOT / "infra/grafana/clickagg.json").read_text())
            panels = [p for p in dash["panels"] if p["title"].startswith("ClickHouse:")]
            assert len(panels) == 2
            for panel in panels:
                for target in panel["targets"]:
                    wait_until(lambda e=target["expr"]: query(prom, e), 30, target["expr"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unreachable_clickhouse_is_up_0_not_a_failed_scrape(settings, tmp_path):
    port, dead = free_port(), free_port()
    env = settings_env(settings, CLICKAGG_CLICKHOUSE_PORT=dead)
    cmd = [sys.executable, "-m", "clickagg_platform.cli", "clickhouse-metrics", "--port", str(port)]
    with open(tmp_path / "chm.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc=proc)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "clickagg_clickhouse_up 0.0" in text
        assert "clickagg_clickhouse_events_total" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
