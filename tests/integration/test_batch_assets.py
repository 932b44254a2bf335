"""Each batch asset materialised in-process (dg.materialize) for real partitions against the
real ClickHouse, local Spark and a real lake dir; expected numbers from an independent recount
of the seeded clicks (tests/batch_support.py), never from the code under test."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.definitions import batch_assets
from assets.partitions import hourly
from clickagg_platform import catalog as cat
from clickagg_platform import clickhouse as chm
from clickagg_platform.billing import CatalogEntry
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.spark import SparkResource
from tests.batch_support import (
    HOUR,
    MIN,
    hour_key,
    in_hours,
    per_day,
    place,
    reference_clicks,
    write_archive,
)
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = pytest.mark.integration

DAY0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOURLY = ["raw_clicks", "minute_aggregates", "drift_report"]
CPC = {f"c{i}": 10_000 * (i + 1) for i in range(1, 9)}


def resources_for(settings) -> dict:
    return {
        "clickhouse": ClickHouseResource.from_settings(settings),
        "lake_store": LakeResource(url=settings.lake_root, topic=settings.clicks_topic),
        "spark": SparkResource(),
        "kafka": KafkaResource(bootstrap=settings.bootstrap, topic=settings.clicks_topic),
    }


def run(settings, selection, run_config=None, raise_on_error=True, **kwargs):
    return dg.materialize(
        batch_assets(),
        selection=selection,
        resources=resources_for(settings),
        run_config=run_config or {},
        raise_on_error=raise_on_error,
        **kwargs,
    )


def ranged(start_key: str, end_key: str) -> dict:
    """Tags of one run over a partition range: what a single-run backfill launches."""
    return {
        "dagster/asset_partition_range_start": start_key,
        "dagster/asset_partition_range_end": end_key,
    }


def checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def gates(result) -> dict[str, bool]:
    """The checks that must pass (drift_including_late only informs: late clicks exist)."""
    return {k: v for k, v in checks(result).items() if k != "drift_including_late"}


def lake_minutes(settings, hours: list[int]) -> Counter:
    from assets.common import minute_agg_url

    out: Counter = Counter()
    for h in hours:
        t = pq.read_table(minute_agg_url(settings.lake_root, h).removeprefix("file://"))
        assert t.schema.field("window_start").type.unit == "ms"
        for r in t.to_pylist():
            key = (
                int(r["window_start"].timestamp() * 1000),
                r["advertiser_id"],
                r["campaign_id"],
                r["ad_id"],
            )
            out[key] += r["clicks"]
    return out


def write_hot(settings, counts: Counter) -> None:
    """The hot table as a correct stream leaves it (one absolute row per key)."""
    c = chm.client(settings)
    try:
        c.execute(
            f"INSERT INTO {settings.clickhouse_database}.hot_clicks "
            "(window_start, campaign_id, ad_id, source, source_partition, clicks, version) VALUES",
            [
                (datetime.fromtimestamp(m / 1000, UTC), camp, ad, 0, 0, n, 1)
                for (m, camp, ad), n in counts.items()
            ],
        )
    finally:
        c.disconnect()


@pytest.fixture(scope="module")
def spark():
    from resources.spark import get_spark

    return get_spark()


@pytest.fixture
def day_of_traffic(settings, ch_database, spark):
    """~26 hours of seeded clicks (dups, late, too late, bots, bursts) in the archive layout,
    and the hot table a correct stream would leave."""
    events = make_events(seed=21, n=4200, start_ms=DAY0 - 50 * MIN, rate_per_s=0.05)
    parts = place(events, 3)
    write_archive(settings.lake_root, settings.clicks_topic, parts, block=150)
    write_hot(settings, expected_billable(parts))
    billable, fraud = reference_clicks(parts)
    return parts, billable, fraud


def test_one_hour_materialises_and_rematerialises_idempotently(settings, day_of_traffic):
    parts, billable, _ = day_of_traffic
    h = DAY0 + 5 * HOUR
    res = run(settings, HOURLY, partition_key=hour_key(h))
    assert all(gates(res).values()), checks(res)
    want = in_hours(billable, h, h + HOUR)
    stream_hour = sum(n for (m, _c, _a), n in expected_billable(parts).items() if h <= m < h + HOUR)
    late = sum(want.values()) - stream_hour
    assert checks(res)["drift_including_late"] is (late == 0)
    assert sum(want.values()) > 50
    assert lake_minutes(settings, [h]) == want
    md = res.asset_materializations_for_node("minute_aggregates")[0].metadata
    assert md["clicks"].value == sum(want.values())
    db = settings.clickhouse_database

    def ch_total():
        c = chm.client(settings)
        try:
            return c.execute(f"SELECT count(), sum(clicks) FROM {db}.minute_aggregates_batch")[0]
        finally:
            c.disconnect()

    first = ch_total()
    assert first[1] == sum(want.values())
    res2 = run(settings, HOURLY, partition_key=hour_key(h))  # replaces, never adds
    assert all(gates(res2).values())
    assert ch_total() == first and lake_minutes(settings, [h]) == want
    drift = res2.asset_materializations_for_node("drift_report")[0].metadata
    assert drift["unexplained_abs"].value == 0
    assert drift["explained_late"].value == late
    assert drift["batch_clicks"].value == sum(want.values())


def test_backfill_of_24_hours_in_one_run_then_billing_and_late_adjustments(
    settings, day_of_traffic
):
    parts, billable, _ = day_of_traffic
    assert batch_assets()[3].backfill_policy == dg.BackfillPolicy.single_run()
    day = datetime.fromtimestamp(DAY0 / 1000, UTC).date()
    res = run(settings, HOURLY, tags=ranged(hour_key(DAY0), hour_key(DAY0 + 23 * HOUR)))
    assert res.success and all(gates(res).values()), checks(res)
    inst_parts = {m.partition for m in res.asset_materializations_for_node("minute_aggregates")}
    assert len(inst_parts) == 24  # one launch, 24 partitions
    hours = [DAY0 + i * HOUR for i in range(24)]
    assert lake_minutes(settings, hours) == in_hours(billable, DAY0, DAY0 + 24 * HOUR)
    drift = res.asset_materializations_for_node("drift_report")[0].metadata
    assert drift["unexplained_abs"].value == 0
    assert drift["explained_late"].value > 0  # too-late clicks only the batch counts

    # catalog without c8: billed at 0 and named by a failing (blocking) check, never dropped
    cat.write([CatalogEntry("adv1", c, cpc) for c, cpc in CPC.items() if c != "c8"], settings)
    as_of = {"ops": {"billing_daily": {"config": {"as_of": "2026-01-02T02:00:00+00:00"}}}}
    res = run(
        settings, ["billing_daily"], as_of, partition_key=day.isoformat(), raise_on_error=False
    )
    want_day = {k: v for k, v in per_day(billable).items() if k[0] == day}
    got = pq.read_table(
        f"{settings.lake_root.removeprefix('file://')}/batch/billing_daily/day={day}/data.parquet"
    ).to_pylist()
    assert {
        (r["day"], r["advertiser_id"], r["campaign_id"]): r["billable_clicks"] for r in got
    } == want_day
    for r in got:
        assert (
            r["spend_micros"] == r["billable_clicks"] * CPC.get(r["campaign_id"], 0)
            if r["campaign_id"] != "c8"
            else r["spend_micros"] == 0
        )
    assert checks(res) == {"billing_matches_batch": True, "billing_campaigns_in_catalog": False}
    ev = [
        e
        for e in res.get_asset_check_evaluations()
        if e.check_name == "billing_campaigns_in_catalog"
    ][0]
    assert "c8" in ev.metadata["campaigns_missing_from_catalog"].value

    # very late clicks for hour 3 of the billed day arrive (plus a copy of a billed click)
    late_t = DAY0 + 3 * HOUR + 7 * MIN
    late = make_events(
        seed=99,
        n=40,
        start_ms=late_t,
        rate_per_s=5.0,
        dup_fraction=0,
        late_fraction=0,
        too_late_fraction=0,
        bot_fraction=0,
        bursts=0,
    )
    already = parts[0][5]
    offsets = {p: len(evs) + 1000 for p, evs in parts.items()}
    late_parts = place(late, 3)
    late_parts.setdefault(0, []).append(already)
    write_archive(
        settings.lake_root, settings.clicks_topic, late_parts, block=150, offset_base=offsets
    )
    late_billable, _ = reference_clicks(late_parts)
    h3 = hour_key(DAY0 + 3 * HOUR)
    res = run(settings, HOURLY, partition_key=h3, raise_on_error=False)
    assert checks(res)["batch_total_matches_raw"] is True
    # the hot path misses them, but they were too late for the stream: explained drift
    assert checks(res)["drift_within_threshold"] is True
    assert checks(res)["drift_including_late"] is False
    drift = res.asset_materializations_for_node("drift_report")[0].metadata
    assert drift["explained_late"].value >= sum(late_billable.values())
    cat.write([CatalogEntry("adv1", c, cpc) for c, cpc in CPC.items()], settings)
    bill = {"ops": {"billing_daily": {"config": {"as_of": "2026-01-03T09:00:00+00:00"}}}}
    res = run(settings, ["billing_daily"], bill, partition_key=day.isoformat())
    assert checks(res)["billing_matches_batch"] is True
    got2 = pq.read_table(
        f"{settings.lake_root.removeprefix('file://')}/batch/billing_daily/day={day}/data.parquet"
    ).to_pylist()
    assert got2 == got  # the closed invoice did not change
    adj = pq.read_table(
        f"{settings.lake_root.removeprefix('file://')}/batch/billing_adjustments/day={day}/"
        "data.parquet"
    ).to_pylist()
    merged = {p: parts.get(p, []) + late_parts.get(p, []) for p in set(parts) | set(late_parts)}
    all_billable, _ = reference_clicks(merged)
    diff = per_day(all_billable)
    diff.subtract(per_day(billable))
    want_adj = {(adv, camp): n for (d, adv, camp), n in diff.items() if d == day and n}
    assert sum(want_adj.values()) == sum(late_billable.values()) - 1  # the copy is not billed
    assert {(a["advertiser_id"], a["campaign_id"]): a["delta_clicks"] for a in adj} == want_adj
    assert all(str(a["invoice_day"]) == "2026-01-03" and a["version"] == 2 for a in adj)
    assert all(
        a["delta_spend_micros"] == a["delta_clicks"] * CPC[a["campaign_id"]]
        for a in adj
        if a["campaign_id"] != "c8"
    )
    # re-running changes nothing (idempotent)
    res = run(settings, ["billing_daily"], bill, partition_key=day.isoformat())
    md = res.asset_materializations_for_node("billing_daily")[0].metadata
    assert md["new_adjustments"].value == 0


def test_drift_check_fails_on_exactly_the_hours_a_lossy_hot_path_touched(settings, day_of_traffic):
    parts, billable, _ = day_of_traffic
    # a hot path that silently drops 0.1% of clicks: newer versions one click lower
    stream = expected_billable(parts)
    keys = sorted(k for k in stream if DAY0 + 6 * HOUR <= k[0] < DAY0 + 12 * HOUR)
    n_drop = max(1, round(0.001 * sum(stream.values())))
    dropped = keys[:: max(1, len(keys) // n_drop)][:n_drop]
    c = chm.client(settings)
    try:
        c.execute(
            f"INSERT INTO {settings.clickhouse_database}.hot_clicks (window_start, campaign_id, "
            "ad_id, source, source_partition, clicks, version) VALUES",
            [
                (
                    datetime.fromtimestamp(m / 1000, UTC),
                    camp,
                    ad,
                    0,
                    0,
                    stream[(m, camp, ad)] - 1,
                    2,
                )
                for (m, camp, ad) in dropped
            ],
        )
    finally:
        c.disconnect()
    res = run(
        settings,
        HOURLY,
        tags=ranged(hour_key(DAY0 + 6 * HOUR), hour_key(DAY0 + 11 * HOUR)),
        raise_on_error=False,
    )
    ev = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert ev["batch_total_matches_raw"].passed
    gate = ev["drift_within_threshold"]
    assert not gate.passed
    want_hours = sorted(
        {datetime.fromtimestamp(m / 1000, UTC).strftime("%Y-%m-%dT%H") for m, _c, _a in dropped}
    )
    assert gate.metadata["failing_hours"].value == ", ".join(want_hours)
    for m, camp, ad in dropped:
        assert (
            f"{camp}/{ad}@{datetime.fromtimestamp(m / 1000, UTC):%Y-%m-%dT%H:%MZ}"
            in gate.metadata["offenders"].value
        )
    # the gate holds billing back and names the hours
    res = run(
        settings,
        HOURLY,
        tags=ranged(hour_key(DAY0), hour_key(DAY0 + 23 * HOUR)),
        raise_on_error=False,
    )
    as_of = {"ops": {"billing_daily": {"config": {"as_of": "2026-01-02T02:00:00+00:00"}}}}
    res = run(
        settings,
        ["billing_daily"],
        as_of,
        partition_key=datetime.fromtimestamp(DAY0 / 1000, UTC).date().isoformat(),
        raise_on_error=False,
    )
    assert not res.success
    failure = [e for e in res.all_events if e.is_step_failure][0]
    assert "drift gate failing" in str(failure.event_specific_data.error)


def test_hourly_partitions_cover_the_traffic():
    assert hourly.get_partition_key_for_timestamp(DAY0 / 1000) == "2026-01-01-00:00"
