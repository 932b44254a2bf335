"""The code location loads lazily and validates; automation targets the right partitions; the
late-input sensor asks for a re-reconcile when an hour's raw files change, and for a re-bill."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_load_without_touching_services(monkeypatch):
    # unreachable services: loading must not connect to any of them
    monkeypatch.setenv("CLICKAGG_CLICKHOUSE_HOST", "203.0.113.1")
    monkeypatch.setenv("CLICKAGG_KAFKA_BOOTSTRAP", "203.0.113.1:9")
    from assets.definitions import defs

    d = defs()
    graph = d.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "raw_clicks",
        "hot_minute_aggregates",
        "minute_aggregates",
        "drift_report",
        "billing_daily",
        "campaign_catalog",
    } <= keys
    assert d.resolve_job_def("reconcile_hours") and d.resolve_job_def("bill_days")
    assert {s.name for s in d.schedules} == {
        "reconcile_closed_hours",
        "bill_closed_days",
        "retention_daily",
    }
    spec = graph.get(dg.AssetKey("drift_report"))
    assert dg.AssetKey("hot_minute_aggregates") in spec.parent_keys
    billing = graph.get(dg.AssetKey("billing_daily"))
    assert {dg.AssetKey("minute_aggregates"), dg.AssetKey("drift_report")} <= billing.parent_keys


def test_dagster_definitions_validate_cli():
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_schedules_target_closed_periods():
    from assets.automation import bill_closed_days, reconcile_closed_hours

    ctx = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 5, 7, 15, tzinfo=UTC)
    )
    req = reconcile_closed_hours(ctx)
    assert req.partition_key == "2026-03-05-06:00"  # 06:00-07:00 ended 15 min ago
    ctx = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 5, 1, 30, tzinfo=UTC)
    )
    assert bill_closed_days(ctx).partition_key == "2026-03-04"


def reconcile_hour(settings, key: str, instance: dg.DagsterInstance) -> None:
    """Materialise `minute_aggregates` for one hour partition on `instance`."""
    from assets.definitions import batch_assets
    from tests.integration.test_batch_assets import resources_for

    res = dg.materialize(
        batch_assets(),
        selection=["minute_aggregates"],
        partition_key=key,
        resources=resources_for(settings),
        instance=instance,
    )
    assert res.success


def sense_late_input(settings, instance: dg.DagsterInstance):
    """One evaluation of the late-input sensor against the test's lake."""
    from assets.automation import late_input_sensor
    from resources.lake import LakeResource

    lake_res = LakeResource(url=settings.lake_root, topic=settings.clicks_topic)
    with dg.build_sensor_context(instance=instance, resources={"lake_store": lake_res}) as ctx:
        return late_input_sensor(ctx)


@pytest.mark.integration
def test_late_input_sensor_requests_rereconcile_and_rebill(settings, ch_database, tmp_path):
    from tests.batch_support import place, write_archive
    from tests.unit.stream_sim import make_events

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hour = int(now.timestamp() * 1000) - 2 * 3_600_000  # a closed hour, in the sensor's window
    key = datetime.fromtimestamp(hour / 1000, UTC).strftime("%Y-%m-%d-%H:00")
    events = make_events(seed=5, n=200, start_ms=hour + 60_000, rate_per_s=0.2, too_late_fraction=0)
    parts = place(events, 2)
    write_archive(settings.lake_root, settings.clicks_topic, parts, block=1000)
    instance = dg.DagsterInstance.ephemeral()
    reconcile_hour(settings, key, instance)
    assert isinstance(sense_late_input(settings, instance), dg.SkipReason)  # nothing changed
    late = make_events(seed=6, n=5, start_ms=hour + 120_000, rate_per_s=1.0, bursts=0)
    write_archive(
        settings.lake_root,
        settings.clicks_topic,
        place(late, 2),
        block=1000,
        offset_base={0: 5000, 1: 5000},
    )
    reqs = sense_late_input(settings, instance)
    assert [r.partition_key for r in reqs] == [key]
    assert reqs[0].job_name == "reconcile_hours"


@pytest.mark.integration
def test_late_input_sensor_rebills_a_day_reconciled_after_billing(settings, ch_database):
    from tests.batch_support import place, write_archive
    from tests.unit.stream_sim import make_events

    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    hour = int(datetime(yesterday.year, yesterday.month, yesterday.day, 3, tzinfo=UTC).timestamp())
    key = f"{yesterday}-03:00"
    events = make_events(seed=8, n=50, start_ms=hour * 1000 + 60_000, rate_per_s=0.5, bursts=0)
    write_archive(settings.lake_root, settings.clicks_topic, place(events, 2), block=1000)
    instance = dg.DagsterInstance.ephemeral()
    # the day was billed (recorded as a materialisation), then one of its hours re-reconciled
    instance.report_runless_asset_event(
        dg.AssetMaterialization("billing_daily", partition=str(yesterday))
    )
    reconcile_hour(settings, key, instance)
    reqs = sense_late_input(settings, instance)
    rebill = [r for r in reqs if r.job_name == "bill_days"]
    assert [r.partition_key for r in rebill] == [str(yesterday)]
