"""Prometheus metrics of ClickHouse, read from its system tables at each scrape.

ClickHouse 18.16 has no Prometheus endpoint, so `clickagg clickhouse-metrics` serves:
- clickagg_clickhouse_metric{metric}: system.metrics (current values: queries, merges,
  connections, memory tracking),
- clickagg_clickhouse_events_total{event}: system.events (counters since server start:
  queries, inserted rows and bytes, failed queries),
- clickagg_clickhouse_async_metric{metric}: system.asynchronous_metrics (uptime, max parts per
  partition, replica delays),
- clickagg_clickhouse_up: 1 if the tables could be read, 0 otherwise (the scrape still succeeds).
Only names and numbers are exported: nothing from settings or credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

QUERIES = {
    "metric": "SELECT metric, toFloat64(value) FROM system.metrics",
    "event": "SELECT event, toFloat64(value) FROM system.events",
    "async": "SELECT metric, toFloat64(value) FROM system.asynchronous_metrics",
}


def families(rows: dict[str, Iterable[tuple[str, float]]] | None):
    """Metric families from the rows of the three system tables (None: ClickHouse unreadable)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = GaugeMetricFamily("clickagg_clickhouse_up", "1 if ClickHouse system tables were read")
    up.add_metric([], 0 if rows is None else 1)
    yield up
    if rows is None:
        return
    metric = GaugeMetricFamily(
        "clickagg_clickhouse_metric", "ClickHouse system.metrics", labels=["metric"]
    )
    for name, value in rows["metric"]:
        metric.add_metric([name], value)
    events = CounterMetricFamily(
        "clickagg_clickhouse_events", "ClickHouse system.events", labels=["event"]
    )
    for name, value in rows["event"]:
        events.add_metric([name], value)
    asyn = GaugeMetricFamily(
        "clickagg_clickhouse_async_metric",
        "ClickHouse system.asynchronous_metrics",
        labels=["metric"],
    )
    for name, value in rows["async"]:
        asyn.add_metric([name], value)
    yield from (metric, events, asyn)


class ClickHouseCollector:
    def __init__(self, connect: Callable):
        self.connect = connect

    def collect(self):
        try:
            c = self.connect()
            try:
                rows = {k: c.execute(q) for k, q in QUERIES.items()}
            finally:
                c.disconnect()
        except Exception:  # noqa: BLE001 - ClickHouse down: report up=0, keep the scrape alive
            rows = None
        yield from families(rows)


def serve(host: str, port: int, settings) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from clickagg_platform import clickhouse

    registry = CollectorRegistry()
    registry.register(ClickHouseCollector(lambda: clickhouse.client(settings, connect_timeout=2)))
    start_http_server(port, addr=host, registry=registry)
    while True:
        time.sleep(3600)
