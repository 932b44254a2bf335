"""Prometheus metrics of the batch side, read from the Dagster instance.

Dagster's webserver and daemon expose no Prometheus endpoint, yet on-call alerts on what they
know: runs failing or piling up in the queue, asset checks failing, assets not materialised for
too long. `clickagg dagster-metrics` serves these (`/metrics`, 127.0.0.1:16068 by default) from
the instance in `DAGSTER_HOME`, read at scrape time: the exporter holds no state of its own and
can restart at any moment.

Metric names (stable; alert rules in infra/prometheus/alerts.yml depend on them):
- clickagg_dagster_runs{status}: runs now queued / in progress; failed and succeeded runs updated
  in the last hour (`failed_1h`, `succeeded_1h`).
- clickagg_dagster_asset_last_materialization_seconds{asset}: Unix time of the latest
  materialisation of every asset of the code location (absent if never materialised).
- clickagg_dagster_asset_check_failed{asset, check, severity}: 1 if the latest execution of the
  check failed (an explicit failure or an error), 0 if it passed; absent if never run.
- clickagg_dagster_asset_check_last_execution_seconds{asset, check}: when that execution ran.
- clickagg_dagster_scrape_errors_total: scrapes that could not read the instance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

RUN_WINDOW_S = 3600
log = logging.getLogger("clickagg.dagster_metrics")


def _key(key: dg.AssetKey) -> str:
    return key.to_user_string()


class DagsterCollector(Collector):
    def __init__(
        self,
        instance: Callable[[], dg.DagsterInstance],
        asset_keys: list[dg.AssetKey],
        check_keys: list[dg.AssetCheckKey],
    ) -> None:
        self._instance = instance
        self.asset_keys = asset_keys
        self.check_keys = check_keys
        self.errors = 0

    @classmethod
    def for_definitions(cls, instance, defs: dg.Definitions) -> DagsterCollector:
        graph = defs.resolve_asset_graph()
        assets = sorted(graph.get_all_asset_keys(), key=_key)
        checks = sorted(graph.asset_check_keys, key=lambda c: (_key(c.asset_key), c.name))
        return cls(instance, assets, checks)

    def collect(self):
        try:
            families = self._families(self._instance())
        except Exception:  # noqa: BLE001 - a scrape must answer; the error is counted
            log.exception("reading the Dagster instance failed")
            self.errors += 1
            families = []
        yield from families
        errors = CounterMetricFamily(
            "clickagg_dagster_scrape_errors", "Scrapes that could not read the Dagster instance"
        )
        errors.add_metric([], self.errors)
        yield errors

    def _families(self, instance: dg.DagsterInstance) -> list:
        runs = GaugeMetricFamily(
            "clickagg_dagster_runs",
            "Dagster runs: queued / in progress now; failed / succeeded in the last hour",
            labels=["status"],
        )
        since = datetime.now(UTC) - timedelta(seconds=RUN_WINDOW_S)
        statuses = {
            "queued": dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]),
            "in_progress": dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
            ),
            "failed_1h": dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE],
                updated_after=since,
            ),
            "succeeded_1h": dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS],
                updated_after=since,
            ),
        }
        for name, flt in statuses.items():
            runs.add_metric([name], instance.get_runs_count(filters=flt))

        materialised = GaugeMetricFamily(
            "clickagg_dagster_asset_last_materialization_seconds",
            "Unix time of the latest materialisation of the asset",
            labels=["asset"],
        )
        for key in self.asset_keys:
            event = instance.get_latest_materialization_event(key)
            if event is not None:
                materialised.add_metric([_key(key)], event.timestamp)

        failed = GaugeMetricFamily(
            "clickagg_dagster_asset_check_failed",
            "1 if the latest execution of the asset check failed, 0 if it passed",
            labels=["asset", "check", "severity"],
        )
        executed = GaugeMetricFamily(
            "clickagg_dagster_asset_check_last_execution_seconds",
            "Unix time of the latest completed execution of the asset check",
            labels=["asset", "check"],
        )
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(self.check_keys)
        for key, record in sorted(
            latest.items(), key=lambda kv: (_key(kv[0].asset_key), kv[0].name)
        ):
            outcome = _outcome(record)
            if outcome is None:
                continue  # planned, not run yet
            is_failed, severity = outcome
            labels = [_key(key.asset_key), key.name]
            failed.add_metric([*labels, severity], 1 if is_failed else 0)
            executed.add_metric(labels, record.create_timestamp)
        return [runs, materialised, failed, executed]


def _outcome(record) -> tuple[bool, str] | None:
    """(failed?, severity) of a completed check execution; None while it is only planned (also
    when its run died before the check ran: the failed run is counted in the runs metric)."""
    if record.status is AssetCheckExecutionRecordStatus.PLANNED:
        return None
    evaluation = record.evaluation
    severity = getattr(evaluation, "severity", None)
    label = severity.value.lower() if severity is not None else "error"
    return record.status is AssetCheckExecutionRecordStatus.FAILED, label


def serve(host: str, port: int) -> None:
    """Serve /metrics for the code location in assets/definitions.py until interrupted."""
    from prometheus_client import CollectorRegistry, start_http_server

    from assets.definitions import build_definitions

    instance = dg.DagsterInstance.get()  # DAGSTER_HOME; storage is read at every scrape
    registry = CollectorRegistry()
    registry.register(DagsterCollector.for_definitions(lambda: instance, build_definitions()))
    start_http_server(port, addr=host, registry=registry)
    while True:
        time.sleep(3600)
