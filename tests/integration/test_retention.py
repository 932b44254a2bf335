from datetime import UTC, date, datetime

import pytest

from clickagg_platform import clickhouse
from clickagg_platform.retention import apply_retention

pytestmark = pytest.mark.integration


def test_old_hot_partitions_are_dropped_and_recent_ones_kept(settings, ch_database):
    today = date(2026, 11, 27)
    old, recent = datetime(2026, 10, 1, 12), datetime(2026, 11, 26, 12)
    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {ch_database}.hot_clicks (window_start, campaign_id, ad_id, "
            "source, source_partition, clicks, version) VALUES",
            [(old, "c", "a", 0, 0, 5, 1), (recent, "c", "a", 0, 0, 7, 1)],
        )
        planned = apply_retention(c, ch_database, today, {"hot_clicks": 35}, dry_run=True)
        assert [(d.table, d.day) for d in planned] == [("hot_clicks", date(2026, 10, 1))]
        assert c.execute(f"SELECT count() FROM {ch_database}.hot_clicks")[0][0] == 2
        dropped = apply_retention(c, ch_database, today, {"hot_clicks": 35})
        assert dropped == planned
        rows = c.execute(f"SELECT window_start, clicks FROM {ch_database}.hot_clicks")
        assert rows == [(recent.replace(tzinfo=UTC), 7)]
        assert apply_retention(c, ch_database, today, {"hot_clicks": 35}) == []  # idempotent
    finally:
        c.disconnect()


def test_retention_job_runs_in_dagster(settings, ch_database):
    from assets.retention import retention_job
    from resources.clickhouse import ClickHouseResource

    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {ch_database}.hot_clicks (window_start, campaign_id, ad_id, "
            "source, source_partition, clicks, version) VALUES",
            [(datetime(2020, 1, 1), "c", "a", 0, 0, 1, 1)],
        )
    finally:
        c.disconnect()
    from resources.lake import LakeResource

    now_h = int(datetime.now(UTC).timestamp() * 1000) // HOUR * HOUR
    old_h, kept_h = now_h - 80 * HOUR, now_h - 60 * HOUR  # horizon 24 h + 49 h = 73 h kept
    for h in (old_h, kept_h):
        write_index_hour(settings, h)
    res = retention_job.execute_in_process(
        resources={
            "clickhouse": ClickHouseResource.from_settings(settings),
            "lake_store": LakeResource(url=settings.lake_root, topic=settings.clicks_topic),
        },
        run_config={"ops": {"drop_expired_partitions": {"config": {"dry_run": False}}}},
    )
    assert res.success
    assert res.output_for_node("drop_expired_partitions") == ["hot_clicks:20200101"]
    assert res.output_for_node("drop_expired_index_hours") == [
        f"{datetime.fromtimestamp(old_h / 1000, UTC):%Y-%m-%dT%H}"
    ]
    assert index_hours(settings) == [kept_h]


HOUR = 3_600_000


def write_index_hour(settings, h: int) -> None:
    """An index hour as a build leaves it: a version's data file and the pointer."""
    import pyarrow as pa

    from clickagg_platform import first_seen, lake

    root, topic = settings.lake_root, settings.clicks_topic
    data = first_seen.version_prefix(root, topic, h, "v1") + "/bucket=0/part-0.parquet"
    lake.write_table(data, pa.table({"event_id": ["e"], "kafka_offset": [1]}), settings)
    ptr = first_seen.Pointer("v1", "sig", 1, 1, "t")
    fs, path = lake.filesystem(first_seen.pointer_url(root, topic, h), settings)
    with fs.open_output_stream(path) as out:
        out.write(ptr.dumps())


def index_hours(settings) -> list[int]:
    from clickagg_platform import first_seen, lake

    prefix = first_seen.topic_prefix(settings.lake_root, settings.clicks_topic)
    return sorted({first_seen.parse_hour(p) for p in lake._list(prefix, settings)})


def test_index_prune_keeps_the_horizon_and_is_idempotent(settings):
    from clickagg_platform import first_seen

    now = 1_767_225_600_000 + 100 * HOUR
    hours = [now - k * HOUR for k in (100, 74, 73, 72, 10)]
    for h in hours:
        write_index_hour(settings, h)
    root, topic, horizon = settings.lake_root, settings.clicks_topic, 24 * HOUR
    assert first_seen.prune(root, topic, now, horizon, settings, dry_run=True) == hours[:2]
    assert index_hours(settings) == sorted(hours)  # a dry run deletes nothing
    assert first_seen.prune(root, topic, now, horizon, settings) == hours[:2]
    assert index_hours(settings) == sorted(hours[2:])
    assert first_seen.prune(root, topic, now, horizon, settings) == []
