"""Prometheus metrics of the Dagster side: real runs on a real (temporary) Dagster instance, read
back by the collector; and `clickagg dagster-metrics` serving the code location's metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from assets.exporter import DagsterCollector
from tests.helpers import free_port, wait_http

pytestmark = pytest.mark.integration


@dg.asset
def good() -> int:
    return 1


@dg.asset
def shaky() -> int:
    return 2


@dg.asset
def broken() -> int:
    raise RuntimeError("upstream file missing")


@dg.asset_check(asset=good)
def good_is_positive() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(asset=broken)
def broken_is_complete() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)  # never runs: its asset fails first


@dg.asset_check(asset=shaky, blocking=False)
def shaky_matches_truth() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


def samples(collector: DagsterCollector) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_runs_materialisations_and_checks_are_exported():
    defs = dg.Definitions(
        assets=[good, shaky, broken],
        asset_checks=[good_is_positive, shaky_matches_truth, broken_is_complete],
    )
    with dg.instance_for_test() as instance:
        collector = DagsterCollector.for_definitions(lambda: instance, defs)
        before = samples(collector)
        assert before[("clickagg_dagster_runs", (("status", "failed_1h"),))] == 0
        assert not any(name.startswith("clickagg_dagster_asset_check") for name, _ in before)

        t0 = time.time()
        ok = dg.materialize([good, shaky, good_is_positive, shaky_matches_truth], instance=instance)
        assert ok.success
        failed = dg.materialize(
            [broken, broken_is_complete], instance=instance, raise_on_error=False
        )
        assert not failed.success

        got = samples(collector)
        runs = {
            dict(labels)["status"]: v
            for (n, labels), v in got.items()
            if n == "clickagg_dagster_runs"
        }
        assert runs == {"queued": 0, "in_progress": 0, "failed_1h": 1, "succeeded_1h": 1}
        last = {
            dict(labels)["asset"]: v
            for (n, labels), v in got.items()
            if n == "clickagg_dagster_asset_last_materialization_seconds"
        }
        assert set(last) == {"good", "shaky"}  # `broken` never materialised
        assert all(t0 - 1 <= v <= time.time() + 1 for v in last.values())
        checks = {
            (dict(labels)["asset"], dict(labels)["check"], dict(labels)["severity"]): v
            for (n, labels), v in got.items()
            if n == "clickagg_dagster_asset_check_failed"
        }
        assert checks == {  # broken_is_complete was planned, never ran: no sample
            ("good", "good_is_positive", "error"): 0,
            ("shaky", "shaky_matches_truth", "warn"): 1,
        }
        assert got[("clickagg_dagster_scrape_errors_total", ())] == 0


def test_a_broken_instance_is_a_counted_scrape_error_not_a_failed_scrape():
    def no_instance():
        raise OSError("DAGSTER_HOME unreadable")

    collector = DagsterCollector(no_instance, [dg.AssetKey("good")], [])
    assert samples(collector)[("clickagg_dagster_scrape_errors_total", ())] == 1
    assert samples(collector)[("clickagg_dagster_scrape_errors_total", ())] == 2


def test_cli_serves_the_code_locations_metrics(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "clickagg_platform.cli", "dagster-metrics", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=90, proc=proc)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'clickagg_dagster_runs{status="queued"} 0.0' in text
        assert "clickagg_dagster_scrape_errors_total 0.0" in text
    finally:
        proc.terminate()
        proc.wait(30)
    env.pop("DAGSTER_HOME")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "DAGSTER_HOME is not set" in bad.stderr
